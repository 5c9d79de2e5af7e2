"""Forwarded headers, believed only from the reverse proxies the operator names (SANLV_TRUSTED_PROXIES).

Behind a proxy, the client's address (sign-in throttling, the audit log) and the scheme (Secure cookies) come
from ``X-Forwarded-For`` / ``-Proto`` / ``-Host``. Anyone can send those headers, so they are applied (by
werkzeug's ProxyFix, one hop) only when the connection itself comes from a trusted proxy; from anywhere else
they are ignored and the socket's address is the client's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from werkzeug.middleware.proxy_fix import ProxyFix


class TrustedProxyFix:
    def __init__(self, app, proxies: Iterable[str]):
        self.app = app
        self.fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=1)
        self.networks = [ipaddress.ip_network(proxy, strict=False) for proxy in proxies]

    def trusted(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def __call__(self, environ, start_response):
        if self.networks and self.trusted(environ.get("REMOTE_ADDR")):
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)

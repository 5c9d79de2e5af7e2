"""What the webhooks count for Prometheus: how long each answer took, its status, the answers stored.

The metrics are made on first use, not at import: under gunicorn, ``web.server`` points prometheus-client at
its multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``) before the workers fork, and a metric made
before that would count in one process's memory, where the metrics endpoint never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from prometheus_client import Counter, Histogram

# Twilio gives up on a webhook after 15 s; residents notice a pause of a second or two.
WEBHOOK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0)


@dataclass(frozen=True)
class WebhookMetrics:
    seconds: Histogram
    responses: Counter
    answers: Counter


@cache
def webhook_metrics() -> WebhookMetrics:
    """The webhooks' metrics, made (and registered) once per process."""
    return WebhookMetrics(
        seconds=Histogram(
            "sanlv_webhook_seconds", "Time to answer a Twilio webhook, by route.", ["route"], buckets=WEBHOOK_BUCKETS
        ),
        responses=Counter(
            "sanlv_webhook_responses", "Twilio webhook responses, by route and HTTP status.", ["route", "status"]
        ),
        answers=Counter("sanlv_answers", "Answers to questions stored (committed) by the key-press webhook."),
    )

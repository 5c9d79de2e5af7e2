"""deploy/systemd/: the units run commands the ``sanlv`` script has, hardened, and systemd accepts them."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from web.cli import main

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
SANLV = "/opt/sanlv/venv/bin/sanlv"
ENV_FILE = "/etc/sanlv/sanlv.env"
RECORDINGS = "/var/lib/sanlv/recordings"
SERVICES = ("sanlv-web.service", "sanlv-worker@.service", "sanlv-retain.service")


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}} (systemd allows a key more than once)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{path.name}:{number}: {raw!r}"
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{path.name}:{number}: {raw!r}"
        key, value = (part.strip() for part in line.split("=", 1))
        current.setdefault(key, []).append(value)
    return sections


def one(unit: dict, section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, f"{key} is set {len(values)} times"
    return values[0]


def sanlv_args(command: str) -> list[str]:
    """The arguments of a ``sanlv`` command line of a unit, with systemd's ${VAR} given an example value."""
    words = shlex.split(command.replace("${SANLV_RETENTION_DAYS}", "365"))
    assert words[0] == SANLV, command
    return words[1:]


def check_cli(args: list[str]) -> click.Command:
    """Parse ``args`` as the ``sanlv`` script would, without running anything; the command reached."""
    command: click.Command = main
    name = "sanlv"
    while isinstance(command, click.Group):
        assert args, f"{name} needs a subcommand"
        sub = command.get_command(click.Context(command), args[0])
        if sub is None:
            raise LookupError(f"{name} has no command {args[0]!r}")
        name, command, args = f"{name} {args[0]}", sub, args[1:]
    command.make_context(name, list(args))  # raises on an unknown option or a bad value
    return command


def test_units_are_all_there():
    assert sorted(p.name for p in UNITS.iterdir()) == sorted([*SERVICES, "sanlv-retain.timer"])


@pytest.mark.parametrize("name", SERVICES)
def test_services_run_as_sanlv_with_the_environment_file_and_hardening(name):
    unit = parse_unit(UNITS / name)
    service = unit["Service"]
    assert one(unit, "Service", "User") == "sanlv" and one(unit, "Service", "Group") == "sanlv"
    assert one(unit, "Service", "EnvironmentFile") == ENV_FILE
    assert one(unit, "Service", "NoNewPrivileges") == "yes"
    assert one(unit, "Service", "ProtectSystem") == "strict"
    assert one(unit, "Service", "PrivateTmp") == "yes"
    assert one(unit, "Service", "CapabilityBoundingSet") == ""
    assert "network-online.target" in one(unit, "Unit", "After")
    # Only the web app may write, and only the recordings.
    assert service.get("ReadWritePaths", []) == ([RECORDINGS] if name == "sanlv-web.service" else [])


def test_web_migrates_then_serves_on_loopback():
    unit = parse_unit(UNITS / "sanlv-web.service")
    assert [sanlv_args(c) for c in unit["Service"]["ExecStartPre"]] == [["db", "upgrade"]]
    args = sanlv_args(one(unit, "Service", "ExecStart"))
    assert args[0] == "web" and args[args.index("--host") + 1] == "127.0.0.1"
    assert one(unit, "Service", "Restart") == "always"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


def test_workers_are_a_template_always_restarted():
    unit = parse_unit(UNITS / "sanlv-worker@.service")
    assert "%i" in one(unit, "Unit", "Description")
    assert sanlv_args(one(unit, "Service", "ExecStart")) == ["worker"]
    # A worker stuck in a job exits with code 70; Restart=always brings it back, and no start limit stops it.
    assert one(unit, "Service", "Restart") == "always"
    assert one(unit, "Unit", "StartLimitIntervalSec") == "0"
    assert one(unit, "Service", "KillMode") == "mixed"


def test_the_stuck_worker_exit_code_is_the_one_the_unit_comment_names():
    from workers.runner import STUCK_EXIT_CODE

    text = (UNITS / "sanlv-worker@.service").read_text(encoding="utf-8")
    assert f"exit code {STUCK_EXIT_CODE}" in text


def test_retention_runs_nightly_with_the_configured_age():
    unit = parse_unit(UNITS / "sanlv-retain.service")
    assert one(unit, "Service", "Type") == "oneshot"
    command = one(unit, "Service", "ExecStart")
    assert command == f"{SANLV} data retain --older-than ${{SANLV_RETENTION_DAYS}}"
    timer = parse_unit(UNITS / "sanlv-retain.timer")
    assert one(timer, "Timer", "Unit") == "sanlv-retain.service"
    assert re.fullmatch(r"\*-\*-\* 0[0-5]:\d\d:\d\d", one(timer, "Timer", "OnCalendar"))  # at night
    assert one(timer, "Timer", "Persistent") == "true"
    assert one(timer, "Install", "WantedBy") == "timers.target"


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("sanlv-web.service", "ExecStartPre"),
        ("sanlv-web.service", "ExecStart"),
        ("sanlv-worker@.service", "ExecStart"),
        ("sanlv-retain.service", "ExecStart"),
    ],
)
def test_unit_commands_exist_in_the_sanlv_script(name, key):
    for command in parse_unit(UNITS / name)["Service"][key]:
        args = sanlv_args(command)
        if args[:2] == ["data", "retain"] and main.get_command(click.Context(main), "data") is None:
            pytest.skip("`sanlv data retain` (issue #12) is not in this tree yet")
        check_cli(args)


def test_the_cli_check_bites():
    with pytest.raises(LookupError, match="no command 'wrk'"):
        check_cli(["wrk"])
    with pytest.raises(click.NoSuchOption):
        check_cli(["web", "--bind", "127.0.0.1"])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    # The units name the installed script; here it is this checkout's (verify checks it is executable).
    script = Path(sys.executable).with_name("sanlv")
    assert script.exists()
    for path in UNITS.iterdir():
        text = path.read_text(encoding="utf-8").replace(SANLV, str(script))
        (tmp_path / path.name).write_text(text, encoding="utf-8")
    (tmp_path / "sanlv-worker@1.service").write_text((tmp_path / "sanlv-worker@.service").read_text())
    names = ["sanlv-web.service", "sanlv-worker@1.service", "sanlv-retain.service", "sanlv-retain.timer"]
    result = subprocess.run(["systemd-analyze", "verify", *names], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # Unknown or misspelt keys are only warnings to systemd: none is allowed here.
    assert "Unknown" not in result.stderr and "Invalid" not in result.stderr, result.stderr

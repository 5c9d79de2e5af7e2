"""deploy/prometheus/alerts.yml: well-formed rules on the metric names sanlv exports, each alert tried on
synthetic series with ``promtool test rules`` (Debian's ``prometheus`` package; skipped without it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
# The names the metrics endpoint exports (issue #13, section 2).
METRICS = {
    "sanlv_calls_total",
    "sanlv_webhook_seconds_bucket",
    "sanlv_webhook_responses_total",
    "sanlv_answers_total",
    "sanlv_queue_depth",
    "sanlv_queue_oldest_job_seconds",
    "sanlv_live_calls",
    "sanlv_max_concurrent",
    "sanlv_dials_total",
    "sanlv_round_cps",
    "sanlv_round_dialling",
    "sanlv_sweeper_settled_total",
    "sanlv_twilio_errors_total",
    "sanlv_ready",
}
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")


def rules() -> list[dict]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_rule_has_expr_for_labels_and_annotations():
    found = rules()
    assert found
    for rule in found:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule.get("alert")
        assert re.fullmatch(r"Sanlv[A-Za-z]+", rule["alert"])
        assert re.fullmatch(r"\d+[smh]", rule["for"])
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert len({rule["alert"] for rule in found}) == len(found)


def test_the_alerts_the_issue_asks_for_are_there():
    names = {rule["alert"] for rule in rules()}
    assert {"SanlvRoundNotDialling", "SanlvWebhookErrors", "SanlvSweeperSettlingMany", "SanlvNotReady"} <= names


def test_rules_use_only_the_exported_metric_names():
    used = {name for rule in rules() for name in re.findall(r"\bsanlv_[a-z_]+", rule["expr"])}
    assert used and used <= METRICS, used - METRICS


def test_operations_guide_shows_the_same_rules():
    blocks = re.findall(r"```yaml\n(.*?)```", OPERATIONS.read_text(encoding="utf-8"), flags=re.DOTALL)
    shown = [yaml.safe_load(block) for block in blocks]
    assert yaml.safe_load(ALERTS.read_text(encoding="utf-8")) in shown


@needs_promtool
def test_promtool_accepts_the_rules():
    result = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def run_promtool_tests(tmp_path: Path, tests: list[dict]) -> subprocess.CompletedProcess:
    """``promtool test rules`` on ``tests``, against the rules with their annotations taken off (annotations are
    for people; promtool would compare their rendered text)."""
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(document), encoding="utf-8")
    (tmp_path / "tests.yml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}), encoding="utf-8"
    )
    return subprocess.run([PROMTOOL, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)


def alert(name: str, at: str, *firing: dict) -> dict:
    return {"eval_time": at, "alertname": name, "exp_alerts": [{"exp_labels": labels} for labels in firing]}


@needs_promtool
def test_round_not_dialling_fires_only_for_rounds_in_their_window_with_room_and_no_dials(tmp_path):
    series = []
    for round_id, dialling, dials, live in (
        ("7", "1x40", "0+10x10 100x30", "2x40"),  # dialled, then stopped at 10 min
        ("8", "1x40", "0+10x40", "2x40"),  # dials all along
        ("9", "0x40", "0x40", "0x40"),  # outside its window
        ("10", "1x40", None, "0x40"),  # never dialled at all (no dial series)
        ("11", "1x40", "0+10x10 100x30", "20x40"),  # no dials because every slot is taken
    ):
        series.append({"series": f'sanlv_round_dialling{{round="{round_id}",instance="w1"}}', "values": dialling})
        series.append({"series": f'sanlv_live_calls{{round="{round_id}",instance="w1"}}', "values": live})
        series.append({"series": f'sanlv_max_concurrent{{round="{round_id}",instance="w1"}}', "values": "20x40"})
        if dials:
            series.append({"series": f'sanlv_dials_total{{round="{round_id}",instance="w1"}}', "values": dials})
    result = run_promtool_tests(tmp_path, [{
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            alert("SanlvRoundNotDialling", "4m"),
            alert("SanlvRoundNotDialling", "12m", {"severity": "critical", "round": "10"}),
            alert("SanlvRoundNotDialling", "30m",
                  {"severity": "critical", "round": "7"}, {"severity": "critical", "round": "10"}),
        ],
    }])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_webhook_errors_fire_on_a_5xx_and_clear(tmp_path):
    result = run_promtool_tests(tmp_path, [{
        "interval": "1m",
        "input_series": [
            {"series": 'sanlv_webhook_responses_total{route="/ivr/voice",status="200",instance="web"}',
             "values": "0+5x40"},
            {"series": 'sanlv_webhook_responses_total{route="/ivr/status",status="200",instance="web"}',
             "values": "0+5x40"},
            {"series": 'sanlv_webhook_responses_total{route="/ivr/status",status="500",instance="web"}',
             "values": "0x9 1x30"},
        ],
        "alert_rule_test": [
            alert("SanlvWebhookErrors", "8m"),
            alert("SanlvWebhookErrors", "12m", {"severity": "critical", "route": "/ivr/status"}),
            alert("SanlvWebhookErrors", "30m"),
        ],
    }])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_sweeper_alert_weighs_settlements_against_calls(tmp_path):
    def case(calls_per_minute: int, *firing: dict) -> dict:
        return {
            "interval": "1m",
            "input_series": [
                {"series": 'sanlv_sweeper_settled_total{instance="w1"}', "values": "0+1x60"},
                {"series": 'sanlv_calls_total{outcome="completed",instance="w1"}', "values": f"0+{calls_per_minute}x60"},
            ],
            "alert_rule_test": [alert("SanlvSweeperSettlingMany", "45m", *firing)],
        }

    result = run_promtool_tests(tmp_path, [case(100), case(10, {"severity": "warning"})])  # 1% vs 10% settled
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_not_ready_and_missing_metrics(tmp_path):
    result = run_promtool_tests(tmp_path, [
        {
            "interval": "1m",
            "input_series": [
                {"series": 'sanlv_ready{instance="web-a"}', "values": "1 1 0x20"},
                {"series": 'sanlv_ready{instance="web-b"}', "values": "1x22"},
            ],
            "alert_rule_test": [
                alert("SanlvNotReady", "3m"),
                alert("SanlvNotReady", "8m", {"severity": "critical", "instance": "web-a"}),
                alert("SanlvMetricsMissing", "8m"),
            ],
        },
        {
            "interval": "1m",
            "input_series": [{"series": 'up{job="sanlv"}', "values": "0x20"}],
            "alert_rule_test": [alert("SanlvMetricsMissing", "8m", {"severity": "critical"})],
        },
    ])
    assert result.returncode == 0, result.stdout + result.stderr

"""The shipped alert rules (deploy/prometheus/alerts.yml): valid, unit-tested with promtool (each
alert fed series that fire it and series that leave it quiet), the unit tests shown to catch a
broken rule, and every metric the rules read exported by the service."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import METRICS_AUTH

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
UNIT_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yml"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed: apt-get install prometheus (scripts/test.sh does it when run as root)",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_promtool
def test_the_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


@needs_promtool
def test_each_alert_fires_and_stays_quiet_as_its_unit_tests_say() -> None:
    result = promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", UNIT_TESTS.read_text()))
    assert tested == set(re.findall(r"- alert: (\w+)", RULES.read_text()))


@needs_promtool
@pytest.mark.parametrize(
    ("original", "broken"),
    [
        (
            "expr: max(otp_workers_alive) == 0\n        for: 1m",
            "expr: max(otp_workers_alive) == 0\n        for: 0m",
        ),
        ("max(otp_queue_oldest_job_age_seconds) > 60", "max(otp_queue_oldest_job_age_seconds) > 600"),
        ('result!="ok"', 'result="timeout"'),
        ("max by (provider) (otp_provider_paused) == 1", "max by (provider) (otp_provider_paused) == 2"),
        (
            "/ max by (channel) (otp_global_limit_24h) > 0.8",
            "/ max by (channel) (otp_global_limit_24h) > 0.7",
        ),
        ('outcome=~"rejected_.*"', 'outcome=~".*"'),
        ("increase(otp_http_server_errors_total[5m])", "increase(otp_http_server_errors_total[30m])"),
        ("otp_loop_last_success_timestamp_seconds) > 300", "otp_loop_last_success_timestamp_seconds) > 3000"),
        ("min by (app, check) (otp_sender_check) == 0", "max by (app, check) (otp_sender_check) == 0"),
        ("min by (app, check) (otp_sender_check)", "min by (check) (otp_sender_check)"),
        (
            "rate(otp_accepted_to_sent_seconds_bucket[5m]))) > 30\n        for: 10m",
            "rate(otp_accepted_to_sent_seconds_bucket[5m]))) > 30\n        for: 2m",
        ),
        (
            "(rate(otp_accepted_to_sent_seconds_bucket[5m]))) > 30",
            "(rate(otp_accepted_to_sent_seconds_bucket[5m]))) > 60",
        ),
        ("< 0.5 * (", "< 0.2 * ("),
        ('outcome="sent"}[30m])) >= 20', 'outcome="sent"}[30m])) >= 0'),
    ],
)
def test_the_unit_tests_catch_a_broken_rule(tmp_path: Path, original: str, broken: str) -> None:
    rules = RULES.read_text()
    assert original in rules
    alert = alert_holding(rules, original)
    (tmp_path / "alerts.yml").write_text(rules.replace(original, broken))
    tests = unit_tests_of(alert).replace("../../deploy/prometheus/alerts.yml", "alerts.yml")
    (tmp_path / "alerts_test.yml").write_text(tests)
    result = promtool("test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode != 0, f"a broken rule passed its unit tests: {broken}"
    # Failed by the broken alert's own test, not by a file promtool could not read.
    assert f"alertname: {alert}," in result.stdout + result.stderr, result.stdout + result.stderr


def alert_holding(rules: str, text: str) -> str:
    """The one alert whose rule holds `text`."""
    blocks = re.split(r"(?m)^(?=\s*- alert: )", rules)[1:]
    [name] = [m[1] for block in blocks if text in block and (m := re.search(r"- alert: (\w+)", block))]
    return name


def unit_tests_of(alert: str) -> str:
    """alerts_test.yml with only the test groups that check `alert`. A broken rule can fail no
    other alert's tests (each checks its own alertname, and no rule records a series another
    reads), and promtool evaluates every rule at every step of every group it is given: the whole
    file (its 8-hour groups above all) took seconds for each broken rule."""
    assert "record:" not in RULES.read_text(), "a recording rule: run every group for each broken rule"
    head, *groups = re.split(r"(?m)^(?=  - interval: )", UNIT_TESTS.read_text())
    mine = [group for group in groups if re.search(rf"alertname: {alert}$", group, re.M)]
    assert mine, f"no unit test checks {alert}"
    return head + "".join(mine)


def exported_names(text: str) -> set[str]:
    """Every series name a /metrics page can carry: a counter's `_total`, a histogram's `_bucket`,
    `_sum` and `_count` (declared before its first observation, labelled series are not printed)."""
    exported = set(re.findall(r"^# TYPE (\w+)", text, re.M)) | set(re.findall(r"^(otp_\w+)[{ ]", text, re.M))
    exported |= {f"{name}_total" for name in exported}
    for name in re.findall(r"^# TYPE (\w+) histogram", text, re.M):
        exported |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return exported


async def test_every_metric_the_rules_read_is_exported(client: Any) -> None:
    text = (await client.http.get("/metrics", headers=METRICS_AUTH)).text
    exported = exported_names(text)
    used = set(re.findall(r"\b(otp_[a-z0-9_]+)", RULES.read_text()))
    assert used, "no metric found in the rules"
    assert used <= exported, used - exported

"""The shipped Grafana dashboard (deploy/grafana/otp-service.json): it parses, every panel is
placed and queries the templated Prometheus data source, it covers what issue 31 asks of it, and
every metric it queries is one the service exports."""

import json
import re
from pathlib import Path
from typing import Any

from tests.conftest import METRICS_AUTH
from tests.test_alerts import exported_names

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "otp-service.json"


def load() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_every_panel_is_placed_once_and_queries_the_data_source_variable() -> None:
    dashboard = load()
    assert dashboard["uid"] == "otp-service"
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys(), panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), panel["title"]


def test_the_dashboard_shows_what_issue_31_asks_for() -> None:
    used = " ".join(queries(load()))
    for needed in (
        'otp_requests_total{endpoint="send"}',  # sends
        "sum by (code) (rate(otp_rejections_total",  # refusals by code
        "otp_accepted_to_sent_seconds_bucket",  # time to inbox, by stage and provider
        "otp_sent_to_delivered_seconds_bucket",
        "otp_sent_to_verified_seconds_bucket",
        'otp_requests_total{endpoint="verify"}',  # conversion
        "otp_queue_jobs",  # queue depth
        "otp_provider_calls_total",  # provider health
        "otp_provider_paused",
        "otp_loop_last_success_timestamp_seconds",  # loop liveness
    ):
        assert needed in used, needed
    assert "sum by (provider, le) (rate(otp_accepted_to_sent_seconds_bucket" in used


async def test_every_metric_the_dashboard_queries_is_exported(client: Any) -> None:
    exported = exported_names((await client.http.get("/metrics", headers=METRICS_AUTH)).text)
    used = {name for expr in queries(load()) for name in re.findall(r"\b(otp_[a-z0-9_]+)", expr)}
    assert len(used) >= 15, used
    assert used <= exported, used - exported


async def test_a_metric_the_service_does_not_export_is_caught(client: Any) -> None:
    exported = exported_names((await client.http.get("/metrics", headers=METRICS_AUTH)).text)
    assert "otp_accepted_to_sent_seconds_bucket" in exported
    assert "otp_accepted_to_send_seconds_bucket" not in exported  # a typo in a panel would show

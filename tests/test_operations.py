"""Docs served with no internet, Prometheus metrics, request ids, logs free of codes and addresses."""

import json
import logging
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from otp_service.logs import JsonFormatter
from otp_service.settings import Settings
from tests.conftest import METRICS_AUTH
from tests.support import ServiceProcess, clean_env, console_emails, drain, unique_email

WIDE = {
    "otp_send": "1000/minute",
    "otp_verify": "1000/minute",
    "otp_send_subnet": "1000/minute",
    "otp_verify_subnet": "1000/minute",
}


async def test_docs_page_uses_only_local_assets(client: Any) -> None:
    page = await client.http.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", page.text) + re.findall(
        r"url:\s*'([^']+)'", page.text
    )
    assert urls
    assert all(u.startswith("/") for u in urls), urls
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
        res = await client.http.get(asset)
        assert res.status_code == 200
        assert len(res.content) > 100_000


async def test_openapi_documents_every_error_code(client: Any) -> None:
    spec = (await client.http.get("/openapi.json")).json()
    send = spec["paths"]["/api/v1/auth/otp/send"]["post"]["responses"]
    verify = spec["paths"]["/api/v1/auth/otp/verify"]["post"]["responses"]

    def codes(responses: dict[str, Any]) -> set[str]:
        return {
            code for r in responses.values() for code in r.get("content", {}).get("application/problem+json", {})
            .get("examples", {})
        }  # fmt: skip

    assert codes(send) == {"invalid_email", "idempotency_key_reused", "invalid_request", "disposable_email", "email_typo", "undeliverable_email",
                           "captcha_failed", "captcha_required", "payload_too_large", "rate_limited", "cooldown", "daily_limit", "domain_limit", "global_limit",
                           "sending_paused", "unavailable"}  # fmt: skip
    assert codes(verify) == {"invalid_request", "invalid_code", "max_attempts_reached", "code_expired",
                             "payload_too_large", "rate_limited", "unavailable"}  # fmt: skip
    assert "Problem" in spec["components"]["schemas"]
    for path in (
        "/api/v1/auth/resend-events/",
        "/api/v1/auth/ses-events/",
        "/api/v1/admin/usage",
        "/metrics",
    ):
        assert path in spec["paths"]


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)"
)
def test_docs_render_in_headless_chromium(tmp_path: Path) -> None:
    with ServiceProcess(clean_env(), tmp_path) as service:
        dom = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}",
             "--virtual-time-budget=10000", "--dump-dom", f"{service.url}/docs"],
            capture_output=True, text=True, timeout=90, check=True,
        ).stdout  # fmt: skip
    # Swagger UI built the operation list from /openapi.json: the page rendered, offline.
    assert "opblock" in dom
    assert "/api/v1/auth/otp/send" in dom
    assert "/api/v1/auth/otp/verify" in dom


async def test_metrics_change_after_traffic(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    async with open_app(make_settings(conversion_min_sends=1_000_000, throttle_rates=WIDE)) as app:

        def value(text: str, name: str, labels: str) -> float:
            m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} ([0-9.e+]+)$", text, re.M)
            return float(m.group(1)) if m else 0.0

        before = (await app.http.get("/metrics", headers=METRICS_AUTH)).text
        email = unique_email()
        await app.http.post("/api/v1/auth/otp/send", json={"email": email})
        await app.http.post("/api/v1/auth/otp/send", json={"email": email})
        await app.http.post("/api/v1/auth/otp/send", json={"email": "x@mailinator.com"})
        await drain(app)
        res = await app.http.get("/metrics", headers=METRICS_AUTH)
    assert res.headers["content-type"].startswith("text/plain")
    after = res.text
    assert (
        value(after, "otp_requests_total", 'app="",endpoint="send"')
        == value(before, "otp_requests_total", 'app="",endpoint="send"') + 1
    )
    assert (
        value(after, "otp_rejections_total", 'app="",code="cooldown"')
        == value(before, "otp_rejections_total", 'app="",code="cooldown"') + 1
    )
    assert value(after, "otp_rejections_total", 'app="",code="disposable_email"') >= 1
    sent = 'app="",outcome="sent",provider="console"'
    assert value(after, "otp_deliveries_total", sent) == value(before, "otp_deliveries_total", sent) + 1
    assert "otp_provider_call_seconds_bucket" in after
    assert re.search(r'^otp_global_sends_24h\{channel="email"\} 1(\.0)?$', after, re.M)
    assert re.search(r'^otp_queue_jobs\{state="waiting"\} 0(\.0)?$', after, re.M)


async def test_request_id_is_returned_and_propagated(client: Any) -> None:
    given = await client.http.get("/healthz", headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    generated = await client.http.get("/healthz", headers={"x-request-id": "bad id\n with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    problem = await client.http.get("/nowhere")
    assert problem.headers["x-request-id"]


async def test_logs_never_contain_a_code_or_a_full_address(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="otp_service")
    email = unique_email()
    async with open_app(make_settings(conversion_min_sends=1_000_000, throttle_rates=WIDE)) as app:
        await app.http.post("/api/v1/auth/otp/send", json={"email": email})
        await drain(app)
        [sent] = console_emails(capsys.readouterr().out)
        await app.http.post(
            "/api/v1/auth/otp/verify",
            json={"email": email, "code": "000000" if sent.code != "000000" else "111111"},
        )
        await app.http.post("/api/v1/auth/otp/send", json={"email": email})
        await app.http.post("/api/v1/auth/otp/verify", json={"email": email, "code": sent.code})
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records]
    assert any("otp.send_accepted" in line for line in lines)
    assert any("delivery.sent" in line for line in lines)
    assert any("otp.verify_approved" in line for line in lines)
    for line in lines:
        json.loads(line)  # one JSON object per line
        assert sent.code not in line, line
        assert email not in line, line
        assert email.split("@")[0] not in line, line
    assert any(f"{email[0]}***@{email.split('@')[1]}" in line for line in lines)


async def test_metrics_are_not_public(
    open_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """Scrape, send, scrape would tell whether an address is suppressed (a delivery's outcome)."""
    async with open_app(make_settings()) as app:  # a client at 203.0.113.7
        res = await app.http.get("/metrics")
        assert res.status_code == 401
        assert res.json()["code"] == "unauthorized"
        assert (await app.http.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await app.http.get("/metrics", headers=METRICS_AUTH)).status_code == 200
    async with open_app(make_settings(metrics_token=None)) as app:  # no token: loopback only
        assert (await app.http.get("/metrics")).status_code == 401
    async with open_app(make_settings(metrics_token=None), client_ip="127.0.0.1") as app:
        assert (await app.http.get("/metrics")).status_code == 200

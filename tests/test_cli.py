import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from otp_service import cli
from otp_service.app import create_app_from_env
from tests.conftest import REDIS_URL
from tests.support import ServiceProcess, clean_env, exit_status_in_process, only_otp_settings


def _run(
    args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otp_service", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}


Refusal = Callable[..., tuple[object, str]]


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Refusal:
    """`otp-service ARGS` (or uvicorn's factory, given instead of ARGS) run in this process with
    `settings` as its only OTP_ variables, in an empty directory: its exit status and what it
    printed on stderr. A refusal at start-up is decided and printed before anything starts;
    test_several_workers_without_redis_are_refused and tests/test_no_setting_leaks.py start
    the commands as processes, with the exit status the interpreter gives main's answer."""

    def run(args: list[str] | Callable[[], object], **settings: str) -> tuple[object, str]:
        only_otp_settings(monkeypatch, settings)
        monkeypatch.chdir(tmp_path)
        status = exit_status_in_process(args if callable(args) else lambda: cli.main(args), monkeypatch)
        return status, capsys.readouterr().err + (status if isinstance(status, str) else "")

    return run


def test_several_workers_without_redis_are_refused() -> None:
    proc = _run(["serve", "--workers", "2"], _clean_env())
    assert proc.returncode == 2
    assert "--workers > 1 needs OTP_REDIS_URL" in proc.stderr


def test_production_shape_without_secret_is_refused(refused: Refusal) -> None:
    status, stderr = refused(["serve"], OTP_REDIS_URL=REDIS_URL)
    assert status == 2
    assert "OTP_SECRET_KEY is required" in stderr


def test_bad_setting_is_refused_with_its_name(refused: Refusal) -> None:
    status, stderr = refused(["serve"], OTP_CODE_TTL="soon")
    assert status == 2
    assert "OTP_CODE_TTL" in stderr


def test_embedded_default_serves_with_no_setup(tmp_path: Path) -> None:
    with ServiceProcess(clean_env(), tmp_path) as service:
        res = httpx.get(f"{service.url}/readyz", timeout=5)
    assert res.status_code == 200
    assert res.json()["checks"] == {"database": "ok", "redis": "ok"}
    assert (tmp_path / "otp_service.db").exists()


def test_migrate_needs_only_the_database_url(tmp_path: Path, refused: Refusal) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/migrated.db"
    proc = _run(["migrate"], {**_clean_env(), "OTP_DATABASE_URL": url})
    assert proc.returncode == 0, proc.stderr
    assert "latest migration" in proc.stderr
    assert (tmp_path / "migrated.db").exists()
    status, stderr = refused(["migrate"], OTP_DATABASE_URL="mysql://x/y")
    assert (status, "OTP_DATABASE_URL: must be" in stderr) == (2, True)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "otp.example"])
def test_the_console_provider_by_default_refuses_a_public_host(host: str, refused: Refusal) -> None:
    status, stderr = refused(["serve", "--host", host])
    assert status == 2
    assert "refusing to serve on" in stderr
    assert "OTP_EMAIL_PROVIDER" in stderr


def test_the_console_provider_named_explicitly_may_serve_anywhere(tmp_path: Path) -> None:
    env = {**clean_env(), "OTP_EMAIL_PROVIDER": "console"}
    with ServiceProcess(env, tmp_path, "svc", "--host", "0.0.0.0") as service:
        assert httpx.get(f"{service.url}/healthz", timeout=5).status_code == 200


def test_short_admin_keys_are_refused_at_start_up(refused: Refusal) -> None:
    status, stderr = refused(["serve"], OTP_ADMIN_API_KEYS='["too-short"]')
    assert status == 2
    assert "OTP_ADMIN_API_KEYS: each key must be at least 32 characters" in stderr


def test_a_worker_with_no_concurrency_is_refused(refused: Refusal) -> None:
    status, stderr = refused(["worker", "--concurrency", "0"], OTP_REDIS_URL=REDIS_URL)
    assert status == 2
    assert "--concurrency must be at least 1" in stderr


def test_serve_on_a_unix_socket_believes_the_local_proxys_forwarded_for(
    tmp_path: Path, database_url: str, key_prefix: str
) -> None:
    """Behind a proxy on a unix socket (no peer address), X-Forwarded-For decides the client when
    OTP_TRUSTED_PROXIES is set: two users behind the proxy do not share one send bucket."""
    import time

    from tests.support import service_env

    sock = tmp_path / "otp.sock"
    env = service_env(database_url, key_prefix, OTP_TRUSTED_PROXIES='["127.0.0.1/32"]',
                      OTP_THROTTLE_RATES='{"otp_send": "2/minute"}', OTP_RATE_LIMIT_TTL="0",
                      OTP_WORKER_ENABLED="false", OTP_EMAIL_PROVIDER="console")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "otp_service", "serve", "--uds", str(sock)], env=env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():  # (a connect to a socket file not there yet leaks in httpcore)
            assert proc.poll() is None, "the service exited"
            assert time.monotonic() < deadline, "the service did not listen on the socket"
            time.sleep(0.05)
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://otp") as http:
            assert http.get("/healthz").status_code == 200

            def send(client_ip: str) -> int:
                headers = {"X-Forwarded-For": client_ip}
                return http.post(
                    "/api/v1/auth/otp/send", json={"email": "uds@example.org"}, headers=headers
                ).status_code

            assert [send("198.51.100.7") for _ in range(3)] == [202, 202, 429]  # one user's rate
            assert send("203.0.113.50") == 202  # another user behind the same proxy
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_serve_on_a_unix_socket_without_trusted_proxies_is_refused(tmp_path: Path, refused: Refusal) -> None:
    """A unix socket's peer has no IP address: without OTP_TRUSTED_PROXIES every user behind the
    local proxy would be one client, and the fourth user would meet the first three's rate."""
    status, stderr = refused(["serve", "--uds", str(tmp_path / "otp.sock")], OTP_EMAIL_PROVIDER="console")
    assert status == 2
    assert "OTP_TRUSTED_PROXIES" in stderr
    assert not (tmp_path / "otp.sock").exists()


@pytest.mark.parametrize("entry", ["serve", "worker", "uvicorn-factory"])
def test_the_console_provider_implied_is_refused_by_every_entry_point(entry: str, refused: Refusal) -> None:
    """With Redis or a database configured, the console provider (which prints codes) runs only
    when OTP_EMAIL_PROVIDER names it: serve, worker and the uvicorn factory all refuse."""
    status, stderr = refused(create_app_from_env if entry == "uvicorn-factory" else [entry],
                             OTP_REDIS_URL=REDIS_URL, OTP_SECRET_KEY="s" * 32)  # fmt: skip
    if entry == "uvicorn-factory":
        assert isinstance(status, str)  # SystemExit(message): the interpreter prints it and exits 1
    else:
        assert status == 2
    assert "OTP_EMAIL_PROVIDER" in stderr

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import REDIS_URL
from tests.support import ServiceProcess, clean_env


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


def test_several_workers_without_redis_are_refused() -> None:
    proc = _run(["serve", "--workers", "2"], _clean_env())
    assert proc.returncode == 2
    assert "--workers > 1 needs OTP_REDIS_URL" in proc.stderr


def test_production_shape_without_secret_is_refused() -> None:
    proc = _run(["serve"], {**_clean_env(), "OTP_REDIS_URL": REDIS_URL})
    assert proc.returncode == 2
    assert "OTP_SECRET_KEY is required" in proc.stderr


def test_bad_setting_is_refused_with_its_name() -> None:
    proc = _run(["serve"], {**_clean_env(), "OTP_CODE_TTL": "soon"})
    assert proc.returncode == 2
    assert "OTP_CODE_TTL" in proc.stderr


def test_embedded_default_serves_with_no_setup(tmp_path: Path) -> None:
    with ServiceProcess(clean_env(), tmp_path) as service:
        res = httpx.get(f"{service.url}/readyz", timeout=5)
    assert res.status_code == 200
    assert res.json()["checks"] == {"database": "ok", "redis": "ok"}
    assert (tmp_path / "otp_service.db").exists()


def test_migrate_needs_only_the_database_url(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/migrated.db"
    proc = _run(["migrate"], {**_clean_env(), "OTP_DATABASE_URL": url})
    assert proc.returncode == 0, proc.stderr
    assert "latest migration" in proc.stderr
    assert (tmp_path / "migrated.db").exists()
    bad = _run(["migrate"], {**_clean_env(), "OTP_DATABASE_URL": "mysql://x/y"})
    assert (bad.returncode, "OTP_DATABASE_URL: must be" in bad.stderr) == (2, True)


def test_the_console_provider_by_default_refuses_a_public_host() -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10", "otp.example"):
        proc = _run(["serve", "--host", host], _clean_env())
        assert proc.returncode == 2
        assert "refusing to serve on" in proc.stderr
        assert "OTP_EMAIL_PROVIDER" in proc.stderr


def test_the_console_provider_named_explicitly_may_serve_anywhere(tmp_path: Path) -> None:
    env = {**clean_env(), "OTP_EMAIL_PROVIDER": "console"}
    with ServiceProcess(env, tmp_path, "svc", "--host", "0.0.0.0") as service:
        assert httpx.get(f"{service.url}/healthz", timeout=5).status_code == 200


def test_short_admin_keys_are_refused_at_start_up() -> None:
    proc = _run(["serve"], {**_clean_env(), "OTP_ADMIN_API_KEYS": '["too-short"]'})
    assert proc.returncode == 2
    assert "OTP_ADMIN_API_KEYS: each key must be at least 32 characters" in proc.stderr


def test_a_worker_with_no_concurrency_is_refused() -> None:
    proc = _run(["worker", "--concurrency", "0"], {**_clean_env(), "OTP_REDIS_URL": REDIS_URL})
    assert proc.returncode == 2
    assert "--concurrency must be at least 1" in proc.stderr


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


def test_serve_on_a_unix_socket_without_trusted_proxies_is_refused(tmp_path: Path) -> None:
    """A unix socket's peer has no IP address: without OTP_TRUSTED_PROXIES every user behind the
    local proxy would be one client, and the fourth user would meet the first three's rate."""
    env = {**_clean_env(), "OTP_EMAIL_PROVIDER": "console"}
    proc = _run(["serve", "--uds", str(tmp_path / "otp.sock")], env, cwd=tmp_path, timeout=30)
    assert proc.returncode == 2
    assert "OTP_TRUSTED_PROXIES" in proc.stderr
    assert not (tmp_path / "otp.sock").exists()


def test_the_console_provider_implied_is_refused_by_every_entry_point(tmp_path: Path) -> None:
    """With Redis or a database configured, the console provider (which prints codes) runs only
    when OTP_EMAIL_PROVIDER names it: serve, worker and the uvicorn factory all refuse."""
    env = {**_clean_env(), "OTP_REDIS_URL": REDIS_URL, "OTP_SECRET_KEY": "s" * 32}
    for args in (["serve"], ["worker"]):
        proc = _run(args, env)
        assert proc.returncode == 2, args
        assert "OTP_EMAIL_PROVIDER" in proc.stderr, args
    factory = subprocess.run(
        [sys.executable, "-c", "from otp_service.app import create_app_from_env; create_app_from_env()"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert factory.returncode != 0
    assert "OTP_EMAIL_PROVIDER" in factory.stderr

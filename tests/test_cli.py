import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import REDIS_URL
from tests.support import ServiceProcess, clean_env


def _run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otp_service", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
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
    assert (bad.returncode, "OTP_DATABASE_URL must be" in bad.stderr) == (2, True)


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

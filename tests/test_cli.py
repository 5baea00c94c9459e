import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import REDIS_URL


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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "otp_service", "serve", "--port", str(port)],
        env=_clean_env(),
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                res = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert res.status_code == 200
        assert res.json()["checks"] == {"database": "ok", "redis": "not_configured"}
        assert (tmp_path / "otp_service.db").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()

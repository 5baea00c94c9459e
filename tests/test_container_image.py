"""The container image (issue 24), built from the repository's Dockerfile and run, with Debian's
own packages and no registry: mmdebstrap makes a bookworm base with python3 (the tarball is cached
between runs), podman imports it, `buildah bud --isolation chroot` builds FROM it (pip reaches
the package index through the host's CA bundle), and `buildah run --isolation chroot` runs the
image's commands as its non-root user on the host network, against the test PostgreSQL and Redis.
(`podman run` cannot set rlimits on these machines; `buildah run` needs none.)
"""

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL, TEST_SECRET, create_database, drop_database, pg_url
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]
BASE = "localhost/bookworm-python:local"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "otp-service" / "bookworm-python.tar"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CODE = re.compile(r"Your verification code is: (\d+)")
TOOLS = ("mmdebstrap", "buildah", "podman")

pytestmark = [
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in TOOLS),
        reason="needs mmdebstrap, buildah and podman: apt-get install mmdebstrap buildah podman "
        "(scripts/test.sh installs them when run as root)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="buildah's chroot isolation needs root"),
]


def run(*cmd: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def base_tarball() -> Path:
    """The Debian base as a tarball, made once and kept for later runs. Anything else at its
    path (a directory an earlier version of this test left there, which `podman import`
    refuses) is made again."""
    if not CACHE.is_file():
        remove(CACHE)
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        # mmdebstrap picks its output's format from the name's ending (a directory without
        # one): the format is given, and the name ends in .tar as well.
        partial = CACHE.with_name(f"{CACHE.stem}.partial.tar")
        remove(partial)  # an interrupted run's
        run("mmdebstrap", "--variant=minbase", "--format=tar", "--include=python3,python3-venv,ca-certificates",
            "bookworm", str(partial), timeout=600)  # fmt: skip
        partial.rename(CACHE)
    return CACHE


def base_image() -> None:
    """The Debian base as a local image."""
    if run("podman", "image", "exists", BASE, check=False).returncode == 0:
        return
    run("podman", "import", str(base_tarball()), BASE)


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    base_image()
    tag = f"localhost/otp-service:test-{secrets.token_hex(4)}"
    build = ["buildah", "bud", "--isolation", "chroot", "--network", "host", "--layers=false",
             "--build-arg", f"BASE_IMAGE={BASE}", "-t", tag]  # fmt: skip
    if CA_BUNDLE.exists():  # the package index is reached through this machine's CA
        build += ["--volume", "/etc/ssl/certs:/etc/ssl/certs:ro", "--build-arg", f"PIP_CERT={CA_BUNDLE}"]
    run(*build, str(ROOT), timeout=900)
    try:
        yield tag
    finally:
        run("buildah", "rmi", "--force", tag, check=False)


@pytest.fixture
def container(image: str) -> Iterator[str]:
    name = run("buildah", "from", image).stdout.strip()
    try:
        yield name
    finally:
        run("buildah", "rm", name, check=False)


def inside(container: str, *command: str, env: dict[str, str] | None = None) -> list[str]:
    """`buildah run` of a command in the image, as its own user (the image's USER), on the host
    network, with `env` set for it."""
    settings = [f"{k}={v}" for k, v in (env or {}).items()]
    return ["buildah", "run", "--isolation", "chroot", "--network", "host", container, "--",
            *(["env", *settings] if settings else []), *command]  # fmt: skip


class Running:
    """A long-running command in the image; its output collected as it comes."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []
        assert self.proc.stdout is not None
        stream = self.proc.stdout
        self._reader = threading.Thread(
            target=lambda: self.output.extend(iter(stream.readline, "")), daemon=True
        )
        self._reader.start()

    def text(self) -> str:
        return "".join(self.output)

    def stop(self) -> int:
        self.proc.terminate()
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


@contextlib.contextmanager
def database() -> Iterator[str]:
    name = f"otp_image_{secrets.token_hex(4)}"
    asyncio.run(create_database(name))
    try:
        yield pg_url(name)
    finally:
        asyncio.run(drop_database(name))


def service_env(db: str, prefix: str, **extra: str) -> dict[str, str]:
    return {"OTP_DATABASE_URL": db, "OTP_REDIS_URL": REDIS_URL, "OTP_REDIS_KEY_PREFIX": prefix,
            "OTP_SECRET_KEY": TEST_SECRET, "OTP_EMAIL_PROVIDER": "console", **extra}  # fmt: skip


def wait_ready(base: str, process: Running, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.proc.poll() is None, process.text()
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise AssertionError(f"{base} never became ready:\n{process.text()}")


def code_in(process: Running, email: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = process.text()
        if email in text and CODE.search(text):
            return str(CODE.findall(text)[-1])
        time.sleep(0.2)
    raise AssertionError(f"no email to {email}:\n{process.text()}")


def test_the_image_runs_as_a_non_root_user(image: str, container: str) -> None:
    config = json.loads(run("buildah", "inspect", "--type", "image", image).stdout)["OCIv1"]["config"]
    assert config["User"] == "otp"
    assert config["Cmd"] == ["otp-service", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "Healthcheck" not in config or config["Healthcheck"]  # OCI drops it; Docker format keeps it
    uid = run(*inside(container, "id", "-u")).stdout.strip()
    assert uid != "0"
    assert run(*inside(container, "otp-service", "--help")).returncode == 0


def test_migrate_serve_and_a_round_trip(container: str, key_prefix: str) -> None:
    with database() as db:
        migrated = run(*inside(container, "otp-service", "migrate", env={"OTP_DATABASE_URL": db}))
        assert "latest migration" in migrated.stdout + migrated.stderr
        port = free_port()
        serve = Running(inside(container, "otp-service", "serve", "--host", "127.0.0.1", "--port", str(port),
                               env=service_env(db, key_prefix)))  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, serve)
            assert httpx.get(f"{base}/healthz").status_code == 200
            email = f"image-{secrets.token_hex(4)}@example.org"
            assert httpx.post(f"{base}/api/v1/auth/otp/send", json={"email": email}).status_code == 202
            code = code_in(serve, email)  # the in-process worker's console email
            res = httpx.post(f"{base}/api/v1/auth/otp/verify", json={"email": email, "code": code})
            assert res.status_code == 200, res.text
            assert res.json() == {"status": "approved", "email": email}
        finally:
            serve.stop()


def test_without_configuration_the_image_refuses_to_print_codes(image: str, container: str) -> None:
    """The image's own command, nothing set: the README promises it stops with the console message."""
    cmd = json.loads(run("buildah", "inspect", "--type", "image", image).stdout)["OCIv1"]["config"]["Cmd"]
    done = run(*inside(container, *cmd), check=False, timeout=60)
    assert done.returncode != 0
    assert "refusing to serve on 0.0.0.0 with the console email provider" in done.stderr + done.stdout
    assert "OTP_EMAIL_PROVIDER" in done.stderr + done.stdout


def test_the_same_image_runs_the_worker(container: str, key_prefix: str) -> None:
    """`serve` without a worker and `otp-service worker` beside it, both from the image: the
    worker delivers what the web process queued."""
    with database() as db:
        run(*inside(container, "otp-service", "migrate", env={"OTP_DATABASE_URL": db}))
        env = service_env(db, key_prefix, OTP_WORKER_ENABLED="false")
        port = free_port()
        serve = Running(
            inside(container, "otp-service", "serve", "--host", "127.0.0.1", "--port", str(port), env=env)
        )
        worker = Running(inside(container, "otp-service", "worker", env=env))
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, serve)
            email = f"image-worker-{secrets.token_hex(4)}@example.org"
            assert httpx.post(f"{base}/api/v1/auth/otp/send", json={"email": email}).status_code == 202
            code = code_in(worker, email, timeout=60)
            assert email not in serve.text()  # the web process queued it; the worker emailed it
            res = httpx.post(f"{base}/api/v1/auth/otp/verify", json={"email": email, "code": code})
            assert res.status_code == 200, res.text
            assert worker.proc.poll() is None, worker.text()  # still running, as a worker does
            assert '"event": "worker.started"' in worker.text()
        finally:
            # buildah run ends its command with SIGKILL when it is itself terminated: the exit
            # status says nothing about the worker's own shutdown (tests/test_worker.py does).
            worker.stop()
            serve.stop()

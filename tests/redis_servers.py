"""Redis server processes of a test's own (redis-server from the machine), for the cases the
shared test Redis cannot show: a full one, a replica, one still loading, one killed and started
again."""

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port


@dataclass
class RedisServer:
    port: int
    workdir: Path
    args: tuple[str, ...]
    process: "subprocess.Popen[bytes] | None" = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> str:
        run = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=30
        )
        return run.stdout.strip()

    def start(self, *, wait: bool = True) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if wait:
            self.wait_for("PONG")

    def wait_for(self, answer: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.cli("PING") != answer:
            assert time.monotonic() < deadline, f"redis on {self.port} never answered {answer}"
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None


@contextlib.contextmanager
def redis_server(workdir: Path, *args: str, start: bool = True) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli are needed (apt-get install redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(free_port(), workdir, ("--save", "", "--appendonly", "no", *args))
    try:
        if start:
            server.start()
        yield server
    finally:
        server.kill()

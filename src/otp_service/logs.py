"""Structured logs: one JSON object per line, dotted event names, a request id, no secrets.

Addresses are masked (`u***@example.com`) by the callers through `mask_email`; codes are never
passed to a logger at all. Only the console provider prints a whole email, on stdout, by design.
"""

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from otp_service.tasks import pause

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
app_var: ContextVar[str] = ContextVar("app", default="")
"""The application (CONTRACT §8) the request or job being handled is of; '' the service-wide one,
which no line names."""

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def mask_email(address: str) -> str:
    local, sep, domain = address.rpartition("@")
    if not sep:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_subnet(subnet: str) -> str:
    """A subnet with its last visible part hidden: 203.0.113.0/24 -> 203.0.x.0/24,
    2001:db8:42::/48 -> 2001:db8:x::/48 (enough to tell blocks apart in an incident, not to
    point at one network)."""
    network, slash, length = subnet.partition("/")
    if not slash:
        return "***"
    if "." in network:
        parts = network.split(".")
        return ".".join([*parts[:2], "x", *parts[3:]]) + "/" + length
    head = [g for g in network.split("::")[0].split(":") if g]
    return ":".join([*head[:2], "x"]) + "::/" + length


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        app = app_var.get()
        if app:
            out["app"] = app
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("otp_service")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.propagate = False
    # uvicorn's access log prints the client address and path only; keep it structured too.
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = [handler]
    access.propagate = False


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"otp_service.{name}")


class Tally:
    """A frequent event logged as counts per interval rather than a line each (issue 23): under a
    flood, one line per refusal was most of the log volume and a real share of the CPU. `add`
    costs a dict update; the line (`event`, `counts` by key, `seconds` covered) is written by the
    first `add` after the interval, by `run`'s timer, or by `flush` at shutdown."""

    def __init__(self, logger: logging.Logger, event: str, *, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._log = logger
        self._event = event
        self._interval = interval
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._since = clock()

    def add(self, key: str) -> None:
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        if self._clock() - self._since >= self._interval:
            self.flush()

    def flush(self) -> None:
        now = self._clock()
        if self._counts and self._log.isEnabledFor(logging.INFO):
            self._log.info(
                self._event, extra={"counts": self._counts, "seconds": round(now - self._since, 1)}
            )
        self._counts = {}
        self._since = now

    async def run(self, stopping: asyncio.Event) -> None:
        """Flush every interval until `stopping`, then once more."""
        while not stopping.is_set():
            await pause(stopping, self._interval)
            if self._clock() - self._since >= self._interval or stopping.is_set():
                self.flush()

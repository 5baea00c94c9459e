"""Refusals are logged as counts per interval, not a line each (issue 23): a flood of refusals
writes one line per interval with the count of each code, which /metrics counts too."""

import asyncio
import json
import logging
from typing import Any

import pytest

from otp_service.api.problems import REFUSALS
from otp_service.logs import JsonFormatter, Tally
from tests.support import FakeClock, unique_email


def lines(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.getMessage() == event]


async def test_a_flood_of_refusals_is_one_line_of_counts(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otp_service")
    REFUSALS.flush()  # what earlier tests left
    caplog.clear()
    email = unique_email()
    answers = [
        (await client.http.post("/api/v1/auth/otp/send", json={"email": email})).status_code for _ in range(3)
    ]
    assert answers == [202, 429, 429]  # cooldown
    for _ in range(4):
        res = await client.http.post("/api/v1/auth/otp/verify", json={"email": email, "code": "000000"})
        assert res.status_code == 400
    res = await client.http.post("/api/v1/auth/otp/send", json={"email": "x@mailinator.com"})
    assert res.json()["code"] == "rate_limited"  # the client's 3 sends a minute
    # Nothing per refusal: no line names a refused address.
    assert [
        r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and "refus" in r.getMessage()
    ] == []
    REFUSALS.flush()
    [line] = lines(caplog, "otp.refusals")
    assert line["counts"] == {"cooldown": 2, "invalid_code": 4, "rate_limited": 1}
    assert line["level"] == "info"
    assert email not in json.dumps(line)


def test_the_tally_writes_when_the_interval_is_over() -> None:
    clock = FakeClock(100.0)
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("otp_service.test_tally")
    logger.setLevel(logging.INFO)
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign,assignment]
    logger.addHandler(handler)
    try:
        tally = Tally(logger, "otp.refusals", interval=10, clock=clock)
        for _ in range(1000):
            tally.add("rate_limited")
        clock.advance(9.9)
        tally.add("cooldown")
        assert records == []
        clock.advance(0.2)
        tally.add("cooldown")  # the interval is over: one line for all of it
        assert [(r.counts, r.seconds) for r in records] == [({"rate_limited": 1000, "cooldown": 2}, 10.1)]  # type: ignore[attr-defined]
        tally.flush()  # nothing counted since: no line
        assert len(records) == 1
    finally:
        logger.removeHandler(handler)


async def test_the_timer_writes_the_last_counts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="otp_service")
    tally = Tally(logging.getLogger("otp_service.test_timer"), "otp.refusals", interval=0.05)
    stopping = asyncio.Event()
    runner = asyncio.create_task(tally.run(stopping))
    tally.add("rate_limited")
    await asyncio.sleep(0.2)  # no more refusals: the timer writes the line
    assert [getattr(r, "counts", None) for r in caplog.records if r.getMessage() == "otp.refusals"] == [
        {"rate_limited": 1}
    ]
    tally.add("cooldown")
    stopping.set()
    await runner  # and once more when stopping
    assert [getattr(r, "counts", None) for r in caplog.records if r.getMessage() == "otp.refusals"][-1] == {
        "cooldown": 1
    }

"""The one supervisor of background loops (supervise.py): a loop that raises is logged, counted
and started again; each pass's success is visible; stop ends it at once."""

import asyncio
import logging

import pytest

from otp_service.metrics import LOOP_LAST_SUCCESS, LOOP_RESTARTS
from otp_service.supervise import Beat, supervise


async def test_a_crashing_loop_is_restarted_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="otp_service")
    stopping = asyncio.Event()
    runs = 0

    async def flaky(beat: Beat) -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise KeyError("a bug")  # nothing the loop itself expects
        beat.ok()
        await stopping.wait()

    restarts = LOOP_RESTARTS.labels("test_flaky")
    before = restarts._value.get()
    task = asyncio.create_task(supervise("test_flaky", flaky, stopping=stopping))
    async with asyncio.timeout(5):
        while runs < 3:
            await asyncio.sleep(0.01)
    assert restarts._value.get() == before + 2
    assert LOOP_LAST_SUCCESS.labels("test_flaky")._value.get() > 0
    assert [r.getMessage() for r in caplog.records].count("test_flaky.crashed") == 2
    stopping.set()
    await asyncio.wait_for(task, 1)


async def test_stop_ends_the_backoff_at_once() -> None:
    stopping = asyncio.Event()

    async def always_fails(beat: Beat) -> None:
        raise RuntimeError("down for good")

    task = asyncio.create_task(supervise("test_failing", always_fails, stopping=stopping))
    await asyncio.sleep(0.5)  # several restarts, the backoff growing
    stopping.set()
    await asyncio.wait_for(task, 0.5)


async def test_cancellation_is_not_a_crash() -> None:
    async def forever(beat: Beat) -> None:
        await asyncio.sleep(3600)

    task = asyncio.create_task(supervise("test_cancelled", forever, stopping=asyncio.Event()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

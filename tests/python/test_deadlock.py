"""Deadlocks: a run that can never make progress says so instead of hanging."""

from __future__ import annotations

import logging

import pytest

import tiffany


def test_two_tasks_joining_each_other_raise_deadlock(sched: tiffany.Scheduler) -> None:
    tasks: dict[str, tiffany.TaskHandle[None]] = {}

    async def a() -> None:
        await tiffany.sleep(1)
        await tasks["b"]

    async def b() -> None:
        await tiffany.sleep(1)
        await tasks["a"]

    tasks["a"] = sched.spawn(a(), name="alpha")
    tasks["b"] = sched.spawn(b(), name="beta")
    with pytest.raises(tiffany.Deadlock) as info:
        sched.run()
    message = str(info.value)
    assert f"task {tasks['a'].id} (alpha) is joining task {tasks['b'].id}" in message
    assert f"task {tasks['b'].id} (beta) is joining task {tasks['a'].id}" in message
    assert sched.now() == 1.0


def test_a_lone_event_wait_raises_deadlock() -> None:
    async def main() -> None:
        await tiffany.Event().wait()

    with pytest.raises(tiffany.Deadlock, match=r"task \d+ \(main\) (is )?waiting for event"):
        tiffany.run(main(), clock="virtual")


def test_a_waiter_left_behind_by_main_is_cancelled_not_a_deadlock() -> None:
    cleaned: list[str] = []

    async def waiter() -> None:
        try:
            await tiffany.Event().wait()
        finally:
            cleaned.append("waiter")

    async def main() -> str:
        tiffany.spawn(waiter())
        await tiffany.sleep(1)
        return "done"

    assert tiffany.run(main(), clock="virtual") == "done"
    assert cleaned == ["waiter"]


def test_a_live_handle_can_still_wake_the_run(sched: tiffany.Scheduler) -> None:
    # A handle held elsewhere may set things going again: no deadlock is
    # reported while one is alive. Here the handle cancels the waiter from a
    # done callback of a task sleeping on the virtual clock.
    handle = sched.handle()
    ev = tiffany.Event()

    async def waiter() -> None:
        await ev.wait()

    async def timer() -> None:
        await tiffany.sleep(5)

    w = sched.spawn(waiter())
    sched.spawn(timer()).add_done_callback(lambda _: handle.cancel(w.id))
    sched.run()
    assert w.state == "cancelled"


def test_under_the_real_clock_a_stall_is_reported_once_as_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ev = tiffany.Event()

    class SetOnWarning(logging.Handler):
        """Sets the event when the warning arrives (on the scheduler's thread)."""

        def emit(self, record: logging.LogRecord) -> None:
            ev.set()

    async def main() -> str:
        await ev.wait()
        return "woken"

    logger = logging.getLogger("tiffany")
    handler = SetOnWarning(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.WARNING, logger="tiffany"):
            assert tiffany.run(main()) == "woken"
    finally:
        logger.removeHandler(handler)
    warnings = [r for r in caplog.records if "deadlock" in r.getMessage()]
    assert len(warnings) == 1
    assert "waiting for event" in warnings[0].getMessage()

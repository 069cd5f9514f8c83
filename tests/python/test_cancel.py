"""Cancellation: delivered at the await; a task's cancel() is asyncio's edge, a
low-level ``TaskHandle``'s is level-triggered."""

from __future__ import annotations

import asyncio

import pytest

import tiffany
import tiffany.lowlevel
import tiffany.testing


def test_cancel_runs_finally_and_joiner_sees_task_cancelled() -> None:
    cleaned: list[str] = []

    async def victim() -> None:
        try:
            await tiffany.sleep(100)
        finally:
            cleaned.append("finally")

    async def main() -> str:
        t = tiffany.spawn(victim())
        await tiffany.sleep(1)
        assert t.cancel() is True
        with pytest.raises(asyncio.CancelledError):
            await t
        assert t.state == "cancelled"
        assert t.cancel() is False
        return "done"

    assert tiffany.run(main(), clock="virtual") == "done"
    assert cleaned == ["finally"]
    assert issubclass(tiffany.Cancelled, BaseException)
    assert not issubclass(tiffany.Cancelled, Exception)


def test_a_task_handle_cancellation_is_level_triggered(sched: tiffany.Scheduler) -> None:
    # The low-level handle (no asyncio loop runs: Scheduler.run) keeps the
    # kernel's cancel, the task's root scope. A tiffany.Task has asyncio's
    # (test_task_model.py).
    seen: list[str] = []

    async def stubborn() -> str:
        try:
            await tiffany.sleep(100)
        except tiffany.Cancelled:
            seen.append("first")
        try:
            await tiffany.sleep(100)
        except tiffany.Cancelled:
            seen.append("second")
        return "survived"

    async def main() -> None:
        t = tiffany.spawn(stubborn())
        assert isinstance(t, tiffany.TaskHandle)
        await tiffany.yield_now()
        t.cancel()
        assert await t == "survived"
        assert t.done() and not t.cancelled()

    sched.run(main())
    assert seen == ["first", "second"]

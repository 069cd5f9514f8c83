"""Shared fixtures of the Python suite."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import tiffany


@pytest.fixture
def sched() -> tiffany.Scheduler:
    """A fresh scheduler on the virtual clock: deterministic, and an hour of
    sleeping takes no wall time."""
    return tiffany.Scheduler(clock="virtual")


@pytest.fixture
def cancelled_state() -> Callable[[Coroutine[Any, Any, Any], float], str]:
    """Runs ``coro`` as a task, cancels it ``after`` virtual seconds, checks
    that joining it raises ``CancelledError``, and returns its final state."""

    def run(coro: Coroutine[Any, Any, Any], after: float) -> str:
        async def main() -> str:
            t = tiffany.spawn(coro)
            await tiffany.sleep(after)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            return t.state

        return tiffany.run(main(), clock="virtual")

    return run

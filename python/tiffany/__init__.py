"""Tiffany: a coroutine-first task runtime with a native kernel.

Tasks are ``async def`` coroutines (or pyos-style generators) run by a
scheduler written in Rust: priorities, deterministic virtual time, clean
cancellation, CPU budgets, back-pressure and an event for every transition.

    import tiffany

    async def child(x):
        await tiffany.sleep(0.05)
        return x * 2

    async def main():
        t = tiffany.spawn(child(21), priority=5, name="child")
        assert await t == 42
        u = tiffany.spawn(child(1), deps=[t])
        return await tiffany.join(u, timeout=1.0)

    print(tiffany.run(main(), clock="virtual"))
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

from tiffany._native import (
    PRI_DEFAULT,
    PRI_LOWEST,
    PRI_SYSTEM,
    Cancelled,
    GetTid,
    JoinTimeout,
    Scheduler,
    SpawnError,
    Syscall,
    Task,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    admit,
    current_task,
    join,
    now,
    shutdown,
    sleep,
    spawn,
    yield_now,
)

__all__ = [
    "PRI_DEFAULT",
    "PRI_LOWEST",
    "PRI_SYSTEM",
    "Cancelled",
    "GetTid",
    "JoinTimeout",
    "Scheduler",
    "SpawnError",
    "Syscall",
    "Task",
    "TaskCancelled",
    "TaskEvent",
    "TaskFailed",
    "admit",
    "current_task",
    "join",
    "now",
    "run",
    "shutdown",
    "sleep",
    "spawn",
    "yield_now",
]

T = TypeVar("T")


def run(
    main: Coroutine[Any, Any, T] | Generator[Any, Any, T],
    *,
    clock: str = "real",
    quantum: float = 0.005,
    capacity: int | None = None,
    backpressure: Callable[[], float] | None = None,
) -> T:
    """Run ``main`` on a fresh scheduler until every non-daemon task has finished.

    Returns ``main``'s result or raises its exception. The keyword arguments
    are those of :class:`Scheduler`.
    """
    sched = Scheduler(clock=clock, quantum=quantum, capacity=capacity, backpressure=backpressure)
    result: T = sched.run(main)
    return result

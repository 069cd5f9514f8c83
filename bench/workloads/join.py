"""Workload 7 (Python side), join a child: one task, M times, spawns a child
that sleeps 0 and returns 1, and waits for it.

The figure is the time per spawn + join. Tiffany runs it twice: with a native
(Rust) child, ``tiffany.testing.spawn_native_sleep(sched, 0, 1)`` — a Python
task joining a native one — and with a Python coroutine child, like the peers. trio has no
task handles: a nursery per child is its way to wait for one task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def _result(t0: float, t1: float, joined: int) -> dict[str, Any]:
    return {"seconds": t1 - t0, "counts": {"joins": joined}}


def on_tiffany(p: dict[str, Any]) -> dict[str, Any]:
    import tiffany
    from tiffany.testing import spawn_native_sleep

    m = p["joins"]
    sched = tiffany.Scheduler()

    async def child() -> int:
        await tiffany.sleep(0)
        return 1

    async def main() -> tuple[float, float, int]:
        joined = 0
        t0 = time.perf_counter()
        if p["child"] == "native":
            for _ in range(m):
                joined += await spawn_native_sleep(sched, 0, 1)
        else:
            for _ in range(m):
                joined += await tiffany.spawn(child())
        return t0, time.perf_counter(), joined

    return _result(*sched.run(main()))


def on_asyncio(p: dict[str, Any], loop_factory: Callable[[], Any]) -> dict[str, Any]:
    import asyncio

    m = p["joins"]

    async def child() -> int:
        await asyncio.sleep(0)
        return 1

    async def main() -> tuple[float, float, int]:
        joined = 0
        t0 = time.perf_counter()
        for _ in range(m):
            joined += await asyncio.create_task(child())
        return t0, time.perf_counter(), joined

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return _result(*runner.run(main()))


def on_trio(p: dict[str, Any]) -> dict[str, Any]:
    import trio

    m = p["joins"]
    joined = 0

    async def child() -> None:
        nonlocal joined
        await trio.sleep(0)
        joined += 1

    async def main() -> tuple[float, float]:
        t0 = time.perf_counter()
        for _ in range(m):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(child)
        return t0, time.perf_counter()

    t0, t1 = trio.run(main)
    return _result(t0, t1, joined)


def on_gevent(p: dict[str, Any]) -> dict[str, Any]:
    import gevent

    m = p["joins"]

    def child() -> int:
        gevent.sleep(0)
        return 1

    joined = 0
    t0 = time.perf_counter()
    for _ in range(m):
        g = gevent.spawn(child)
        joined += g.get()
    return _result(t0, time.perf_counter(), joined)

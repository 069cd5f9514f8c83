"""Workload 2, spawn: spawn N trivial tasks and wait until all have finished.

A trivial task only calls ``progress.finish()``. Each runtime waits for its
tasks the idiomatic structured way: Tiffany's ``Scheduler.run`` returns when
every task has finished, asyncio's ``TaskGroup``, trio's nursery, gevent's
``joinall``. The figure is the whole time (spawning, running, finishing,
waiting) divided by N; ``maxrss`` (the subprocess's peak RSS, interpreter
included) is reported with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.workloads.common import Progress


def _result(progress: Progress, t0: float, t1: float) -> dict[str, Any]:
    return {"seconds": t1 - t0, "counts": {"tasks": progress.finished}}


def on_tiffany(p: dict[str, Any]) -> dict[str, Any]:
    import tiffany

    n = p["tasks"]
    progress = Progress(n)

    async def trivial() -> None:
        progress.finish()

    async def main() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            tiffany.spawn(trivial())
        return t0

    # main as a task and run() without main: it returns once every task
    # has finished (run(main()) would cancel the rest when main returns).
    sched = tiffany.Scheduler()
    starter = sched.spawn(main())
    sched.run()
    t0 = starter.result()
    return _result(progress, t0, time.perf_counter())


def on_asyncio(p: dict[str, Any], loop_factory: Callable[[], Any]) -> dict[str, Any]:
    import asyncio

    n = p["tasks"]
    progress = Progress(n)

    async def trivial() -> None:
        progress.finish()

    async def main() -> tuple[float, float]:
        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(trivial())
        return t0, time.perf_counter()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        t0, t1 = runner.run(main())
    return _result(progress, t0, t1)


def on_trio(p: dict[str, Any]) -> dict[str, Any]:
    import trio

    n = p["tasks"]
    progress = Progress(n)

    async def trivial() -> None:
        progress.finish()

    async def main() -> tuple[float, float]:
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(trivial)
        return t0, time.perf_counter()

    t0, t1 = trio.run(main)
    return _result(progress, t0, t1)


def on_gevent(p: dict[str, Any]) -> dict[str, Any]:
    import gevent

    n = p["tasks"]
    progress = Progress(n)

    def trivial() -> None:
        progress.finish()

    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(trivial) for _ in range(n)])
    return _result(progress, t0, time.perf_counter())

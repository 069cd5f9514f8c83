"""Workload 1, switch: N tasks each doing K cooperative yields.

Every task calls ``progress.start()``, yields K times with the runtime's
"sleep 0", then ``progress.finish(K)``. The figure is the time from "every
task has started" to "every task is done" divided by N×K: the cost of one
yield round trip (task → scheduler → the next ready task), with the spawning
outside the timed phase. ``total_seconds`` (spawn included) is reported too.

Workload 8, telemetry, is this workload on Tiffany with and without one
``on_event`` subscriber; the subscribed run counts the events in a second,
untimed run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.workloads.common import Progress


def _result(progress: Progress, t0: float, t1: float) -> dict[str, Any]:
    return {
        "seconds": progress.t_all_finished - progress.t_all_started,
        "total_seconds": t1 - t0,
        "counts": {"tasks": progress.finished, "steps": progress.units},
    }


def on_tiffany(p: dict[str, Any]) -> dict[str, Any]:
    import tiffany

    n, k = p["tasks"], p["yields"]

    def once(subscriber: Callable[[Any], object] | None) -> dict[str, Any]:
        progress = Progress(n)

        async def worker() -> None:
            progress.start()
            for _ in range(k):
                await tiffany.sleep(0)
            progress.finish(k)

        async def main() -> None:
            for _ in range(n):
                tiffany.spawn(worker())
            # run() returns once every task has finished.

        sched = tiffany.Scheduler()
        if subscriber is not None:
            sched.on_event(subscriber)
        t0 = time.perf_counter()
        sched.run(main())
        return _result(progress, t0, time.perf_counter())

    if not p.get("subscriber"):
        return once(None)
    result = once(lambda e: None)
    events = 0

    def count(e: Any) -> None:
        nonlocal events
        events += 1

    once(count)  # untimed: the number of events (transitions) of the same run
    result["events"] = events
    return result


def on_asyncio(p: dict[str, Any], loop_factory: Callable[[], Any]) -> dict[str, Any]:
    import asyncio

    n, k = p["tasks"], p["yields"]
    progress = Progress(n)

    async def worker() -> None:
        progress.start()
        for _ in range(k):
            await asyncio.sleep(0)
        progress.finish(k)

    async def main() -> tuple[float, float]:
        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(worker())
        return t0, time.perf_counter()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        t0, t1 = runner.run(main())
    return _result(progress, t0, t1)


def on_trio(p: dict[str, Any]) -> dict[str, Any]:
    import trio

    n, k = p["tasks"], p["yields"]
    progress = Progress(n)

    async def worker() -> None:
        progress.start()
        for _ in range(k):
            await trio.sleep(0)
        progress.finish(k)

    async def main() -> tuple[float, float]:
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(worker)
        return t0, time.perf_counter()

    t0, t1 = trio.run(main)
    return _result(progress, t0, t1)


def on_gevent(p: dict[str, Any]) -> dict[str, Any]:
    import gevent

    n, k = p["tasks"], p["yields"]
    progress = Progress(n)

    def worker() -> None:
        progress.start()
        for _ in range(k):
            gevent.sleep(0)
        progress.finish(k)

    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(worker) for _ in range(n)])
    return _result(progress, t0, time.perf_counter())

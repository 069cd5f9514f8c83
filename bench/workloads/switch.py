"""Workload 1, switch: N tasks each doing K cooperative yields.

Every task calls ``progress.start()``, yields K times with the runtime's
"sleep 0", then ``progress.finish(K)``. The figure is the time from "every
task has started" to "every task is done" divided by N×K: the cost of one
yield round trip (task → scheduler → the next ready task), with the spawning
outside the timed phase. ``total_seconds`` (spawn included) is reported too.

Workload 8, telemetry, is this workload on Tiffany with no subscriber, with
one ``on_event`` subscriber (a Python call per event), with one ``on_events``
subscriber (a Python call per batch of events), and with the timing metrics
off; a subscribed run counts the events in a second, untimed run.
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

    def once(subscribe: Callable[[Any], None] | None) -> dict[str, Any]:
        progress = Progress(n)

        async def worker() -> None:
            progress.start()
            for _ in range(k):
                await tiffany.sleep(0)
            progress.finish(k)

        async def main() -> None:
            for _ in range(n):
                tiffany.spawn(worker())
            # run() without main returns once every task has finished.

        sched = tiffany.Scheduler(timing_metrics=p.get("timing_metrics", True))
        if subscribe is not None:
            subscribe(sched)
        t0 = time.perf_counter()
        sched.spawn(main())
        sched.run()
        return _result(progress, t0, time.perf_counter())

    kind = p.get("subscriber")
    if kind is None:
        return once(None)
    events = 0
    if kind == "on_event":
        result = once(lambda s: s.on_event(lambda e: None))

        def count(e: Any) -> None:
            nonlocal events
            events += 1

        once(lambda s: s.on_event(count))  # untimed: the number of events
    elif kind == "on_events":
        result = once(lambda s: s.on_events(lambda batch: None))

        def count_batch(batch: Any) -> None:
            nonlocal events
            events += len(batch)

        once(lambda s: s.on_events(count_batch))  # untimed: the number of events
    else:
        raise ValueError(f"unknown subscriber {kind!r}")
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

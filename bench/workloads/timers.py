"""Workloads 3 and 4, timers: N tasks each sleeping its own random duration.

The durations come from ``durations(n, max, seed)``: the same list for every
runtime. Each task sleeps its duration, then calls ``progress.finish()``.

- Real clock (workload 3): the figure is the wall time beyond the longest
  sleep — the runtime's overhead for spawning, arming, firing and finishing N
  timers.
- Virtual clock (workload 4): hours of sleeping take no real time; the figure
  is the wall time of the whole run. Tiffany uses ``Scheduler(clock="virtual")``,
  trio ``trio.testing.MockClock(autojump_threshold=0)``; the others have no
  virtual clock. ``virtual_end`` (the clock at the end) is checked against the
  longest sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.workloads.common import Progress, durations


def _result(
    p: dict[str, Any], progress: Progress, t0: float, t1: float, virtual_end: float | None = None
) -> dict[str, Any]:
    longest = max(durations(p["tasks"], p["max_sleep"], p["seed"]))
    out: dict[str, Any] = {"seconds": t1 - t0, "counts": {"tasks": progress.finished}}
    if p["virtual"]:
        assert virtual_end is not None and abs(virtual_end - longest) < 1e-3, (virtual_end, longest)
        out["virtual_end"] = virtual_end
    else:
        out["overhead"] = t1 - t0 - longest
    return out


def on_tiffany(p: dict[str, Any]) -> dict[str, Any]:
    import tiffany

    ds = durations(p["tasks"], p["max_sleep"], p["seed"])
    progress = Progress(len(ds))

    async def sleeper(d: float) -> None:
        await tiffany.sleep(d)
        progress.finish()

    async def main() -> float:
        t0 = time.perf_counter()
        for d in ds:
            tiffany.spawn(sleeper(d))
        return t0

    sched = tiffany.Scheduler(clock="virtual" if p["virtual"] else "real")
    starter = sched.spawn(main())
    sched.run()  # without main: returns once every task has finished
    t0 = starter.result()
    return _result(p, progress, t0, time.perf_counter(), sched.now())


def on_asyncio(p: dict[str, Any], loop_factory: Callable[[], Any]) -> dict[str, Any]:
    import asyncio

    assert not p["virtual"], "asyncio has no virtual clock"
    ds = durations(p["tasks"], p["max_sleep"], p["seed"])
    progress = Progress(len(ds))

    async def sleeper(d: float) -> None:
        await asyncio.sleep(d)
        progress.finish()

    async def main() -> tuple[float, float]:
        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for d in ds:
                tg.create_task(sleeper(d))
        return t0, time.perf_counter()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        t0, t1 = runner.run(main())
    return _result(p, progress, t0, t1)


def on_trio(p: dict[str, Any]) -> dict[str, Any]:
    import trio
    import trio.testing

    ds = durations(p["tasks"], p["max_sleep"], p["seed"])
    progress = Progress(len(ds))

    async def sleeper(d: float) -> None:
        await trio.sleep(d)
        progress.finish()

    async def main() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for d in ds:
                nursery.start_soon(sleeper, d)
        return t0, time.perf_counter(), trio.current_time() - start

    if p["virtual"]:
        t0, t1, elapsed = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        return _result(p, progress, t0, t1, elapsed)
    t0, t1, _ = trio.run(main)
    return _result(p, progress, t0, t1)


def on_gevent(p: dict[str, Any]) -> dict[str, Any]:
    import gevent

    assert not p["virtual"], "gevent has no virtual clock"
    ds = durations(p["tasks"], p["max_sleep"], p["seed"])
    progress = Progress(len(ds))

    def sleeper(d: float) -> None:
        gevent.sleep(d)
        progress.finish()

    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(sleeper, d) for d in ds])
    return _result(p, progress, t0, time.perf_counter())

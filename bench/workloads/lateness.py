"""Workload 10, wake-up lateness under load: does a due timer of an urgent
task preempt busy tasks promptly?

One task sleeps 10 ms, ``wakes`` times in a row, while ``busy`` other tasks
loop on a zero-length yield until it is done. Each wake's lateness is the
wall time it woke minus the time it asked for (``perf_counter``). Tiffany
gives the sleeper priority 1 and the busy tasks 200; asyncio, uvloop and
rloop have no priorities (their busy tasks are plain). The figure is the
median lateness; the 99th percentile is beside it.

Why it matters: with priorities, an urgent timer must not wait behind
low-priority work for the loop's next look at its timers (the issue that
added this workload: 1.7–3 ms late at the median before the fix).

uvloop's figures can be negative: libuv keeps time in whole milliseconds and
caches it per loop iteration, so a 10 ms timer may fire up to a millisecond
early by ``perf_counter``. The target compares Tiffany with asyncio, which,
like Tiffany, never fires a timer early.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def _result(lateness: list[float], p: dict[str, Any], spins: int) -> dict[str, Any]:
    ordered = sorted(lateness)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "median_us": statistics.median(ordered) * 1e6,
        "p99_us": p99 * 1e6,
        "busy_steps": spins,
        "counts": {"wakes": len(lateness)},
    }


def on_tiffany(p: dict[str, Any]) -> dict[str, Any]:
    import tiffany

    lateness: list[float] = []
    done = [False]
    spins = [0]

    async def urgent() -> None:
        for _ in range(p["wakes"]):
            asked = time.perf_counter() + p["sleep"]
            await tiffany.sleep(p["sleep"])
            lateness.append(time.perf_counter() - asked)
        done[0] = True

    async def busy() -> None:
        while not done[0]:
            spins[0] += 1
            await tiffany.yield_now()

    async def main() -> None:
        # `main` waits for the sleeper: when main returns, the run ends.
        sleeper = tiffany.spawn(urgent(), priority=1)
        for _ in range(p["busy"]):
            tiffany.spawn(busy(), priority=200)
        await sleeper

    tiffany.run(main())
    return _result(lateness, p, spins[0])


def on_asyncio(p: dict[str, Any], loop_factory: Callable[[], Any]) -> dict[str, Any]:
    import asyncio

    lateness: list[float] = []
    done = [False]
    spins = [0]

    async def urgent() -> None:
        for _ in range(p["wakes"]):
            asked = time.perf_counter() + p["sleep"]
            await asyncio.sleep(p["sleep"])
            lateness.append(time.perf_counter() - asked)
        done[0] = True

    async def busy() -> None:
        while not done[0]:
            spins[0] += 1
            await asyncio.sleep(0)

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(urgent())
            for _ in range(p["busy"]):
                tg.create_task(busy())

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    return _result(lateness, p, spins[0])

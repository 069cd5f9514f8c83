"""Ordering: priorities, round robin, and where a yield puts a task."""

from __future__ import annotations

import tiffany
import tiffany.lowlevel
import tiffany.testing


def test_round_robin_order() -> None:
    order: list[tuple[str, int]] = []

    async def worker(name: str) -> None:
        for i in range(3):
            order.append((name, i))
            await tiffany.yield_now()

    sched = tiffany.Scheduler(clock="virtual")
    for name in "abc":
        sched.spawn(worker(name))
    sched.run()
    assert order == [(n, i) for i in range(3) for n in "abc"]


def test_sleep_zero_goes_behind_peers() -> None:
    order: list[str] = []

    async def a() -> None:
        order.append("a1")
        await tiffany.sleep(0)
        order.append("a2")

    async def b() -> None:
        order.append("b1")

    sched = tiffany.Scheduler(clock="virtual")
    sched.spawn(a())
    sched.spawn(b())
    sched.run()
    assert order == ["a1", "b1", "a2"]


def test_priority_order_and_system_first() -> None:
    order: list[str] = []

    async def note(name: str) -> None:
        order.append(name)

    sched = tiffany.Scheduler(clock="virtual")
    sched.spawn(note("low"), priority=tiffany.PRI_LOWEST)
    sched.spawn(note("default"))
    sched.spawn(note("high"), priority=1)
    sched.spawn_system(note("system"))
    sched.run()
    assert order == ["system", "high", "default", "low"]

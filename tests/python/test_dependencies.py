"""Dependencies: a task starts when the tasks it depends on have finished."""

from __future__ import annotations

import pytest

import tiffany
import tiffany.lowlevel
import tiffany.testing


def test_dependency_chain_and_failed_dependency_cancels() -> None:
    order: list[str] = []

    async def step(name: str, fail: bool = False) -> None:
        await tiffany.sleep(0.1)
        order.append(name)
        if fail:
            raise ValueError(name)

    sched = tiffany.Scheduler(clock="virtual")
    a = sched.spawn(step("a"))
    b = sched.spawn(step("b", fail=True), deps=[a])
    c = sched.spawn(step("c"), deps=[b])
    d = sched.spawn(step("d"), deps=[a])
    assert c.state == "pending", "waits for b"
    sched.run()
    assert order == ["a", "b", "d"]
    assert [t.state for t in (b, c, d)] == ["failed", "cancelled", "finished"]


def test_dependency_cycle_and_unknown_dependency_refused() -> None:
    async def step() -> None:
        await tiffany.sleep(0.1)

    sched = tiffany.Scheduler(clock="virtual")
    a = sched.spawn(step())
    b = sched.spawn(step(), deps=[a])
    c = sched.spawn(step(), deps=[b])
    with pytest.raises(tiffany.SpawnError) as cycle:
        a.add_dependency(c)  # a -> c -> b -> a
    assert cycle.value.reason == "cycle"
    with pytest.raises(tiffany.SpawnError) as self_dep:
        b.add_dependency(b)
    assert self_dep.value.reason == "cycle"

    other = tiffany.Scheduler(clock="virtual")
    foreign = other.spawn(step())
    coro = step()
    with pytest.raises(tiffany.SpawnError) as unknown:
        sched.spawn(coro, deps=[foreign])
    assert unknown.value.reason == "unknown_dependency"
    other.run()

    d = sched.spawn(step())
    d.add_dependency(c)  # allowed: no cycle; d now starts after c
    sched.run()
    assert [t.state for t in (a, b, c, d)] == ["finished"] * 4
    assert sched.now() == pytest.approx(0.4)

"""Load: CPU budgets, capacity and back-pressure."""

from __future__ import annotations

import logging

import pytest

import tiffany
import tiffany.lowlevel
import tiffany.testing


def test_busy_task_is_throttled_behind_its_peer() -> None:
    order: list[str] = []

    async def busy(name: str) -> None:
        for _ in range(120):
            order.append(name)
            await (
                tiffany.lowlevel.GetTid()
            )  # answered at once: no yield, only the budget interrupts

    # Virtual clock: each resume is charged 100 µs, the quantum is 5 ms, so a
    # busy task is throttled after 50 resumes.
    sched = tiffany.Scheduler(clock="virtual", quantum=0.005)
    events: list[str] = []
    sched.on_event(lambda e: events.append(e.kind))
    sched.spawn(busy("a"))
    sched.spawn(busy("b"))
    sched.run()
    runs = [order[0]]
    for name in order[1:]:
        if name != runs[-1]:
            runs.append(name)
    assert runs[:4] == ["a", "b", "a", "b"], runs
    assert events.count("throttled") >= 4
    assert sched.metrics()["throttles"] == events.count("throttled")


def test_capacity_refusal() -> None:
    async def idle() -> None:
        await tiffany.sleep(1)

    sched = tiffany.Scheduler(clock="virtual", capacity=2)
    sched.spawn(idle())
    sched.spawn(idle())
    with pytest.raises(tiffany.SpawnError) as info:
        sched.spawn(idle())
    assert info.value.reason == "capacity"
    sched.run()


def test_backpressure_pauses_admission_and_resumes() -> None:
    pressure = [0.0]
    admitted: list[tuple[str, float]] = []

    async def producer(i: int) -> None:
        await tiffany.admit()
        admitted.append((f"p{i}", tiffany.now()))

    async def controller() -> None:
        pressure[0] = 0.95  # above the high watermark (0.8)
        await tiffany.sleep(1.0)  # the scheduler reads the pressure while idle
        for i in range(3):
            tiffany.spawn(producer(i))
        await tiffany.sleep(1.0)
        assert admitted == []  # paused: producers wait at the gate
        pressure[0] = 0.2  # below the low watermark (0.5)

    sched = tiffany.Scheduler(clock="virtual", backpressure=lambda: pressure[0])
    kinds: list[str] = []
    sched.on_event(lambda e: kinds.append(e.kind))
    sched.spawn_system(controller())
    sched.run()
    assert [name for name, _ in admitted] == ["p0", "p1", "p2"]
    assert all(t >= 2.0 for _, t in admitted)
    assert kinds.count("paused") == 1 and kinds.count("resumed") == 1
    assert sched.metrics()["backpressure_pauses"] == 1
    assert sched.pressure() == pytest.approx(0.2)


def test_system_tasks_pass_the_gate_while_paused() -> None:
    async def system_producer() -> str:
        await tiffany.sleep(0.1)
        await tiffany.admit()
        return "through"

    sched = tiffany.Scheduler(clock="virtual", backpressure=lambda: 1.0)
    t = sched.spawn_system(system_producer())
    sched.run()
    assert t.result() == "through"


def test_backpressure_callable_errors_are_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> float:
        raise ValueError("sensor offline")

    async def main() -> str:
        await tiffany.sleep(0.5)
        return "still running"

    sched = tiffany.Scheduler(clock="virtual", backpressure=broken)
    with caplog.at_level(logging.ERROR, logger="tiffany"):
        assert sched.run(main()) == "still running"
    assert sched.metrics()["callback_errors"] >= 1
    assert any(r.name == "tiffany" for r in caplog.records)


def test_a_spawn_right_after_admit_fits_within_capacity() -> None:
    # admit() reserves room for the task's next spawn: with capacity 100,
    # 300 rounds of admit-then-spawn never hit the limit (they used to be
    # refused now and then: admission only watched the load's watermarks).
    started: list[float] = []

    async def job() -> None:
        started.append(tiffany.now())
        await tiffany.sleep(1)

    async def main() -> int:
        refused = 0
        for _ in range(300):
            await tiffany.admit()
            try:
                tiffany.spawn(job())
            except tiffany.SpawnError:
                refused += 1
        await tiffany.sleep(1)  # the last jobs run
        return refused

    sched = tiffany.Scheduler(clock="virtual", capacity=100)
    assert sched.run(main()) == 0
    assert sched.metrics()["spawn_denied"] == 0
    assert len(started) == 300
    assert sched.now() > 2.0  # admission waited for room more than once


def test_spawns_right_after_admit_fit_with_several_producers() -> None:
    # A throttle at the admit itself once gave the reserved unit back.
    async def job(i: int) -> None:
        await tiffany.sleep(0.01 * (i % 7))

    async def producer() -> int:
        refused = 0
        for i in range(300):
            await tiffany.admit()
            try:
                tiffany.spawn(job(i))
            except tiffany.SpawnError:
                refused += 1
        return refused

    async def main() -> int:
        producers = [tiffany.spawn(producer()) for _ in range(3)]
        return sum([await p for p in producers])

    assert tiffany.run(main(), clock="virtual", capacity=100) == 0

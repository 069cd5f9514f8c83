"""The Python API: spawning, joining, cancelling, ordering and time."""

from __future__ import annotations

import json
import sys
from collections.abc import Generator
from typing import Any

import pytest

import tiffany
import tiffany.lowlevel
import tiffany.testing


def test_quick_start() -> None:
    async def child(x: int) -> int:
        await tiffany.sleep(0.05)
        return x * 2

    async def main() -> int:
        t = tiffany.spawn(child(21), priority=5, name="child")
        assert await t == 42
        u = tiffany.spawn(child(1), deps=[t])
        return await tiffany.join(u, timeout=1.0)

    assert tiffany.run(main(), clock="virtual") == 2


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


def test_virtual_hour_is_instant_and_now_advances() -> None:
    async def main() -> float:
        await tiffany.sleep(3600)
        return tiffany.now()

    sched = tiffany.Scheduler(clock="virtual")
    assert sched.now() == 0.0
    assert sched.run(main()) == 3600.0


def test_exception_propagates_to_joiner() -> None:
    class Boom(Exception):
        pass

    async def bad() -> None:
        await tiffany.sleep(0.01)
        raise Boom("no")

    async def main() -> str:
        t = tiffany.spawn(bad())
        with pytest.raises(Boom, match="no"):
            await t
        assert t.state == "failed"
        assert isinstance(t.exception(), Boom)
        return "ok"

    assert tiffany.run(main(), clock="virtual") == "ok"


def test_join_timeout_raises_and_task_goes_on() -> None:
    async def slow() -> str:
        await tiffany.sleep(10)
        return "late"

    async def main() -> tuple[float, str]:
        t = tiffany.spawn(slow())
        with pytest.raises(tiffany.JoinTimeout):
            await tiffany.join(t, timeout=1.0)
        at = tiffany.now()
        return at, await t

    assert tiffany.run(main(), clock="virtual") == (1.0, "late")
    assert issubclass(tiffany.JoinTimeout, TimeoutError)


def test_cancel_runs_finally_and_joiner_sees_task_cancelled() -> None:
    cleaned: list[str] = []

    async def victim() -> None:
        try:
            await tiffany.sleep(100)
        finally:
            cleaned.append("finally")

    async def main() -> str:
        t = tiffany.spawn(victim())
        await tiffany.sleep(1)
        assert t.cancel() is True
        with pytest.raises(tiffany.TaskCancelled):
            await t
        assert t.state == "cancelled"
        assert t.cancel() is False
        return "done"

    assert tiffany.run(main(), clock="virtual") == "done"
    assert cleaned == ["finally"]
    assert issubclass(tiffany.Cancelled, BaseException)
    assert not issubclass(tiffany.Cancelled, Exception)


def test_cancellation_is_level_triggered() -> None:
    seen: list[str] = []

    async def stubborn() -> str:
        try:
            await tiffany.sleep(100)
        except tiffany.Cancelled:
            seen.append("first")
        try:
            await tiffany.sleep(100)
        except tiffany.Cancelled:
            seen.append("second")
        return "survived"

    async def main() -> None:
        t = tiffany.spawn(stubborn())
        await tiffany.yield_now()
        t.cancel()
        await t

    tiffany.run(main(), clock="virtual")
    assert seen == ["first", "second"]


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
    assert c.state == "pending"
    sched.run()
    assert order == ["a", "b", "d"]
    assert b.state == "failed"
    assert c.state == "cancelled"
    assert d.state == "finished"


def test_capacity_refusal() -> None:
    async def idle() -> None:
        await tiffany.sleep(1)

    sched = tiffany.Scheduler(clock="virtual", capacity=2)
    sched.spawn(idle())
    sched.spawn(idle())
    with pytest.raises(tiffany.SpawnError) as info:
        sched.spawn(idle())
    assert info.value.reason == "capacity"  # type: ignore[attr-defined]
    sched.run()


def test_spawn_after_shutdown_refused() -> None:
    async def idle() -> None:
        await tiffany.sleep(1)

    sched = tiffany.Scheduler(clock="virtual")
    sched.spawn(idle())
    assert sched.shutdown(5.0) == "clean"
    coro = idle()
    with pytest.raises(tiffany.SpawnError) as info:
        sched.spawn(coro)
    assert info.value.reason == "shutting_down"  # type: ignore[attr-defined]


def test_shutdown_timeout_cancels_the_rest() -> None:
    async def forever() -> None:
        await tiffany.sleep(1e9)

    sched = tiffany.Scheduler(clock="virtual")
    t = sched.spawn(forever())
    assert sched.shutdown(2.0) == "timeout"
    assert t.state == "cancelled"
    assert sched.now() == 2.0


def test_bad_input_gets_clear_errors() -> None:
    sched = tiffany.Scheduler(clock="virtual")

    async def f() -> None:
        pass

    with pytest.raises(TypeError, match="forget to call"):
        sched.spawn(f)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        tiffany.sleep(-1)
    with pytest.raises(ValueError):
        tiffany.Scheduler(clock="wall")
    orphan = f()
    with pytest.raises(RuntimeError, match="no tiffany scheduler"):
        tiffany.spawn(orphan)
    orphan.close()


def test_generator_task_with_trampolining() -> None:
    def add(a: int, b: int) -> Generator[Any, Any, int]:
        yield tiffany.sleep(1)
        return a + b

    def main() -> Generator[Any, Any, tuple[int, int]]:
        tid = yield tiffany.lowlevel.GetTid()
        total = yield add(2, 3)
        return tid, total

    sched = tiffany.Scheduler(clock="virtual")
    t = sched.spawn(main())
    sched.run()
    assert t.result() == (t.id, 5)
    assert sched.now() == 1.0


def test_events_are_deterministic_under_virtual_clock() -> None:
    def program() -> list[str]:
        lines: list[str] = []

        async def child(i: int) -> int:
            await tiffany.sleep(0.01 * (i % 3))
            await tiffany.yield_now()
            return i

        async def main() -> int:
            tasks = [tiffany.spawn(child(i), priority=10 + i % 2) for i in range(6)]
            total = 0
            for t in tasks:
                total += await t
            return total

        sched = tiffany.Scheduler(clock="virtual")
        sched.on_event(lambda e: lines.append(e.to_json()))
        assert sched.run(main()) == 15
        return lines

    first, second = program(), program()
    assert first == second
    kinds = {json.loads(line)["event"] for line in first}
    assert {"spawned", "running", "sleep", "yield", "join", "done"} <= kinds


def test_event_callback_errors_are_counted_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    def bad_callback(event: tiffany.TaskEvent) -> None:
        raise RuntimeError("callback broke")

    async def main() -> str:
        await tiffany.sleep(0.1)
        return "fine"

    sched = tiffany.Scheduler(clock="virtual")
    sched.on_event(bad_callback)
    assert sched.run(main()) == "fine"
    assert sched.metrics()["callback_errors"] > 0
    assert any("callback broke" in r.getMessage() or r.exc_info for r in caplog.records)


def test_done_callback_and_current_task() -> None:
    seen: list[int] = []

    async def child() -> int:
        me = tiffany.current_task()
        assert me is not None
        return me.id

    async def main() -> None:
        t = tiffany.spawn(child())
        t.add_done_callback(lambda task: seen.append(task.result()))
        await t

    tiffany.run(main(), clock="virtual")
    assert len(seen) == 1


def test_metrics_and_prometheus() -> None:
    async def main() -> None:
        for _ in range(3):
            await tiffany.sleep(0.01)

    sched = tiffany.Scheduler(clock="virtual")
    sched.run(main())
    m = sched.metrics()
    assert m["done"] == 1 and m["spawned"] == 1
    text = sched.prometheus()
    assert 'tasks_total{outcome="done"} 1' in text
    assert "task_run_latency_seconds_bucket" in text


def test_dependency_cycle_and_unknown_dependency_refused() -> None:
    async def step() -> None:
        await tiffany.sleep(0.1)

    sched = tiffany.Scheduler(clock="virtual")
    a = sched.spawn(step())
    b = sched.spawn(step(), deps=[a])
    c = sched.spawn(step(), deps=[b])
    with pytest.raises(tiffany.SpawnError) as cycle:
        a.add_dependency(c)  # a -> c -> b -> a
    assert cycle.value.reason == "cycle"  # type: ignore[attr-defined]
    with pytest.raises(tiffany.SpawnError) as self_dep:
        b.add_dependency(b)
    assert self_dep.value.reason == "cycle"  # type: ignore[attr-defined]

    other = tiffany.Scheduler(clock="virtual")
    foreign = other.spawn(step())
    coro = step()
    with pytest.raises(tiffany.SpawnError) as unknown:
        sched.spawn(coro, deps=[foreign])
    assert unknown.value.reason == "unknown_dependency"  # type: ignore[attr-defined]
    other.run()

    d = sched.spawn(step())
    d.add_dependency(c)  # allowed: no cycle; d now starts after c
    sched.run()
    assert [t.state for t in (a, b, c, d)] == ["finished"] * 4
    assert sched.now() == pytest.approx(0.4)


def test_native_task_joins_python_task() -> None:
    async def python_child() -> dict[str, int]:
        await tiffany.sleep(1.0)
        return {"answer": 42}

    async def failing() -> None:
        raise ValueError("python failed")

    sched = tiffany.Scheduler(clock="virtual")
    child = sched.spawn(python_child())
    native = tiffany.testing.spawn_native_join(sched, child, name="native-joiner")
    bad = sched.spawn(failing())
    native_bad = tiffany.testing.spawn_native_join(sched, bad)
    sched.run()
    assert native.result() == {"answer": 42}
    assert native.result() is child.result()  # the same object crosses the kernel
    with pytest.raises(tiffany.TaskFailed, match="python failed"):
        native_bad.result()
    with pytest.raises(ValueError):
        bad.result()


def test_shutdown_from_inside_a_task_excludes_the_caller() -> None:
    finished: list[str] = []

    async def worker(d: float) -> None:
        await tiffany.sleep(d)
        finished.append(f"worker {d}")

    async def main() -> str:
        tiffany.spawn(worker(1.0))
        tiffany.spawn(worker(50.0))
        result = await tiffany.shutdown(5.0)
        finished.append("main resumed")
        return str(result)

    sched = tiffany.Scheduler(clock="virtual")
    assert sched.run(main()) == "timeout"
    assert finished == ["worker 1.0", "main resumed"]
    assert sched.now() == 5.0


def test_constants_task_attributes_and_event_fields() -> None:
    assert (tiffany.PRI_SYSTEM, tiffany.PRI_DEFAULT, tiffany.PRI_LOWEST) == (0, 10, 255)
    events: list[tiffany.TaskEvent] = []

    async def napper() -> str:
        await tiffany.sleep(0.25)
        return "rested"

    sched = tiffany.Scheduler(clock="virtual")
    sched.on_event(events.append)
    t = sched.spawn(napper(), priority=42, name="napper")
    assert (t.name, t.priority, t.done(), t.state) == ("napper", 42, False, "scheduled")
    with pytest.raises(RuntimeError, match="not done"):
        t.result()
    sched.run()
    assert t.done() and t.state == "finished" and t.exception() is None
    assert repr(t).startswith("<Task ")

    spawned = events[0]
    assert spawned.kind == "spawned" and spawned.task_id == t.id and spawned.time == 0.0
    assert spawned.detail == {"priority": 42, "name": "napper", "deps": 0}
    sleep = next(e for e in events if e.kind == "sleep")
    assert sleep.detail == {"until": 0.25}
    done = events[-1]
    assert (done.kind, done.task_id, done.time) == ("done", t.id, 0.25)
    assert json.loads(done.to_json()) == {"ts": 0.25, "task_id": t.id, "event": "done"}


def test_scheduler_shutdown_called_from_inside_a_task() -> None:
    hooks: list[str] = []

    async def worker() -> None:
        await tiffany.sleep(1.0)
        hooks.append("worker done")

    async def forever() -> None:
        await tiffany.sleep(1e9)

    sched = tiffany.Scheduler(clock="virtual")

    async def main() -> str:
        tiffany.spawn(worker())
        tiffany.spawn(forever())
        result = sched.shutdown(2.0)  # synchronous: drains the others right here
        hooks.append(f"main saw {result}")
        return result

    assert sched.run(main()) == "timeout"
    assert hooks == ["worker done", "main saw timeout"]
    assert sched.now() == 2.0


def test_awaits_work_under_a_trace_function() -> None:
    # With a trace function (coverage, debuggers) CPython resumes awaits through
    # the Syscall's `send` method instead of its C-level `am_send` slot.
    async def child() -> int:
        await tiffany.sleep(0.01)
        await tiffany.yield_now()
        return 5

    async def main() -> tuple[int, None, None]:
        value = await tiffany.spawn(child())
        with pytest.raises(tiffany.JoinTimeout):
            await tiffany.join(tiffany.spawn(child()), timeout=0.001)
        return value, await tiffany.sleep(0), await tiffany.yield_now()

    previous = sys.gettrace()
    sys.settrace(lambda *args: None)
    try:
        assert tiffany.run(main(), clock="virtual") == (5, None, None)
    finally:
        sys.settrace(previous)


def test_yield_object_is_shared_and_syscalls_are_typed() -> None:
    y = tiffany.yield_now()
    assert y is tiffany.yield_now()
    assert isinstance(tiffany.sleep(1.5), tiffany.lowlevel.Syscall)
    assert repr(tiffany.sleep(1.5)) == "<tiffany syscall sleep 1.5>"


def test_sleep_accepts_ints_floats_and_refuses_bad_values() -> None:
    async def main() -> list[float]:
        times = []
        for d in (1, 0.5, True, 0, 0.0):
            await tiffany.sleep(d)
            times.append(tiffany.now())
        return times

    assert tiffany.run(main(), clock="virtual") == [1.0, 1.5, 2.5, 2.5, 2.5]
    with pytest.raises(ValueError, match="finite number of seconds"):
        tiffany.sleep(-1)
    with pytest.raises(ValueError, match="finite number of seconds"):
        tiffany.sleep(float("nan"))
    with pytest.raises(TypeError):
        tiffany.sleep("1")  # type: ignore[arg-type]
    # sleep(0) is a yield: the shared object, no allocation.
    assert tiffany.sleep(0) is tiffany.yield_now()

"""Tasks: spawning, joining, results, attributes and the awaitables."""

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
    assert spawned.detail == {"priority": 42, "name": "napper"}  # no deps: left out
    sleep = next(e for e in events if e.kind == "sleep")
    assert sleep.detail == {"until": 0.25}
    done = events[-1]
    assert (done.kind, done.task_id, done.time) == ("done", t.id, 0.25)
    assert json.loads(done.to_json()) == {"ts": 0.25, "task_id": t.id, "event": "done"}


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


def test_joining_a_task_of_another_scheduler_is_refused() -> None:
    other = tiffany.Scheduler(clock="virtual")

    async def idle() -> None:
        await tiffany.sleep(1)

    foreign = other.spawn(idle())

    async def main() -> None:
        await foreign

    with pytest.raises(RuntimeError, match="another scheduler"):
        tiffany.run(main(), clock="virtual")
    other.run()


def test_the_pyos_level_pieces_live_in_lowlevel_and_the_demos_in_testing() -> None:
    for name in ("Syscall", "GetTid", "Completion", "wait_readable", "wait_writable"):
        assert name in tiffany.lowlevel.__all__
        assert not hasattr(tiffany, name), name
    assert not hasattr(tiffany.Scheduler, "spawn_native_sleep")
    assert not hasattr(tiffany.Scheduler, "spawn_native_join")
    assert set(tiffany.testing.__all__) == {"spawn_native_sleep", "spawn_native_join"}


def test_the_asyncio_classifier_is_claimed_now_that_the_loop_exists() -> None:
    # It was removed while asyncio code could not run on Tiffany, and came
    # back with tiffany.EventLoop.
    assert "Framework :: AsyncIO" in _classifiers()
    assert issubclass(tiffany.EventLoop, __import__("asyncio").AbstractEventLoop)


def _classifiers() -> list[str]:
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    classifiers: list[str] = tomllib.loads(pyproject.read_text())["project"]["classifiers"]
    return classifiers

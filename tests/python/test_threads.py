"""Threads: to_thread, the thread-safe handle, and the GIL."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable

import pytest

import tiffany


def test_to_thread_runs_in_a_worker_while_scheduler_keeps_running() -> None:
    release = threading.Event()
    ticks: list[int] = []

    def blocking(x: int) -> tuple[int, str]:
        if not release.wait(timeout=30):  # raised here, re-raised by the await
            raise TimeoutError("the ticker never released the worker")
        return x * 2, threading.current_thread().name

    async def ticker() -> None:
        for i in range(5):
            ticks.append(i)
            await tiffany.yield_now()
        release.set()  # only now may the worker finish

    async def main() -> tuple[int, str]:
        tiffany.spawn(ticker())
        return await tiffany.to_thread(blocking, 21)

    value, thread_name = tiffany.run(main())
    assert value == 42
    assert thread_name.startswith("tiffany-worker")
    assert ticks == [0, 1, 2, 3, 4]


def test_to_thread_propagates_exceptions() -> None:
    def boom() -> None:
        raise KeyError("from the thread")

    async def main() -> None:
        await tiffany.to_thread(boom)

    with pytest.raises(KeyError, match="from the thread"):
        tiffany.run(main())


def test_handle_spawns_and_shuts_down_from_another_thread() -> None:
    sched = tiffany.Scheduler()
    handle = sched.handle()
    ran: list[str] = []
    started = threading.Event()

    async def from_thread() -> None:
        ran.append("from thread")

    async def long_sleeper() -> None:
        started.set()
        await tiffany.sleep(3600)

    # Asserts in another thread cannot fail the test: it reports what it saw
    # and the test asserts here.
    seen: list[object] = []

    def other_thread() -> None:
        seen.append(started.wait(timeout=30))
        seen.append(handle.spawn(from_thread(), name="remote"))
        seen.append(handle.shutdown(0.05))  # the sleeper is cancelled at the deadline

    sleeper = sched.spawn(long_sleeper())
    t = threading.Thread(target=other_thread)
    t.start()
    sched.run()
    t.join()
    assert seen[0] is True
    assert isinstance(seen[1], int) and seen[1] > sleeper.id
    assert seen[2] == "timeout"
    assert ran == ["from thread"]
    assert sleeper.state == "cancelled"


def test_handle_cancel_by_id() -> None:
    sched = tiffany.Scheduler()
    handle = sched.handle()
    started = threading.Event()

    async def victim() -> None:
        started.set()
        await tiffany.sleep(3600)

    task = sched.spawn(victim())
    task_id = task.id  # Task objects stay on the scheduler's thread; ids travel

    waited: list[bool] = []

    def canceller() -> None:
        waited.append(started.wait(timeout=30))
        handle.cancel(task_id)

    t = threading.Thread(target=canceller)
    t.start()
    sched.run()
    t.join()
    assert waited == [True]
    assert task.state == "cancelled"


def _in_thread(fn: Callable[[], object]) -> BaseException | object:
    """Calls ``fn`` in a new thread; returns what it returned or raised."""
    outcome: list[BaseException | object] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            outcome.append(e)

    t = threading.Thread(target=target, name="intruder")
    t.start()
    t.join()
    return outcome[0]


def test_a_scheduler_used_from_another_thread_raises_runtime_error(
    sched: tiffany.Scheduler,
) -> None:
    for use in (sched.now, sched.metrics, sched.run):
        err = _in_thread(use)
        assert type(err) is RuntimeError, err
        message = str(err)
        assert "this Scheduler belongs to thread 'MainThread'" in message
        assert "used from thread 'intruder'" in message
        assert "Handle" in message and "Completion" in message


async def _nap() -> int:
    await tiffany.sleep(1)
    return 1


def test_a_task_used_from_another_thread_raises_but_its_id_travels(
    sched: tiffany.Scheduler,
) -> None:
    task = sched.spawn(_nap(), name="napper")
    assert _in_thread(lambda: (task.id, task.name, task.priority)) == (task.id, "napper", 10)
    for use in (task.done, task.cancel, lambda: task.state):
        err = _in_thread(use)
        assert type(err) is RuntimeError and "this Task belongs to" in str(err), err
    sched.run()
    assert task.result() == 1


def test_event_set_from_another_thread_wakes_the_waiter(sched: tiffany.Scheduler) -> None:
    ev = tiffany.Event()

    async def waiter() -> float:
        await ev.wait()
        return tiffany.now()

    async def main() -> float:
        w = tiffany.spawn(waiter())
        await tiffany.sleep(1)
        await tiffany.to_thread(ev.set)  # set() in a worker thread
        return await w

    assert sched.run(main()) == 1.0
    err = _in_thread(ev.is_set)
    assert type(err) is RuntimeError and "this Event belongs to" in str(err)


def test_event_set_from_another_thread_before_it_is_bound() -> None:
    ev = tiffany.Event()
    assert _in_thread(ev.set) is None
    assert ev.is_set()

    async def main() -> bool:
        return await ev.wait()

    assert tiffany.run(main(), clock="virtual") is True


def _objects_of_a_scheduler() -> list[object]:
    """A scheduler, a finished task and a bound event, referred to only by the list."""
    sched = tiffany.Scheduler(clock="virtual")
    ev = tiffany.Event()
    task = sched.spawn(_nap())

    async def main() -> None:
        ev.set()
        await ev.wait()

    sched.run(main())
    return [task, ev, sched]


def test_dropping_objects_on_another_thread_prints_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    unraisable: list[object] = []
    previous = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        objects = _objects_of_a_scheduler()
        _in_thread(objects.clear)  # the last references go on another thread
        gc.collect()
    finally:
        sys.unraisablehook = previous
    out, err = capfd.readouterr()
    assert (out, err, unraisable) == ("", "", [])

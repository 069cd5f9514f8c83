"""Threads: to_thread, the thread-safe handle, and the GIL."""

from __future__ import annotations

import threading

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

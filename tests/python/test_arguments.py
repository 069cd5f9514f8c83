"""Argument checks: every bad value is refused at the call, with a clear error."""

from __future__ import annotations

import inspect
import math
import socket
from typing import Any

import pytest

import tiffany
import tiffany.lowlevel
import tiffany.testing


async def _idle() -> None:
    await tiffany.sleep(1)


@pytest.mark.parametrize("bad", [-1, 256, 2**70])
def test_priority_out_of_range_is_a_value_error(bad: int, sched: tiffany.Scheduler) -> None:
    coro = _idle()
    with pytest.raises(ValueError, match=r"priority must be in 0\.\.=255"):
        sched.spawn(coro, priority=bad)
    coro.close()
    coro = _idle()
    handle = sched.handle()
    with pytest.raises(ValueError, match=r"priority must be in 0\.\.=255"):
        handle.spawn(coro, priority=bad)
    coro.close()


@pytest.mark.parametrize("bad", [True, 1.0, "1", None])
def test_priority_of_another_type_is_a_type_error(bad: Any, sched: tiffany.Scheduler) -> None:
    coro = _idle()
    with pytest.raises(TypeError, match="priority must be an int"):
        sched.spawn(coro, priority=bad)
    coro.close()


def test_priority_bounds_are_accepted(sched: tiffany.Scheduler) -> None:
    assert sched.spawn(_idle(), priority=0).priority == 0
    assert sched.spawn(_idle(), priority=255).priority == 255
    sched.run()


@pytest.mark.parametrize("bad", [-1, 0])
def test_capacity_below_one_is_a_value_error(bad: int) -> None:
    with pytest.raises(ValueError, match=r"capacity must be an int >= 1 \(or None\), got"):
        tiffany.Scheduler(capacity=bad)


@pytest.mark.parametrize("bad", [True, 2.5, "3"])
def test_capacity_of_another_type_is_a_type_error(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"capacity must be an int >= 1 \(or None\), got"):
        tiffany.Scheduler(capacity=bad)


@pytest.mark.parametrize(
    "bad", [-0.001, 0, 0.0, math.nan, math.inf, -math.inf, 1e300, "0.1", None, True]
)
def test_every_bad_quantum_gets_the_same_message(bad: Any) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        tiffany.Scheduler(quantum=bad)
    assert str(info.value).startswith("quantum must be a finite number of seconds > 0")


def test_the_default_quantum_comes_from_the_kernel() -> None:
    assert tiffany.DEFAULT_QUANTUM == 0.005
    tiffany.Scheduler(quantum=tiffany.DEFAULT_QUANTUM)
    tiffany.Scheduler(quantum=1)


def test_non_callables_are_refused_when_registered(sched: tiffany.Scheduler) -> None:
    with pytest.raises(TypeError, match="on_event.*callable"):
        sched.on_event("not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_events.*callable"):
        sched.on_events(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backpressure.*callable"):
        tiffany.Scheduler(backpressure=0.5)  # type: ignore[arg-type]
    task = sched.spawn(_idle())
    with pytest.raises(TypeError, match="add_done_callback.*callable"):
        task.add_done_callback(None)  # type: ignore[arg-type]
    sched.run()
    assert sched.metrics()["callback_errors"] == 0


@pytest.mark.parametrize("bad", [0, -1])
def test_on_events_refuses_a_batch_size_below_one(bad: int) -> None:
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        tiffany.Scheduler().on_events(lambda b: None, max_batch=bad)


def test_a_huge_batch_size_is_only_a_threshold(sched: tiffany.Scheduler) -> None:
    batches: list[int] = []
    sched.on_events(lambda b: batches.append(len(b)), max_batch=2**62)
    sched.run(_idle())
    assert sum(batches) > 0


def test_the_same_coroutine_is_refused_at_its_second_spawn(sched: tiffany.Scheduler) -> None:
    coro = _idle()
    first = sched.spawn(coro)
    with pytest.raises(RuntimeError, match="already"):
        sched.spawn(coro)
    sched.run()
    assert first.state == "finished"


def test_sleep_beyond_the_clocks_range_is_refused() -> None:
    with pytest.raises(OverflowError, match="beyond the clock's range"):
        tiffany.sleep(10**30)
    with pytest.raises(OverflowError, match="beyond the clock's range"):
        tiffany.sleep(1e11)
    tiffany.sleep(1e10)  # about 317 years: within range


def test_timeouts_beyond_the_clocks_range_are_refused() -> None:
    with pytest.raises(OverflowError):
        tiffany.shutdown(1e20)
    with pytest.raises(OverflowError):
        tiffany.Scheduler().shutdown(1e20)


def test_sock_recv_refuses_a_blocking_socket() -> None:
    a, b = socket.socketpair()
    try:
        with pytest.raises(ValueError, match="non-blocking"):
            tiffany.sock_recv(a, 10)
    finally:
        a.close()
        b.close()


def test_sock_recv_refuses_a_blocking_descriptor_given_as_an_int() -> None:
    # An int has no gettimeout(): the descriptor's own flags decide.
    a, b = socket.socketpair()
    try:
        with pytest.raises(ValueError, match="non-blocking"):
            tiffany.sock_recv(a.fileno(), 10)  # type: ignore[arg-type]
    finally:
        a.close()
        b.close()


def test_sock_recv_takes_a_socket_with_a_timeout() -> None:
    # A timeout makes the descriptor non-blocking (as CPython does for any
    # timeout), so the scheduler's thread cannot block in it.
    a, b = socket.socketpair()
    a.settimeout(5.0)
    try:
        b.sendall(b"hello")

        async def main() -> bytes:
            return await tiffany.sock_recv(a, 10)

        assert tiffany.run(main()) == b"hello"
    finally:
        a.close()
        b.close()


def test_sock_recv_refuses_a_negative_size() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        with pytest.raises(ValueError, match="n must be >= 0"):
            tiffany.sock_recv(a, -1)
    finally:
        a.close()
        b.close()


def test_run_takes_every_scheduler_option() -> None:
    # One list of options: SchedulerOptions (what run() forwards) is
    # Scheduler's signature.
    scheduler_options = inspect.signature(tiffany.Scheduler).parameters
    assert tiffany.SchedulerOptions.__annotations__.keys() == scheduler_options.keys()

    async def main() -> float:
        await tiffany.sleep(5)
        return tiffany.now()

    options: tiffany.SchedulerOptions = {
        "clock": "virtual",
        "quantum": 0.01,
        "capacity": 10,
        "backpressure": lambda: 0.0,
        "timing_metrics": False,
    }
    assert tiffany.run(main(), **options) == 5.0
    coro = main()
    with pytest.raises(TypeError):
        tiffany.run(coro, colour="blue")  # type: ignore[call-arg]
    coro.close()


def test_bad_input_gets_clear_errors(sched: tiffany.Scheduler) -> None:

    async def f() -> None:
        pass

    with pytest.raises(TypeError, match="forget to call"):
        sched.spawn(f)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        tiffany.sleep(-1)
    with pytest.raises(ValueError):
        tiffany.Scheduler(clock="wall")  # type: ignore[arg-type]
    orphan = f()
    with pytest.raises(RuntimeError, match="no tiffany scheduler"):
        tiffany.spawn(orphan)
    orphan.close()

"""tiffany.EventLoop: debug mode, the default executor, exception handlers,
threads and signals (issue 11's list, beyond the conformance tests)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

import pytest

import tiffany

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
BOUND = 30.0  # no wait in these tests may last longer


def run(main: Coroutine[Any, Any, T], *, clock: Literal["real", "virtual"] = "real") -> T:
    with asyncio.Runner(loop_factory=lambda: tiffany.new_event_loop(clock=clock)) as runner:
        assert isinstance(runner.get_loop(), tiffany.EventLoop)
        return runner.run(main)


def test_debug_mode_rejects_calls_from_another_thread() -> None:
    def from_a_thread(loop: asyncio.AbstractEventLoop, when: float) -> list[str]:
        errors = []
        calls: list[Callable[[], object]] = [
            lambda: loop.call_soon(print),
            lambda: loop.call_later(1, print),
            lambda: loop.call_at(when, print),
        ]
        for call in calls:
            try:
                call()
            except RuntimeError as e:
                errors.append(str(e))
        return errors

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return await loop.run_in_executor(pool, from_a_thread, loop, loop.time() + 1)

    errors = run(main())
    assert len(errors) == 3 and all("Non-thread-safe operation" in e for e in errors), errors


def test_debug_mode_warns_about_slow_timers_and_readers(caplog: pytest.LogCaptureFixture) -> None:
    a, b = socket.socketpair()
    loop = tiffany.new_event_loop()
    try:
        loop.set_debug(True)
        loop.slow_callback_duration = 0.0  # every callback is slow

        def on_readable() -> None:
            a.recv(10)
            loop.remove_reader(a)
            loop.call_later(0.001, loop.stop)

        loop.add_reader(a, on_readable)
        b.send(b"x")
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            loop.run_forever()
    finally:
        loop.close()
        a.close()
        b.close()
    slow = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Executing")]
    assert any("on_readable" in m for m in slow), slow
    assert any(m.startswith("Executing <TimerHandle") for m in slow), slow


def test_debug_mode_records_where_handles_and_futures_were_made(
    caplog: pytest.LogCaptureFixture,
) -> None:
    here = __file__

    def fail() -> None:
        raise ValueError("boom")

    loop = tiffany.new_event_loop(clock="virtual")
    try:
        quiet = loop.call_soon(print)
        assert quiet._source_traceback is None  # type: ignore[attr-defined]
        quiet.cancel()
        loop.set_debug(True)
        soon_line = _line() + 1
        soon = loop.call_soon(print)
        later_line = _line() + 1
        later = loop.call_later(5, print)
        fut_line = _line() + 1
        fut = loop.create_future()
        for obj, line in [(soon, soon_line), (later, later_line)]:
            tb = obj._source_traceback  # type: ignore[attr-defined]
            assert tb is not None, obj
            assert (tb[-1].filename, tb[-1].lineno) == (here, line), tb[-1]
        # A future's ends in the stdlib's create_future, as on asyncio's loop.
        tb = fut._source_traceback  # type: ignore[attr-defined]
        assert tb is not None
        assert (tb[-2].filename, tb[-2].lineno) == (here, fut_line), tb[-2]
        assert f"created at {here}:{soon_line}" in repr(soon)
        assert f"created at {here}:{later_line}" in repr(later)
        for h in (soon, later):
            h.cancel()
        fut.cancel()
        # A failing callback's report says where it was scheduled.
        fail_line = _line() + 1
        loop.call_soon(fail)
        loop.call_soon(loop.stop)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.run_forever()
    finally:
        loop.set_debug(False)
        loop.close()
    errors = [r for r in caplog.records if "Exception in callback" in r.getMessage()]
    assert len(errors) == 1
    text = errors[0].getMessage()
    assert "Object created at (most recent call last)" in text, text
    assert f'File "{here}", line {fail_line}' in text, text


def _line() -> int:
    """The caller's line number."""
    import sys

    return sys._getframe(1).f_lineno


def test_shutdown_default_executor() -> None:
    async def main() -> tuple[bool, str]:
        loop = asyncio.get_running_loop()
        other = await loop.run_in_executor(None, threading.get_ident)
        executor = loop._default_executor  # type: ignore[attr-defined]
        assert executor is not None
        async with asyncio.timeout(BOUND):
            await loop.shutdown_default_executor()
        joined = not any(t.is_alive() for t in executor._threads)
        try:
            await loop.run_in_executor(None, threading.get_ident)
        except RuntimeError as e:
            return joined and other != threading.get_ident(), str(e)
        return False, "run_in_executor after shutdown did not fail"

    ok, error = run(main())
    assert ok
    assert "shutdown" in error


def test_exception_handlers() -> None:
    seen: list[tuple[str, Any]] = []
    callbacks: dict[str, Any] = {}
    a, b = socket.socketpair()
    loop = tiffany.new_event_loop()

    def boom(where: str) -> None:
        raise ValueError(where)

    def read_and_fail() -> None:
        a.recv(10)  # read: not ready again
        raise ValueError("reader")

    def handler(lp: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        assert lp is loop
        seen.append((str(ctx["exception"]), ctx["handle"]))
        callbacks[str(ctx["exception"])] = ctx["handle"]._callback
        if len(seen) == 3:
            loop.stop()

    try:
        with pytest.raises(TypeError):
            loop.set_exception_handler(42)  # type: ignore[arg-type]
        loop.set_exception_handler(handler)
        assert loop.get_exception_handler() is handler
        soon = loop.call_soon(boom, "soon")
        later = loop.call_later(0.001, boom, "timer")
        loop.add_reader(a, read_and_fail)
        b.send(b"x")
        loop.run_forever()
        assert loop.remove_reader(a)
    finally:
        loop.close()
        a.close()
        b.close()
    assert sorted(w for w, _ in seen) == ["reader", "soon", "timer"]
    handles = {w: h for w, h in seen}
    assert handles["soon"] is soon and handles["timer"] is later
    assert callbacks == {"soon": boom, "timer": boom, "reader": read_and_fail}


def test_a_failing_exception_handler_falls_back_to_the_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = tiffany.new_event_loop()

    def bad_handler(lp: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        raise RuntimeError("the handler failed")

    def boom() -> None:
        raise ValueError("boom")

    try:
        loop.set_exception_handler(bad_handler)
        loop.call_soon(boom)
        loop.call_soon(loop.stop)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.run_forever()
        # Back to the default handler: it logs.
        loop.set_exception_handler(None)
        loop.call_soon(boom)
        loop.call_soon(loop.stop)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.run_forever()
    finally:
        loop.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("Unhandled error in exception handler" in m for m in messages), messages
    assert any(m.startswith("Exception in callback") for m in messages), messages


def test_run_coroutine_threadsafe_from_another_thread() -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async def main() -> int:
        loop = asyncio.get_running_loop()

        def in_thread() -> int:
            return asyncio.run_coroutine_threadsafe(double(21), loop).result(BOUND)

        async with asyncio.timeout(BOUND):
            return await asyncio.to_thread(in_thread)

    assert run(main()) == 42


def test_signal_handler_under_the_virtual_clock() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")

    async def main() -> tuple[int, float, bool, bool]:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[int] = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, got.set_result, 7)
        try:
            with pytest.raises(TypeError):
                loop.add_signal_handler(signal.SIGUSR2, main)  # a coroutine function
            t0 = loop.time()
            os.kill(os.getpid(), signal.SIGUSR1)
            # The signal is seen before the virtual clock jumps to the deadline.
            async with asyncio.timeout(3600):
                value = await got
            waited = loop.time() - t0
        finally:
            removed = loop.remove_signal_handler(signal.SIGUSR1)
        return value, waited, removed, loop.remove_signal_handler(signal.SIGUSR1)

    assert run(main(), clock="virtual") == (7, 0.0, True, False)


def test_handles_that_ran_are_reused_only_when_nothing_refers_to_them() -> None:
    import contextvars
    import weakref

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    log: list[Any] = []
    loop = tiffany.new_event_loop(clock="virtual")

    def run_once() -> None:
        loop.call_soon(loop.stop)
        loop.run_forever()

    try:
        # Cancelled, then dropped: the loop may reuse them...
        for i in range(100):
            loop.call_soon(log.append, i).cancel()
        kept = loop.call_soon(log.append, "kept")
        watched = weakref.ref(loop.call_soon(log.append, "watched"))
        run_once()
        assert log == ["kept", "watched"]
        assert watched() is None  # a weakly referenced handle is let go
        # ...and a reused handle is a new one: not cancelled, its own
        # callback, context and deadline; the one kept by its owner is not reused.
        log.clear()
        ctx = contextvars.copy_context()
        ctx.run(var.set, "ctx")
        handles = [loop.call_soon(log.append, i) for i in range(100)]
        handles.append(loop.call_soon(lambda: log.append(var.get()), context=ctx))
        timer = loop.call_later(5, log.append, "timer")
        assert all(h is not kept for h in [*handles, timer])
        assert not any(h.cancelled() for h in handles)
        assert timer.when() == loop.time() + 5
        assert kept._callback is None and not kept.cancelled()  # type: ignore[attr-defined]
        loop.call_later(6, loop.stop)
        loop.run_forever()
        assert log == [*range(100), "ctx", "timer"]
    finally:
        loop.close()

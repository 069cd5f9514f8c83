"""Child processes on tiffany.EventLoop: watched through pidfds in the loop's
own selector, with no thread per child and no SIGCHLD handler."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

import pytest

import tiffany

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform != "linux", reason="the loop is Linux-only (epoll)"),
]

T = TypeVar("T")
BOUND = 30.0  # no wait in these tests may last longer
SH = shutil.which("sh") or "/bin/sh"
PIPE = asyncio.subprocess.PIPE


def run(main: Coroutine[Any, Any, T], *, clock: Literal["real", "virtual"] = "real") -> T:
    with asyncio.Runner(loop_factory=lambda: tiffany.new_event_loop(clock=clock)) as runner:
        assert isinstance(runner.get_loop(), tiffany.EventLoop)
        return runner.run(main)


async def blocked_child(code: int) -> asyncio.subprocess.Process:
    """A child that waits for a line on its stdin, then exits with `code`."""
    return await asyncio.create_subprocess_exec(SH, "-c", f"read line; exit {code}", stdin=PIPE)


def test_many_concurrent_children_and_no_thread_per_child() -> None:
    n = 24

    async def main() -> tuple[list[int | None], list[int], int, int, int]:
        loop = asyncio.get_running_loop()
        threads_before = threading.active_count()
        procs = [await blocked_child(i) for i in range(n)]
        # All of them run now, each watched: still no new thread, and no
        # SIGCHLD handler.
        threads_running = threading.active_count()
        watched = len(loop._children)  # type: ignore[attr-defined]
        running = [p.returncode for p in procs]
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.close()
        async with asyncio.timeout(BOUND):
            codes = await asyncio.gather(*(p.wait() for p in procs))
        assert len(loop._children) == 0  # type: ignore[attr-defined]
        return running, codes, threads_before, threads_running, watched

    handler_before = signal.getsignal(signal.SIGCHLD)
    running, codes, before, during, watched = run(main())
    assert running == [None] * n
    assert codes == list(range(n))
    assert during == before
    assert watched == n
    assert signal.getsignal(signal.SIGCHLD) == handler_before


def test_a_child_killed_by_a_signal_has_a_negative_returncode() -> None:
    async def main() -> tuple[int, int]:
        proc = await blocked_child(0)
        proc.send_signal(signal.SIGKILL)
        async with asyncio.timeout(BOUND):
            killed = await proc.wait()
        # A child that kills itself.
        self_killed = await asyncio.create_subprocess_exec(SH, "-c", "kill -TERM $$")
        async with asyncio.timeout(BOUND):
            return killed, await self_killed.wait()

    assert run(main()) == (-signal.SIGKILL, -signal.SIGTERM)


def test_wait_under_asyncio_timeout() -> None:
    async def main() -> tuple[bool, int | None, int]:
        proc = await blocked_child(3)
        timed_out = False
        try:
            async with asyncio.timeout(0.05):
                await proc.wait()  # blocked on its stdin: never exits by itself
        except TimeoutError:
            timed_out = True
        code_after_timeout = proc.returncode
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        async with asyncio.timeout(BOUND):
            return timed_out, code_after_timeout, await proc.wait()

    assert run(main()) == (True, None, 3)


def test_children_under_the_virtual_clock() -> None:
    async def main() -> tuple[bytes, int, bool, int, float]:
        loop = asyncio.get_running_loop()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; sys.stdout.write(sys.stdin.read()[::-1])",
            stdin=PIPE,
            stdout=PIPE,
        )
        out, _ = await proc.communicate(b"tiffany")  # real I/O, no timer: waits for it
        code = await proc.wait()
        # A virtual timeout on a child that never exits by itself fires at
        # once, at exactly its deadline; the child is then killed and reaped.
        blocked = await blocked_child(0)
        t0 = loop.time()
        timed_out = False
        try:
            async with asyncio.timeout(5):
                await blocked.wait()
        except TimeoutError:
            timed_out = True
        waited = loop.time() - t0
        blocked.kill()
        return out, code, timed_out, await blocked.wait(), waited

    assert run(main(), clock="virtual") == (b"ynaffit", 0, True, -signal.SIGKILL, 5.0)


def test_children_inside_tiffany_run() -> None:
    async def main() -> tuple[bytes, int]:
        proc = await asyncio.create_subprocess_exec(SH, "-c", "echo hi; exit 7", stdout=PIPE)
        out, _ = await proc.communicate()
        return out, await proc.wait()

    assert tiffany.run(main()) == (b"hi\n", 7)


def test_closing_the_loop_stops_watching_running_children() -> None:
    loop = tiffany.new_event_loop()
    proc = None
    try:
        # No pipes: the transport, closed after the loop, needs no loop.
        proc = loop.run_until_complete(asyncio.create_subprocess_exec(SH, "-c", "exec sleep 60"))
        (pidfd, _) = next(iter(loop._children._children.values()))
        os.fstat(pidfd)  # open while the child is watched
    finally:
        loop.close()
    assert len(loop._children) == 0
    with pytest.raises(OSError):
        os.fstat(pidfd)
    assert proc is not None
    transport = proc._transport  # type: ignore[attr-defined]
    popen = transport.get_extra_info("subprocess")
    popen.kill()
    assert popen.wait(BOUND) == -signal.SIGKILL
    transport.close()  # the child is reaped: nothing left to do on the loop

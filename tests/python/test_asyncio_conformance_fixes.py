"""Loop bugs that the imported conformance suites (CPython's, anyio's) found.

Each test here shows one fix on its own, so that it stays fixed even where the
suite that found it is not run (the anyio suite needs its sdist).
"""

from __future__ import annotations

import asyncio
import gc
import math
import socket
import weakref

import pytest

import tiffany

pytestmark = pytest.mark.timeout(60)


def test_time_can_be_read_from_another_thread() -> None:
    # Found by anyio's socket tests: in debug mode the stdlib's getaddrinfo
    # times itself with loop.time() in the executor thread.
    loop = tiffany.new_event_loop()
    try:

        async def main() -> tuple[float, float, float]:
            before = loop.time()
            there = await loop.run_in_executor(None, loop.time)
            return before, there, loop.time()

        before, there, after = loop.run_until_complete(main())
        # The same scale as the kernel's clock (real time since the loop began).
        assert before - 0.01 <= there <= after + 0.01
    finally:
        loop.close()


def test_debug_mode_getaddrinfo() -> None:
    loop = tiffany.new_event_loop()
    loop.set_debug(True)
    try:
        infos = loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM))
        assert infos[0][4] == ("127.0.0.1", 80)
    finally:
        loop.close()


def test_an_infinite_timer_never_fires_and_others_still_do() -> None:
    # Found by anyio's portal tests (`sleep(math.inf)`): the engine turned the
    # delay to its next timer into a Duration and panicked on infinity.
    async def main() -> float:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(math.inf), 5)
        return asyncio.get_running_loop().time()

    loop = tiffany.new_event_loop(clock="virtual")
    try:
        assert loop.run_until_complete(main()) == 5.0
        fired: list[float] = []
        loop.call_later(math.inf, fired.append, math.inf)
        loop.call_later(1e300, fired.append, 1e300)
        loop.run_until_complete(asyncio.sleep(2))
        assert fired == []
        assert loop.time() == 7.0
    finally:
        loop.close()


def test_a_closed_loop_is_freed_without_the_cycle_collector() -> None:
    # Found by anyio's test_asyncio_run_does_not_leak_event_loop: the loop and
    # its child watch referred to each other, so a closed loop stayed alive
    # until the next collection (the stdlib's loop is freed at once).
    loop = tiffany.new_event_loop()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    ref = weakref.ref(loop)
    gc.disable()
    try:
        del loop
        assert ref() is None
    finally:
        gc.enable()

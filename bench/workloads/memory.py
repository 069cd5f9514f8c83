"""Workload 6, memory: bytes of RSS per idle task.

N tasks are spawned and each blocks on something that will not happen soon;
once every task has started and blocked, the growth of the resident set since
just before the spawning, divided by N, is the figure. Then they are released
and counted.

Every runtime's tasks wait on an Event (``tiffany.Event``, ``asyncio.Event``,
``trio.Event``, ``gevent.event.Event``); ``set()`` releases them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.workloads.common import Progress, rss_bytes


def _result(progress: Progress, rss_before: int, rss_blocked: int) -> dict[str, Any]:
    return {
        "rss_delta": rss_blocked - rss_before,
        "counts": {"blocked": progress.started, "released": progress.finished},
    }


def on_tiffany(p: dict[str, Any]) -> dict[str, Any]:
    import tiffany

    n = p["tasks"]
    progress = Progress(n)

    async def idle(event: tiffany.Event) -> None:
        progress.start()
        await event.wait()
        progress.finish()

    async def main() -> tuple[int, int]:
        event = tiffany.Event()
        before = rss_bytes()
        for _ in range(n):
            tiffany.spawn(idle(event))
        while progress.started < n:
            await tiffany.sleep(0)
        blocked = rss_bytes()
        event.set()
        return before, blocked

    sched = tiffany.Scheduler()
    starter = sched.spawn(main())
    sched.run()  # without main: the idle tasks finish too
    before, blocked = starter.result()
    return _result(progress, before, blocked)


def on_asyncio(p: dict[str, Any], loop_factory: Callable[[], Any]) -> dict[str, Any]:
    import asyncio

    n = p["tasks"]
    progress = Progress(n)

    async def idle(event: asyncio.Event) -> None:
        progress.start()
        await event.wait()
        progress.finish()

    async def main() -> tuple[int, int]:
        event = asyncio.Event()
        before = rss_bytes()
        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(idle(event))
            while progress.started < n:
                await asyncio.sleep(0)
            blocked = rss_bytes()
            event.set()
        return before, blocked

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        before, blocked = runner.run(main())
    return _result(progress, before, blocked)


def on_trio(p: dict[str, Any]) -> dict[str, Any]:
    import trio

    n = p["tasks"]
    progress = Progress(n)

    async def idle(event: trio.Event) -> None:
        progress.start()
        await event.wait()
        progress.finish()

    async def main() -> tuple[int, int]:
        event = trio.Event()
        before = rss_bytes()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(idle, event)
            while progress.started < n:
                await trio.sleep(0)
            blocked = rss_bytes()
            event.set()
        return before, blocked

    before, blocked = trio.run(main)
    return _result(progress, before, blocked)


def on_gevent(p: dict[str, Any]) -> dict[str, Any]:
    import gevent
    import gevent.event

    n = p["tasks"]
    progress = Progress(n)

    def idle(event: gevent.event.Event) -> None:
        progress.start()
        event.wait()
        progress.finish()

    event = gevent.event.Event()
    before = rss_bytes()
    greenlets = [gevent.spawn(idle, event) for _ in range(n)]
    while progress.started < n:
        gevent.sleep(0)
    blocked = rss_bytes()
    event.set()
    gevent.joinall(greenlets)
    return _result(progress, before, blocked)

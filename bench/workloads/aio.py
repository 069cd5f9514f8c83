"""Workloads 11–16: asyncio programs on Tiffany's event loop, asyncio's and uvloop's.

One implementation per workload, run on every asyncio event loop: the
``tiffany`` entry is the same code on ``tiffany.new_event_loop`` (through
``asyncio.Runner(loop_factory=...)``), so the figures compare the loops and
nothing else.

- 11, ``call_soon``: N callbacks scheduled in batches of 1,000 (each batch's
  last callback lets the next batch be scheduled); ns per callback.
- 12, ``call_later``: N timers with delays spread over 0–10 ms; the wall
  time beyond the longest delay, per timer.
- 13, switch: N tasks × K ``asyncio.sleep(0)``, as workload 1.
- 14, TCP echo with asyncio streams, as workload 5.
- 15, TCP echo with a ``Protocol`` (no streams: ``data_received`` writes the
  data back; the client protocol counts bytes and resolves a future).
- 16, HTTP: an aiohttp server and an httpx client, R requests, C at a time;
  requests per second.
- 17, gather: ``asyncio.gather`` of N trivial tasks (each returns its
  argument), from the coroutines' creation to the gathered list; ns per task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.workloads import echo, switch
from bench.workloads.common import nodelay

HOST = "127.0.0.1"


def _tiffany_factory() -> Callable[[], Any]:
    import tiffany

    return tiffany.new_event_loop


def call_soon(p: dict[str, Any], loop_factory: Callable[[], Any]) -> dict[str, Any]:
    import asyncio

    n, batch = p["callbacks"], 1000
    count = 0

    def tick() -> None:
        nonlocal count
        count += 1

    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        for _ in range(n // batch):
            done = loop.create_future()
            for _ in range(batch - 1):
                loop.call_soon(tick)
            loop.call_soon(lambda f=done: (tick(), f.set_result(None)))
            await done
        return time.perf_counter() - t0

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        seconds = runner.run(main())
    return {"seconds": seconds, "counts": {"callbacks": count}}


def call_later(p: dict[str, Any], loop_factory: Callable[[], Any]) -> dict[str, Any]:
    import asyncio

    n, spread = p["timers"], 0.01
    fired = 0

    async def main() -> float:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def fire() -> None:
            nonlocal fired
            fired += 1
            if fired == n:
                done.set_result(None)

        t0 = time.perf_counter()
        for i in range(n):
            loop.call_later(spread * (i * 7919 % n) / n, fire)
        await done
        return time.perf_counter() - t0 - spread

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        seconds = runner.run(main())
    return {"seconds": max(seconds, 0.0), "counts": {"timers": fired}}


def echo_protocol(p: dict[str, Any], loop_factory: Callable[[], Any]) -> dict[str, Any]:
    import asyncio

    clients, rounds, size = p["clients"], p["rounds"], p["size"]
    payload = b"x" * size
    c = echo.Counters(clients)

    class Server(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            nodelay(transport.get_extra_info("socket"))
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            c.server_bytes += len(data)
            self.transport.write(data)

    class Client(asyncio.Protocol):
        def __init__(self, done: asyncio.Future[None]) -> None:
            self.done = done
            self.got = 0
            self.rounds = 0

        def connection_made(self, transport: Any) -> None:
            nodelay(transport.get_extra_info("socket"))
            self.transport = transport
            transport.write(payload)

        def data_received(self, data: bytes) -> None:
            self.got += len(data)
            c.client_bytes += len(data)
            if self.got < size:
                return
            assert self.got == size
            self.got = 0
            self.rounds += 1
            if self.rounds == rounds:
                self.transport.close()
                c.progress.finish(rounds)
                self.done.set_result(None)
            else:
                self.transport.write(payload)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Server, HOST, 0, backlog=echo.BACKLOG)
        port = server.sockets[0].getsockname()[1]
        t0 = time.perf_counter()
        futures = []
        for _ in range(clients):
            done: asyncio.Future[None] = loop.create_future()
            await loop.create_connection(lambda d=done: Client(d), HOST, port)
            futures.append(done)
        await asyncio.gather(*futures)
        seconds = time.perf_counter() - t0
        server.close()
        await server.wait_closed()
        return seconds

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        seconds = runner.run(main())
    return echo._result(c, 0.0, seconds)


def http(p: dict[str, Any], loop_factory: Callable[[], Any]) -> dict[str, Any]:
    import asyncio

    import httpx
    from aiohttp import web

    requests, concurrency = p["requests"], p["concurrency"]
    ok = 0

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def main() -> float:
        nonlocal ok
        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://{HOST}:{port}/"
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(limits=limits) as client:

            async def worker(k: int) -> None:
                nonlocal ok
                for _ in range(k):
                    r = await client.get(url)
                    ok += r.status_code == 200 and r.text == "hello"

            t0 = time.perf_counter()
            per = requests // concurrency
            await asyncio.gather(*(worker(per) for _ in range(concurrency)))
            seconds = time.perf_counter() - t0
        await runner.cleanup()
        return seconds

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        seconds = runner.run(main())
    return {"seconds": seconds, "counts": {"requests": ok}}


def gather(p: dict[str, Any], loop_factory: Callable[[], Any]) -> dict[str, Any]:
    import asyncio

    n = p["tasks"]

    async def trivial(i: int) -> int:
        return i

    async def main() -> tuple[float, int]:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(trivial(i) for i in range(n)))
        seconds = time.perf_counter() - t0
        # The work is checked: every task ran, and gather kept the order.
        ok = sum(1 for i, r in enumerate(results) if r == i)
        return seconds, ok

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        seconds, ok = runner.run(main())
    return {"seconds": seconds, "counts": {"tasks": ok}}


_IMPLS: dict[str, Callable[[dict[str, Any], Callable[[], Any]], dict[str, Any]]] = {
    "call_soon": call_soon,
    "call_later": call_later,
    "switch": switch.on_asyncio,
    "echo_streams": echo.on_asyncio,
    "echo_protocol": echo_protocol,
    "http": http,
    "gather": gather,
}


def on_asyncio(p: dict[str, Any], loop_factory: Callable[[], Any]) -> dict[str, Any]:
    return _IMPLS[p["kind"]](p, loop_factory)


def on_tiffany(p: dict[str, Any]) -> dict[str, Any]:
    return on_asyncio(p, _tiffany_factory())

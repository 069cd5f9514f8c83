"""asyncio libraries on Tiffany's loop, end to end (loopback only, every wait bounded)."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, TypeVar

import pytest

import tiffany

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

httpx = pytest.importorskip("httpx")
anyio = pytest.importorskip("anyio")
trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")
BOUND = 30.0  # no wait in these tests may last longer


def run(main: Coroutine[Any, Any, T], *, clock: Literal["real", "virtual"] = "real") -> T:
    with asyncio.Runner(loop_factory=lambda: tiffany.new_event_loop(clock=clock)) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, tiffany.EventLoop)
        return runner.run(main)


def bounded(main: Callable[[], Awaitable[T]]) -> Callable[[], Coroutine[Any, Any, T]]:
    async def wrapper() -> T:
        async with asyncio.timeout(BOUND):
            return await main()

    return wrapper


class Server:
    """An aiohttp application on an ephemeral loopback port."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.release = asyncio.Event()
        self.slow_started = asyncio.Event()
        self.app.router.add_get("/hello/{n}", self.hello)
        self.app.router.add_get("/stream", self.stream)
        self.app.router.add_get("/slow", self.slow)
        self.runner = web.AppRunner(self.app)
        self.port = 0

    async def hello(self, request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.match_info['n']}")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(10):
            await resp.write(f"chunk {i}\n".encode())
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    async def slow(self, request: web.Request) -> web.Response:
        self.slow_started.set()
        await self.release.wait()
        return web.Response(text="late")

    async def __aenter__(self) -> Server:
        await self.runner.setup()
        return self

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        scheme = "https" if ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        await self.runner.cleanup()


def test_aiohttp_server_httpx_200_concurrent_requests() -> None:
    @bounded
    async def main() -> list[str]:
        async with Server() as srv, httpx.AsyncClient() as client:
            base = await srv.start()
            responses = await asyncio.gather(*(client.get(f"{base}/hello/{i}") for i in range(200)))
            return [r.text for r in responses]

    assert run(main()) == [f"hello {i}" for i in range(200)]


def test_aiohttp_server_httpx_200_concurrent_requests_over_tls() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    @bounded
    async def main() -> list[str]:
        async with Server() as srv, httpx.AsyncClient(verify=client_ctx) as client:
            base = await srv.start(server_ctx)
            responses = await asyncio.gather(*(client.get(f"{base}/hello/{i}") for i in range(200)))
            return [r.text for r in responses]

    assert run(main()) == [f"hello {i}" for i in range(200)]


def test_aiohttp_client_and_streaming_response() -> None:
    @bounded
    async def main() -> tuple[str, list[bytes]]:
        async with Server() as srv, aiohttp.ClientSession() as session:
            base = await srv.start()
            async with session.get(f"{base}/hello/7") as resp:
                text = await resp.text()
            async with session.get(f"{base}/stream") as resp:
                lines = [line async for line in resp.content]
            return text, lines

    text, lines = run(main())
    assert text == "hello 7"
    assert lines == [f"chunk {i}\n".encode() for i in range(10)]


def test_httpx_streaming_response() -> None:
    @bounded
    async def main() -> str:
        async with Server() as srv, httpx.AsyncClient() as client:
            base = await srv.start()
            async with client.stream("GET", f"{base}/stream") as resp:
                return "".join([chunk async for chunk in resp.aiter_text()])

    assert run(main()) == "".join(f"chunk {i}\n" for i in range(10))


def test_client_timeout() -> None:
    @bounded
    async def main() -> None:
        async with Server() as srv, httpx.AsyncClient(timeout=0.2) as client:
            base = await srv.start()
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"{base}/slow")

    run(main())


def test_cancelling_a_request_in_flight() -> None:
    @bounded
    async def main() -> None:
        async with Server() as srv, httpx.AsyncClient() as client:
            base = await srv.start()
            request = asyncio.create_task(client.get(f"{base}/slow"))
            await srv.slow_started.wait()
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
            # The client still works after the cancelled request.
            assert (await client.get(f"{base}/hello/1")).text == "hello 1"

    run(main())


def test_anyio_task_group_with_a_cancel_scope() -> None:
    log: list[str] = []

    async def sleeper(name: str) -> None:
        try:
            await anyio.sleep(BOUND)
        finally:
            log.append(f"{name} cancelled")

    async def main() -> None:
        with anyio.move_on_after(0.05) as scope:
            await anyio.sleep(BOUND)
        assert scope.cancelled_caught
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper, "a")
            tg.start_soon(sleeper, "b")
            await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        log.append("done")
        assert isinstance(asyncio.get_running_loop(), tiffany.EventLoop)

    anyio.run(main, backend="asyncio", backend_options={"loop_factory": tiffany.new_event_loop})
    assert sorted(log[:2]) == ["a cancelled", "b cancelled"] and log[2] == "done"


def test_create_subprocess_exec() -> None:
    @bounded
    async def main() -> tuple[bytes, int]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; sys.stdout.write(sys.stdin.read().upper())",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate(b"tiffany")
        return out, await proc.wait()

    assert run(main()) == (b"TIFFANY", 0)


def test_signal_handler() -> None:
    @bounded
    async def main() -> int:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[int] = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, got.set_result, 42)
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            return await got
        finally:
            assert loop.remove_signal_handler(signal.SIGUSR1)

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    assert run(main()) == 42


def test_to_thread_and_call_soon_threadsafe() -> None:
    @bounded
    async def main() -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        threading.Thread(target=loop.call_soon_threadsafe, args=(fut.set_result, 5)).start()
        name = await asyncio.to_thread(lambda: threading.current_thread().name)
        return name, await fut

    name, value = run(main())
    assert name != threading.current_thread().name and value == 5


def test_task_group_and_timeout() -> None:
    @bounded
    async def main() -> list[str]:
        log: list[str] = []

        async def child(i: int) -> None:
            await asyncio.sleep(i / 100)
            log.append(f"child {i}")

        async with asyncio.TaskGroup() as tg:
            for i in range(3):
                tg.create_task(child(i))
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(BOUND)
        except TimeoutError:
            log.append("timed out")
        return log

    assert run(main()) == ["child 0", "child 1", "child 2", "timed out"]


def _virtual_program() -> tuple[list[str], list[str]]:
    """An asyncio program on the virtual clock: its loop.time() log and PAL."""
    log: list[str] = []
    pal: list[str] = []

    async def worker(i: int, q: asyncio.Queue[int]) -> None:
        while True:
            item = await q.get()
            await asyncio.sleep(0.5 * (item % 3))
            log.append(f"{asyncio.get_running_loop().time():.6f} worker {i} item {item}")
            q.task_done()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, tiffany.EventLoop)
        loop.scheduler.on_events(lambda batch: pal.extend(e.to_json() for e in batch))
        q: asyncio.Queue[int] = asyncio.Queue()
        workers = [asyncio.create_task(worker(i, q)) for i in range(3)]
        for item in range(12):
            q.put_nowait(item)
        await q.join()
        try:
            await asyncio.wait_for(asyncio.sleep(3600), timeout=60)
        except TimeoutError:
            log.append(f"{loop.time():.6f} wait_for timed out")
        loop.call_later(10, lambda: log.append(f"{loop.time():.6f} call_later"))
        await asyncio.sleep(3600)
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        log.append(f"{loop.time():.6f} end")

    run(main(), clock="virtual")
    return log, pal


def test_virtual_clock_runs_are_identical() -> None:
    first = _virtual_program()
    second = _virtual_program()
    log, pal = first
    assert first == second
    # 2.5 s of work, a 60 s wait_for timeout, an hour of sleep: virtual time.
    assert log[-3:] == [
        "62.500000 wait_for timed out",
        "72.500000 call_later",
        "3662.500000 end",
    ]
    assert pal, "the scheduler's events reach the subscriber"


def test_move_on_after_around_a_slow_httpx_request() -> None:
    # Every task on the loop is a kernel task, so Tiffany's cancel scopes work
    # in asyncio code: the scope cuts the request short (the handler never
    # answers), the task goes on, and the client still serves the next one.
    @bounded
    async def main() -> tuple[bool, bool, str]:
        async with Server() as srv, httpx.AsyncClient() as client:
            base = await srv.start()
            with tiffany.move_on_after(0.2) as scope:
                await client.get(f"{base}/slow")
            after = await client.get(f"{base}/hello/7")
            return scope.cancelled_caught, srv.slow_started.is_set(), after.text

    assert run(main()) == (True, True, "hello 7")

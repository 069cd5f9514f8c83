"""Workload 5, TCP echo over loopback: C clients × R round trips of S bytes.

One process runs both sides on the runtime under test. The server accepts the
C connections and echoes whatever it receives until the client closes. Each
client connects to 127.0.0.1, then R times sends S bytes and reads until it
has S bytes back, and checks them. The figure is C×R / (time from the first
connect to the last client done): round trips per second. Every socket has
TCP_NODELAY. The loops are bounded: C connections, R round trips each.

- Tiffany: non-blocking sockets and its helpers (``sock_accept``,
  ``sock_connect``, ``sock_recv``, ``sock_sendall``).
- asyncio, uvloop, rloop: the streams API (``start_server``, ``open_connection``).
- trio: ``open_tcp_listeners`` / ``serve_listeners`` and ``open_tcp_stream``.
- gevent: ``gevent.server.StreamServer`` and ``gevent.socket``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from bench.workloads.common import Progress, nodelay

HOST = "127.0.0.1"
BACKLOG = 1024
CHUNK = 65536


class Counters:
    def __init__(self, clients: int) -> None:
        self.progress = Progress(clients)
        self.client_bytes = 0
        self.server_bytes = 0


def _result(c: Counters, t0: float, t1: float) -> dict[str, Any]:
    return {
        "seconds": t1 - t0,
        "counts": {
            "round_trips": c.progress.units,
            "client_bytes": c.client_bytes,
            "server_bytes": c.server_bytes,
        },
    }


def on_tiffany(p: dict[str, Any]) -> dict[str, Any]:
    import tiffany

    clients, rounds, size = p["clients"], p["rounds"], p["size"]
    payload = b"x" * size
    c = Counters(clients)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(BACKLOG)
    listener.setblocking(False)
    address = listener.getsockname()

    async def serve(conn: socket.socket) -> None:
        nodelay(conn)
        with conn:
            while data := await tiffany.sock_recv(conn, CHUNK):
                c.server_bytes += len(data)
                await tiffany.sock_sendall(conn, data)

    async def acceptor() -> None:
        for _ in range(clients):
            conn, _ = await tiffany.sock_accept(listener)
            conn.setblocking(False)
            tiffany.spawn(serve(conn))

    async def client() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            await tiffany.sock_connect(s, address)
            nodelay(s)
            for _ in range(rounds):
                await tiffany.sock_sendall(s, payload)
                got = b""
                while len(got) < size:
                    chunk = await tiffany.sock_recv(s, size - len(got))
                    assert chunk, "server closed early"
                    got += chunk
                assert got == payload
                c.client_bytes += len(got)
        c.progress.finish(rounds)

    async def main() -> float:
        tiffany.spawn(acceptor())
        t0 = time.perf_counter()
        for t in [tiffany.spawn(client()) for _ in range(clients)]:
            await t
        return time.perf_counter() - t0

    seconds = tiffany.Scheduler().run(main())
    listener.close()
    return _result(c, 0.0, seconds)


def on_asyncio(p: dict[str, Any], loop_factory: Callable[[], Any]) -> dict[str, Any]:
    import asyncio

    clients, rounds, size = p["clients"], p["rounds"], p["size"]
    payload = b"x" * size
    c = Counters(clients)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nodelay(writer.get_extra_info("socket"))
        while data := await reader.read(CHUNK):
            c.server_bytes += len(data)
            writer.write(data)
            await writer.drain()
        writer.close()

    async def client(port: int) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        nodelay(writer.get_extra_info("socket"))
        for _ in range(rounds):
            writer.write(payload)
            await writer.drain()
            got = await reader.readexactly(size)
            assert got == payload
            c.client_bytes += len(got)
        writer.close()
        await writer.wait_closed()
        c.progress.finish(rounds)

    async def main() -> float:
        server = await asyncio.start_server(serve, HOST, 0, backlog=BACKLOG)
        port = server.sockets[0].getsockname()[1]
        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(clients):
                tg.create_task(client(port))
        seconds = time.perf_counter() - t0
        server.close()
        await server.wait_closed()
        return seconds

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        seconds = runner.run(main())
    return _result(c, 0.0, seconds)


def on_trio(p: dict[str, Any]) -> dict[str, Any]:
    import trio

    clients, rounds, size = p["clients"], p["rounds"], p["size"]
    payload = b"x" * size
    c = Counters(clients)

    async def serve(stream: trio.SocketStream) -> None:
        nodelay(stream.socket)  # type: ignore[arg-type]
        async with stream:
            while data := await stream.receive_some(CHUNK):
                c.server_bytes += len(data)
                await stream.send_all(data)

    async def client(port: int) -> None:
        async with await trio.open_tcp_stream(HOST, port) as stream:
            nodelay(stream.socket)  # type: ignore[arg-type]
            for _ in range(rounds):
                await stream.send_all(payload)
                got = b""
                while len(got) < size:
                    chunk = await stream.receive_some(size - len(got))
                    assert chunk, "server closed early"
                    got += chunk
                assert got == payload
                c.client_bytes += len(got)
        c.progress.finish(rounds)

    async def main() -> float:
        async with trio.open_nursery() as server_nursery:
            listeners = await trio.open_tcp_listeners(0, host=HOST, backlog=BACKLOG)
            port = listeners[0].socket.getsockname()[1]
            server_nursery.start_soon(trio.serve_listeners, serve, listeners)
            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(clients):
                    nursery.start_soon(client, port)
            seconds = time.perf_counter() - t0
            server_nursery.cancel_scope.cancel()  # stop accepting
        return seconds

    return _result(c, 0.0, trio.run(main))


def on_gevent(p: dict[str, Any]) -> dict[str, Any]:
    import gevent
    import gevent.server
    import gevent.socket

    clients, rounds, size = p["clients"], p["rounds"], p["size"]
    payload = b"x" * size
    c = Counters(clients)

    def serve(conn: gevent.socket.socket, _address: Any) -> None:
        nodelay(conn)
        with conn:
            while data := conn.recv(CHUNK):
                c.server_bytes += len(data)
                conn.sendall(data)

    def client(port: int) -> None:
        with gevent.socket.create_connection((HOST, port)) as s:
            nodelay(s)
            for _ in range(rounds):
                s.sendall(payload)
                got = b""
                while len(got) < size:
                    chunk = s.recv(size - len(got))
                    assert chunk, "server closed early"
                    got += chunk
                assert got == payload
                c.client_bytes += len(got)
        c.progress.finish(rounds)

    server = gevent.server.StreamServer((HOST, 0), serve, backlog=BACKLOG)
    server.start()
    t0 = time.perf_counter()
    greenlets = [gevent.spawn(client, server.server_port) for _ in range(clients)]
    gevent.joinall(greenlets, raise_error=True)
    seconds = time.perf_counter() - t0
    server.stop()
    return _result(c, 0.0, seconds)

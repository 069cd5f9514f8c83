"""I/O: readiness waits and the native socket helpers."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct

import pytest

import tiffany
import tiffany.lowlevel


def test_wait_readable_on_socketpair() -> None:
    a, b = socket.socketpair()
    events: list[str] = []

    async def reader() -> bytes:
        await tiffany.lowlevel.wait_readable(a)
        events.append("readable")
        return a.recv(16)

    async def writer() -> None:
        await tiffany.sleep(0.01)
        events.append("write")
        b.send(b"ping")

    async def main() -> bytes:
        r = tiffany.spawn(reader())
        tiffany.spawn(writer())
        return await r

    try:
        assert tiffany.run(main()) == b"ping"
        assert events == ["write", "readable"]
    finally:
        a.close()
        b.close()


def test_wait_readable_already_ready_and_fd_int() -> None:
    a, b = socket.socketpair()
    b.send(b"x")

    async def main() -> bytes:
        await tiffany.lowlevel.wait_readable(a.fileno())
        await tiffany.lowlevel.wait_readable(a)  # still readable: level semantics
        return a.recv(1)

    try:
        assert tiffany.run(main()) == b"x"
    finally:
        a.close()
        b.close()


def test_wait_writable_and_timeout() -> None:
    a, b = socket.socketpair()

    async def main() -> str:
        await tiffany.lowlevel.wait_writable(a)
        with pytest.raises(TimeoutError):
            await tiffany.lowlevel.wait_readable(a, timeout=0.02)
        return "ok"

    try:
        assert tiffany.run(main()) == "ok"
    finally:
        a.close()
        b.close()


def test_wait_on_closed_socket_is_a_clear_error() -> None:
    a, b = socket.socketpair()
    a.close()
    b.close()
    with pytest.raises(ValueError, match="invalid file descriptor"):
        tiffany.lowlevel.wait_readable(a)


def test_wait_on_closed_fd_number_raises_oserror() -> None:
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    b.close()

    async def main() -> None:
        await tiffany.lowlevel.wait_readable(fd)

    with pytest.raises(OSError) as info:
        tiffany.run(main())
    assert isinstance(info.value.errno, int)
    assert "os error" not in str(info.value)


def test_echo_server_and_clients_over_loopback() -> None:
    clients, rounds = 5, 20

    async def handle(conn: socket.socket) -> None:
        with conn:
            while True:
                data = await tiffany.sock_recv(conn, 4096)
                if not data:
                    return
                await tiffany.sock_sendall(conn, data)

    async def server(listener: socket.socket) -> None:
        for _ in range(clients):
            conn, _addr = await tiffany.sock_accept(listener)
            tiffany.spawn(handle(conn))

    async def client(port: int, i: int) -> int:
        sock = socket.socket()
        try:
            await tiffany.sock_connect(sock, ("127.0.0.1", port))
            for r in range(rounds):
                msg = f"client {i} round {r}".encode() * 3
                await tiffany.sock_sendall(sock, msg)
                got = b""
                while len(got) < len(msg):
                    chunk = await tiffany.sock_recv(sock, 4096)
                    assert chunk, "server closed early"
                    got += chunk
                assert got == msg
            return rounds
        finally:
            sock.close()

    async def main() -> int:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        try:
            srv = tiffany.spawn(server(listener))
            cs = [tiffany.spawn(client(port, i)) for i in range(clients)]
            total = 0
            for c in cs:
                total += await c
            await srv
            return total
        finally:
            listener.close()

    assert tiffany.run(main()) == clients * rounds


def test_sock_connect_refused() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now

    async def main() -> None:
        sock = socket.socket()
        try:
            await tiffany.sock_connect(sock, ("127.0.0.1", port))
        finally:
            sock.close()

    with pytest.raises(OSError):
        tiffany.run(main())


def test_sock_recv_after_descriptor_number_is_reused() -> None:
    # The helpers keep a socket registered between waits; a socket closed
    # and its number reused by a new socket must get a fresh registration,
    # or the second wait would never be woken.
    async def recv_one(a: socket.socket, b: socket.socket, payload: bytes) -> bytes:
        async def send_later() -> None:
            await tiffany.sleep(0.001)
            b.sendall(payload)

        tiffany.spawn(send_later())
        return await tiffany.sock_recv(a, 100)

    async def main() -> list[tuple[int, bytes]]:
        seen = []
        for i in range(20):
            a, b = socket.socketpair()
            a.setblocking(False)
            with a, b:
                seen.append((a.fileno(), await recv_one(a, b, b"round %d" % i)))
        return seen

    seen = tiffany.run(main())
    assert [data for _, data in seen] == [b"round %d" % i for i in range(20)]
    # The test means something only if numbers were reused.
    assert len({fd for fd, _ in seen}) < len(seen)


def test_sock_sendall_accepts_bytes_like_and_refuses_str() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)

    async def main() -> bytes:
        await tiffany.sock_sendall(a, bytearray(b"ab"))
        await tiffany.sock_sendall(a, memoryview(b"cd"))
        await tiffany.sock_sendall(a, b"ef")
        return b.recv(16)

    with a, b:
        assert tiffany.run(main()) == b"abcdef"
        with pytest.raises(TypeError, match="bytes-like"):
            tiffany.sock_sendall(a, "text")  # type: ignore[arg-type]


def test_large_sendall_waits_for_room_and_delivers_every_byte() -> None:
    # Several MB through a socketpair: the sender fills the buffer, waits for
    # room (writable), and goes on; the reader drains in chunks.
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    payload = bytes(range(256)) * 16384  # 4 MiB

    async def reader() -> bytes:
        got = bytearray()
        while len(got) < len(payload):
            chunk = await tiffany.sock_recv(b, 65536)
            assert chunk
            got += chunk
        return bytes(got)

    async def main() -> bytes:
        r = tiffany.spawn(reader())
        await tiffany.sock_sendall(a, payload)
        return await r

    with a, b:
        assert tiffany.run(main()) == payload


def test_cancelling_a_task_blocked_in_sock_recv_frees_the_socket() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)

    async def blocked() -> None:
        await tiffany.sock_recv(a, 16)

    async def main() -> tuple[str, bytes]:
        t = tiffany.spawn(blocked())
        await tiffany.sleep(0.001)
        t.cancel()
        try:
            await t
            outcome = "finished"
        except asyncio.CancelledError:
            outcome = "cancelled"
        # Another task can now wait on the same socket.
        b.sendall(b"after")
        return outcome, await tiffany.sock_recv(a, 16)

    with a, b:
        assert tiffany.run(main()) == ("cancelled", b"after")


def test_sock_recv_on_a_socket_closed_by_its_peer_returns_empty() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)

    async def main() -> list[bytes]:
        async def close_later() -> None:
            await tiffany.sleep(0.001)
            b.sendall(b"last")
            b.close()

        tiffany.spawn(close_later())
        return [await tiffany.sock_recv(a, 16), await tiffany.sock_recv(a, 16)]

    with a:
        assert tiffany.run(main()) == [b"last", b""]


def test_sock_accept_refuses_a_blocking_listener() -> None:
    # accept() has no "don't wait" flag: on a blocking listener it would
    # block the whole scheduler, so the helper refuses it up front.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with pytest.raises(ValueError, match="non-blocking"):
            tiffany.sock_accept(listener)


def test_sock_recv_of_an_enormous_size_reads_what_arrived() -> None:
    # 2**36 bytes would be a 64 GiB buffer: it used to abort the process.
    a, b = socket.socketpair()
    a.setblocking(False)

    async def main() -> bytes:
        b.sendall(b"hello")
        return await tiffany.sock_recv(a, 2**36)

    try:
        assert tiffany.run(main(), clock="virtual") == b"hello"
    finally:
        a.close()
        b.close()


def test_sock_recv_returns_at_most_256_kib_per_call() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def writer() -> None:
        await tiffany.sock_sendall(b, payload)
        b.shutdown(socket.SHUT_WR)

    async def main() -> list[int]:
        tiffany.spawn(writer())
        sizes = []
        received = bytearray()
        while chunk := await tiffany.sock_recv(a, 2**40):
            sizes.append(len(chunk))
            received += chunk
        assert received == payload
        return sizes

    try:
        sizes = tiffany.run(main())
        assert max(sizes) <= 256 * 1024
    finally:
        a.close()
        b.close()


def test_os_errors_are_built_as_python_builds_them() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.close()

    async def main() -> None:
        await tiffany.sock_sendall(a, b"x" * 100)

    try:
        with pytest.raises(BrokenPipeError) as info:
            tiffany.run(main(), clock="virtual")
    finally:
        a.close()
    assert info.value.errno == errno.EPIPE
    assert info.value.strerror == os.strerror(errno.EPIPE)
    assert str(info.value) == f"[Errno {errno.EPIPE}] {os.strerror(errno.EPIPE)}"
    assert "os error" not in str(info.value)


def test_a_reset_connection_is_a_connection_reset_error() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    conn.setblocking(False)
    # Close with unread data and SO_LINGER 0: the peer sees a reset.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()

    async def main() -> bytes:
        await tiffany.sleep(0)
        return await tiffany.sock_recv(conn, 10)

    try:
        with pytest.raises(ConnectionResetError) as info:
            tiffany.run(main())
        assert info.value.errno == errno.ECONNRESET
    finally:
        conn.close()
        listener.close()

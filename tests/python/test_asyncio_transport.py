"""tiffany.EventLoop's native TCP and Unix stream transports: what CPython's
conformance tests do not cover (flow control, ``BufferedProtocol``, abort
while writing, a peer's reset, writes after close, errors in callbacks)."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

import tiffany
from tiffany._transport import SocketTransport

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
BIG = 4 * 1024 * 1024  # far more than a socket pair's kernel buffers


def run(main: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(20):
            return await main()

    with asyncio.Runner(loop_factory=tiffany.new_event_loop) as runner:
        return runner.run(bounded())


class Recorder(asyncio.Protocol):
    """Records every callback; ``lost`` resolves with connection_lost's argument."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.events: list[str] = []
        self.data = bytearray()
        self.made: asyncio.Future[asyncio.Transport] = loop.create_future()
        self.lost: asyncio.Future[BaseException | None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()
        self.resumed: asyncio.Future[None] = loop.create_future()
        self.keep_open = False

    def connection_made(self, transport: Any) -> None:
        self.events.append("made")
        self.made.set_result(transport)

    def data_received(self, data: bytes) -> None:
        assert type(data) is bytes
        self.data += data

    def eof_received(self) -> bool:
        self.events.append("eof")
        self.eof.set_result(None)
        return self.keep_open

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")
        if not self.resumed.done():
            self.resumed.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)


async def pair(proto: asyncio.BaseProtocol) -> tuple[Any, socket.socket]:
    """A native transport over one end of a Unix socket pair, and the other end."""
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    transport, _ = await loop.connect_accepted_socket(lambda: proto, ours)
    return transport, peer


async def recv_exactly(peer: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    got = bytearray()
    while len(got) < n:
        chunk = await loop.sock_recv(peer, 65536)
        assert chunk, f"EOF after {len(got)} of {n} bytes"
        got += chunk
    return bytes(got)


def test_tcp_and_unix_connections_use_the_native_transport(tmp_path: Any) -> None:
    async def main() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        tcp = await asyncio.start_server(echo, "127.0.0.1", 0)
        path = str(tmp_path / "s.sock")
        unix = await asyncio.start_unix_server(echo, path)
        port = tcp.sockets[0].getsockname()[1]
        for opened in (
            asyncio.open_connection("127.0.0.1", port),
            asyncio.open_unix_connection(path),
        ):
            reader, writer = await opened
            tr = writer.transport
            assert type(tr) is SocketTransport
            assert isinstance(tr, asyncio.Transport)
            sock = tr.get_extra_info("socket")
            assert sock.fileno() >= 0
            assert tr.get_extra_info("sockname") == sock.getsockname()
            assert tr.get_extra_info("peername") == sock.getpeername()
            assert tr.can_write_eof()
            writer.writelines([b"he", bytearray(b"ll"), memoryview(b"o\n")])
            assert await reader.readline() == b"hello\n"
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            assert tr.is_closing()
            assert tr.get_extra_info("socket").fileno() == -1
        for server in (tcp, unix):
            server.close()
            await server.wait_closed()

    run(main)


def test_write_buffer_flow_control_pauses_and_resumes_the_protocol() -> None:
    async def main() -> None:
        proto = Recorder()
        tr, peer = await pair(proto)
        await proto.made
        assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        with pytest.raises(ValueError):
            tr.set_write_buffer_limits(high=10, low=20)
        tr.set_write_buffer_limits(high=256 * 1024, low=32 * 1024)
        assert tr.get_write_buffer_limits() == (32 * 1024, 256 * 1024)
        payload = bytes(range(256)) * (BIG // 256)
        tr.write(payload)  # the peer does not read: most of it is buffered
        assert tr.get_write_buffer_size() > 256 * 1024
        assert proto.events == ["made", "pause"]
        assert tr._protocol_paused
        got = await recv_exactly(peer, len(payload))
        await proto.resumed
        assert got == payload
        assert tr.get_write_buffer_size() == 0
        assert proto.events == ["made", "pause", "resume"]
        tr.close()
        assert await proto.lost is None
        assert proto.events == ["made", "pause", "resume", "lost"]
        peer.close()

    run(main)


def test_pause_writing_may_reuse_the_bytearray_being_written() -> None:
    class Reusing(Recorder):
        buf = bytearray()

        def pause_writing(self) -> None:
            super().pause_writing()
            self.buf.clear()  # the write's buffer is released by now

    async def main() -> None:
        proto = Reusing()
        tr, peer = await pair(proto)
        await proto.made
        proto.buf += b"z" * BIG
        tr.write(proto.buf)
        assert proto.events == ["made", "pause"] and proto.buf == b""
        assert await recv_exactly(peer, BIG) == b"z" * BIG
        tr.close()
        await proto.lost
        peer.close()

    run(main)


def test_buffered_protocol_reads_into_its_buffer() -> None:
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buf = bytearray(1000)
            self.got = bytearray()
            self.sizes: list[int] = []
            self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def get_buffer(self, sizehint: int) -> memoryview:
            return memoryview(self.buf)[:700]

        def buffer_updated(self, nbytes: int) -> None:
            self.sizes.append(nbytes)
            self.got += self.buf[:nbytes]

        def eof_received(self) -> bool:
            self.done.set_result(None)
            return False

    async def main() -> None:
        loop = asyncio.get_running_loop()
        proto = Buffered()
        tr, peer = await pair(proto)
        data = bytes(range(256)) * 40
        await loop.sock_sendall(peer, data)
        peer.shutdown(socket.SHUT_WR)
        await proto.done
        assert bytes(proto.got) == data
        assert max(proto.sizes) <= 700  # never more than get_buffer's view
        assert tr.is_closing()  # eof_received returned False
        peer.close()

    run(main)


def test_abort_while_writing_drops_the_buffer_and_loses_the_connection_once() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        proto = Recorder()
        tr, peer = await pair(proto)
        await proto.made
        tr.write(b"x" * BIG)
        assert tr.get_write_buffer_size() > 0
        tr.abort()
        assert tr.is_closing()
        assert tr.get_write_buffer_size() == 0
        tr.abort()
        tr.close()
        assert await proto.lost is None
        # The peer sees the data the kernel had taken, then EOF: nothing more.
        total = 0
        while chunk := await loop.sock_recv(peer, 1 << 20):
            total += len(chunk)
        assert 0 < total < BIG
        await asyncio.sleep(0)
        assert proto.events == ["made", "pause", "lost"]
        peer.close()

    run(main)


def test_peer_reset_gives_connection_reset_error_to_connection_lost() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        port = listener.getsockname()[1]
        proto = Recorder()
        accept = loop.create_task(loop.sock_accept(listener))
        tr, _ = await loop.create_connection(lambda: proto, "127.0.0.1", port)
        peer, _ = await accept
        assert type(tr) is SocketTransport
        sock = tr.get_extra_info("socket")
        ours = sock.getsockname()
        assert ours == peer.getpeername()
        # Closing with a zero linger time sends a reset, not a FIN.
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        exc = await proto.lost
        assert isinstance(exc, ConnectionResetError)
        assert proto.events == ["made", "lost"]
        assert tr.is_closing()
        # The transport's socket is closed now; its addresses were read once,
        # when the transport was made (no system call per question).
        assert sock.fileno() == -1
        assert sock.getpeername() == ("127.0.0.1", port)
        assert sock.getsockname() == ours
        listener.close()

    run(main)


def test_writes_after_close_and_misuse(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        proto = Recorder()
        tr, peer = await pair(proto)
        await proto.made
        with pytest.raises(TypeError, match="bytes-like object, not 'str'"):
            tr.write("text")
        tr.write(b"")  # nothing to send
        tr.write(b"last words")
        tr.close()
        assert await proto.lost is None
        assert await recv_exactly(peer, 10) == b"last words"
        assert await loop.sock_recv(peer, 10) == b""
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(6):
                tr.write(b"into the void")  # ignored, counted, then logged
        assert "socket.send() raised exception." in caplog.text
        assert proto.events == ["made", "lost"]
        peer.close()

        proto2 = Recorder()
        tr2, peer2 = await pair(proto2)
        tr2.write_eof()
        with pytest.raises(RuntimeError, match="after write_eof"):
            tr2.write(b"late")
        assert await loop.sock_recv(peer2, 10) == b""  # the peer sees EOF
        tr2.close()
        await proto2.lost
        peer2.close()

    run(main)


def test_close_flushes_the_buffer_before_connection_lost() -> None:
    async def main() -> None:
        proto = Recorder()
        tr, peer = await pair(proto)
        await proto.made
        payload = b"y" * BIG
        tr.write(payload)
        tr.close()
        assert not proto.lost.done()
        assert await recv_exactly(peer, BIG) == payload
        assert await proto.lost is None
        peer.close()

    run(main)


def test_eof_received_true_keeps_the_write_side_open() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        proto = Recorder()
        proto.keep_open = True
        tr, peer = await pair(proto)
        await loop.sock_sendall(peer, b"question")
        peer.shutdown(socket.SHUT_WR)
        await proto.eof
        assert bytes(proto.data) == b"question"
        assert not tr.is_closing()
        tr.write(b"answer")
        tr.close()
        assert await recv_exactly(peer, 6) == b"answer"
        assert await proto.lost is None
        peer.close()

    run(main)


def test_pause_and_resume_reading() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        proto = Recorder()
        tr, peer = await pair(proto)
        await proto.made
        await asyncio.sleep(0)  # reading starts after connection_made
        assert tr.is_reading()
        tr.pause_reading()
        assert not tr.is_reading()
        await loop.sock_sendall(peer, b"held")
        for _ in range(5):
            await asyncio.sleep(0)
        assert proto.data == b""
        tr.resume_reading()
        while proto.data != b"held":
            await asyncio.sleep(0)
        tr.close()
        assert not tr.is_reading()
        await proto.lost
        peer.close()

    run(main)


def test_error_in_data_received_goes_to_the_exception_handler() -> None:
    class Failing(Recorder):
        def data_received(self, data: bytes) -> None:
            raise ValueError("bad data")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        proto = Failing()
        tr, peer = await pair(proto)
        await loop.sock_sendall(peer, b"boom")
        exc = await proto.lost
        assert isinstance(exc, ValueError) and str(exc) == "bad data"
        assert len(seen) == 1
        assert seen[0]["message"] == "Fatal error: protocol.data_received() call failed."
        assert seen[0]["exception"] is exc
        assert seen[0]["transport"] is tr
        assert seen[0]["protocol"] is proto
        peer.close()

    run(main)


def test_start_tls_and_sendfile_run_over_the_native_transport(tmp_path: Any) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    import ssl

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    blob = tmp_path / "blob"
    blob.write_bytes(bytes(range(256)) * 1000)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readexactly(5)
            with blob.open("rb") as f:
                await loop.sendfile(writer.transport, f)  # os.sendfile on the socket
            await writer.start_tls(server_ctx)
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert type(writer.transport) is SocketTransport
        writer.write(b"start")
        assert await reader.readexactly(256_000) == blob.read_bytes()
        await writer.start_tls(client_ctx, server_hostname="localhost")
        writer.write(b"over tls\n")
        assert await reader.readline() == b"OVER TLS\n"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(main)

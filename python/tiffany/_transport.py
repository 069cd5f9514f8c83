"""The TCP and Unix stream transports of ``tiffany.EventLoop``.

:class:`SocketTransport` is the ``asyncio.Transport`` protocols see; its
socket I/O is native (``tiffany._native.StreamTransportCore``): on
readiness, one ``recv`` into one ``bytes`` handed straight to
``protocol.data_received`` (or into a ``BufferedProtocol``'s buffer),
``write`` sending at once while nothing is buffered, the rest buffered
natively with the write-buffer flow control. The semantics are those of the
stdlib's ``_SelectorSocketTransport``; TLS runs the stdlib's SSL protocol on
top of it, and ``loop.sendfile`` uses ``os.sendfile`` on its socket.
"""

# The stdlib's transport internals are not in typeshed.
# mypy: disable-error-code="attr-defined,assignment,method-assign,arg-type,misc"

from __future__ import annotations

import socket
import warnings
from asyncio import base_events, constants, futures, sslproto, transports, trsock
from typing import Any

from tiffany._native import StreamTransportCore

__all__ = ["SocketTransport", "is_stream_socket"]

_STREAM_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)


def is_stream_socket(sock: socket.socket) -> bool:
    """Whether ``sock`` is a TCP or Unix stream socket (what the native transport serves)."""
    return sock.family in _STREAM_FAMILIES and sock.type == socket.SOCK_STREAM


class _TransportSocket(trsock.TransportSocket):
    """The ``socket`` extra of a transport: asyncio's ``TransportSocket``
    with what libraries ask it on every request read once.

    An HTTP client's connection pool asks each idle connection's socket for
    its family, peer and descriptor before every request (anyio's socket
    attributes, httpcore's liveness check): about 90 times per request in
    the HTTP benchmark. The stdlib's wrapper answers each through two Python
    calls and an enum conversion, and ``getpeername`` with a system call.
    Here ``family``, ``type`` and ``proto`` (fixed for a socket's life) are
    plain slots, ``fileno`` the socket's own method, and ``getpeername`` and
    ``getsockname`` answer the addresses read when the transport was made
    (as uvloop's transport socket does); one that could not be read then
    (``OSError``) is asked of the socket each time.
    """

    __slots__ = ("family", "type", "proto", "fileno", "_peername", "_sockname")

    def __init__(self, sock: socket.socket, sockname: Any, peername: Any) -> None:
        super().__init__(sock)
        self.family = sock.family
        self.type = sock.type
        self.proto = sock.proto
        self.fileno = sock.fileno
        self._sockname = sockname
        self._peername = peername

    def getpeername(self) -> Any:
        """The peer's address (read once, when the transport was made)."""
        peer = self._peername
        return self._sock.getpeername() if peer is None else peer

    def getsockname(self) -> Any:
        """The socket's own address (read once, when the transport was made)."""
        name = self._sockname
        return self._sock.getsockname() if name is None else name


class SocketTransport(transports._FlowControlMixin, transports.Transport):
    """A TCP or Unix stream transport whose socket I/O is native."""

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    _sock: socket.socket | None = None
    _core: StreamTransportCore

    def __init__(
        self,
        loop: Any,
        sock: socket.socket,
        protocol: Any,
        waiter: Any = None,
        extra: dict[str, Any] | None = None,
        server: Any = None,
    ) -> None:
        super().__init__(extra, loop)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._extra["socket"] = _TransportSocket(
            sock, self._extra["sockname"], self._extra["peername"]
        )
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._server = server
        core = StreamTransportCore(loop, self, self._sock_fd, protocol)
        core._set_limits(self._high_water, self._low_water)
        self._core = core
        # The hot methods, bound on the instance: a call goes straight to
        # the native code.
        self.write = core.write
        self.writelines = core.writelines
        self.is_closing = core.is_closing
        self.get_write_buffer_size = core.get_write_buffer_size
        if server is not None:
            server._attach()
        loop._transports[self._sock_fd] = self
        base_events._set_nodelay(sock)
        loop.call_soon(protocol.connection_made, self)
        # Reading starts once connection_made() has run.
        loop.call_soon(core._start_reading)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    # -- flow control (the stdlib mixin's water marks, counted natively) --

    @property
    def _protocol_paused(self) -> bool:
        core = self.__dict__.get("_core")
        return core is not None and core._protocol_paused

    @_protocol_paused.setter
    def _protocol_paused(self, value: bool) -> None:
        core = self.__dict__.get("_core")
        if core is not None:
            core._protocol_paused = value

    def _set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        super()._set_write_buffer_limits(high, low)
        core = self.__dict__.get("_core")
        if core is not None:
            core._set_limits(self._high_water, self._low_water)

    def _maybe_pause_protocol(self) -> None:
        self._core._maybe_pause_protocol()

    def _maybe_resume_protocol(self) -> None:
        self._core._maybe_resume_protocol()

    def get_write_buffer_size(self) -> int:
        """How many bytes are buffered, not yet sent."""
        return self._core.get_write_buffer_size()

    # -- the transport's interface --

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Sends ``data``: at once if nothing is buffered, the rest later."""
        self._core.write(data)

    def writelines(self, list_of_data: Any) -> None:
        """Sends the concatenation of the bytes-like objects."""
        self._core.writelines(list_of_data)

    def write_eof(self) -> None:
        """Closes the write side once the buffer is sent."""
        self._core.write_eof()

    def can_write_eof(self) -> bool:
        """True: stream sockets can half-close."""
        return True

    def close(self) -> None:
        """Closes once the buffer is sent; ``connection_lost(None)`` follows."""
        self._core.close()

    def abort(self) -> None:
        """Closes at once, dropping the buffer; ``connection_lost(None)`` follows."""
        self._core.abort()

    def is_closing(self) -> bool:
        """Whether the transport is closing or closed."""
        return self._core.is_closing()

    def is_reading(self) -> bool:
        """Whether the transport reads (not paused, not closing)."""
        return self._core.is_reading()

    def pause_reading(self) -> None:
        """Stops calling the protocol's ``data_received`` until ``resume_reading``."""
        self._core.pause_reading()

    def resume_reading(self) -> None:
        """Resumes reading after ``pause_reading``."""
        self._core.resume_reading()

    def set_protocol(self, protocol: Any) -> None:
        """Sets the protocol (a ``BufferedProtocol`` is read into its buffers)."""
        self._core.set_protocol(protocol)

    def get_protocol(self) -> Any:
        """The current protocol."""
        return self._core.get_protocol()

    @property
    def _protocol(self) -> Any:
        return self._core.get_protocol()

    @property
    def _closing(self) -> bool:
        return self._core.is_closing()

    # -- what the stdlib's loop and sslproto use --

    def _force_close(self, exc: BaseException | None) -> None:
        self._core._force_close(exc)

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        self._core._fatal_error(exc, message)

    def _make_empty_waiter(self) -> Any:
        return self._core._make_empty_waiter()

    def _reset_empty_waiter(self) -> None:
        self._core._reset_empty_waiter()

    def _finish_close(self) -> None:
        """Called by the core after ``connection_lost``: closes the socket."""
        sock, self._sock = self._sock, None
        self._loop = None
        if sock is not None:
            sock.close()
        server, self._server = self._server, None
        if server is not None:
            server._detach()

    def __repr__(self) -> str:
        info = [type(self).__name__]
        if self._sock is None:
            info.append("closed")
        elif self._core.is_closing():
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._sock is not None:
            info.append("read=polling" if self._core.is_reading() else "read=idle")
            info.append(f"write=<bufsize={self._core.get_write_buffer_size()}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()


def make_ssl_transport(
    loop: Any,
    rawsock: socket.socket,
    protocol: Any,
    sslcontext: Any,
    waiter: Any = None,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    extra: dict[str, Any] | None = None,
    server: Any = None,
    ssl_handshake_timeout: float | None = constants.SSL_HANDSHAKE_TIMEOUT,
    ssl_shutdown_timeout: float | None = constants.SSL_SHUTDOWN_TIMEOUT,
) -> Any:
    """The stdlib's SSL protocol over a native transport (what ``ssl=`` makes)."""
    ssl_protocol = sslproto.SSLProtocol(
        loop,
        protocol,
        sslcontext,
        waiter,
        server_side,
        server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout,
    )
    SocketTransport(loop, rawsock, ssl_protocol, extra=extra, server=server)
    return ssl_protocol._app_transport

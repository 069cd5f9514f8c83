"""``tiffany.Client``: submit and follow jobs on a ``tiffanyd`` daemon.

The client speaks the daemon's gRPC API (``tiffany.v1``) through the Rust
client compiled into the extension: no gRPC package to install. Calls block
(with the GIL released) until the daemon answers::

    import tiffany

    client = tiffany.Client()                    # the daemon's default socket
    job = client.exec(["echo", "hello"])
    job = client.wait(job.id)
    assert job.state == "succeeded"
    print(client.logs(job.id).stdout)            # b"hello\\n"

Errors are exceptions: :class:`DaemonUnavailable` (no daemon on the
socket), :class:`JobNotFound`, :class:`Overloaded` (the queue is full:
retry later), :class:`Unauthenticated` (a ``PermissionError``: a missing or
wrong token over TCP), and ``ValueError`` for a request the daemon refuses
as invalid.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from tiffany import _native

__all__ = [
    "Client",
    "DaemonUnavailable",
    "Job",
    "JobNotFound",
    "Logs",
    "Overloaded",
    "Unauthenticated",
]


class DaemonUnavailable(ConnectionError):
    """No daemon answers on the socket (or TCP address), or it is shutting down."""


class JobNotFound(LookupError):
    """The daemon has no job with this id: none was given, or it ended and the
    daemon's retention policy (``retain_jobs``, ``retain_seconds``) dropped it
    (the message says which)."""


class Overloaded(RuntimeError):
    """The daemon's queue is full (RESOURCE_EXHAUSTED): retry later."""


class Unauthenticated(PermissionError):
    """A TCP request without the daemon's bearer token, or with a wrong one."""


@dataclass(frozen=True, slots=True)
class Job:
    """A job and what became of it, as the daemon answered."""

    id: int
    kind: str
    args: Any
    priority: int
    after: tuple[int, ...]
    key: str | None
    timeout: float | None
    state: str
    """``queued``, ``running``, ``succeeded``, ``failed``, ``cancelled`` or ``timed_out``."""
    attempts: int
    exit_code: int | None
    result: Any
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None

    @property
    def done(self) -> bool:
        """Whether the job has ended."""
        return self.state not in ("queued", "running")

    @property
    def succeeded(self) -> bool:
        """Whether the job ended well."""
        return self.state == "succeeded"

    @classmethod
    def _from_json(cls, text: str) -> Job:
        d = json.loads(text)
        return cls(
            id=d["id"],
            kind=d["kind"],
            args=d["args"],
            priority=d["priority"],
            after=tuple(d["after"]),
            key=d["key"],
            timeout=d["timeout"],
            state=d["state"],
            attempts=d["attempts"],
            exit_code=d["exit_code"],
            result=d["result"],
            error=d["error"],
            created_at=d["created_at"],
            started_at=d["started_at"],
            finished_at=d["finished_at"],
        )


@dataclass(frozen=True, slots=True)
class Logs:
    """The captured output of an exec job."""

    stdout: bytes
    stderr: bytes


def _events(it: Iterator[str]) -> Iterator[Job]:
    """The jobs of a watch stream (JSON texts)."""
    try:
        for text in it:
            yield Job._from_json(text)
    except _native.RpcError as e:
        _raise(e)


def _raise(err: Exception) -> NoReturn:
    code, message = err.args if len(err.args) == 2 else ("internal", str(err))
    exc: Exception
    if code == "unavailable":
        exc = DaemonUnavailable(message)
    elif code == "not_found":
        exc = JobNotFound(message)
    elif code == "resource_exhausted":
        exc = Overloaded(message)
    elif code == "unauthenticated":
        exc = Unauthenticated(message)
    elif code == "invalid_argument":
        exc = ValueError(message)
    else:
        exc = RuntimeError(f"{code}: {message}")
    raise exc from None


class Client:
    """A connection to one ``tiffanyd``.

    ``socket``: the daemon's Unix socket (default: ``TIFFANY_SOCKET``, else
    the daemon's default). ``tcp``: ``"host:port"`` instead, with ``token``,
    the daemon's bearer token; ``tls_ca``: the path of a PEM CA bundle that
    signed the daemon's TLS certificate, to reach it over TLS (without it,
    plain TCP). The certificate must name the host in ``tcp``. ``vsock``:
    ``(cid, port)`` instead, with ``token``: a daemon serving AF_VSOCK
    (``--vsock-port``), e.g. inside a microVM (CID 2 is the host, 1 this
    machine's loopback); the connection is given up after 10 s without an
    answer.
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        tcp: str | None = None,
        token: str | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        vsock: tuple[int, int] | None = None,
    ) -> None:
        if tls_ca is not None and tcp is None:
            raise ValueError("tls_ca is for TCP: give tcp='host:port' too")
        if vsock is not None:
            if tcp is not None or socket is not None:
                raise ValueError("give one of socket, tcp and vsock")
            if (
                not isinstance(vsock, tuple)
                or len(vsock) != 2
                or not all(type(x) is int and 0 <= x < 2**32 for x in vsock)
            ):
                raise ValueError(
                    f"vsock must be a (cid, port) pair of 32-bit unsigned ints, not {vsock!r}"
                )
        ca = None
        if tls_ca is not None:
            with open(tls_ca, "rb") as f:
                ca = f.read()
        try:
            self._c = _native.DaemonClient(
                os.fspath(socket) if socket is not None else None, tcp, token, ca, vsock
            )
        except _native.RpcError as e:
            _raise(e)

    def submit(
        self,
        kind: str,
        args: Mapping[str, Any] | None = None,
        *,
        priority: int = 10,
        after: Sequence[int] = (),
        timeout: float | None = None,
        key: str | None = None,
    ) -> Job:
        """Submits a job of ``kind`` (``exec``, ``sleep``, or ``python`` on a
        daemon hosted by :func:`tiffany.serve`) with JSON ``args``; returns it
        once the daemon has made it durable. A repeated ``key`` returns the
        first job."""
        if not 0 <= priority <= 255:
            raise ValueError(f"priority {priority} is out of range (0 to 255)")
        try:
            text = self._c.submit(
                kind, json.dumps(dict(args or {})), priority, list(after), timeout, key
            )
        except _native.RpcError as e:
            _raise(e)
        return Job._from_json(text)

    def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
        priority: int = 10,
        after: Sequence[int] = (),
        timeout: float | None = None,
        key: str | None = None,
    ) -> Job:
        """Submits an ``exec`` job running ``argv``."""
        args: dict[str, Any] = {"argv": list(argv)}
        if env is not None:
            args["env"] = dict(env)
        if cwd is not None:
            args["cwd"] = cwd
        if stdin is not None:
            args["stdin"] = stdin
        return self.submit("exec", args, priority=priority, after=after, timeout=timeout, key=key)

    def get(self, id: int) -> Job:
        """The job ``id``."""
        try:
            return Job._from_json(self._c.get(id))
        except _native.RpcError as e:
            _raise(e)

    def list(self, state: str | None = None, *, limit: int = 1000) -> list[Job]:
        """Jobs in id order, only those in ``state`` if given."""
        try:
            return [Job._from_json(t) for t in self._c.list(state, limit)]
        except _native.RpcError as e:
            _raise(e)

    def cancel(self, id: int) -> Job:
        """Cancels job ``id`` if it has not ended; returns it as it is then."""
        try:
            return Job._from_json(self._c.cancel(id))
        except _native.RpcError as e:
            _raise(e)

    def wait(self, id: int, timeout: float | None = None) -> Job:
        """Waits until job ``id`` has ended (or ``timeout`` seconds); returns it."""
        try:
            return Job._from_json(self._c.wait(id, timeout))
        except _native.RpcError as e:
            _raise(e)

    def watch(self, id: int | None = None) -> Iterator[Job]:
        """Live job events (of job ``id``, or of all): each a :class:`Job`
        after a change. Iterates until the daemon stops.

        The daemon starts sending when ``watch`` returns (not when iteration
        begins): a change made after this call is never missed."""
        try:
            it = self._c.watch(id)
        except _native.RpcError as e:
            _raise(e)
        return _events(it)

    def logs(self, id: int) -> Logs:
        """The captured stdout and stderr of exec job ``id``."""
        try:
            out, err = self._c.logs(id)
        except _native.RpcError as e:
            _raise(e)
        return Logs(out, err)

    def shutdown(self, grace: float | None = None) -> None:
        """Asks the daemon to drain (running jobs get ``grace`` seconds) and stop."""
        try:
            self._c.shutdown(grace)
        except _native.RpcError as e:
            _raise(e)

    def health(self) -> dict[str, Any]:
        """``{"status", "queued", "running", "jobs"}``."""
        try:
            status, queued, running, jobs = self._c.health()
        except _native.RpcError as e:
            _raise(e)
        return {"status": status, "queued": queued, "running": running, "jobs": jobs}

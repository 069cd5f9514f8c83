"""Typing stubs for the compiled core, ``tiffany._native``."""

import asyncio
import contextvars
import os
import socket
import types
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, Final, Generic, Literal, Protocol, Self, TypeVar, final, overload

from _typeshed import ReadableBuffer
from typing_extensions import disjoint_base

from tiffany import _task

class _HasFileno(Protocol):
    def fileno(self) -> int: ...

_Awaitable = Awaitable

_T = TypeVar("_T")

PRI_SYSTEM: Final[int]
PRI_DEFAULT: Final[int]
PRI_LOWEST: Final[int]
DEFAULT_QUANTUM: Final[float]

TaskState = Literal[
    "pending",
    "scheduled",
    "running",
    "sleeping",
    "waiting",
    "throttled",
    "finished",
    "failed",
    "cancelled",
]
EventKind = Literal[
    "spawned",
    "running",
    "yield",
    "sleep",
    "io_wait",
    "join",
    "event_wait",
    "done",
    "failed",
    "cancelled",
    "throttled",
    "paused",
    "resumed",
    "spawn_denied",
    "shutdown_begin",
    "shutdown_complete",
    "log",
]

class Cancelled(asyncio.CancelledError):
    """Raised inside a cancelled scope at its ``await``, so ``finally`` blocks run (also
    in a task the kernel cancels: a shutdown, ``TaskHandle.cancel``; a
    ``tiffany.Task``'s ``cancel(msg)`` raises ``asyncio.CancelledError(msg)``).

    A subclass of ``asyncio.CancelledError``: ``except asyncio.CancelledError``
    catches both worlds' cancellation. The cancel scope that was cancelled
    catches it when the task leaves the scope.
    """

class TaskCancelled(asyncio.CancelledError):
    """Raised to whoever joins (``tiffany.join``) a task that was cancelled.

    A subclass of ``asyncio.CancelledError`` (what awaiting a cancelled
    asyncio task raises), not of :class:`Cancelled`: a cancel scope never
    takes it for its own cancellation, and a task that does not catch it
    ends cancelled, as in asyncio (ADR 13).
    """

class JoinTimeout(TimeoutError):
    """Raised by ``join(task, timeout=...)`` when the timeout passes first."""

class SpawnError(Exception):
    """A spawn was refused."""

    reason: Literal["capacity", "shutting_down", "cycle", "unknown_dependency"]

class Deadlock(RuntimeError):
    """Raised by ``run()`` when, under the virtual clock, no task can ever make progress again.

    The message names each blocked task and what it waits for.
    """

class TaskFailed(RuntimeError):
    """Raised to whoever joins a native (Rust) task that panicked."""

@final
class Syscall:
    """A system call: awaitable from a coroutine, or yielded from a generator task."""

    def __await__(self) -> Generator[Any, Any, Any]: ...
    def __iter__(self) -> Syscall: ...
    def __next__(self) -> Any: ...
    def send(self, value: Any) -> Any: ...

_TaskBody = Coroutine[Any, Any, _T] | Generator[Any, Any, _T]

@final
class Task(Generic[_T]):
    """The kernel's handle of a task (``tiffany.lowlevel.TaskHandle``): what
    ``Scheduler.spawn`` returns, and ``tiffany.spawn`` where no asyncio loop
    runs. Awaiting it joins it (``Task[T]``: ``await task`` is a ``T``).

    ``id``, ``name`` and ``priority`` can be read on any thread; the rest
    belongs to the scheduler's thread (``RuntimeError`` elsewhere: use
    ``Handle.cancel(task.id)``).
    """

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str | None: ...
    @property
    def priority(self) -> int: ...
    @property
    def state(self) -> TaskState: ...
    def done(self) -> bool: ...
    def cancelled(self) -> bool: ...
    def result(self) -> _T: ...
    def exception(self) -> BaseException | None: ...
    def cancel(self) -> bool:
        """The kernel's cancel: the task's root scope, level-triggered (a
        ``tiffany.Task``'s ``cancel()`` is asyncio's one-shot instead)."""
    def add_dependency(self, other: Task[Any]) -> None: ...
    def add_done_callback(self, callback: Callable[[Task[_T]], object]) -> None:
        """Call ``callback(task)`` once the task has ended; ``TypeError`` if not callable."""
    def __await__(self) -> Generator[Any, Any, _T]: ...

@final
class TaskEvent:
    """One transition of one task (or of the scheduler)."""

    @property
    def kind(self) -> EventKind: ...
    @property
    def task_id(self) -> int | None: ...
    @property
    def time(self) -> float: ...
    @property
    def detail(self) -> dict[str, Any]: ...
    def to_json(self) -> str: ...

@final
class Event:
    """A flag tasks wait for: ``set()`` wakes every waiter (asyncio's ``Event``).

    Made anywhere; it belongs to the scheduler on which it is first waited
    on, and keeps a ``set()`` made before that. ``set()`` works from any
    thread; ``is_set``, ``clear`` and ``wait`` belong to the scheduler's.
    """

    def __init__(self) -> None: ...
    def is_set(self) -> bool:
        """Whether the event is set."""
    def set(self) -> None:
        """Set the event: every waiting task wakes; later waits return at once.

        From another thread than its scheduler's, through the scheduler's handle.
        """
    def clear(self) -> None:
        """Clear the event: later waits block until it is set again."""
    def wait(self) -> _Awaitable[bool]:
        """``await ev.wait()``: ``True`` once the event is set.

        ``RuntimeError`` outside a running scheduler or on another scheduler
        than the event's.
        """

@final
class EventBatch(Sequence[TaskEvent]):
    """Events in the order they happened, given to an ``on_events`` callback.

    Its ``TaskEvent`` objects are made only when looked at.
    """

    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: int, /) -> TaskEvent: ...
    @overload
    def __getitem__(self, index: slice, /) -> Sequence[TaskEvent]: ...
    def __iter__(self) -> Iterator[TaskEvent]: ...
    def counts(self) -> dict[str, int]:
        """How many events of each kind."""
    def pal(self) -> str:
        """The events as PAL lines (JSON), each ending in a newline."""

@final
class Handle:
    """A thread-safe handle to a scheduler: spawn, cancel and shut down from any thread."""

    def spawn(
        self,
        coro: Coroutine[Any, Any, Any] | Generator[Any, Any, Any],
        *,
        priority: int = ...,
        name: str | None = None,
    ) -> int: ...
    def cancel(self, task_id: int) -> None: ...
    def request_shutdown(self, timeout: float) -> None: ...
    def shutdown(self, timeout: float) -> Literal["clean", "timeout"]: ...

@final
class Completion:
    """A one-shot wake-up from another thread: await it in a task, ``notify()`` anywhere."""

    def __init__(self) -> None: ...
    def notify(self) -> None: ...
    def close(self) -> None: ...
    def __await__(self) -> Generator[Any, Any]: ...

@final
class Scheduler:
    """A scheduler for Python (and native) tasks on the current thread.

    It and its tasks belong to that thread: used from another one they raise
    ``RuntimeError`` (use ``handle()`` or ``tiffany.lowlevel.Completion``).
    """

    def __new__(
        cls,
        *,
        clock: Literal["real", "virtual"] = "real",
        quantum: float = ...,
        capacity: int | None = None,
        backpressure: Callable[[], float] | None = None,
        timing_metrics: bool = True,
    ) -> Scheduler:
        """A scheduler on the current thread.

        ``timing_metrics=False`` leaves the run-latency and wait-time
        histograms empty and saves their clock reads.
        """
    def spawn(
        self,
        coro: _TaskBody[_T],
        *,
        priority: int = ...,
        deps: Iterable[Task[Any] | asyncio.Task[Any]] | None = None,
        name: str | None = None,
        daemon: bool = False,
    ) -> Task[_T]:
        """Spawn a coroutine (or generator) as a task.

        ``priority`` is an int in 0..=255 (``ValueError`` outside, ``TypeError``
        for a bool); a coroutine already held by a task is refused (``RuntimeError``).
        """
    def spawn_system(
        self,
        coro: _TaskBody[_T],
        *,
        name: str | None = None,
    ) -> Task[_T]: ...
    @overload
    def run(self, main: None = None) -> None:
        """Run until every non-daemon task has finished (daemon tasks are then cancelled)."""
    @overload
    def run(self, main: _TaskBody[_T]) -> _T:
        """Run ``main``; when it ends, cancel what is left and return its result."""
    def now(self) -> float: ...
    def on_event(self, callback: Callable[[TaskEvent], object]) -> None:
        """Call ``callback(event)`` for every event, on the scheduler's thread.

        ``TypeError`` at once if ``callback`` is not callable.
        """
    def on_events(self, callback: Callable[[EventBatch], object], max_batch: int = 1024) -> None:
        """Call ``callback(batch)`` with the events in batches of at most ``max_batch``.

        A batch is delivered when ``max_batch`` events have gathered, when the
        scheduler is about to wait, and when a run ends. Much cheaper per
        event than ``on_event``.
        """
    def metrics(self) -> dict[str, Any]: ...
    def prometheus(self) -> str: ...
    def shutdown(self, timeout: float) -> Literal["clean", "timeout"]:
        """Shut down: tasks drain until ``timeout``; the rest is cancelled, then abandoned."""
    def pressure(self) -> float: ...
    def handle(self) -> Handle: ...

def sleep(seconds: float, /) -> Syscall:
    """``await sleep(s)``: sleep ``s`` seconds on the scheduler's clock (``0`` yields)."""

def yield_now() -> Syscall:
    """``await yield_now()``: go behind every ready task of the same priority."""

def GetTid() -> Syscall:
    """``tid = yield GetTid()``: the current task's id (pyos style; awaitable too)."""

def admit() -> Syscall:
    """``await admit()``: wait at the back-pressure admission gate until intake is open."""

def shutdown(timeout: float) -> Syscall:
    """``await shutdown(t)``: shut the scheduler down from a task; returns "clean" or "timeout".

    The other tasks drain until ``t``; what is left is cancelled, and a task
    that swallows ``Cancelled`` is then abandoned (its coroutine closed).
    """

@overload
def spawn(
    coro: Generator[Any, Any, _T],
    *,
    priority: int = ...,
    deps: Iterable[Task[Any] | asyncio.Task[Any]] | None = None,
    name: str | None = None,
    daemon: bool = False,
) -> Task[_T]: ...
@overload
def spawn(
    coro: Coroutine[Any, Any, _T],
    *,
    priority: int = ...,
    deps: Iterable[Task[Any] | asyncio.Task[Any]] | None = None,
    name: str | None = None,
    daemon: bool = False,
) -> _task.Task[_T] | Task[_T]:
    """Spawn on the running scheduler (see ``Scheduler.spawn`` for the options).

    What it returns (ADR 13): for a coroutine while a Tiffany loop runs on
    the scheduler — always under ``tiffany.run(coroutine)`` and
    ``asyncio.run`` with a Tiffany loop — a ``tiffany.Task``, the asyncio
    task of that loop (asyncio's API, asyncio's ``cancel``); otherwise (a
    ``Scheduler.run`` program with no asyncio loop, or a generator task,
    first overload) the kernel's handle, ``TaskHandle``, whose API is the
    kernel part of that one (``id``, ``name``, ``priority``, ``state``,
    ``done``, ``result``, ``exception``, ``cancel()`` — the kernel's,
    level-triggered — ``add_done_callback``, ``await``). Hence the union;
    where a loop is known to run, ``assert isinstance(t, tiffany.Task)``
    narrows it.
    """

def now() -> float:
    """The running scheduler's time in seconds."""

def current_task() -> _task.Task[Any] | Task[Any] | None:
    """The task being run, or ``None`` outside tasks: its ``tiffany.Task`` when
    it is an asyncio task of a running Tiffany loop (``asyncio.current_task()``),
    else its ``TaskHandle``."""

def join(task: Task[_T] | asyncio.Task[_T], timeout: float | None = None) -> _Awaitable[_T]:
    """``await join(t, timeout)``: ``t``'s result; raises ``JoinTimeout`` after ``timeout``.

    (For an asyncio task of a Tiffany loop the kernel's join answers ``None``:
    ``tiffany.join`` wraps it and returns the task's result.)
    """

@final
class priority:
    """``with tiffany.priority(n):`` — asyncio tasks made inside the block
    (``asyncio.create_task``, ``loop.create_task``, ``gather``, ``TaskGroup``,
    ...) are kernel tasks of priority ``n`` (0 first, 255 last); outside any
    block they get the default, 10. Blocks nest; the innermost wins.
    ``ValueError`` outside 0–255."""

    def __new__(cls, value: int) -> Self: ...
    @property
    def value(self) -> int:
        """The priority the block gives."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        _t: type[BaseException] | None,
        _v: BaseException | None,
        _tb: types.TracebackType | None,
    ) -> bool: ...

def _task_cancel(sched: Scheduler, kid: int, step: int) -> bool:
    """One ``CancelledError`` for asyncio task ``kid`` at its next step (or, blocked
    in a kernel-level wait, the kernel's edge); whether it was live."""

def _loop_made() -> None:
    """Says that a Tiffany event loop is being made (``EventLoop.__init__``):
    until then ``spawn`` need not ask asyncio for the running loop."""

def _task_edge_pending(sched: Scheduler, kid: int) -> bool:
    """Whether a cancellation waits to be thrown into kernel task ``kid``."""

def _task_set_name(sched: Scheduler, kid: int, name: str) -> None:
    """Renames kernel task ``kid``."""

def _task_state(sched: Scheduler, kid: int) -> TaskState | None:
    """The kernel's state of task ``kid``, or None once its record is gone."""

def _task_fut_waiter(kid: int) -> Any:
    """The asyncio future kernel task ``kid`` awaits, or None."""

def wait_readable(fd: int | _HasFileno, timeout: float | None = None) -> Syscall:
    """``await wait_readable(fd)``: wait until readable; ``TimeoutError`` after ``timeout``."""

def wait_writable(fd: int | _HasFileno, timeout: float | None = None) -> Syscall:
    """``await wait_writable(fd)``: wait until writable; ``TimeoutError`` after ``timeout``."""

def sock_recv(sock: socket.socket, n: int) -> _Awaitable[bytes]:
    """``await sock_recv(sock, n)``: up to ``n`` bytes, ``b""`` at end of stream.

    The receive is tried at once, natively; only if it would block does the
    task wait for the socket to become readable. The socket must be
    non-blocking (``ValueError`` otherwise) and stays registered with the
    scheduler between calls. One call returns at most 256 KiB, whatever
    ``n`` (as one ``recv`` would); a negative ``n`` is a ``ValueError``.
    """

def sock_sendall(sock: socket.socket, data: ReadableBuffer) -> _Awaitable[None]:
    """``await sock_sendall(sock, data)``: send every byte of ``data``.

    ``data`` is any bytes-like object (anything but ``bytes`` is copied when
    the call is made); ``TypeError`` for anything else.
    """

def sock_accept(sock: socket.socket) -> _Awaitable[tuple[socket.socket, Any]]:
    """``conn, addr = await sock_accept(sock)``: the next connection.

    ``sock`` must be a non-blocking listening socket (``ValueError``
    otherwise); the new connection is non-blocking too.
    """

@final
class Completed:
    """How a command run by :func:`exec` ended."""

    @property
    def returncode(self) -> int | None:
        """The exit code; ``-N`` if signal ``N`` killed it (as in ``subprocess``)."""
    @property
    def signal(self) -> int | None:
        """The signal that killed the command, or ``None``."""
    @property
    def stdout(self) -> bytes:
        """What the command wrote to stdout, up to ``capture_limit`` bytes."""
    @property
    def stderr(self) -> bytes:
        """What the command wrote to stderr, up to ``capture_limit`` bytes."""
    @property
    def stdout_bytes(self) -> int:
        """Bytes written to stdout in all, kept and dropped."""
    @property
    def stderr_bytes(self) -> int:
        """Bytes written to stderr in all, kept and dropped."""
    @property
    def stdout_truncated(self) -> bool:
        """Whether stdout went past ``capture_limit`` (the rest was dropped)."""
    @property
    def stderr_truncated(self) -> bool:
        """Whether stderr went past ``capture_limit`` (the rest was dropped)."""
    @property
    def timed_out(self) -> bool:
        """Whether the timeout passed and the process group was stopped."""
    @property
    def pid(self) -> int:
        """The command's process id (also its process group's id)."""

def exec(
    argv: Sequence[str | bytes | os.PathLike[str] | os.PathLike[bytes]],
    *,
    timeout: float | None = None,
    env: Mapping[str | bytes, str | bytes] | None = None,
    cwd: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None,
    stdin: ReadableBuffer | None = None,
    capture_limit: int = 1_048_576,
    kill_grace: float = 2.0,
    priority: int = 10,
    name: str | None = None,
) -> Task[Completed]:
    """Run a command as a native task; ``await`` the task for a :class:`Completed`.

    The command starts in its own process group. stdout and stderr are
    captured up to ``capture_limit`` bytes each (the rest is counted and
    dropped). After ``timeout`` seconds (real time, also under the virtual
    clock) the group gets SIGTERM, then SIGKILL after ``kill_grace``;
    cancelling the task stops the group the same way. ``env`` replaces the
    whole environment, as in ``subprocess``. A command that cannot start
    raises ``FileNotFoundError`` or ``PermissionError`` when awaited; a bad
    argument raises ``ValueError`` or ``TypeError`` at once. A non-zero exit
    is not an error: see ``Completed.returncode``.
    """

def spawn_native_join(sched: Scheduler, task: Task[_T], *, name: str | None = None) -> Task[_T]:
    """Spawn on ``sched`` a native task that joins ``task`` (see ``tiffany.testing``)."""

def spawn_native_sleep(
    sched: Scheduler,
    seconds: float,
    result: Any = None,
    *,
    priority: int = ...,
    name: str | None = None,
) -> Task[Any]:
    """Spawn on ``sched`` a native task that sleeps, then returns ``result``."""

# asyncio on Tiffany (the native half of ``tiffany.EventLoop``).

@final
class LoopHandle:
    """A callback scheduled on a Tiffany event loop (asyncio's ``Handle`` and
    ``TimerHandle`` in one class)."""

    def cancel(self) -> None:
        """Cancel the callback: it will not run; its references are dropped."""
    def cancelled(self) -> bool:
        """Whether it was cancelled."""
    def when(self) -> float:
        """A timer's deadline on the loop's clock (AttributeError otherwise)."""
    def get_context(self) -> Any:
        """The ``contextvars.Context`` the callback runs in."""

@final
class Selector:
    """A ``selectors``-compatible selector over a private epoll set."""

    def register(self, fileobj: int | _HasFileno, events: int, data: Any = None) -> Any: ...
    def unregister(self, fileobj: int | _HasFileno) -> Any: ...
    def modify(self, fileobj: int | _HasFileno, events: int, data: Any = None) -> Any: ...
    def get_key(self, fileobj: int | _HasFileno) -> Any: ...
    def get_map(self) -> dict[int, Any]: ...
    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> Selector: ...
    def __exit__(self, _a: object, _b: object, _c: object) -> None: ...

@disjoint_base
class LoopCore:
    """The native engine mixed into ``tiffany.EventLoop``: ready queue,
    timers, readiness, and the kernel task that runs asyncio's iterations."""

    _stopping: bool
    _closed: bool
    _debug: bool
    def __new__(cls, *_args: Any, **_kwargs: Any) -> Self: ...
    def _set_clock(self, scheduler: Scheduler) -> None:
        """Binds the loop to the clock of ``scheduler`` (once, at construction)."""
    def time(self) -> float:
        """The kernel's clock, in seconds; readable from any thread."""
    def get_debug(self) -> bool:
        """Whether the loop is in debug mode."""
    def call_soon(
        self, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> LoopHandle: ...
    def _call_soon(
        self, callback: Callable[..., object], args: tuple[Any, ...], context: Any = None
    ) -> LoopHandle: ...
    def call_at(
        self, when: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> LoopHandle: ...
    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> LoopHandle: ...
    def _add_callback(self, handle: Any) -> None: ...
    def _write_to_self(self) -> None:
        """Wakes the loop from another thread (one byte into its self-pipe),
        keeping the GIL as uvloop does."""
    def _timer_handle_cancelled(self, _handle: Any) -> None: ...
    def stop(self) -> None: ...
    def _clear(self) -> None: ...
    def _pending(self) -> tuple[int, int]:
        """How many callbacks are ready and how many timers are pending."""
    def _add_reader(self, fd: Any, callback: Callable[..., object], *args: Any) -> LoopHandle: ...
    def _add_writer(self, fd: Any, callback: Callable[..., object], *args: Any) -> LoopHandle: ...
    def _remove_reader(self, fd: Any) -> bool: ...
    def _remove_writer(self, fd: Any) -> bool: ...
    def create_task(
        self,
        coro: Coroutine[Any, Any, _T] | Generator[Any, None, _T],
        *,
        name: object = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[_T]:
        """A kernel task of the loop's scheduler (``tiffany._task.Task``), or
        what the task factory makes if one is set."""
    def _engine_running(self) -> bool:
        """Whether the loop's engine task is alive."""
    def _spawn_engine(self, *, daemon: bool = False) -> Task[None]:
        """Spawn the engine task on the running scheduler (run_forever does)."""
    def _take_fatal(self) -> BaseException | None:
        """The error that ended the last run (KeyboardInterrupt, SystemExit), once."""
    def _set_hosted(self, hosted: bool) -> None:
        """Hosted mode (``tiffany.run``): the engine starts on demand, as a daemon task."""

@final
class StreamTransportCore:
    """The socket I/O of a TCP or Unix stream transport of ``tiffany.EventLoop``
    (``tiffany._transport.SocketTransport`` is the transport protocols see)."""

    _protocol_paused: bool
    @property
    def _conn_lost(self) -> int: ...
    @property
    def _eof(self) -> bool: ...
    @property
    def _paused(self) -> bool: ...
    def __new__(cls, loop: Any, transport: Any, fd: int, protocol: Any) -> Self: ...
    def _start_reading(self) -> None:
        """Starts reading (after ``connection_made``), unless paused or closing."""
    def _read_ready(self) -> None:
        """The socket is readable: one ``recv``, then the protocol's callback."""
    def __call__(self) -> None:
        """``_read_ready`` (the core is its reader's callback)."""
    def _read_ended(self, errno: int) -> None:
        """The direct read path's ``recv`` saw EOF (0) or failed with ``errno``."""
    def _write_ready(self) -> None:
        """The socket is writable and data is buffered: send what it takes."""
    def write(self, data: ReadableBuffer) -> None:
        """Sends ``data``: at once if nothing is buffered, the rest later."""
    def writelines(self, list_of_data: Iterable[ReadableBuffer]) -> None:
        """Writes the concatenation of the bytes-like objects."""
    def write_eof(self) -> None:
        """Closes the write side once the buffer is sent."""
    def can_write_eof(self) -> bool:
        """Always true: stream sockets can half-close."""
    def close(self) -> None:
        """Closes once the buffer is sent; ``connection_lost(None)`` follows."""
    def abort(self) -> None:
        """Closes at once, dropping the buffer."""
    def _force_close(self, exc: BaseException | None) -> None: ...
    def _fatal_error(
        self, exc: BaseException, message: str = "Fatal error on transport"
    ) -> None: ...
    def _call_connection_lost(self, exc: BaseException | None) -> None: ...
    def is_closing(self) -> bool:
        """Whether the transport is closing or closed."""
    def is_reading(self) -> bool:
        """Whether the transport reads (not paused, not closing)."""
    def pause_reading(self) -> None:
        """Stops reading until ``resume_reading``."""
    def resume_reading(self) -> None:
        """Resumes reading after ``pause_reading``."""
    def set_protocol(self, protocol: Any) -> None:
        """Sets the protocol (a ``BufferedProtocol`` is read into its buffers)."""
    def get_protocol(self) -> Any:
        """The current protocol (None once the connection is lost)."""
    def get_write_buffer_size(self) -> int:
        """How many bytes are buffered, not yet sent."""
    def _set_limits(self, high: int, low: int) -> None: ...
    def _maybe_pause_protocol(self) -> None: ...
    def _maybe_resume_protocol(self) -> None: ...
    def _make_empty_waiter(self) -> Any: ...
    def _reset_empty_waiter(self) -> None: ...

# ----- service mode (tiffanyd) ---------------------------------------------

class RpcError(Exception):
    """A request to tiffanyd failed: args are (code, message)."""

@final
class WatchIter:
    """Live job events from ``tiffanyd`` (JSON lines), as an iterator."""

    def __iter__(self) -> WatchIter: ...
    def __next__(self) -> str: ...
    def close(self) -> None: ...

@final
class DaemonClient:
    """The native gRPC client behind ``tiffany.Client`` (JSON in and out)."""

    def __new__(
        cls,
        socket: str | None = None,
        tcp: str | None = None,
        token: str | None = None,
        tls_ca: bytes | None = None,
        vsock: tuple[int, int] | None = None,
    ) -> Self: ...
    def submit(
        self,
        kind: str,
        args: str,
        priority: int,
        after: list[int],
        timeout: float | None,
        key: str | None,
    ) -> str: ...
    def get(self, id: int) -> str: ...
    def list(self, state: str | None = None, limit: int = 1000) -> list[str]: ...
    def cancel(self, id: int) -> str: ...
    def wait(self, id: int, timeout: float | None = None) -> str: ...
    def logs(self, id: int) -> tuple[bytes, bytes]: ...
    def watch(self, id: int | None = None) -> WatchIter: ...
    def shutdown(self, grace: float | None = None) -> None: ...
    def health(self) -> tuple[str, int, int, int]: ...

def daemon_main(argv: list[str]) -> int: ...
def cli_main(argv: list[str]) -> int: ...
def current_effective_deadline() -> float:
    """The earliest deadline that applies to the running task's code now.

    Seconds on the scheduler's clock: the deadlines of its cancel scopes up
    to the innermost shield; ``inf`` if none, ``-inf`` while the task is
    effectively cancelled. ``RuntimeError`` outside a task.
    """

def _scope_enter(deadline: float | None, shield: bool) -> tuple[int, int]:
    """Enter a cancel scope of the running task: ``(task_id, scope_id)``."""

def _scope_exit(task: int, scope: int) -> tuple[bool, bool]:
    """Leave a scope of the running task: ``(cancelled, absorbs)``."""

def _scope_cancel(task: int, scope: int) -> tuple[bool, float | None, bool] | None:
    """Cancel an open scope: its ``(cancelled, deadline, shield)``, or None if not open."""

def _scope_set_deadline(
    task: int, scope: int, deadline: float | None
) -> tuple[bool, float | None, bool] | None:
    """Move an open scope's deadline: its state, or None if not open."""

def _scope_set_shield(
    task: int, scope: int, shield: bool
) -> tuple[bool, float | None, bool] | None:
    """Shield an open scope or lift its shield: its state, or None if not open."""

def _scope_status(task: int, scope: int) -> tuple[bool, float | None, bool] | None:
    """An open scope's ``(cancelled, deadline, shield)``, or None if not open."""

def serve_daemon(
    argv: list[str],
    functions: dict[str, dict[str, Any] | None],
    start: Callable[[int, str], Coroutine[Any, Any, tuple[bool, str]]],
) -> None: ...
def daemon_settings() -> list[tuple[str, bool]]: ...

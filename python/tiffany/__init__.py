"""Tiffany: a coroutine-first task runtime with a native kernel.

Tasks are ``async def`` coroutines (or pyos-style generators) run by a
scheduler written in Rust: priorities, deterministic virtual time, clean
cancellation, CPU budgets, back-pressure and an event for every transition.

    import tiffany

    async def child(x):
        await tiffany.sleep(0.05)
        return x * 2

    async def main():
        t = tiffany.spawn(child(21), priority=5, name="child")
        assert await t == 42
        u = tiffany.spawn(child(1), deps=[t])
        return await tiffany.join(u, timeout=1.0)

    print(tiffany.run(main(), clock="virtual"))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import functools
import os
import socket
import threading
from asyncio import events as asyncio_events
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Literal, ParamSpec, TypedDict, TypeVar, Unpack, overload

from tiffany._loop import EventLoop, EventLoopPolicy, install, new_event_loop
from tiffany._native import (
    DEFAULT_QUANTUM,
    PRI_DEFAULT,
    PRI_LOWEST,
    PRI_SYSTEM,
    Cancelled,
    Completed,
    Deadlock,
    Event,
    EventBatch,
    Handle,
    JoinTimeout,
    Scheduler,
    SpawnError,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    admit,
    current_effective_deadline,
    current_task,
    exec,
    now,
    priority,
    shutdown,
    sleep,
    sock_accept,
    sock_recv,
    sock_sendall,
    spawn,
    yield_now,
)
from tiffany._native import join as _native_join
from tiffany._scope import CancelScope, fail_after, fail_at, move_on_after, move_on_at
from tiffany._serve import serve
from tiffany._task import Task
from tiffany._taskgroup import TaskGroup
from tiffany.client import (
    Client,
    DaemonUnavailable,
    Job,
    JobNotFound,
    Overloaded,
    Unauthenticated,
)
from tiffany.lowlevel import Completion as _Completion
from tiffany.lowlevel import TaskHandle
from tiffany.lowlevel import wait_writable as _wait_writable

__all__ = [
    "DEFAULT_QUANTUM",
    "PRI_DEFAULT",
    "PRI_LOWEST",
    "PRI_SYSTEM",
    "Cancelled",
    "CancelScope",
    "Completed",
    "Deadlock",
    "Handle",
    "JoinTimeout",
    "Scheduler",
    "SpawnError",
    "Task",
    "TaskCancelled",
    "TaskEvent",
    "TaskHandle",
    "Event",
    "EventBatch",
    "EventLoop",
    "EventLoopPolicy",
    "SchedulerOptions",
    "TaskFailed",
    "TaskGroup",
    "admit",
    "current_effective_deadline",
    "current_task",
    "fail_after",
    "fail_at",
    "exec",
    "install",
    "join",
    "move_on_after",
    "move_on_at",
    "new_event_loop",
    "now",
    "priority",
    "run",
    "shutdown",
    "sleep",
    "sock_accept",
    "sock_connect",
    "sock_recv",
    "sock_sendall",
    "spawn",
    "to_thread",
    "yield_now",
]
__all__ += [
    "Client",
    "DaemonUnavailable",
    "Job",
    "JobNotFound",
    "Overloaded",
    "Unauthenticated",
    "serve",
]

T = TypeVar("T")
P = ParamSpec("P")

_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _thread_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            workers = min(32, (os.cpu_count() or 1) + 4)
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="tiffany-worker"
            )
        return _executor


async def to_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` in a worker thread; the scheduler keeps running.

    The calling task waits without blocking the scheduler, then receives the
    return value (or the exception). If the task is cancelled meanwhile, the
    call still finishes in its thread but its result is dropped.
    """
    done = _Completion()
    future = _thread_pool().submit(functools.partial(fn, *args, **kwargs))
    future.add_done_callback(lambda _: done.notify())
    try:
        await done
    finally:
        done.close()
    return future.result()


@overload
def join(task: Task[T], timeout: float | None = None) -> Awaitable[T]: ...
@overload
def join(task: TaskHandle[T], timeout: float | None = None) -> Awaitable[T]: ...
@overload
def join(task: asyncio.Task[T], timeout: float | None = None) -> Awaitable[T]: ...
def join(task: Any, timeout: float | None = None) -> Any:
    """``await tiffany.join(task, timeout=None)``: wait for a task to end.

    Returns its result; re-raises its exception; raises ``TaskCancelled`` (an
    ``asyncio.CancelledError``) if it was cancelled and ``JoinTimeout`` if
    ``timeout`` passes first (the task goes on). ``task`` is a :class:`Task`
    (``tiffany.spawn``, ``asyncio.create_task`` on a Tiffany loop) or a
    :class:`TaskHandle` (``Scheduler.spawn``).
    """
    wait = _native_join(task, timeout)
    if type(task) is Task:
        return _join_asyncio(wait, task)
    return wait


async def _join_asyncio(wait: Any, task: Task[Any]) -> Any:
    # A finished asyncio task's kernel record may be gone: its future has
    # the outcome.
    if not task.done():
        try:
            await wait
        except Exception:
            # The task failed: its future gives the exception (and marks
            # it retrieved, so asyncio does not log it as never retrieved).
            if not task.done():
                raise
    if task.cancelled():
        raise TaskCancelled(f"task {task._kid} was cancelled")
    return task.result()


async def sock_connect(sock: socket.socket, address: Any) -> None:
    """Connect ``sock`` to ``address`` without blocking the scheduler.

    The socket is made non-blocking; the scheduler waits for it to become
    writable and raises ``OSError`` if the connection failed.
    """
    sock.setblocking(False)
    err = sock.connect_ex(address)
    if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
        await _wait_writable(sock)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err not in (0, errno.EISCONN):
        raise OSError(err, f"connect to {address!r} failed: {os.strerror(err)}")


class SchedulerOptions(TypedDict, total=False):
    """The keyword arguments of :class:`Scheduler`, which :func:`run` forwards."""

    clock: Literal["real", "virtual"]
    quantum: float
    capacity: int | None
    backpressure: Callable[[], float] | None
    timing_metrics: bool


def run(
    main: Coroutine[Any, Any, T] | Generator[Any, Any, T],
    /,
    **options: Unpack[SchedulerOptions],
) -> T:
    """Run ``main`` on a fresh scheduler; return its result or raise its exception.

    The keyword arguments are those of :class:`Scheduler`. When ``main``
    ends, the tasks still alive are cancelled (their ``finally`` blocks
    run), as ``asyncio.run`` does: await (join) a task to wait for it.

    A coroutine ``main`` may use asyncio: it runs as an asyncio task of an
    :class:`EventLoop` hosted on the same scheduler, and so does every task
    ``tiffany.spawn`` makes (a :class:`Task`, ADR 13) — ``asyncio.timeout``,
    ``TaskGroup``, ``wait_for`` and libraries that detect the async library
    (httpx, anyio) work in any of them.
    """
    sched = Scheduler(**options)
    if not isinstance(main, Coroutine) or asyncio_events._get_running_loop() is not None:
        result: T = sched.run(main)
        return result
    # A coroutine may use asyncio: host an asyncio loop on the same scheduler.
    loop = EventLoop(scheduler=sched)
    try:
        hosted: T = sched.run(loop._host(main))
        return hosted
    finally:
        loop._end_hosting()
        loop.close()

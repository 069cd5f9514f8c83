"""asyncio on Tiffany: ``tiffany.EventLoop``, a drop-in asyncio event loop.

The loop is the stdlib's Unix selector event loop with its engine replaced:
the ready queue, the timers and the readiness of descriptors are native
(``tiffany._native.LoopCore``), and while the loop runs, all of asyncio is
one task of a Tiffany scheduler — on its clock, beside Tiffany's own tasks.
The socket I/O of TCP and Unix stream transports is native too
(``tiffany._transport``); child processes are watched through pidfds in the
loop's own selector (``tiffany._subprocess``), not by asyncio's child watcher;
protocols, SSL, pipes, signals and the ``sock_*`` methods are the stdlib's.

    import asyncio
    import tiffany

    async def main():
        await asyncio.sleep(3600)   # an hour, under the virtual clock: at once
        return asyncio.get_running_loop().time()

    with asyncio.Runner(loop_factory=lambda: tiffany.new_event_loop(clock="virtual")) as r:
        assert r.run(main()) == 3600.0
"""

# The stdlib loop's private attributes are not in typeshed.
# mypy: disable-error-code="attr-defined,assignment"

from __future__ import annotations

import asyncio
import sys
import threading
from asyncio import events
from asyncio.unix_events import _UnixDefaultEventLoopPolicy, _UnixSelectorEventLoop
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from tiffany import _subprocess, _transport
from tiffany._native import LoopCore, Scheduler, Selector, _loop_made

__all__ = ["EventLoop", "EventLoopPolicy", "install", "new_event_loop"]

T = TypeVar("T")


class EventLoop(LoopCore, _UnixSelectorEventLoop):  # type: ignore[misc]
    """An asyncio event loop whose engine is Tiffany's kernel.

    ``clock="virtual"`` runs asyncio on the kernel's virtual clock: when
    nothing is runnable, time jumps to the next timer (``asyncio.sleep``,
    ``call_later``, ``asyncio.timeout``, ``wait_for``), so an hour of waiting
    takes microseconds and two runs of a program see the same times. Real
    I/O still happens in real time (see the guide "Using asyncio libraries").
    ``quantum``, ``capacity`` and ``backpressure`` are those of
    :class:`tiffany.Scheduler`; or ``scheduler`` is an existing scheduler to
    run on (the other arguments are then ignored).
    """

    def __init__(
        self,
        *,
        clock: Literal["real", "virtual"] = "real",
        quantum: float = 0.005,
        capacity: int | None = None,
        backpressure: Callable[[], float] | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        self._closed = True  # until the stdlib's __init__ has run (for __del__)
        if scheduler is None:
            scheduler = Scheduler(
                clock=clock, quantum=quantum, capacity=capacity, backpressure=backpressure
            )
        _loop_made()  # tiffany.spawn asks for the running loop from now on
        self._sched = scheduler
        # loop.time() (native) reads the scheduler's clock from any thread.
        self._set_clock(scheduler)
        self._children = _subprocess.ChildWatch(self)
        super().__init__(Selector())  # type: ignore[arg-type]

    @property
    def _ready(self) -> _ReadyView:
        """asyncio's ready queue, as code that reaches into it reads it (its
        length and truth): the queue itself is native."""
        return _ReadyView(self)

    @_ready.setter
    def _ready(self, value: Any) -> None:
        pass  # the stdlib's __init__ sets its own deque: the native queue is used

    @property
    def scheduler(self) -> Scheduler:
        """The Tiffany scheduler the loop runs on (``RuntimeError`` once closed)."""
        if self._sched is None:
            raise RuntimeError("Event loop is closed")
        return self._sched

    def run_forever(self) -> None:
        """Runs the loop (as one task of its Tiffany scheduler) until ``stop()``."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            # Not run(main): a run with a main task ends in a shutdown, and
            # the loop's scheduler serves every run_forever of the loop. The
            # engine is spawned first, so the callbacks a task queues before
            # its first `sleep(0)` run before it goes on, as in asyncio.
            sched = self.scheduler
            if not self._engine_running():
                # (Alive when a task's SystemExit ended the last run.)
                self._spawn_engine()
            sched.run()
            fatal = self._take_fatal()
            if fatal is not None:
                raise fatal
        finally:
            self._stopping = False
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_hooks)

    async def _host(self, main: Coroutine[Any, Any, T]) -> T:
        """Runs ``main`` as an asyncio task with this loop as asyncio's running loop.

        What ``tiffany.run`` does with a coroutine: the loop's engine starts as
        a daemon task when asyncio first has work; at the end, asyncio tasks
        still pending are cancelled and awaited, and async generators closed.
        """
        self._check_closed()
        self._check_running()
        self._hosted_hooks = sys.get_asyncgen_hooks()
        self._thread_id = threading.get_ident()
        sys.set_asyncgen_hooks(
            firstiter=self._asyncgen_firstiter_hook,
            finalizer=self._asyncgen_finalizer_hook,
        )
        events._set_running_loop(self)
        self._set_hosted(True)
        try:
            # main runs as an asyncio task (a kernel task like any other), so
            # asyncio.timeout, TaskGroup and the libraries that look for the
            # current task work in it directly.
            return await self.create_task(main, name="main")
        finally:
            try:
                # Tasks of tiffany.spawn are left to the run's end, as they
                # always were: the kernel cancels them (level-triggered, so
                # one that swallows a cancellation cannot hold the run).
                pending = [
                    t
                    for t in asyncio.all_tasks(self)
                    if not t.done() and not getattr(t, "_tspawn", False)
                ]
                for t in pending:
                    t.cancel()
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
                await self.shutdown_asyncgens()
            finally:
                self._end_hosting()

    def _end_hosting(self) -> None:
        """Ends what ``_host`` began (also when its run ended without it:
        a deadlock, Ctrl-C)."""
        hooks = getattr(self, "_hosted_hooks", None)
        if hooks is None:
            return
        self._hosted_hooks = None
        self._set_hosted(False)
        self.stop()
        events._set_running_loop(None)
        self._thread_id = None
        sys.set_asyncgen_hooks(*hooks)

    # -- transports: TCP and Unix stream sockets get the native transport --

    def _make_socket_transport(
        self, sock: Any, protocol: Any, waiter: Any = None, *, extra: Any = None, server: Any = None
    ) -> Any:
        if _transport.is_stream_socket(sock):
            return _transport.SocketTransport(self, sock, protocol, waiter, extra, server)
        return super()._make_socket_transport(  # type: ignore[misc]
            sock, protocol, waiter, extra=extra, server=server
        )

    def _make_ssl_transport(self, rawsock: Any, *args: Any, **kwargs: Any) -> Any:
        if _transport.is_stream_socket(rawsock):
            return _transport.make_ssl_transport(self, rawsock, *args, **kwargs)
        return super()._make_ssl_transport(rawsock, *args, **kwargs)  # type: ignore[misc]

    # -- subprocesses: children watched through pidfds --

    async def _make_subprocess_transport(
        self,
        protocol: Any,
        args: Any,
        shell: bool,
        stdin: Any,
        stdout: Any,
        stderr: Any,
        bufsize: int,
        extra: Any = None,
        **kwargs: Any,
    ) -> Any:
        # Children are watched through pidfds in the loop's own selector (no
        # thread per child, no SIGCHLD handler); the stdlib's child watcher
        # only where pidfds are missing (Linux before 5.4).
        call = (protocol, args, shell, stdin, stdout, stderr, bufsize, extra)
        if _subprocess.pidfd_supported():
            return await _subprocess.make_subprocess_transport(self, *call, **kwargs)
        return await super()._make_subprocess_transport(*call, **kwargs)  # type: ignore[misc]

    def _run_once(self) -> None:
        raise NotImplementedError("tiffany.EventLoop runs its iterations natively")

    def close(self) -> None:
        """Closes the loop: pending callbacks and timers are dropped."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        self._children.close()
        super().close()
        self._clear()
        # The scheduler belongs to this thread; a closed loop may be dropped
        # by another one (a callback's closure in a worker thread).
        self._sched = None

    def __repr__(self) -> str:
        ready, timers = self._pending()
        return (
            f"<tiffany.EventLoop running={self.is_running()} closed={self.is_closed()} "
            f"debug={self.get_debug()} ready={ready} timers={timers}>"
        )


class _ReadyView:
    """The length (and truth) of a loop's native ready queue."""

    __slots__ = ("_loop",)

    def __init__(self, loop: EventLoop) -> None:
        self._loop = loop

    def __len__(self) -> int:
        return int(self._loop._pending()[0])

    def __bool__(self) -> bool:
        return len(self) > 0

    def clear(self) -> None:
        """Nothing: ``close()`` drops the native queue itself."""


def new_event_loop(
    *,
    clock: Literal["real", "virtual"] = "real",
    quantum: float = 0.005,
    capacity: int | None = None,
    backpressure: Callable[[], float] | None = None,
) -> EventLoop:
    """A new :class:`EventLoop` (a loop factory for ``asyncio.Runner``)."""
    return EventLoop(clock=clock, quantum=quantum, capacity=capacity, backpressure=backpressure)


class EventLoopPolicy(_UnixDefaultEventLoopPolicy):
    """An asyncio policy whose new loops are Tiffany loops (real clock)."""

    def _loop_factory(self) -> EventLoop:
        return new_event_loop()

    def __repr__(self) -> str:
        return "<tiffany.EventLoopPolicy>"


def install() -> None:
    """Makes Tiffany asyncio's event loop policy (``asyncio.run`` then uses it)."""
    asyncio.set_event_loop_policy(EventLoopPolicy())

"""``tiffany._task.Task``: an asyncio task that is a kernel task.

On a Tiffany loop, ``loop.create_task(coro)`` — and so
``asyncio.create_task``, ``ensure_future``, ``gather``, ``wait_for``,
``TaskGroup`` — makes one of these (``tiffany._native.LoopCore.create_task``):
a kernel task of the loop's scheduler (a kernel id, a priority, events and
metrics under :meth:`get_name`, budget charging), whose asyncio face is
this object.

It is a subclass of ``asyncio.Task``, so ``isinstance(t, asyncio.Task)``
holds (libraries test it, and ``asyncio.Task`` in annotations means it).
Its future half — ``result``, ``exception``, ``done``, ``cancelled``,
``add_done_callback`` (callbacks scheduled with ``call_soon``),
``remove_done_callback``, ``await`` — is the C ``Future``'s. Its stepping is
the kernel's: the C ``Task``'s own ``__init__`` and step never run, and the
methods that would read the C task's fields are defined here.

Every asyncio-visible wake of the task (its first step, the step after a
bare ``yield``, the step after an awaited future completes) is an entry of
the loop's ready FIFO, so tasks step in asyncio's order (ADR 11).

``cancel(msg)`` is asyncio's edge, for a task of either door: one
``CancelledError(msg)`` per call at the task's current await (or the awaited
future is cancelled, as asyncio does), counted by :meth:`cancelling` and
undone by :meth:`uncancel`. Level-triggered cancellation is the cancel
scopes' (``tiffany.CancelScope``, ``move_on_after``, ``fail_after``,
``TaskGroup``), never the task's (ADR 13).
"""

# The C Task's private attributes are not in typeshed.
# mypy: disable-error-code="attr-defined,override,misc"

from __future__ import annotations

import asyncio
from asyncio import base_tasks
from typing import Any, TextIO, TypeVar

from tiffany._native import (
    _task_cancel,
    _task_edge_pending,
    _task_fut_waiter,
    _task_set_name,
    _task_state,
)

__all__ = ["Task"]


T = TypeVar("T")


class Task(asyncio.Task[T]):
    """The task object (``tiffany.Task``): an asyncio task run by Tiffany's
    kernel, made by ``loop.create_task`` (asyncio's door) or
    ``tiffany.spawn`` (Tiffany's, with its ``priority``, ``deps``, ``daemon``)
    while a Tiffany loop runs. Besides asyncio's API it has the kernel's
    ``id``, ``name``, ``priority`` and ``state``.
    """

    # Slots (no per-task dict: a dict per task is one more object for the
    # garbage collector to allocate and walk). `_kid`, `_tstep`, `_tmeta`,
    # `_tcoro`, `_tctx` and `_tname` are set when the task is made
    # (tiffany._native's aio::task::create); `_ncancel` and `_cmsg` only by
    # a `cancel()`, and read with a default (two stores fewer per task made).
    __slots__ = (
        "_kid",
        "_tstep",
        "_tmeta",
        "_tcoro",
        "_tctx",
        "_tname",
        "_ncancel",
        "_cmsg",
    )
    #: The task's kernel id.
    _kid: int
    #: Its step event (the kernel event it waits on for an asyncio step).
    _tstep: int
    #: Its scheduler's id, priority and door: ``sched << 9 | priority << 1 | spawned``.
    _tmeta: int
    _tcoro: Any
    _tctx: Any
    _tname: str | int
    _ncancel: int
    _cmsg: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("tiffany tasks are made by loop.create_task() (or asyncio.create_task())")

    @property
    def id(self) -> int:
        """The task's kernel id (unique within its scheduler, increasing)."""
        return self._kid

    @property
    def _tspawn(self) -> bool:
        """Made by ``tiffany.spawn`` (not asyncio's door)."""
        return bool(self._tmeta & 1)

    @property
    def name(self) -> str:
        """The task's name: :meth:`get_name`."""
        return self.get_name()

    @property
    def priority(self) -> int:
        """The task's kernel priority (0 first, 255 last)."""
        return (self._tmeta >> 1) & 0xFF

    @property
    def state(self) -> str:
        """The kernel's state of the task: one of "pending", "scheduled",
        "running", "sleeping", "waiting", "throttled", "finished", "failed",
        "cancelled"."""
        if self.done():
            if self.cancelled():
                return "cancelled"
            return "failed" if self._exception is not None else "finished"
        sched = self._sched
        state = None if sched is None else _task_state(sched, self._kid)
        return "pending" if state is None else state

    def get_coro(self) -> Any:
        """The task's coroutine."""
        return self._tcoro

    def get_context(self) -> Any:
        """The task's ``contextvars.Context``."""
        return self._tctx

    def get_name(self) -> str:
        """The task's name (``Task-<n>`` unless one was given)."""
        name = self._tname
        return name if isinstance(name, str) else f"Task-{name}"

    def set_name(self, value: object) -> None:
        """Renames the task (the kernel's later events carry the new name)."""
        self._tname = str(value)
        sched = self._sched
        if sched is not None and not self.done():
            _task_set_name(sched, self._kid, self._tname)

    def cancel(self, msg: Any = None) -> bool:
        """Asks the task to cancel itself, asyncio's way, whichever door made
        it: one ``CancelledError(msg)`` at its current or next suspension —
        the future it awaits is cancelled, or a kernel-level wait
        (``tiffany.sleep``, ``join``, ``Event.wait``, socket waits, ``exec``)
        is woken with it — counted by :meth:`cancelling` and undone by
        :meth:`uncancel`. The task may catch it and go on. A shielded
        ``tiffany.CancelScope`` around the wait hides it until the scope is
        left. Returns False if the task is done."""
        self._log_traceback = False
        if self.done():
            return False
        self._ncancel = getattr(self, "_ncancel", 0) + 1
        kid = self._kid
        waiter = _task_fut_waiter(kid)
        if waiter is not None and waiter.cancel(msg=msg):
            return True
        self._cmsg = msg
        sched = self._sched
        if sched is not None:
            _task_cancel(sched, kid, self._tstep)
        return True

    def cancelling(self) -> int:
        """How many cancellation requests are pending (``cancel()`` minus ``uncancel()``)."""
        return getattr(self, "_ncancel", 0)

    def uncancel(self) -> int:
        """Takes back one cancellation request; returns how many remain."""
        n = getattr(self, "_ncancel", 0)
        if n > 0:
            n -= 1
            self._ncancel = n
        return n

    @property
    def _sched(self) -> Any:
        """The loop's scheduler (None once the loop is closed)."""
        return getattr(self.get_loop(), "_sched", None)

    @property
    def _must_cancel(self) -> bool:
        """A ``CancelledError`` is waiting to be thrown into the coroutine."""
        sched = self._sched
        return sched is not None and not self.done() and _task_edge_pending(sched, self._kid)

    @property
    def _fut_waiter(self) -> Any:
        """The future the task awaits, or None."""
        return None if self.done() else _task_fut_waiter(self._kid)

    @property
    def _coro(self) -> Any:
        return self._tcoro

    def get_stack(self, *, limit: int | None = None) -> list[Any]:
        """The frames of the task's coroutine (as ``asyncio.Task.get_stack``)."""
        return base_tasks._task_get_stack(self, limit)

    def print_stack(self, *, limit: int | None = None, file: TextIO | None = None) -> None:
        """Prints the task's stack (as ``asyncio.Task.print_stack``)."""
        base_tasks._task_print_stack(self, limit, file)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return base_tasks._task_repr(self)

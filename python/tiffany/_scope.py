"""Cancel scopes: ``CancelScope``, ``move_on_after``, ``fail_after`` and friends.

A scope is a region of a task's code that can be cancelled as a unit: by
:meth:`CancelScope.cancel`, by its deadline passing (a kernel timer, so under
the virtual clock time jumps to it), or, for the task's outermost scope, by
the kernel's cancel of the task (a shutdown, a low-level ``TaskHandle``'s
``cancel()``; a ``tiffany.Task``'s ``cancel()`` is asyncio's one-shot
``CancelledError`` instead). Inside a cancelled scope every blocking call
raises :class:`tiffany.Cancelled` at once; the scope that was cancelled
catches it when the task leaves the scope, and the task goes on. A shielded
scope hides the cancellation of the scopes around it, so clean-up code may
await. The rules live in the kernel (``tiffany_scheduler::scope``); this
module is their Python face.
"""

from __future__ import annotations

import math
from types import TracebackType

from tiffany._native import (
    Cancelled,
    _scope_cancel,
    _scope_enter,
    _scope_exit,
    _scope_set_deadline,
    _scope_set_shield,
    _scope_status,
    now,
)

_NEW, _ENTERED, _EXITED = 0, 1, 2


class CancelScope:
    """A region of a task that can be cancelled as a unit (trio's cancel scope).

    ``with tiffany.CancelScope() as scope:`` enters it; ``scope.cancel()``
    (from this task, another task or a callback) cancels it: every blocking
    call inside raises :class:`tiffany.Cancelled` at once, and the scope
    catches that exception when the task leaves it — the task goes on after
    the ``with`` block. ``deadline`` (seconds on the scheduler's clock, as
    :func:`tiffany.now` reads it; ``None``: none) cancels the scope when it
    passes. ``shield=True`` hides the cancellation of the scopes around it
    (the task's own cancellation included), so clean-up code may await; the
    scope's own deadline and ``cancel()`` still apply.

    A scope is entered once, by one task, and must be left in the order it
    was entered.
    """

    __slots__ = (
        "_deadline",
        "_shield",
        "_cancel_called",
        "_cancelled_caught",
        "_task",
        "_id",
        "_state",
    )

    def __init__(self, *, deadline: float | None = None, shield: bool = False) -> None:
        if deadline is not None and math.isnan(deadline):
            raise ValueError("a deadline cannot be NaN")
        self._deadline = None if deadline == math.inf else deadline
        self._shield = bool(shield)
        self._cancel_called = False
        self._cancelled_caught = False
        self._task = 0
        self._id = 0
        self._state = _NEW

    def __enter__(self) -> CancelScope:
        if self._state != _NEW:
            raise RuntimeError("a CancelScope can only be entered once")
        self._task, self._id = _scope_enter(self._deadline, self._shield)
        self._state = _ENTERED
        if self._cancel_called:
            _scope_cancel(self._task, self._id)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._state != _ENTERED:
            raise RuntimeError("this CancelScope is not entered")
        self._state = _EXITED
        cancelled, absorbs = _scope_exit(self._task, self._id)
        self._cancel_called = self._cancel_called or cancelled
        if exc is None or not absorbs:
            return False
        if isinstance(exc, Cancelled):
            self._cancelled_caught = True
            return True
        if isinstance(exc, BaseExceptionGroup):
            matched, rest = exc.split(Cancelled)
            if matched is None:
                return False
            self._cancelled_caught = True
            if rest is None:
                return True
            raise rest from None
        return False

    def cancel(self) -> None:
        """Cancels the scope (before it is entered: as soon as it is; after
        it was left: nothing)."""
        self._cancel_called = True
        if self._state == _ENTERED:
            _scope_cancel(self._task, self._id)

    @property
    def cancel_called(self) -> bool:
        """Whether the scope was cancelled, by ``cancel()`` or its deadline."""
        if self._state == _ENTERED and not self._cancel_called:
            status = _scope_status(self._task, self._id)
            self._cancel_called = status is not None and status[0]
        return self._cancel_called

    @property
    def cancelled_caught(self) -> bool:
        """Whether the scope caught a :class:`tiffany.Cancelled` when it was left."""
        return self._cancelled_caught

    @property
    def deadline(self) -> float | None:
        """When the scope cancels itself, in seconds on the scheduler's clock
        (``None``: never). Settable, also while the scope is entered; a
        deadline already past cancels it at once."""
        return self._deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        if value is not None and math.isnan(value):
            raise ValueError("a deadline cannot be NaN")
        self._deadline = None if value == math.inf else value
        if self._state == _ENTERED:
            _scope_set_deadline(self._task, self._id, self._deadline)

    @property
    def shield(self) -> bool:
        """Whether the scope hides the cancellation of the scopes around it. Settable."""
        return self._shield

    @shield.setter
    def shield(self, value: bool) -> None:
        self._shield = bool(value)
        if self._state == _ENTERED:
            _scope_set_shield(self._task, self._id, self._shield)

    def __repr__(self) -> str:
        state = ("new", "entered", "exited")[self._state]
        return (
            f"<CancelScope {state} deadline={self._deadline} shield={self._shield} "
            f"cancel_called={self._cancel_called}>"
        )


class _FailScope(CancelScope):
    """A :class:`CancelScope` that turns a cancellation it caught into ``TimeoutError``."""

    __slots__ = ()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        caught = super().__exit__(exc_type, exc, tb)
        if self.cancelled_caught:
            raise TimeoutError("the deadline of a fail_after()/fail_at() scope passed")
        return caught


def _seconds(name: str, seconds: float) -> float:
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {seconds}")
    return seconds


def move_on_at(deadline: float) -> CancelScope:
    """A scope cancelled at ``deadline`` (scheduler clock): the block is cut
    short and the task goes on. ``scope.cancelled_caught`` tells whether it was."""
    return CancelScope(deadline=deadline)


def move_on_after(seconds: float) -> CancelScope:
    """A scope cancelled ``seconds`` from now: the block is cut short and the
    task goes on. ``scope.cancelled_caught`` tells whether it was."""
    return CancelScope(deadline=now() + _seconds("move_on_after() seconds", seconds))


def fail_at(deadline: float) -> CancelScope:
    """Like :func:`move_on_at`, but a block cut short raises ``TimeoutError``."""
    return _FailScope(deadline=deadline)


def fail_after(seconds: float) -> CancelScope:
    """Like :func:`move_on_after`, but a block cut short raises ``TimeoutError``."""
    return _FailScope(deadline=now() + _seconds("fail_after() seconds", seconds))

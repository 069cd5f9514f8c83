"""``tiffany.TaskGroup``: structured concurrency on kernel tasks.

The group's body runs in a cancel scope. A child that fails cancels its
siblings and that scope (so the body stops at its next ``await``); the
group waits for every child before the ``async with`` block is left, and
the failures come out together as an ``ExceptionGroup``. Any cancellation
that reaches the group from outside (the owning task cancelled, an
enclosing scope cancelled or past its deadline) cancels the children too,
and the group waits for them (shielded: they are ending) before the
cancellation goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator, Iterable
from types import TracebackType
from typing import Any, TypeVar

from tiffany._native import Cancelled, spawn
from tiffany._native import Task as TaskHandle
from tiffany._scope import CancelScope
from tiffany._task import Task

T = TypeVar("T")


def joined_cancelled(task: Any, exc: BaseException) -> bool:
    """Whether ``exc``, raised by awaiting (joining) ``task``, tells that
    ``task`` was cancelled rather than that the awaiting task is: ``task``
    ended cancelled, ``exc`` is no Tiffany scope's ``Cancelled``, and the
    awaiting asyncio task (if any) has no ``cancel()`` pending."""
    if isinstance(exc, Cancelled) or task.state != "cancelled":
        return False
    try:
        me = asyncio.current_task()
    except RuntimeError:
        return True
    return me is None or me.cancelling() == 0


class TaskGroup:
    """A group of child tasks that live no longer than an ``async with`` block.

    ::

        async with tiffany.TaskGroup() as tg:
            a = tg.spawn(fetch("a"), priority=5)
            b = tg.spawn(fetch("b"), deps=[a], name="after-a")
        # here a and b have ended; a failure of either is raised
        # (in an ExceptionGroup), and cancelled the other.

    asyncio's ``TaskGroup`` semantics on tiffany tasks: the children are
    kernel tasks like any other (priority, dependencies, events, budgets).
    A child ending cancelled is not an error. ``KeyboardInterrupt`` and
    ``SystemExit`` are raised as they are, not grouped.
    """

    __slots__ = (
        "_scope",
        "_pending",
        "_errors",
        "_base_error",
        "_state",
        "_aborting",
    )

    def __init__(self) -> None:
        self._scope: CancelScope | None = None
        # Insertion-ordered: the group waits for its children in spawn order.
        self._pending: dict[Task[Any] | TaskHandle[Any], None] = {}
        self._errors: list[BaseException] = []
        self._base_error: BaseException | None = None
        self._state = "new"
        self._aborting = False

    async def __aenter__(self) -> TaskGroup:
        if self._state != "new":
            raise RuntimeError("a TaskGroup can only be entered once")
        scope = CancelScope()
        scope.__enter__()
        self._scope = scope
        self._state = "open"
        return self

    def spawn(
        self,
        coro: Coroutine[Any, Any, T] | Generator[Any, Any, T],
        *,
        priority: int | None = None,
        deps: Iterable[Task[Any] | TaskHandle[Any]] = (),
        name: str | None = None,
    ) -> Task[T] | TaskHandle[T]:
        """Spawns ``coro`` as a child task of the group and returns it.

        ``priority``, ``deps`` and ``name`` are those of :func:`tiffany.spawn`
        (``None``: the default priority), and so is what it returns: a
        :class:`tiffany.Task` while a Tiffany loop runs (always under
        ``tiffany.run``), else a ``TaskHandle``. Raises ``RuntimeError`` (closing
        the coroutine) if the group is not entered, has ended, or is
        shutting down after a failure.
        """
        if self._state != "open" or self._aborting:
            coro.close()
            what = {
                "new": "has not been entered",
                "closed": "has ended",
            }.get(self._state, "is shutting down")
            raise RuntimeError(f"this TaskGroup {what}")
        kwargs: dict[str, Any] = {"deps": list(deps), "name": name}
        if priority is not None:
            kwargs["priority"] = priority
        task: Task[T] | TaskHandle[T] = spawn(coro, **kwargs)
        self._pending[task] = None
        task.add_done_callback(self._child_done)
        return task

    create_task = spawn
    """An alias of :meth:`spawn` (asyncio's name), with the same keywords."""

    def _child_done(self, task: Task[Any] | TaskHandle[Any]) -> None:
        if task not in self._pending:
            return
        del self._pending[task]
        if task.state != "failed":
            return
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            self._base_error = self._base_error or exc
        else:
            self._errors.append(exc)
        self._abort()

    def _abort(self) -> None:
        """Cancels every child still running and the group's body."""
        self._aborting = True
        for task in list(self._pending):
            task.cancel()
        if self._scope is not None:
            self._scope.cancel()

    async def _wait_one(self) -> None:
        task = next(iter(self._pending))
        try:
            await task
        except BaseException as e:
            # The child's own failure is recorded by _child_done, and its
            # cancellation is no error; our own cancellation, or the
            # coroutine being closed, goes on.
            if isinstance(e, GeneratorExit) or not task.done():
                raise
            if isinstance(e, asyncio.CancelledError) and not joined_cancelled(task, e):
                raise
        self._child_done(task)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        scope = self._scope
        if scope is None:
            raise RuntimeError("this TaskGroup is not entered")
        if isinstance(exc, GeneratorExit):
            # The coroutine is being closed (its task was abandoned): no
            # more awaiting. Cancel the children and let go.
            self._abort()
            self._state = "closed"
            scope.__exit__(exc_type, exc, tb)
            return False
        self._state = "exiting"
        # Tiffany's level (a scope, the task) or asyncio's edge (the owning
        # asyncio task's cancel()): either way the children are cancelled
        # and awaited, then the cancellation goes on.
        cancelled = exc if isinstance(exc, asyncio.CancelledError) else None
        if exc is not None:
            if cancelled is None:
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    self._base_error = exc
                else:
                    self._errors.append(exc)
            self._abort()
        try:
            while self._pending:
                if self._aborting:
                    # The children are cancelled and ending: wait for them
                    # even though the body's scope (or the task) is cancelled.
                    with CancelScope(shield=True):
                        await self._wait_one()
                    continue
                try:
                    await self._wait_one()
                except asyncio.CancelledError as c:
                    cancelled = c
                    self._abort()
        finally:
            self._state = "closed"
            absorbed = scope.__exit__(type(cancelled) if cancelled else None, cancelled, None)
        if self._base_error is not None:
            raise self._base_error
        errors, self._errors = self._errors, []
        if errors:
            raise BaseExceptionGroup("unhandled errors in a TaskGroup", errors)
        if cancelled is not None and not absorbed:
            if cancelled is exc:
                return False
            raise cancelled
        # The body's own exception was absorbed, or there was none.
        return exc is not None

    def __repr__(self) -> str:
        return f"<TaskGroup {self._state} children={len(self._pending)}>"

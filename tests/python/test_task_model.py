"""One task model (issue 12, ADR 13): ``tiffany.spawn`` and ``asyncio.create_task``
make the same kind of object, ``tiffany.Task`` (a subclass of ``asyncio.Task``),
with one cancel semantics — asyncio's, whichever door made the task — and
joining a cancelled task raises a ``CancelledError`` in both worlds. The level
(a cancelled region raises at every await) is the cancel scopes'.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import socket
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

import tiffany

Make = Callable[[Coroutine[Any, Any, Any]], "tiffany.Task[Any]"]
T = TypeVar("T")


def spawn(coro: Coroutine[Any, Any, T], **options: Any) -> tiffany.Task[T]:
    """``tiffany.spawn`` where a Tiffany loop runs (under ``tiffany.run``):
    always a ``tiffany.Task``, which the assert tells the type checker."""
    task = tiffany.spawn(coro, **options)
    assert type(task) is tiffany.Task
    return task


def _by_spawn(coro: Coroutine[Any, Any, Any]) -> tiffany.Task[Any]:
    return spawn(coro, name="spawned")


def _by_create_task(coro: Coroutine[Any, Any, Any]) -> tiffany.Task[Any]:
    task = asyncio.create_task(coro, name="created")
    assert type(task) is tiffany.Task
    return task


DOORS = pytest.mark.parametrize("make", [_by_spawn, _by_create_task], ids=["spawn", "create_task"])


def _run(main: Coroutine[Any, Any, Any]) -> Any:
    return tiffany.run(main, clock="virtual")


@DOORS
def test_the_task_is_an_asyncio_task_of_the_running_loop(make: Make) -> None:
    async def child() -> int:
        await tiffany.sleep(1)
        return 7

    async def main() -> None:
        coro = child()
        t = make(coro)
        assert type(t) is tiffany.Task
        assert isinstance(t, asyncio.Task)
        assert asyncio.isfuture(t)
        assert t.get_loop() is asyncio.get_running_loop()
        assert t.get_coro() is coro
        assert t in asyncio.all_tasks()
        assert not t.done()
        assert t.state in ("scheduled", "pending")
        assert await t == 7
        assert t.done() and t.result() == 7 and t.exception() is None
        assert t.state == "finished"
        assert await tiffany.join(t) == 7

    _run(main())


@DOORS
def test_names(make: Make) -> None:
    async def child() -> str:
        await tiffany.sleep(0)
        return asyncio.current_task().get_name()  # type: ignore[union-attr]

    async def main() -> None:
        t = make(child())
        assert t.get_name() in ("spawned", "created")
        t.set_name("renamed")
        assert t.get_name() == "renamed"
        assert await t == "renamed"

    _run(main())


def test_spawn_without_a_name_is_named_as_asyncio_names_tasks() -> None:
    async def main() -> None:
        t = spawn(asyncio.sleep(0))
        assert t.get_name().startswith("Task-")
        await t

    _run(main())


@DOORS
def test_cancel_with_a_message_counts_and_uncancels(make: Make) -> None:
    started = tiffany.Event()

    async def child() -> None:
        started.set()
        await tiffany.sleep(100)

    async def main() -> None:
        t = make(child())
        await started.wait()
        assert t.cancelling() == 0
        assert t.cancel("stop")
        assert t.cancelling() == 1
        assert t.uncancel() == 0
        assert t.cancel("stop")
        with pytest.raises(asyncio.CancelledError) as caught:
            await t
        assert caught.value.args == ("stop",)
        assert t.cancelled() and t.state == "cancelled"
        assert not t.cancel()
        with pytest.raises(asyncio.CancelledError):
            t.result()

    _run(main())


@DOORS
def test_cancel_is_one_edge_the_task_may_survive(make: Make) -> None:
    async def child() -> str:
        try:
            await tiffany.sleep(100)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        await tiffany.sleep(1)  # the edge is spent: it may wait again
        return "survived"

    async def main() -> None:
        t = make(child())
        await tiffany.sleep(1)
        t.cancel()
        assert await t == "survived"

    _run(main())


@DOORS
def test_done_callbacks_run_in_order_and_can_be_removed(make: Make) -> None:
    seen: list[str] = []

    async def child() -> None:
        await tiffany.sleep(1)

    async def main() -> None:
        t = make(child())
        t.add_done_callback(lambda f: seen.append("first"))

        def removed(_: object) -> None:
            seen.append("removed")

        t.add_done_callback(removed)
        t.add_done_callback(lambda f: seen.append(f"last {f is t}"))
        assert t.remove_done_callback(removed) == 1
        await t
        await asyncio.sleep(0)  # callbacks are scheduled with call_soon
        assert seen == ["first", "last True"]

    _run(main())


@DOORS
def test_exception_and_stack(make: Make) -> None:
    async def child() -> None:
        await tiffany.sleep(1)
        raise ValueError("boom")

    async def main() -> None:
        t = make(child())
        await asyncio.sleep(0)
        stack = t.get_stack()
        assert [f.f_code.co_name for f in stack] == ["child"]
        out = io.StringIO()
        t.print_stack(file=out)
        assert "child" in out.getvalue()
        with pytest.raises(ValueError, match="boom"):
            await t
        assert isinstance(t.exception(), ValueError)
        assert t.state == "failed"

    _run(main())


@DOORS
def test_current_task_inside_is_the_task(make: Make) -> None:
    async def child() -> tuple[Any, bool]:
        me = asyncio.current_task()
        await tiffany.sleep(0)
        return me, me in asyncio.all_tasks()

    async def main() -> None:
        t = make(child())
        me, listed = await t
        assert me is t and listed

    _run(main())


@DOORS
def test_contextvars_are_copied_at_creation_and_kept_per_task(make: Make) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def child(value: str) -> tuple[str, str]:
        seen = var.get()
        var.set(value)
        await tiffany.sleep(1)
        return seen, var.get()

    async def main() -> None:
        var.set("parent")
        a = make(child("a"))
        var.set("later")
        b = make(child("b"))
        assert await a == ("parent", "a")
        assert await b == ("later", "b")
        assert var.get() == "later"

    _run(main())


def test_spawn_options_reach_the_kernel() -> None:
    order: list[str] = []

    async def child(tag: str) -> str:
        order.append(tag)
        return tag

    async def main() -> None:
        low = spawn(child("low"), priority=200)
        high = spawn(child("high"), priority=1)
        after = spawn(child("after"), priority=1, deps=[low])
        assert (low.priority, high.priority) == (200, 1)
        assert low.id != high.id
        await asyncio.gather(low, high, after)
        assert order == ["high", "low", "after"]

    _run(main())


def test_deps_on_an_asyncio_task_that_ended() -> None:
    async def fail() -> None:
        raise ValueError("no")

    async def ok() -> str:
        return "ok"

    async def main() -> None:
        bad = asyncio.create_task(fail())
        good = asyncio.create_task(ok())
        with pytest.raises(ValueError):
            await bad
        await good
        # Their kernel records may be gone: the futures say how they ended.
        doomed = spawn(ok(), deps=[bad])
        fine = spawn(ok(), deps=[good])
        assert await fine == "ok"
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert doomed.cancelled()

    _run(main())


# -- joining a cancelled task: a CancelledError, in both worlds --


def test_joining_a_cancelled_task_raises_a_cancelled_error() -> None:
    async def child() -> None:
        await tiffany.sleep(100)

    async def main() -> str:
        t = spawn(child())
        await tiffany.sleep(1)
        t.cancel()
        with pytest.raises(asyncio.CancelledError) as caught:
            await tiffany.join(t)
        assert isinstance(caught.value, tiffany.TaskCancelled)
        assert not isinstance(caught.value, tiffany.Cancelled)
        # The joiner was not cancelled: it goes on, and may wait again.
        await tiffany.sleep(1)
        return "joiner went on"

    assert _run(main()) == "joiner went on"


def test_an_uncancelled_scope_does_not_swallow_a_joined_cancellation() -> None:
    async def child() -> None:
        await tiffany.sleep(100)

    async def joiner(t: tiffany.Task[None]) -> None:
        with tiffany.CancelScope() as scope:
            await tiffany.join(t)
        raise AssertionError(f"the scope swallowed it (caught: {scope.cancelled_caught})")

    async def main() -> None:
        t = spawn(child())
        j = spawn(joiner(t))
        await tiffany.sleep(1)
        t.cancel()
        # The joiner does not catch it: it ends cancelled, as in asyncio.
        with pytest.raises(asyncio.CancelledError):
            await j
        assert j.cancelled() and j.state == "cancelled"

    _run(main())


def test_joining_a_cancelled_handle_in_a_scheduler_run_program(sched: tiffany.Scheduler) -> None:
    async def child() -> None:
        await tiffany.sleep(100)

    async def joiner(t: tiffany.TaskHandle[None]) -> None:
        with tiffany.CancelScope():
            await t

    async def main() -> tuple[str, str]:
        t = tiffany.spawn(child())
        assert isinstance(t, tiffany.TaskHandle)  # no asyncio loop runs here
        j = tiffany.spawn(joiner(t))
        await tiffany.sleep(1)
        t.cancel()
        with pytest.raises(asyncio.CancelledError) as caught:
            await tiffany.join(j)
        assert isinstance(caught.value, tiffany.TaskCancelled)
        assert t.cancelled() and j.cancelled()
        return t.state, j.state

    assert sched.run(main()) == ("cancelled", "cancelled")


def test_joining_a_cancelled_task_from_asyncio_code() -> None:
    async def child() -> None:
        await asyncio.sleep(100)

    async def main() -> str:
        t = asyncio.create_task(child())
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        with pytest.raises(asyncio.CancelledError):
            await tiffany.join(t)
        cur = asyncio.current_task()
        assert cur is not None and cur.cancelling() == 0
        await asyncio.sleep(1)
        return "went on"

    with asyncio.Runner(loop_factory=lambda: tiffany.new_event_loop(clock="virtual")) as r:
        assert r.run(main()) == "went on"


# -- groups, timeouts, shields around spawned tasks --


def test_asyncio_task_group_with_both_kinds() -> None:
    async def child(x: int) -> int:
        await tiffany.sleep(x)
        return x

    async def failing() -> None:
        await tiffany.sleep(2)
        raise ValueError("child failed")

    async def main() -> None:
        spawned = spawn(child(100))
        with pytest.raises(ExceptionGroup) as caught:
            async with asyncio.TaskGroup() as tg:
                a = tg.create_task(child(1))
                b = tg.create_task(failing())
                # A spawned task awaited from the group's body.
                await spawned
        assert a.result() == 1 and b.exception() is not None
        assert caught.group_contains(ValueError)
        # The body was cancelled while awaiting the spawned task: asyncio
        # cancels the awaited task with it.
        assert spawned.cancelled()

    _run(main())


def test_tiffany_task_group_with_both_kinds() -> None:
    async def child(x: int) -> int:
        await tiffany.sleep(x)
        return x

    async def main() -> None:
        created = _by_create_task(child(5))
        async with tiffany.TaskGroup() as tg:
            a = tg.spawn(child(1))
            b = tg.spawn(child(2), deps=[created])
            c = tg.spawn(child(100))
            await tiffany.sleep(3)
            c.cancel()  # a child cancelled: no error, the group goes on
        assert type(a) is tiffany.Task
        assert (a.result(), b.result()) == (1, 2)
        assert c.cancelled()
        assert created.done()

    _run(main())


def test_tiffany_task_group_failure_cancels_spawned_siblings() -> None:
    async def sleeper() -> None:
        await tiffany.sleep(100)

    async def failing() -> None:
        await tiffany.sleep(1)
        raise ValueError("child failed")

    async def main() -> None:
        with pytest.raises(ExceptionGroup):
            async with tiffany.TaskGroup() as tg:
                s = tg.spawn(sleeper())
                tg.spawn(failing())
        assert s.cancelled()

    _run(main())


def test_wait_for_shield_and_timeout_around_a_spawned_task() -> None:
    async def slow() -> str:
        await tiffany.sleep(100)
        return "slow"

    async def quick() -> str:
        await tiffany.sleep(1)
        return "quick"

    async def main() -> None:
        t = spawn(slow())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(t, 5)
        assert t.cancelled()

        assert await asyncio.wait_for(spawn(quick()), 5) == "quick"

        shielded = spawn(slow())
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.shield(shielded)
        assert not shielded.done()
        assert await shielded == "slow"

        guarded = spawn(slow())
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5):
                await guarded
        assert guarded.cancelled()

    _run(main())


def test_tiffany_current_task_is_the_task_object() -> None:
    async def child() -> Any:
        return tiffany.current_task()

    async def main() -> None:
        t = spawn(child())
        assert await t is t
        assert tiffany.current_task() is asyncio.current_task()

    _run(main())


# -- one cancel semantics: asyncio's, for a task of either door --

Blocker = Callable[[], Coroutine[Any, Any, Any]]


def _blockers() -> dict[str, Blocker]:
    """Ways for a task to block, each for much longer than the tests run."""

    async def sleep() -> None:
        await tiffany.sleep(100)

    async def event() -> None:
        await tiffany.Event().wait()

    async def join() -> None:
        async def long() -> None:
            await tiffany.sleep(100)

        await tiffany.join(spawn(long()))

    async def future() -> None:
        await asyncio.get_running_loop().create_future()

    async def socket_wait() -> None:
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            await tiffany.sock_recv(a, 1)

    return {
        "tiffany.sleep": sleep,
        "Event.wait": event,
        "tiffany.join": join,
        "asyncio future": future,
        "sock_recv": socket_wait,
    }


@DOORS
@pytest.mark.parametrize("blocker", list(_blockers()))
def test_cancel_reaches_the_task_whatever_it_awaits(make: Make, blocker: str) -> None:
    wait = _blockers()[blocker]

    async def child() -> tuple[str, tuple[object, ...], int, str]:
        try:
            await wait()
        except asyncio.CancelledError as e:
            me = asyncio.current_task()
            assert me is not None
            seen = (type(e).__name__, e.args, me.uncancel())
        else:
            raise AssertionError("not cancelled")
        # One cancel() is one CancelledError: the task may wait again.
        await tiffany.sleep(1)
        return (*seen, "went on")

    async def main() -> None:
        t = make(child())
        await tiffany.sleep(1)
        assert t.cancel("why")
        assert t.cancelling() == 1
        assert await t == ("CancelledError", ("why",), 0, "went on")
        assert t.state == "finished" and tiffany.now() == 2.0

    _run(main())


@DOORS
def test_a_task_cancelled_before_its_first_step_never_runs(make: Make) -> None:
    ran: list[bool] = []

    async def child() -> None:
        ran.append(True)

    async def main() -> None:
        t = make(child())
        t.cancel("early")
        with pytest.raises(asyncio.CancelledError) as caught:
            await t
        assert caught.value.args == ("early",)
        assert t.cancelled() and ran == []

    _run(main())


@DOORS
def test_a_task_that_cancels_itself_gets_it_at_its_next_await(make: Make) -> None:
    async def child() -> str:
        me = asyncio.current_task()
        assert me is not None
        me.cancel("self")
        try:
            await tiffany.sleep(0)
        except asyncio.CancelledError as e:
            return f"caught {e.args[0]}"
        return "not cancelled"

    async def main() -> None:
        assert await make(child()) == "caught self"

    _run(main())


@DOORS
def test_cleanup_after_a_cancel_may_await_without_a_shield(make: Make) -> None:
    log: list[str] = []

    async def child() -> None:
        try:
            await tiffany.sleep(100)
        finally:
            await tiffany.sleep(3)
            log.append(f"cleaned up at {tiffany.now()}")

    async def main() -> None:
        t = make(child())
        await tiffany.sleep(1)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert t.cancelled() and log == ["cleaned up at 4.0"]

    _run(main())


@DOORS
def test_two_cancels_before_the_task_steps_are_one_error_counted_twice(make: Make) -> None:
    async def child() -> tuple[int, str]:
        try:
            await tiffany.sleep(100)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            assert me is not None
            pending = me.cancelling()
            me.uncancel()
            me.uncancel()
        await tiffany.sleep(1)  # only one error was thrown
        return pending, "went on"

    async def main() -> None:
        t = make(child())
        await tiffany.sleep(1)
        t.cancel()
        t.cancel()
        assert await t == (2, "went on")

    _run(main())


@DOORS
def test_the_level_lives_in_cancel_scopes(make: Make) -> None:
    seen: list[str] = []
    scopes: list[tiffany.CancelScope] = []

    async def child() -> str:
        with tiffany.CancelScope() as scope:
            scopes.append(scope)
            for _ in range(2):
                try:
                    await tiffany.sleep(100)
                except tiffany.Cancelled:
                    seen.append(f"cancelled at {tiffany.now()}")
            await tiffany.sleep(100)  # raises again: the scope catches it
        await tiffany.sleep(1)  # the scope is left: the task goes on
        return "went on"

    async def main() -> None:
        t = make(child())
        await tiffany.sleep(1)
        scopes[0].cancel()
        assert await t == "went on"
        assert seen == ["cancelled at 1.0", "cancelled at 1.0"]
        assert scopes[0].cancelled_caught and t.cancelling() == 0

    _run(main())


@DOORS
def test_a_shielded_scope_holds_a_cancel_until_it_is_left(make: Make) -> None:
    async def child() -> str:
        with tiffany.CancelScope(shield=True):
            await tiffany.sleep(5)
        try:
            await tiffany.sleep(100)
        except asyncio.CancelledError:
            return f"cancelled at {tiffany.now()}"
        return "not cancelled"

    async def main() -> None:
        t = make(child())
        await tiffany.sleep(1)
        t.cancel()
        assert await t == "cancelled at 5.0"

    _run(main())


def test_a_spawned_task_that_swallows_cancels_cannot_hold_the_run() -> None:
    swallowed: list[float] = []

    async def stubborn() -> None:
        while True:
            try:
                await tiffany.sleep(10)
            except asyncio.CancelledError:
                swallowed.append(tiffany.now())

    async def main() -> None:
        t = spawn(stubborn())
        await tiffany.sleep(1)
        t.cancel()  # swallowed: asyncio's edge, it goes on
        await tiffany.sleep(1)
        assert not t.done()

    # The run ends when main does: the shutdown is the kernel's (issue 9).
    _run(main())
    assert swallowed[0] == 1.0 and len(swallowed) >= 2


@DOORS
@pytest.mark.parametrize("sleep", ["tiffany.sleep", "asyncio.sleep"])
def test_asyncio_timeout_inside_a_task(make: Make, sleep: str) -> None:
    nap = tiffany.sleep if sleep == "tiffany.sleep" else asyncio.sleep

    async def child() -> list[object]:
        out: list[object] = []
        try:
            async with asyncio.timeout(2):
                await nap(100)
        except TimeoutError:
            out.append(f"timed out at {tiffany.now()}")
        me = asyncio.current_task()
        assert me is not None
        out.append(me.cancelling())
        async with asyncio.timeout(5):
            await nap(1)  # the task goes on, and may wait again
        out.append(f"slept at {tiffany.now()}")
        return out

    async def main() -> None:
        assert await make(child()) == ["timed out at 2.0", 0, "slept at 3.0"]

    _run(main())


@DOORS
def test_asyncio_wait_for_inside_a_task(make: Make) -> None:
    async def child() -> str:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(tiffany.sleep(100), 2)
        return f"went on at {tiffany.now()}"

    async def main() -> None:
        assert await make(child()) == "went on at 2.0"

    _run(main())


@DOORS
def test_anyio_move_on_after_inside_a_task(make: Make) -> None:
    anyio = pytest.importorskip("anyio", reason="anyio is not installed")

    async def child() -> list[object]:
        out: list[object] = []
        with anyio.move_on_after(2) as scope:
            await tiffany.sleep(100)
        out.append((scope.cancelled_caught, tiffany.now()))
        with anyio.move_on_after(2) as scope:
            await anyio.sleep(100)
        out.append((scope.cancelled_caught, tiffany.now()))
        await tiffany.sleep(1)
        out.append("went on")
        return out

    async def main() -> None:
        assert await make(child()) == [(True, 2.0), (True, 4.0), "went on"]

    _run(main())


@DOORS
def test_anyio_task_group_with_a_failing_child_inside_a_task(make: Make) -> None:
    anyio = pytest.importorskip("anyio", reason="anyio is not installed")
    log: list[str] = []

    async def sibling() -> None:
        try:
            await tiffany.sleep(100)
        except asyncio.CancelledError:
            log.append(f"sibling cancelled at {tiffany.now()}")
            raise

    async def failing() -> None:
        await tiffany.sleep(1)
        raise ValueError("child failed")

    async def child() -> str:
        with pytest.raises(ExceptionGroup) as caught:
            async with anyio.create_task_group() as tg:
                tg.start_soon(sibling)
                tg.start_soon(failing)
        assert caught.group_contains(ValueError)
        await tiffany.sleep(1)
        return f"went on at {tiffany.now()}"

    async def main() -> None:
        assert await make(child()) == "went on at 2.0"
        assert log == ["sibling cancelled at 1.0"]

    _run(main())

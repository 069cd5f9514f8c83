"""Every asyncio task on a Tiffany loop is a kernel task (issue 12).

``loop.create_task`` — and so ``asyncio.create_task``, ``gather``,
``TaskGroup`` — makes a ``tiffany._task.Task``: an ``asyncio.Task`` whose
steps are the kernel's. These tests show what that gives asyncio code
(priorities, budgets, the virtual clock, telemetry, Tiffany's awaitables and
scopes) and that asyncio's own semantics hold (current task, contextvars,
``cancel``/``cancelling``/``uncancel``, ``timeout``, ``TaskGroup``).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

import tiffany
import tiffany.lowlevel

T = TypeVar("T")


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]], **kwargs: Any) -> T:
    with asyncio.Runner(
        loop_factory=lambda: tiffany.new_event_loop(clock="virtual", **kwargs)
    ) as runner:
        return runner.run(main())


def test_an_asyncio_task_is_a_kernel_task_and_an_asyncio_task() -> None:
    async def child() -> int:
        await asyncio.sleep(0)
        return 7

    async def main() -> None:
        t = asyncio.create_task(child(), name="child")
        assert isinstance(t, asyncio.Task) and asyncio.isfuture(t)
        assert t.get_name() == "child" and not t.done()
        assert t.get_loop() is asyncio.get_running_loop()
        assert isinstance(t._kid, int)  # type: ignore[attr-defined]
        assert getattr(t.get_coro(), "__name__", None) == "child"
        assert await t == 7
        assert t.done() and not t.cancelled() and t.result() == 7 and t.exception() is None

    run_virtual(main)


def test_priority_orders_asyncio_tasks() -> None:
    order: list[str] = []

    async def record(name: str) -> None:
        order.append(name)

    async def main() -> None:
        late = asyncio.create_task(record("default"))
        with tiffany.priority(1):
            first = asyncio.create_task(record("priority 1"))
        await asyncio.gather(late, first)

    run_virtual(main)
    # Plain asyncio runs them in creation order; the kernel by priority.
    assert order == ["priority 1", "default"]


def test_priority_block_nests_and_checks_its_value() -> None:
    with pytest.raises(ValueError, match="between 0 and 255"):
        tiffany.priority(300)
    seen: list[int] = []

    async def main() -> None:
        sched = asyncio.get_running_loop().scheduler  # type: ignore[attr-defined]
        events: list[dict[str, Any]] = []
        sched.on_event(lambda e: events.append(json.loads(e.to_json())))
        with tiffany.priority(3):
            with tiffany.priority(200):
                a = asyncio.create_task(asyncio.sleep(0))
            b = asyncio.create_task(asyncio.sleep(0))
        c = asyncio.create_task(asyncio.sleep(0))
        await asyncio.gather(a, b, c)
        by_id = {e["task_id"]: e["priority"] for e in events if e["event"] == "spawned"}
        seen.extend(by_id[t._kid] for t in (a, b, c))  # type: ignore[attr-defined]

    run_virtual(main)
    assert seen == [200, 3, tiffany.PRI_DEFAULT]


def test_a_busy_asyncio_task_is_throttled_and_its_peer_runs() -> None:
    order: list[str] = []

    async def busy(name: str) -> None:
        for _ in range(120):
            order.append(name)
            # Answered at once (no yield): only the budget interrupts.
            await tiffany.lowlevel.GetTid()

    throttles: list[int] = []

    async def main() -> None:
        sched = asyncio.get_running_loop().scheduler  # type: ignore[attr-defined]
        sched.on_event(lambda e: throttles.append(1) if e.kind == "throttled" else None)
        await asyncio.gather(busy("a"), busy("b"))

    # Virtual clock: each resume is charged 100 µs; a 5 ms quantum throttles
    # a busy task after 50 resumes.
    run_virtual(main, quantum=0.005)
    runs = [order[0]]
    for name in order[1:]:
        if name != runs[-1]:
            runs.append(name)
    assert runs[:4] == ["a", "b", "a", "b"], runs
    assert len(throttles) >= 4


def test_asyncio_queue_between_a_tiffany_task_and_an_asyncio_task() -> None:
    async def producer(q: asyncio.Queue[int]) -> None:
        for i in range(5):
            await tiffany.sleep(0.01)
            await q.put(i)
        await q.put(-1)

    async def consumer(q: asyncio.Queue[int]) -> list[tuple[int, float]]:
        got = []
        while (item := await q.get()) != -1:
            got.append((item, asyncio.get_running_loop().time()))
        return got

    async def main() -> list[tuple[int, float]]:
        q: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        p = tiffany.spawn(producer(q))
        got = await asyncio.create_task(consumer(q))
        await p
        return got

    got = tiffany.run(main(), clock="virtual")
    assert [i for i, _ in got] == [0, 1, 2, 3, 4]
    assert [round(t, 6) for _, t in got] == [0.01, 0.02, 0.03, 0.04, 0.05]


def test_asyncio_sleep_in_a_tiffany_task_runs_on_the_virtual_clock() -> None:
    async def sleeper() -> float:
        await asyncio.sleep(3600)
        return tiffany.now()

    async def main() -> float:
        return await tiffany.spawn(sleeper())

    assert tiffany.run(main(), clock="virtual") == 3600.0


def test_join_an_asyncio_task_and_await_a_tiffany_task_from_asyncio() -> None:
    async def tiffany_child() -> str:
        await tiffany.sleep(1)
        return "tiffany"

    async def asyncio_child() -> str:
        await asyncio.sleep(2)
        return "asyncio"

    async def failing() -> None:
        await asyncio.sleep(0)
        raise KeyError("boom")

    async def in_asyncio() -> tuple[str, str, str]:
        t = tiffany.spawn(tiffany_child())
        a = asyncio.create_task(asyncio_child())
        f = asyncio.create_task(failing())
        with pytest.raises(KeyError):
            await tiffany.join(f)
        with pytest.raises(tiffany.JoinTimeout):
            await tiffany.join(a, timeout=0.5)
        return await t, await tiffany.join(a), await a

    async def main() -> tuple[str, str, str]:
        return await asyncio.get_running_loop().create_task(in_asyncio())

    assert tiffany.run(main(), clock="virtual") == ("tiffany", "asyncio", "asyncio")


def test_current_task_and_all_tasks() -> None:
    async def child(seen: list[object]) -> None:
        seen.append(asyncio.current_task())
        await tiffany.sleep(0.1)
        seen.append(asyncio.current_task())

    async def main() -> None:
        me = asyncio.current_task()
        assert me is not None and isinstance(me, asyncio.Task)
        seen: list[object] = []
        t = asyncio.create_task(child(seen))
        await asyncio.sleep(0)
        assert {me, t} <= asyncio.all_tasks()
        await t
        assert seen == [t, t]
        assert t not in asyncio.all_tasks()
        assert asyncio.current_task() is me

    run_virtual(main)


def test_each_task_runs_in_its_own_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def child(value: str) -> str:
        var.set(value)
        await asyncio.sleep(0)
        await tiffany.sleep(0.01)
        return var.get()

    async def main() -> None:
        var.set("main")
        results = await asyncio.gather(child("a"), child("b"))
        assert list(results) == ["a", "b"]
        assert var.get() == "main"
        ctx = contextvars.copy_context()
        ctx.run(var.set, "given")
        seen = asyncio.get_running_loop().create_task(asyncio.sleep(0, result=None), context=ctx)
        await seen
        assert seen.get_context() is ctx  # type: ignore[attr-defined]

    run_virtual(main)


def test_cancel_is_an_edge_counted_by_cancelling_and_uncancel() -> None:
    async def survivor(log: list[str]) -> str:
        for _ in range(2):
            try:
                await tiffany.sleep(10)
            except asyncio.CancelledError as e:
                log.append(f"{type(e).__name__}:{e.args[0]}")
        # The edge was consumed: this task may block again.
        await tiffany.sleep(0.5)
        return "survived"

    async def main() -> None:
        log: list[str] = []
        t = asyncio.create_task(survivor(log))
        await asyncio.sleep(0)
        assert t.cancel("one") and t.cancel("two")
        assert t.cancelling() == 2 and t._must_cancel  # type: ignore[attr-defined]
        await asyncio.sleep(1)
        # Two cancel() calls before the task ran: one CancelledError (asyncio's rule).
        assert log == ["CancelledError:two"]
        assert t.uncancel() == 1 and t.cancelling() == 1
        t.cancel("three")
        assert await t == "survived"
        assert log == ["CancelledError:two", "CancelledError:three"]
        assert not t.cancel()

    run_virtual(main)


def test_cancel_while_awaiting_a_future_cancels_the_future() -> None:
    async def waiter(fut: asyncio.Future[int]) -> int:
        return await fut

    async def main() -> None:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        t = asyncio.create_task(waiter(fut))
        await asyncio.sleep(0)
        assert t._fut_waiter is fut  # type: ignore[attr-defined]
        t.cancel("stop")
        with pytest.raises(asyncio.CancelledError):
            await t
        assert fut.cancelled() and t.cancelled()

    run_virtual(main)


def test_a_task_cancelled_before_it_ran_ends_cancelled_with_callbacks() -> None:
    ran: list[str] = []

    async def never() -> None:
        ran.append("ran")

    async def main() -> None:
        t = asyncio.create_task(never())
        done: list[bool] = []
        t.add_done_callback(lambda task: done.append(task.cancelled()))
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await asyncio.sleep(0)
        assert done == [True]

    run_virtual(main)
    assert ran == []


def test_asyncio_timeout_and_taskgroup_inside() -> None:
    async def slow() -> None:
        await tiffany.sleep(10)

    async def fails() -> None:
        await asyncio.sleep(1)
        raise ValueError("child failed")

    async def main() -> float:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2):
                await slow()
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        sibling_cancelled: list[bool] = []

        async def sibling() -> None:
            try:
                await asyncio.sleep(100)
            except asyncio.CancelledError:
                sibling_cancelled.append(True)
                raise

        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(sibling())
                tg.create_task(fails())
        assert [type(e) for e in info.value.exceptions] == [ValueError]
        assert sibling_cancelled == [True]
        return loop.time()

    assert run_virtual(main) == 3.0


def test_a_cancel_scope_with_a_shielded_cleanup_in_an_asyncio_task() -> None:
    log: list[str] = []

    async def worker() -> None:
        with tiffany.move_on_after(1) as scope:
            try:
                await asyncio.sleep(10)
            finally:
                # Level-triggered inside the cancelled scope, but the shield
                # lets the cleanup await.
                with tiffany.CancelScope(shield=True):
                    await tiffany.sleep(0.5)
                    await asyncio.sleep(0.5)
                log.append(f"cleaned at {tiffany.now()}")
        log.append(f"caught={scope.cancelled_caught}")
        await asyncio.sleep(1)
        log.append(f"went on to {tiffany.now()}")

    async def main() -> None:
        await asyncio.create_task(worker())

    run_virtual(main)
    assert log == ["cleaned at 2.0", "caught=True", "went on to 3.0"]


def test_cancelling_a_parent_cancels_its_groups_children() -> None:
    log: list[str] = []

    async def child(name: str) -> None:
        try:
            await tiffany.sleep(100)
        except asyncio.CancelledError:
            log.append(f"{name} cancelled at {tiffany.now()}")
            raise

    async def parent_tiffany_group() -> None:
        async with tiffany.TaskGroup() as tg:
            tg.spawn(child("tiffany-a"))
            tg.spawn(child("tiffany-b"))

    async def parent_asyncio_group() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(child("asyncio-a"))

    async def main() -> None:
        p1 = asyncio.create_task(parent_tiffany_group())
        p2 = asyncio.create_task(parent_asyncio_group())
        await asyncio.sleep(1)
        p1.cancel()
        p2.cancel()
        for p in (p1, p2):
            with pytest.raises(asyncio.CancelledError):
                await p
            assert p.cancelled()

    run_virtual(main)
    assert sorted(log) == [
        "asyncio-a cancelled at 1.0",
        "tiffany-a cancelled at 1.0",
        "tiffany-b cancelled at 1.0",
    ]


def test_the_event_log_names_asyncio_tasks_and_is_identical_run_to_run() -> None:
    def once() -> list[str]:
        loop = tiffany.new_event_loop(clock="virtual")
        lines: list[str] = []
        loop.scheduler.on_event(lambda e: lines.append(e.to_json()))

        async def worker(i: int) -> None:
            for step in range(3):
                await asyncio.sleep((i * 13 + step * 5) % 17 / 1000)
                await tiffany.sleep(0.001)

        async def main() -> None:
            await asyncio.gather(
                *(asyncio.create_task(worker(i), name=f"worker-{i}") for i in range(6))
            )

        try:
            loop.run_until_complete(main())
        finally:
            loop.close()
        return lines

    first = once()
    spawned = [json.loads(line) for line in first if '"spawned"' in line]
    names = {e.get("name") for e in spawned}
    assert {f"worker-{i}" for i in range(6)} <= names
    assert "Task-1" in names  # main, named by asyncio's default
    assert len(first) > 50
    assert first == once()


def test_a_task_factory_still_wins() -> None:
    made: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(coro.__name__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def child() -> int:
        return 1

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(factory)
        t = asyncio.create_task(child(), name="made")
        assert type(t) is asyncio.Task and t.get_name() == "made"
        assert await t == 1
        asyncio.get_running_loop().set_task_factory(None)
        assert type(asyncio.create_task(child())) is not asyncio.Task

    run_virtual(main)
    assert made == ["child"]


def test_create_task_refuses_what_is_not_a_coroutine() -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="a coroutine was expected"):
            asyncio.get_running_loop().create_task(42)  # type: ignore[arg-type]

    run_virtual(main)


def test_tasks_survive_a_stop_and_go_on_in_the_next_run() -> None:
    loop = tiffany.new_event_loop(clock="virtual")
    try:
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                await asyncio.sleep(1)
                ticks.append(loop.time())

        t = loop.create_task(ticker())
        loop.run_until_complete(asyncio.sleep(2.5))
        assert ticks == [1.0, 2.0] and not t.done()
        loop.run_until_complete(asyncio.sleep(1))
        assert ticks == [1.0, 2.0, 3.0]
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            loop.run_until_complete(t)
    finally:
        loop.close()


def _interleaving() -> Callable[[], Coroutine[Any, Any, list[str]]]:
    """A program whose log is the order in which asyncio steps tasks and runs
    callbacks: first steps, ``sleep(0)``, futures and tasks awaited (with
    other done callbacks on them), gather, and a cancel thrown at a step."""

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        log: list[str] = []
        fut: asyncio.Future[None] = loop.create_future()

        async def waiter(name: str) -> str:
            log.append(f"{name} start")
            await fut
            log.append(f"{name} woke")
            await asyncio.sleep(0)
            log.append(f"{name} after sleep(0)")
            return name

        async def yielder(name: str, n: int) -> None:
            for i in range(n):
                log.append(f"{name} {i}")
                await asyncio.sleep(0)

        loop.call_soon(log.append, "soon 1")
        a = asyncio.create_task(waiter("a"))
        loop.call_soon(log.append, "soon 2")
        b = asyncio.create_task(waiter("b"))
        y = asyncio.create_task(yielder("y", 4))
        fut.add_done_callback(lambda _: log.append("fut callback"))
        await asyncio.sleep(0)
        log.append("main set_result")
        fut.set_result(None)
        loop.call_soon(log.append, "soon 3")

        async def joiner() -> None:
            log.append(f"joined {await a}")

        j = asyncio.create_task(joiner())
        a.add_done_callback(lambda _: log.append("a's callback"))
        gathered = await asyncio.gather(b, yielder("g", 2), j)
        log.append(f"gathered {gathered[0]}")
        await y

        async def victim() -> None:
            try:
                log.append("victim runs")
                await asyncio.sleep(0)
                log.append("victim not cancelled")
            except asyncio.CancelledError as e:
                log.append(f"victim cancelled: {e.args[0]}")
                raise

        v = asyncio.create_task(victim())
        loop.call_soon(log.append, "soon 4")
        await asyncio.sleep(0)
        v.cancel("stop")
        loop.call_soon(log.append, "soon 5")
        await asyncio.gather(v, return_exceptions=True)
        return log

    return main


def test_tasks_step_in_asyncio_order() -> None:
    """Each wake of a task is a step at the position asyncio's one FIFO gives
    it (ADR 11): the log is the stdlib loop's, entry for entry."""
    expected = asyncio.run(_interleaving()())
    assert run_virtual(_interleaving()) == expected
    with asyncio.Runner(loop_factory=tiffany.new_event_loop) as runner:
        assert runner.run(_interleaving()()) == expected


def test_system_exit_in_a_task_leaves_run_until_complete_and_the_loop_goes_on() -> None:
    async def exits() -> None:
        await asyncio.sleep(0)
        raise SystemExit(3)

    async def fine() -> str:
        await asyncio.sleep(0)
        return "fine"

    loop = tiffany.new_event_loop(clock="virtual")
    try:
        task = loop.create_task(exits())
        with pytest.raises(SystemExit):
            loop.run_until_complete(task)
        assert task.done() and isinstance(task.exception(), SystemExit)
        # As in asyncio, the loop stays usable.
        assert loop.run_until_complete(fine()) == "fine"
    finally:
        loop.close()


def test_a_tiffany_task_group_of_asyncio_code_fails_as_one() -> None:
    # Children that await asyncio's awaitables, in nested tiffany.TaskGroups
    # inside an asyncio task: the failing child cancels its siblings in both
    # groups, and the failure comes out as an ExceptionGroup.
    cancelled: list[str] = []

    async def sibling(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def failing() -> None:
        await asyncio.sleep(1)
        raise ValueError("no luck")

    async def main() -> tuple[list[str], float]:
        errors: list[str] = []
        try:
            async with tiffany.TaskGroup() as outer:
                outer.spawn(sibling("outer"))
                async with tiffany.TaskGroup() as inner:
                    inner.spawn(sibling("inner"))
                    inner.spawn(failing())
        except* ValueError as group:
            # The inner group's ExceptionGroup, inside the outer one's.
            leaves = group
            while isinstance(leaves.exceptions[0], BaseExceptionGroup):
                leaves = leaves.exceptions[0]
            errors = [repr(e) for e in leaves.exceptions]
        return errors, asyncio.get_running_loop().time()

    errors, ended = run_virtual(main)
    assert errors == ["ValueError('no luck')"]
    assert sorted(cancelled) == ["inner", "outer"]
    assert ended == 1.0  # the siblings did not sleep their hour

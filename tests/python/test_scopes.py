"""Cancel scopes: where a cancellation starts and stops, shields, deadlines."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import tiffany


def test_move_on_after_returns_normally_and_the_task_goes_on() -> None:
    seen: list[object] = []

    async def main() -> float:
        with tiffany.move_on_after(5) as scope:
            await tiffany.sleep(60)
            seen.append("not reached")
        seen.append((scope.cancel_called, scope.cancelled_caught, tiffany.now()))
        # The cancelled scope is left: the task may await again.
        await tiffany.sleep(1)
        with tiffany.move_on_after(5) as quick:
            await tiffany.sleep(1)
        seen.append((quick.cancel_called, quick.cancelled_caught))
        return tiffany.now()

    assert tiffany.run(main(), clock="virtual") == 7.0
    assert seen == [(True, True, 5.0), (False, False)]


def test_fail_after_raises_timeout_error_only_when_the_deadline_passes() -> None:
    async def main() -> list[object]:
        out: list[object] = []
        with pytest.raises(TimeoutError):
            with tiffany.fail_after(2):
                await tiffany.sleep(10)
        out.append(tiffany.now())
        with tiffany.fail_after(2) as s:
            await tiffany.sleep(1)
        out.append(s.cancelled_caught)
        with pytest.raises(TimeoutError):
            with tiffany.fail_at(tiffany.now() + 0.5):
                await tiffany.sleep(10)
        out.append(tiffany.now())
        return out

    assert tiffany.run(main(), clock="virtual") == [2.0, False, 3.5]


def test_a_cancelled_scope_is_level_triggered_until_left() -> None:
    async def main() -> list[str]:
        seen: list[str] = []
        with tiffany.CancelScope() as scope:
            scope.cancel()
            for _ in range(2):
                try:
                    await tiffany.sleep(10)
                except tiffany.Cancelled:
                    seen.append("cancelled")
            await tiffany.yield_now()
            seen.append("not reached")
        seen.append(f"caught={scope.cancelled_caught} at {tiffany.now()}")
        await tiffany.sleep(1)
        seen.append(f"slept at {tiffany.now()}")
        return seen

    assert tiffany.run(main(), clock="virtual") == [
        "cancelled",
        "cancelled",
        "caught=True at 0.0",
        "slept at 1.0",
    ]


def test_nested_scopes_the_outermost_cancelled_scope_catches() -> None:
    async def main() -> list[object]:
        out: list[object] = []
        with tiffany.CancelScope() as outer:
            with tiffany.CancelScope() as inner:
                inner.cancel()
                outer.cancel()
                await tiffany.sleep(1)
            out.append("not reached: the outer scope is cancelled too")
        out.append((inner.cancelled_caught, outer.cancelled_caught))
        with tiffany.move_on_after(10) as outer2:
            with tiffany.move_on_after(1) as inner2:
                await tiffany.sleep(5)
            out.append(("inner2 caught", inner2.cancelled_caught, tiffany.now()))
        out.append(outer2.cancelled_caught)
        return out

    assert tiffany.run(main(), clock="virtual") == [
        (False, True),
        ("inner2 caught", True, 1.0),
        False,
    ]


def test_await_in_finally_inside_a_shielded_scope_after_cancel() -> None:
    log: list[str] = []
    scopes: list[tiffany.CancelScope] = []

    async def worker() -> None:
        with tiffany.CancelScope() as scope:
            scopes.append(scope)
            try:
                await tiffany.sleep(100)
            finally:
                with tiffany.CancelScope(shield=True):
                    await tiffany.sleep(3)
                    log.append(f"cleaned up at {tiffany.now()}")
                try:
                    await tiffany.sleep(1)
                except tiffany.Cancelled:
                    log.append("unshielded await cancelled again")
        # Leaving the cancelled scope, the task goes on.
        log.append(f"went on at {tiffany.now()}")

    async def main() -> None:
        t = tiffany.spawn(worker())
        await tiffany.sleep(1)
        scopes[0].cancel()
        await t
        assert t.state == "finished"
        log.append(f"joined at {tiffany.now()}")

    tiffany.run(main(), clock="virtual")
    assert log == [
        "cleaned up at 4.0",
        "unshielded await cancelled again",
        "went on at 4.0",
        "joined at 4.0",
    ]


def test_a_shield_keeps_its_own_deadline_and_can_be_lifted() -> None:
    async def main() -> list[object]:
        out: list[object] = []
        with tiffany.CancelScope() as outer:
            outer.cancel()
            with tiffany.CancelScope(shield=True, deadline=tiffany.now() + 2) as shielded:
                await tiffany.sleep(10)
            out.append("not reached: the outer scope's cancellation shows again")
        # The shield's deadline cut the sleep; the cancellation, visible from
        # the outer scope once the shield is left, is caught there.
        caught = (shielded.cancelled_caught, outer.cancelled_caught)
        out.append((shielded.cancel_called, caught, tiffany.now()))
        with tiffany.CancelScope() as outer2:
            with tiffany.CancelScope(shield=True) as s:
                outer2.cancel()
                await tiffany.sleep(1)  # hidden by the shield
                out.append(("shielded sleep", tiffany.now()))
                s.shield = False
                await tiffany.sleep(1)
                out.append("not reached")
        out.append((s.cancelled_caught, outer2.cancelled_caught))
        return out

    assert tiffany.run(main(), clock="virtual") == [
        (True, (False, True), 2.0),
        ("shielded sleep", 3.0),
        (False, True),
    ]


def test_deadlines_are_settable_and_current_effective_deadline() -> None:
    async def main() -> list[object]:
        out: list[object] = [tiffany.current_effective_deadline()]
        with tiffany.CancelScope(deadline=10) as scope:
            out.append(tiffany.current_effective_deadline())
            with tiffany.CancelScope(shield=True):
                out.append(tiffany.current_effective_deadline())
            scope.deadline = 20
            await tiffany.sleep(15)
            out.append(tiffany.now())
            scope.deadline = 16
            out.append(scope.deadline)
            await tiffany.sleep(100)
        out.append((scope.cancelled_caught, tiffany.now()))
        with tiffany.CancelScope() as gone:
            gone.cancel()
            out.append(tiffany.current_effective_deadline())
        return out

    assert tiffany.run(main(), clock="virtual") == [
        math.inf,
        10.0,
        math.inf,
        15.0,
        16,
        (True, 16.0),
        -math.inf,
    ]


def test_cancel_during_join_of_a_child() -> None:
    async def slow() -> str:
        await tiffany.sleep(30)
        return "slow done"

    async def main() -> list[object]:
        child = tiffany.spawn(slow())
        with tiffany.move_on_after(2) as scope:
            await tiffany.join(child)
        out: list[object] = [scope.cancelled_caught, tiffany.now(), child.state]
        # tiffany.join does not own the child: it was not cancelled with the
        # scope. Join it for real.
        out.append(await child)
        out.append(tiffany.now())
        return out

    assert tiffany.run(main(), clock="virtual") == [True, 2.0, "sleeping", "slow done", 30.0]


@pytest.mark.parametrize("door", ["spawn", "create_task"])
def test_a_scope_cancelled_around_await_of_a_task_cancels_the_task(door: str) -> None:
    async def slow() -> str:
        await tiffany.sleep(30)
        return "slow done"

    async def main() -> list[object]:
        coro = slow()
        child = tiffany.spawn(coro) if door == "spawn" else asyncio.create_task(coro)
        with tiffany.move_on_after(2) as scope:
            await child  # asyncio's await: the awaiting side owns the awaited task
        await asyncio.sleep(0)
        return [scope.cancelled_caught, tiffany.now(), child.cancelled()]

    assert tiffany.run(main(), clock="virtual") == [True, 2.0, True]


def test_a_scope_is_cancelled_from_another_task() -> None:
    scopes: list[tiffany.CancelScope] = []

    async def waiter() -> float:
        with tiffany.CancelScope() as scope:
            scopes.append(scope)
            await tiffany.sleep(100)
        assert scope.cancelled_caught
        return tiffany.now()

    async def main() -> float:
        w = tiffany.spawn(waiter())
        await tiffany.sleep(3)
        scopes[0].cancel()
        assert scopes[0].cancel_called
        return await w

    assert tiffany.run(main(), clock="virtual") == 3.0


def test_task_cancel_reaches_inside_scopes_and_the_task_ends_cancelled(
    cancelled_state: Callable[[Coroutine[Any, Any, Any], float], str],
) -> None:
    async def victim() -> None:
        with tiffany.move_on_after(100):
            await tiffany.sleep(50)
        await tiffany.sleep(1)

    assert cancelled_state(victim(), 1) == "cancelled"


def test_cancelled_is_asyncio_cancelled_error() -> None:
    async def victim() -> str:
        try:
            await tiffany.sleep(10)
        except asyncio.CancelledError as e:
            return type(e).__name__
        return "not cancelled"

    async def in_scope() -> str:
        with tiffany.CancelScope() as scope:
            scope.cancel()
            return await victim()
        raise AssertionError("the victim let the scope's Cancelled through")

    async def main() -> tuple[str, str]:
        t = tiffany.spawn(victim())
        await tiffany.yield_now()
        t.cancel()
        # A task's cancel() is asyncio's; a scope's is tiffany.Cancelled, a
        # CancelledError too: one except clause catches both.
        return await t, await in_scope()

    assert issubclass(tiffany.Cancelled, asyncio.CancelledError)
    assert tiffany.run(main(), clock="virtual") == ("CancelledError", "Cancelled")


def test_misuse_is_refused_clearly() -> None:
    with pytest.raises(RuntimeError, match="no tiffany scheduler"):
        with tiffany.CancelScope():
            pass
    with pytest.raises(ValueError, match="NaN"):
        tiffany.CancelScope(deadline=math.nan)

    async def main() -> None:
        scope = tiffany.CancelScope()
        with scope:
            pass
        with pytest.raises(RuntimeError, match="only be entered once"):
            with scope:
                pass
        with pytest.raises(ValueError, match="seconds >= 0"):
            tiffany.move_on_after(-1)
        # Cancelling a scope already left does nothing.
        scope.cancel()
        await tiffany.sleep(1)

    tiffany.run(main(), clock="virtual")


def test_a_scope_works_in_an_asyncio_task() -> None:
    async def in_asyncio() -> bool:
        with tiffany.move_on_after(1) as scope:
            await asyncio.sleep(5)
        return scope.cancelled_caught

    async def main() -> bool:
        return await asyncio.get_running_loop().create_task(in_asyncio())

    assert tiffany.run(main(), clock="virtual") is True


def test_the_pal_of_a_run_with_scopes_is_identical_run_to_run() -> None:
    def once() -> list[str]:
        sched = tiffany.Scheduler(clock="virtual")
        lines: list[str] = []
        sched.on_event(lambda e: lines.append(e.to_json()))

        async def worker(i: int) -> None:
            for step in range(3):
                with tiffany.move_on_after(0.003 + (i * 7 + step) % 11 / 1000):
                    await tiffany.sleep((i * 13 + step * 5) % 17 / 1000)
                    with tiffany.CancelScope(shield=True):
                        await tiffany.sleep(0.001)

        async def main() -> None:
            tasks = [tiffany.spawn(worker(i)) for i in range(8)]
            for t in tasks:
                await t

        sched.run(main())
        return lines

    first = once()
    assert len(first) > 50
    assert first == once()

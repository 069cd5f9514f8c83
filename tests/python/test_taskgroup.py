"""tiffany.TaskGroup: asyncio's TaskGroup semantics on kernel tasks."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import tiffany


async def sleeper(seconds: float, log: list[str], name: str) -> str:
    try:
        await tiffany.sleep(seconds)
    except asyncio.CancelledError:
        log.append(f"{name} cancelled at {tiffany.now()}")
        raise
    log.append(f"{name} done at {tiffany.now()}")
    return name


async def failer(seconds: float, message: str) -> None:
    await tiffany.sleep(seconds)
    raise ValueError(message)


def test_the_group_waits_for_every_child() -> None:
    async def main() -> list[object]:
        log: list[str] = []
        async with tiffany.TaskGroup() as tg:
            a = tg.spawn(sleeper(2, log, "a"))
            b = tg.create_task(sleeper(1, log, "b"))
        return [log, tiffany.now(), a.result(), b.result()]

    assert tiffany.run(main(), clock="virtual") == [
        ["b done at 1.0", "a done at 2.0"],
        2.0,
        "a",
        "b",
    ]


def test_a_failing_child_cancels_its_siblings_and_the_body() -> None:
    log: list[str] = []

    async def main() -> None:
        async with tiffany.TaskGroup() as tg:
            tg.spawn(sleeper(10, log, "sibling"))
            tg.spawn(failer(1, "boom"))
            try:
                await tiffany.sleep(100)
            except asyncio.CancelledError:
                log.append(f"body cancelled at {tiffany.now()}")
                raise

    with pytest.raises(ExceptionGroup) as info:
        tiffany.run(main(), clock="virtual")
    assert [str(e) for e in info.value.exceptions] == ["boom"]
    assert all(isinstance(e, ValueError) for e in info.value.exceptions)
    assert sorted(log) == ["body cancelled at 1.0", "sibling cancelled at 1.0"]


def test_every_failure_is_collected_the_body_error_too() -> None:
    async def bad_cleanup() -> None:
        try:
            await tiffany.sleep(10)
        finally:
            raise RuntimeError("cleanup failed")

    async def main() -> None:
        async with tiffany.TaskGroup() as tg:
            tg.spawn(bad_cleanup())
            tg.spawn(failer(1, "one"))
            await tiffany.sleep(5)

    with pytest.raises(ExceptionGroup) as info:
        tiffany.run(main(), clock="virtual")
    # "one" failed first and cancelled its sibling, whose clean-up failed too.
    assert [repr(e) for e in info.value.exceptions] == [
        "ValueError('one')",
        "RuntimeError('cleanup failed')",
    ]

    async def body_fails() -> None:
        async with tiffany.TaskGroup() as tg:
            tg.spawn(failer(1, "child"))
            await tiffany.sleep(0.5)
            raise KeyError("body")

    with pytest.raises(ExceptionGroup) as info2:
        tiffany.run(body_fails(), clock="virtual")
    # The body failed first: the child was cancelled before it could fail.
    assert [repr(e) for e in info2.value.exceptions] == ["KeyError('body')"]


def test_a_base_exception_is_raised_as_it_is() -> None:
    async def interrupter() -> None:
        await tiffany.sleep(1)
        raise SystemExit(3)

    async def main() -> None:
        async with tiffany.TaskGroup() as tg:
            tg.spawn(interrupter())

    with pytest.raises(SystemExit):
        tiffany.run(main(), clock="virtual")


def test_a_cancelled_child_is_not_an_error() -> None:
    async def main() -> str:
        log: list[str] = []
        async with tiffany.TaskGroup() as tg:
            t = tg.spawn(sleeper(10, log, "victim"))
            tg.spawn(sleeper(2, log, "other"))
            await tiffany.sleep(1)
            t.cancel()
        return f"{log} {t.state} {tiffany.now()}"

    assert tiffany.run(main(), clock="virtual") == (
        "['victim cancelled at 1.0', 'other done at 2.0'] cancelled 2.0"
    )


def test_cancelling_the_owner_cancels_the_groups_children(
    cancelled_state: Callable[[Coroutine[Any, Any, Any], float], str],
) -> None:
    log: list[str] = []

    async def owner() -> None:
        async with tiffany.TaskGroup() as tg:
            tg.spawn(sleeper(10, log, "c1"))
            tg.spawn(sleeper(20, log, "c2"))
        log.append("not reached")

    assert cancelled_state(owner(), 3) == "cancelled"
    assert sorted(log) == ["c1 cancelled at 3.0", "c2 cancelled at 3.0"]


def test_a_group_cancelled_from_outside_by_a_scope_deadline() -> None:
    async def main() -> list[object]:
        log: list[str] = []
        with tiffany.move_on_after(2) as scope:
            async with tiffany.TaskGroup() as tg:
                tg.spawn(sleeper(10, log, "c1"))
                await tiffany.sleep(50)
        return [sorted(log), scope.cancelled_caught, tiffany.now()]

    assert tiffany.run(main(), clock="virtual") == [["c1 cancelled at 2.0"], True, 2.0]


def test_children_cleanup_may_await_while_the_group_waits() -> None:
    async def slow_cleanup(log: list[str]) -> None:
        try:
            await tiffany.sleep(100)
        finally:
            with tiffany.CancelScope(shield=True):
                await tiffany.sleep(5)
            log.append(f"cleaned at {tiffany.now()}")

    async def main() -> list[str]:
        log: list[str] = []
        with pytest.raises(ExceptionGroup):
            async with tiffany.TaskGroup() as tg:
                tg.spawn(slow_cleanup(log))
                tg.spawn(failer(1, "boom"))
        log.append(f"group left at {tiffany.now()}")
        return log

    assert tiffany.run(main(), clock="virtual") == ["cleaned at 6.0", "group left at 6.0"]


def test_nested_groups() -> None:
    async def inner(log: list[str]) -> None:
        async with tiffany.TaskGroup() as tg:
            tg.spawn(sleeper(10, log, "grandchild"))
            tg.spawn(failer(2, "deep"))

    async def main() -> list[str]:
        log: list[str] = []
        with pytest.raises(ExceptionGroup) as info:
            async with tiffany.TaskGroup() as tg:
                tg.spawn(inner(log))
                tg.spawn(sleeper(10, log, "child"))
        outer = info.value.exceptions
        assert len(outer) == 1 and isinstance(outer[0], ExceptionGroup)
        assert [str(e) for e in outer[0].exceptions] == ["deep"]
        return sorted(log)

    assert tiffany.run(main(), clock="virtual") == [
        "child cancelled at 2.0",
        "grandchild cancelled at 2.0",
    ]


def test_priority_deps_and_name_in_spawn() -> None:
    order: list[str] = []

    async def mark(name: str) -> str:
        order.append(name)
        return name

    async def main() -> list[object]:
        async with tiffany.TaskGroup() as tg:
            low = tg.spawn(mark("low"), priority=200, name="low")
            high = tg.spawn(mark("high"), priority=1)
            after = tg.create_task(mark("after-low"), deps=[low], priority=0)
            assert low.name == "low" and low.priority == 200
            assert high.priority == 1
        return [order, after.result()]

    # Priority 1 runs before 200; the dependent waits for `low` despite its
    # priority 0.
    assert tiffany.run(main(), clock="virtual") == [["high", "low", "after-low"], "after-low"]


def test_spawn_on_a_group_not_open_is_refused_and_closes_the_coroutine() -> None:
    async def main() -> None:
        tg = tiffany.TaskGroup()
        coro = tiffany.sleep(1)
        with pytest.raises(RuntimeError, match="has not been entered"):
            tg.spawn(_wrap(coro))
        async with tg:
            pass
        with pytest.raises(RuntimeError, match="has ended"):
            tg.spawn(_wrap(tiffany.sleep(1)))

    tiffany.run(main(), clock="virtual")


async def _wrap(aw: object) -> None:
    await aw  # type: ignore[misc]


def test_children_emit_events_like_any_task() -> None:
    sched = tiffany.Scheduler(clock="virtual")
    names: list[str] = []
    sched.on_event(lambda e: names.append(e.kind))

    async def main() -> None:
        async with tiffany.TaskGroup() as tg:
            tg.spawn(_wrap(tiffany.sleep(1)), name="kid")

    sched.run(main())
    assert names.count("spawned") == 2
    assert "sleep" in names


def test_an_abandoned_owner_unwinds_its_scopes_and_group_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    log: list[str] = []

    async def stubborn() -> None:
        async with tiffany.TaskGroup() as tg:
            tg.spawn(sleeper(100, log, "child"))
            with tiffany.CancelScope():
                while True:  # swallows every cancellation: abandoned at shutdown
                    try:
                        await tiffany.sleep(10)
                    except tiffany.Cancelled:
                        log.append("swallowed")

    async def main() -> None:
        tiffany.spawn(stubborn())
        await tiffany.sleep(1)

    tiffany.run(main(), clock="virtual")
    assert "swallowed" in log and "child cancelled at 1.0" in log
    assert unraisable == []

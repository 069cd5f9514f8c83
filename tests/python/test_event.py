"""tiffany.Event: a flag tasks wait for; set() wakes them all."""

from __future__ import annotations

import asyncio

import pytest

import tiffany


def test_set_wakes_every_waiter_in_order() -> None:
    ev = tiffany.Event()
    woke: list[tuple[int, float]] = []

    async def waiter(i: int) -> None:
        assert await ev.wait() is True
        woke.append((i, tiffany.now()))

    async def main() -> None:
        waiters = [tiffany.spawn(waiter(i)) for i in range(5)]
        await tiffany.sleep(2.5)
        assert not ev.is_set()
        ev.set()
        assert ev.is_set()
        for w in waiters:
            await w

    tiffany.run(main(), clock="virtual")
    assert woke == [(i, 2.5) for i in range(5)]


def test_wait_on_a_set_event_returns_at_once_and_clear_blocks_again() -> None:
    ev = tiffany.Event()
    ev.set()  # before the event belongs to a scheduler: kept

    async def main() -> list[float]:
        times = []
        await ev.wait()
        times.append(tiffany.now())
        ev.clear()

        async def setter() -> None:
            await tiffany.sleep(1.0)
            ev.set()

        tiffany.spawn(setter())
        await ev.wait()
        times.append(tiffany.now())
        return times

    assert tiffany.run(main(), clock="virtual") == [0.0, 1.0]


def test_cancelled_waiter_leaves_the_others_waiting() -> None:
    ev = tiffany.Event()

    async def waiter() -> str:
        await ev.wait()
        return "woke"

    async def main() -> tuple[str, str]:
        a = tiffany.spawn(waiter())
        b = tiffany.spawn(waiter())
        await tiffany.sleep(0.1)
        a.cancel()
        try:
            await a
            first = "finished"
        except asyncio.CancelledError:
            first = "cancelled"
        ev.set()
        return first, await b

    assert tiffany.run(main(), clock="virtual") == ("cancelled", "woke")


def test_an_event_belongs_to_one_scheduler() -> None:
    ev = tiffany.Event()

    async def wait_briefly() -> None:
        ev.set()
        await ev.wait()

    tiffany.run(wait_briefly())
    with pytest.raises(RuntimeError, match="another scheduler"):
        tiffany.run(wait_briefly())


def test_wait_outside_a_running_scheduler_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="no tiffany scheduler"):
        tiffany.Event().wait()


def test_many_idle_waiters_are_released_by_one_set() -> None:
    ev = tiffany.Event()
    released = 0

    async def idle() -> None:
        nonlocal released
        await ev.wait()
        released += 1

    async def main() -> None:
        idlers = [tiffany.spawn(idle()) for _ in range(10_000)]
        await tiffany.sleep(0)
        ev.set()
        for t in idlers:
            await t

    tiffany.run(main(), clock="virtual")
    assert released == 10_000
    assert "set" in repr(ev)

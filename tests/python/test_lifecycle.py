"""A task's coroutine and the garbage collector.

The kernel holds each task's coroutine until the task ends. While it does, the
coroutine is hidden from the cyclic garbage collector (it is alive anyway, and
scanning a million of them made spawning slow); once the task has ended it is
tracked again, so cycles through it are collected as usual.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Generator
from typing import Any

import tiffany


class Node:
    """A weak-referenceable object that can point at anything."""

    other: Any = None


def test_a_held_coroutine_is_untracked_and_tracked_again_after_its_end() -> None:
    seen: list[bool] = []

    async def child() -> int:
        await tiffany.sleep(1)
        return 1

    coro = child()
    assert gc.is_tracked(coro)

    async def main() -> None:
        t = tiffany.spawn(coro)
        await tiffany.sleep(0.5)
        seen.append(gc.is_tracked(coro))
        assert await t == 1

    tiffany.run(main(), clock="virtual")
    assert seen == [False]
    assert gc.is_tracked(coro)


def test_objects_only_a_running_task_refers_to_survive_a_collection() -> None:
    async def keeper() -> bool:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle that only this frame refers to
        ref = weakref.ref(b)
        del b
        await tiffany.sleep(0)
        gc.collect()
        kept = ref()
        return kept is not None and kept is a.other and kept.other is a

    assert tiffany.run(keeper(), clock="virtual") is True


def test_a_cycle_through_a_finished_tasks_coroutine_is_collected() -> None:
    async def selfish(node: Node) -> None:
        await tiffany.sleep(0)

    node = Node()
    coro = selfish(node)
    node.other = coro  # coroutine -> frame -> node -> coroutine
    ref = weakref.ref(node)
    sched = tiffany.Scheduler(clock="virtual")
    sched.spawn(coro)
    del coro, node
    sched.run()
    gc.collect()
    assert ref() is None


def test_a_cycle_through_a_cancelled_unstarted_task_is_collected() -> None:
    async def never(node: Node) -> None:
        await tiffany.sleep(0)

    node = Node()
    coro = never(node)
    node.other = coro
    ref = weakref.ref(node)
    sched = tiffany.Scheduler(clock="virtual")
    task = sched.spawn(coro)
    assert task.cancel()
    del coro, node, task
    sched.run()
    gc.collect()
    assert ref() is None


def test_generator_tasks_are_tracked_again_too() -> None:
    def gen() -> Generator[Any, Any, int]:
        yield tiffany.sleep(0)
        return 3

    g = gen()
    sched = tiffany.Scheduler(clock="virtual")
    t = sched.spawn(g)
    assert not gc.is_tracked(g)
    sched.run()
    assert t.result() == 3
    assert gc.is_tracked(g)

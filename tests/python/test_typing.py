"""Typing: what the stubs promise, checked by mypy --strict (`just lint`).

The asserts run too: `assert_type` is a no-op at run time, so the test also
checks that the annotations used here are valid at run time (``Task[int]``).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, assert_type

import tiffany
import tiffany.lowlevel


async def _child() -> int:
    await tiffany.sleep(1)
    return 7


def test_tasks_are_generic_in_their_result(sched: tiffany.Scheduler) -> None:
    async def main() -> str:
        task = tiffany.spawn(_child())
        # The exact rule (ADR 13): a Task while a Tiffany loop runs, else
        # the kernel's handle — as here, a Scheduler.run program.
        assert_type(task, tiffany.Task[int] | tiffany.TaskHandle[int])
        assert isinstance(task, tiffany.TaskHandle)
        value = await task
        assert_type(value, int)
        joined = await tiffany.join(tiffany.spawn(_child()), timeout=5)
        assert_type(joined, int)
        assert_type(task.result(), int)
        return f"{value + joined}"

    result = sched.run(main())
    assert_type(result, str)
    assert result == "14"
    sched = tiffany.Scheduler(clock="virtual")  # the run of main ended the first one
    spawned = sched.spawn(_child())
    assert_type(spawned, tiffany.TaskHandle[int])
    assert_type(sched.run(), None)
    assert spawned.result() == 7
    alias: Any = tiffany.Task[int]
    assert alias.__origin__ is tiffany.Task


def test_spawn_under_a_loop_narrows_to_the_task() -> None:
    def gen() -> Generator[Any, Any, int]:
        yield tiffany.yield_now()
        return 3

    async def main() -> tuple[int, int]:
        task = tiffany.spawn(_child())
        assert isinstance(task, tiffany.Task)  # always so under tiffany.run
        assert_type(task, tiffany.Task[int])
        assert_type(task.cancelling(), int)
        handle = tiffany.spawn(gen())  # a generator task: always the handle
        assert_type(handle, tiffany.TaskHandle[int])
        assert isinstance(handle, tiffany.TaskHandle)
        return await task, await handle

    assert tiffany.run(main(), clock="virtual") == (7, 3)


def test_run_is_typed_by_its_main() -> None:
    assert_type(tiffany.run(_child(), clock="virtual"), int)


def test_a_completion_awaits_as_none(sched: tiffany.Scheduler) -> None:
    async def main() -> None:
        done = tiffany.lowlevel.Completion()
        done.notify()
        assert_type(await done, None)
        done.close()

    sched.run(main())

"""Native (Rust) tasks beside Python tasks: one scheduler, one id space."""

from __future__ import annotations

import asyncio

import pytest

import tiffany
import tiffany.lowlevel
import tiffany.testing


def test_native_task_joins_python_task() -> None:
    async def python_child() -> dict[str, int]:
        await tiffany.sleep(1.0)
        return {"answer": 42}

    async def failing() -> None:
        raise ValueError("python failed")

    sched = tiffany.Scheduler(clock="virtual")
    child = sched.spawn(python_child())
    native = tiffany.testing.spawn_native_join(sched, child, name="native-joiner")
    bad = sched.spawn(failing())
    native_bad = tiffany.testing.spawn_native_join(sched, bad)
    sched.run()
    assert native.result() == {"answer": 42}
    assert native.result() is child.result()  # the same object crosses the kernel
    with pytest.raises(tiffany.TaskFailed, match="python failed"):
        native_bad.result()
    with pytest.raises(ValueError):
        bad.result()


def test_python_task_joins_a_native_task_and_back() -> None:
    async def python_side(native: tiffany.TaskHandle[str]) -> str:
        value = await native
        return f"native said {value}"

    sched = tiffany.Scheduler(clock="virtual")
    native = tiffany.testing.spawn_native_sleep(sched, 2.5, "hello", name="rust")
    py = sched.spawn(python_side(native))
    sched.run()
    assert py.result() == "native said hello"
    assert native.state == "finished" and native.name == "rust"
    assert sched.now() == 2.5
    assert native.id < py.id  # one id space


def test_cancelling_a_native_task_from_python() -> None:
    async def main() -> str:
        native = tiffany.current_task()
        assert native is not None
        sleeper = tiffany.testing.spawn_native_sleep(sched, 100.0)
        await tiffany.sleep(1.0)
        sleeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeper
        return "cancelled it"

    sched = tiffany.Scheduler(clock="virtual")
    assert sched.run(main()) == "cancelled it"
    assert sched.now() == 1.0

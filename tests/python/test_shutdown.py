"""Shutdown: deadlines, daemon tasks, Ctrl-C, and the end of a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import tiffany
import tiffany.lowlevel
import tiffany.testing


def test_spawn_after_shutdown_refused() -> None:
    async def idle() -> None:
        await tiffany.sleep(1)

    sched = tiffany.Scheduler(clock="virtual")
    sched.spawn(idle())
    assert sched.shutdown(5.0) == "clean"
    coro = idle()
    with pytest.raises(tiffany.SpawnError) as info:
        sched.spawn(coro)
    assert info.value.reason == "shutting_down"


def test_shutdown_timeout_cancels_the_rest() -> None:
    async def forever() -> None:
        await tiffany.sleep(1e9)

    sched = tiffany.Scheduler(clock="virtual")
    t = sched.spawn(forever())
    assert sched.shutdown(2.0) == "timeout"
    assert t.state == "cancelled"
    assert sched.now() == 2.0


def test_shutdown_from_inside_a_task_excludes_the_caller() -> None:
    finished: list[str] = []

    async def worker(d: float) -> None:
        await tiffany.sleep(d)
        finished.append(f"worker {d}")

    async def main() -> str:
        tiffany.spawn(worker(1.0))
        tiffany.spawn(worker(50.0))
        result = await tiffany.shutdown(5.0)
        finished.append("main resumed")
        return str(result)

    sched = tiffany.Scheduler(clock="virtual")
    assert sched.run(main()) == "timeout"
    assert finished == ["worker 1.0", "main resumed"]
    assert sched.now() == 5.0


def test_scheduler_shutdown_called_from_inside_a_task() -> None:
    hooks: list[str] = []

    async def worker() -> None:
        await tiffany.sleep(1.0)
        hooks.append("worker done")

    async def forever() -> None:
        await tiffany.sleep(1e9)

    sched = tiffany.Scheduler(clock="virtual")

    async def main() -> str:
        tiffany.spawn(worker())
        tiffany.spawn(forever())
        result = sched.shutdown(2.0)  # synchronous: drains the others right here
        hooks.append(f"main saw {result}")
        return result

    assert sched.run(main()) == "timeout"
    assert hooks == ["worker done", "main saw timeout"]
    assert sched.now() == 2.0


def test_daemon_tasks_are_cancelled_when_the_rest_is_done() -> None:
    beats: list[float] = []
    cleaned: list[bool] = []

    async def heartbeat() -> None:
        try:
            while True:
                beats.append(tiffany.now())
                await tiffany.sleep(1.0)
        finally:
            cleaned.append(True)

    async def main() -> str:
        await tiffany.sleep(3.5)
        return "main done"

    sched = tiffany.Scheduler(clock="virtual")
    hb = sched.spawn(heartbeat(), daemon=True)
    assert sched.run(main()) == "main done"
    assert beats == [0.0, 1.0, 2.0, 3.0]
    assert hb.state == "cancelled" and cleaned == [True]


@pytest.mark.skipif(sys.platform != "linux", reason="signals to a child process")
def test_ctrl_c_shuts_down_gracefully_then_raises_keyboard_interrupt() -> None:
    program = textwrap.dedent(
        """
        import sys, tiffany

        async def worker():
            try:
                print("ready", flush=True)
                await tiffany.sleep(3600)
            except tiffany.Cancelled:
                print("worker saw Cancelled", flush=True)
                raise
            finally:
                print("worker finally", flush=True)

        try:
            tiffany.run(worker())
        except KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
            sys.exit(3)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert out.splitlines() == ["worker saw Cancelled", "worker finally", "KeyboardInterrupt"]


def test_system_exit_in_a_task_ends_the_run_after_cancelling_the_rest() -> None:
    cleaned: list[str] = []

    async def bystander() -> None:
        try:
            await tiffany.sleep(1e6)
        finally:
            cleaned.append("bystander")

    async def quitter() -> None:
        await tiffany.sleep(1.0)
        raise SystemExit(4)

    async def main() -> None:
        tiffany.spawn(bystander())
        tiffany.spawn(quitter())
        await tiffany.sleep(1e6)

    sched = tiffany.Scheduler(clock="virtual")
    with pytest.raises(SystemExit) as info:
        sched.run(main())
    assert info.value.code == 4
    assert cleaned == ["bystander"]
    assert sched.now() == 1.0


@pytest.mark.parametrize("clock", ["virtual", "real"])
def test_a_deadline_abandons_a_task_that_swallows_cancelled(clock: str) -> None:
    swallowed: list[float] = []
    cleaned: list[str] = []

    async def stubborn() -> None:
        try:
            while True:
                try:
                    await tiffany.sleep(10)
                except tiffany.Cancelled:
                    swallowed.append(tiffany.now())
        finally:
            cleaned.append("finally")

    async def main() -> tuple[str, tiffany.Task[None] | tiffany.TaskHandle[None]]:
        task = tiffany.spawn(stubborn(), name="stubborn")
        await tiffany.sleep(0)
        result = await tiffany.shutdown(0.2)
        return str(result), task

    sched = tiffany.Scheduler(clock="virtual" if clock == "virtual" else "real")
    result, task = sched.run(main())
    assert result == "timeout"
    assert cleaned == ["finally"]  # its coroutine was closed
    assert task.state == "cancelled"
    assert sched.metrics()["cancelled"] == 1
    # Cancelled once at the deadline, then abandoned: no spinning.
    assert 1 <= len(swallowed) <= 2
    if clock == "virtual":
        assert sched.now() == pytest.approx(0.2)


def test_when_main_raises_the_run_ends_at_once_and_the_rest_is_cancelled(
    sched: tiffany.Scheduler,
) -> None:
    cleaned: list[tuple[str, float]] = []

    async def forever(name: str) -> None:
        try:
            while True:
                await tiffany.sleep(1)
        finally:
            cleaned.append((name, tiffany.now()))

    async def main() -> None:
        tiffany.spawn(forever("a"))
        tiffany.spawn(forever("b"), daemon=True)
        await tiffany.sleep(2.5)
        raise LookupError("main failed")

    with pytest.raises(LookupError, match="main failed"):
        sched.run(main())
    assert sorted(cleaned) == [("a", 2.5), ("b", 2.5)]
    assert sched.now() == 2.5
    assert sched.metrics()["cancelled"] == 2


def test_when_main_returns_what_is_left_is_cancelled() -> None:
    cleaned: list[float] = []

    async def unjoined() -> None:
        try:
            await tiffany.sleep(100)
        finally:
            cleaned.append(tiffany.now())

    async def main() -> str:
        tiffany.spawn(unjoined())
        await tiffany.sleep(1)
        return "main done"

    assert tiffany.run(main(), clock="virtual") == "main done"
    assert cleaned == [1.0]


def test_a_joined_child_is_waited_for(sched: tiffany.Scheduler) -> None:
    async def child() -> int:
        await tiffany.sleep(5)
        return 5

    async def main() -> int:
        return await tiffany.spawn(child())

    assert sched.run(main()) == 5
    assert sched.now() == 5.0


def test_run_without_main_waits_for_every_non_daemon_task(sched: tiffany.Scheduler) -> None:
    async def worker(d: float) -> float:
        await tiffany.sleep(d)
        return d

    tasks = [sched.spawn(worker(d)) for d in (3.0, 1.0, 2.0)]
    assert sched.run() is None
    assert [t.result() for t in tasks] == [3.0, 1.0, 2.0]
    assert sched.now() == 3.0


def test_first_ctrl_c_cancels_every_task_and_lets_it_unwind(sched: tiffany.Scheduler) -> None:
    log: list[str] = []

    async def worker() -> None:
        try:
            await tiffany.sleep(3600)
        except tiffany.Cancelled:
            log.append("worker cancelled")
            raise
        finally:
            log.append("worker finally")

    async def main() -> None:
        tiffany.spawn(worker())
        await tiffany.sleep(1)
        try:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs at once, in this task
            await tiffany.sleep(3600)
        finally:
            log.append("main finally")

    with pytest.raises(KeyboardInterrupt):
        sched.run(main())
    assert sorted(log) == ["main finally", "worker cancelled", "worker finally"]
    assert sched.now() == 1.0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_second_ctrl_c_abandons_a_task_that_swallows_cancelled(sched: tiffany.Scheduler) -> None:
    swallowed: list[int] = []
    cleaned: list[str] = []

    async def stubborn() -> None:
        try:
            while True:
                try:
                    await tiffany.sleep(10)
                except tiffany.Cancelled:
                    swallowed.append(1)
                    if len(swallowed) == 3:
                        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C
        finally:
            cleaned.append("finally")

    async def main() -> None:
        tiffany.spawn(stubborn(), name="stubborn")
        await tiffany.sleep(1)
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C
        await tiffany.sleep(3600)

    with pytest.raises(KeyboardInterrupt):
        sched.run(main())
    assert cleaned == ["finally"]
    assert 3 <= len(swallowed) <= 4  # re-delivered once per turn, not spinning
    assert sched.metrics()["cancelled"] == 2

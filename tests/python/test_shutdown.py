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

"""Load: CPU budgets, back-pressure, capacity, daemons, native tasks."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import tiffany
import tiffany.lowlevel
import tiffany.testing


def test_busy_task_is_throttled_behind_its_peer() -> None:
    order: list[str] = []

    async def busy(name: str) -> None:
        for _ in range(120):
            order.append(name)
            await (
                tiffany.lowlevel.GetTid()
            )  # answered at once: no yield, only the budget interrupts

    # Virtual clock: each resume is charged 100 µs, the quantum is 5 ms, so a
    # busy task is throttled after 50 resumes.
    sched = tiffany.Scheduler(clock="virtual", quantum=0.005)
    events: list[str] = []
    sched.on_event(lambda e: events.append(e.kind))
    sched.spawn(busy("a"))
    sched.spawn(busy("b"))
    sched.run()
    runs = [order[0]]
    for name in order[1:]:
        if name != runs[-1]:
            runs.append(name)
    assert runs[:4] == ["a", "b", "a", "b"], runs
    assert events.count("throttled") >= 4
    assert sched.metrics()["throttles"] == events.count("throttled")


def test_backpressure_pauses_admission_and_resumes() -> None:
    pressure = [0.0]
    admitted: list[tuple[str, float]] = []

    async def producer(i: int) -> None:
        await tiffany.admit()
        admitted.append((f"p{i}", tiffany.now()))

    async def controller() -> None:
        pressure[0] = 0.95  # above the high watermark (0.8)
        await tiffany.sleep(1.0)  # the scheduler reads the pressure while idle
        for i in range(3):
            tiffany.spawn(producer(i))
        await tiffany.sleep(1.0)
        assert admitted == []  # paused: producers wait at the gate
        pressure[0] = 0.2  # below the low watermark (0.5)

    sched = tiffany.Scheduler(clock="virtual", backpressure=lambda: pressure[0])
    kinds: list[str] = []
    sched.on_event(lambda e: kinds.append(e.kind))
    sched.spawn_system(controller())
    sched.run()
    assert [name for name, _ in admitted] == ["p0", "p1", "p2"]
    assert all(t >= 2.0 for _, t in admitted)
    assert kinds.count("paused") == 1 and kinds.count("resumed") == 1
    assert sched.metrics()["backpressure_pauses"] == 1
    assert sched.pressure() == pytest.approx(0.2)


def test_system_tasks_pass_the_gate_while_paused() -> None:
    async def system_producer() -> str:
        await tiffany.sleep(0.1)
        await tiffany.admit()
        return "through"

    sched = tiffany.Scheduler(clock="virtual", backpressure=lambda: 1.0)
    t = sched.spawn_system(system_producer())
    sched.run()
    assert t.result() == "through"


def test_backpressure_callable_errors_are_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> float:
        raise ValueError("sensor offline")

    async def main() -> str:
        await tiffany.sleep(0.5)
        return "still running"

    sched = tiffany.Scheduler(clock="virtual", backpressure=broken)
    with caplog.at_level(logging.ERROR, logger="tiffany"):
        assert sched.run(main()) == "still running"
    assert sched.metrics()["callback_errors"] >= 1
    assert any(r.name == "tiffany" for r in caplog.records)


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


def test_python_task_joins_a_native_task_and_back() -> None:
    async def python_side(native: tiffany.Task) -> str:
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
        with pytest.raises(tiffany.TaskCancelled):
            await sleeper
        return "cancelled it"

    sched = tiffany.Scheduler(clock="virtual")
    assert sched.run(main()) == "cancelled it"
    assert sched.now() == 1.0


def test_joining_a_task_of_another_scheduler_is_refused() -> None:
    other = tiffany.Scheduler(clock="virtual")

    async def idle() -> None:
        await tiffany.sleep(1)

    foreign = other.spawn(idle())

    async def main() -> None:
        await foreign

    with pytest.raises(RuntimeError, match="another scheduler"):
        tiffany.run(main(), clock="virtual")
    other.run()


def test_unjoined_failure_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async def doomed() -> None:
        raise ZeroDivisionError("nobody listens")

    async def main() -> None:
        tiffany.spawn(doomed())  # fire and forget
        await tiffany.sleep(1)

    with caplog.at_level(logging.ERROR, logger="tiffany"):
        tiffany.run(main(), clock="virtual")
    hits = [r for r in caplog.records if r.exc_info and "nobody listens" in str(r.exc_info[1])]
    assert len(hits) == 1


def test_retrieved_failure_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def doomed() -> None:
        raise ZeroDivisionError("handled")

    async def main() -> None:
        t = tiffany.spawn(doomed())
        with pytest.raises(ZeroDivisionError):
            await t

    with caplog.at_level(logging.ERROR, logger="tiffany"):
        tiffany.run(main(), clock="virtual")
    assert not [r for r in caplog.records if r.exc_info]


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

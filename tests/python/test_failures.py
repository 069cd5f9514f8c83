"""Failures: isolated to their task, reported once, naming the task."""

from __future__ import annotations

import gc
import logging

import pytest

import tiffany
import tiffany.lowlevel
import tiffany.testing


def _failure_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tiffany" and r.exc_info]


def test_an_unjoined_failure_is_logged_with_the_tasks_name_and_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids: list[int] = []

    async def doomed() -> None:
        raise ZeroDivisionError("nobody listens")

    async def main() -> None:
        ids.append(tiffany.spawn(doomed(), name="fetcher").id)
        await tiffany.sleep(1)

    # Under tiffany.run the task is an asyncio task (ADR 13): asyncio's own
    # report, "Task exception was never retrieved", names it.
    with caplog.at_level(logging.ERROR):
        tiffany.run(main(), clock="virtual")
        gc.collect()
    (record,) = [r for r in caplog.records if r.name == "asyncio"]
    assert "never retrieved" in record.getMessage()
    assert "name='fetcher'" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ZeroDivisionError)
    assert ids[0] > 0


def test_an_unnamed_unjoined_failure_is_logged_with_its_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def doomed() -> None:
        raise KeyError("k")

    sched = tiffany.Scheduler(clock="virtual")
    task_id = sched.spawn(doomed()).id  # the Task object goes at once
    with caplog.at_level(logging.ERROR, logger="tiffany"):
        sched.run()
    (record,) = _failure_logs(caplog)
    assert f"task {task_id}," in record.getMessage()


def test_a_dropped_handle_to_a_failed_task_names_it(caplog: pytest.LogCaptureFixture) -> None:
    async def doomed() -> None:
        raise ValueError("dropped")

    sched = tiffany.Scheduler(clock="virtual")
    task = sched.spawn(doomed(), name="worker-7")
    task_id = task.id
    sched.run()
    with caplog.at_level(logging.ERROR, logger="tiffany"):
        del task
    (record,) = _failure_logs(caplog)
    assert f'task {task_id} "worker-7"' in record.getMessage()
    assert "never retrieved" in record.getMessage()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_are_raised_not_logged(
    caplog: pytest.LogCaptureFixture, exc: type[BaseException]
) -> None:
    async def quitter() -> None:
        await tiffany.sleep(1)
        raise exc()

    async def main() -> None:
        tiffany.spawn(quitter(), name="quitter")
        await tiffany.sleep(10)

    with caplog.at_level(logging.ERROR, logger="tiffany"), pytest.raises(exc):
        tiffany.run(main(), clock="virtual")
    assert _failure_logs(caplog) == []


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

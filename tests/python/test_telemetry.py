"""Telemetry from Python: events one by one, in batches, and the metrics."""

from __future__ import annotations

import asyncio
import json

import pytest

import tiffany
import tiffany.lowlevel
import tiffany.testing


def _program(sched: tiffany.Scheduler) -> None:
    async def worker(i: int) -> None:
        for _ in range(5):
            await tiffany.sleep(0)
        await tiffany.sleep(0.01 * (i + 1))

    async def main() -> None:
        workers = [tiffany.spawn(worker(i)) for i in range(6)]
        for w in workers:
            await w

    sched.run(main())


def test_on_events_delivers_every_event_in_order_in_batches() -> None:
    one_by_one = tiffany.Scheduler(clock="virtual")
    singles: list[str] = []
    one_by_one.on_event(lambda e: singles.append(e.to_json()))
    _program(one_by_one)

    batched = tiffany.Scheduler(clock="virtual")
    batches: list[tiffany.EventBatch] = []
    batched.on_events(batches.append, max_batch=8)
    _program(batched)

    assert [e.to_json() for b in batches for e in b] == singles
    assert all(1 <= len(b) <= 8 for b in batches)
    assert len(batches) < len(singles) / 2
    # Handed over before each wait: the virtual clock moves only while the
    # scheduler waits, so a batch never mixes two times.
    for b in batches:
        assert len({e.time for e in b}) == 1


def test_event_batch_is_a_sequence_with_pal_and_counts(sched: tiffany.Scheduler) -> None:
    batches: list[tiffany.EventBatch] = []
    sched.on_events(batches.append)
    _program(sched)
    (batch, *rest) = batches
    events = list(batch)
    assert len(batch) == len(events) > 2
    assert batch[0].to_json() == events[0].to_json()
    assert batch[-1].to_json() == events[-1].to_json()
    assert [e.to_json() for e in batch[1:3]] == [e.to_json() for e in events[1:3]]
    with pytest.raises(IndexError):
        batch[len(batch)]
    lines = batch.pal().splitlines()
    assert [json.loads(line) for line in lines] == [json.loads(e.to_json()) for e in events]
    counts = batch.counts()
    assert sum(counts.values()) == len(batch)
    assert counts["spawned"] == 7  # main and six workers
    assert "EventBatch of" in repr(batch)


def test_on_events_callback_errors_are_counted_and_the_run_goes_on(
    sched: tiffany.Scheduler,
) -> None:

    def bad(batch: tiffany.EventBatch) -> None:
        raise RuntimeError("subscriber bug")

    sched.on_events(bad, max_batch=4)
    _program(sched)
    assert sched.metrics()["callback_errors"] > 0
    assert sched.metrics()["done"] == 7


def test_on_events_refuses_an_empty_batch_size() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        tiffany.Scheduler().on_events(lambda b: None, max_batch=0)


def test_timing_metrics_off_leaves_the_histograms_empty() -> None:
    on = tiffany.Scheduler()
    off = tiffany.Scheduler(timing_metrics=False)
    _program(on)
    _program(off)
    assert on.metrics()["run_latency"]["count"] > 0
    assert off.metrics()["run_latency"]["count"] == 0
    assert off.metrics()["wait_time"]["count"] == 0
    assert off.metrics()["steps"] == on.metrics()["steps"]


def test_events_are_deterministic_under_virtual_clock() -> None:
    def program() -> list[str]:
        lines: list[str] = []

        async def child(i: int) -> int:
            await tiffany.sleep(0.01 * (i % 3))
            await tiffany.yield_now()
            return i

        async def main() -> int:
            tasks = [tiffany.spawn(child(i), priority=10 + i % 2) for i in range(6)]
            total = 0
            for t in tasks:
                total += await t
            return total

        sched = tiffany.Scheduler(clock="virtual")
        sched.on_event(lambda e: lines.append(e.to_json()))
        assert sched.run(main()) == 15
        return lines

    first, second = program(), program()
    assert first == second
    kinds = {json.loads(line)["event"] for line in first}
    assert {"spawned", "running", "sleep", "yield", "join", "done"} <= kinds


def test_event_callback_errors_are_counted_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    def bad_callback(event: tiffany.TaskEvent) -> None:
        raise RuntimeError("callback broke")

    async def main() -> str:
        await tiffany.sleep(0.1)
        return "fine"

    sched = tiffany.Scheduler(clock="virtual")
    sched.on_event(bad_callback)
    assert sched.run(main()) == "fine"
    assert sched.metrics()["callback_errors"] > 0
    assert any("callback broke" in r.getMessage() or r.exc_info for r in caplog.records)


def test_metrics_and_prometheus() -> None:
    async def main() -> None:
        for _ in range(3):
            await tiffany.sleep(0.01)

    sched = tiffany.Scheduler(clock="virtual")
    sched.run(main())
    m = sched.metrics()
    assert m["done"] == 1 and m["spawned"] == 1
    text = sched.prometheus()
    assert '\ntiffany_tasks_total{outcome="done"} 1\n' in text
    assert "\ntiffany_task_run_latency_seconds_bucket{" in text
    assert "\ntiffany_scheduler_ready_queue_depth " in text


def test_an_events_detail_is_its_pal_line_without_the_header(sched: tiffany.Scheduler) -> None:
    events: list[tiffany.TaskEvent] = []
    sched.on_event(events.append)

    async def child() -> None:
        await tiffany.sleep(0.5)
        raise ValueError("boom")

    async def main() -> None:
        unnamed = tiffany.spawn(child())
        named = tiffany.spawn(child(), name="named", deps=[unnamed])
        for t in (unnamed, named):
            try:
                await t
            except (ValueError, asyncio.CancelledError):
                pass
        await tiffany.shutdown(1.0)

    sched.run(main())
    kinds = {e.kind for e in events}
    assert {"spawned", "sleep", "join", "failed", "shutdown_begin"} <= kinds
    for e in events:
        line = json.loads(e.to_json())
        assert (line.pop("ts"), line.pop("task_id"), line.pop("event")) == (
            e.time,
            e.task_id,
            e.kind,
        )
        assert e.detail == line, e.kind

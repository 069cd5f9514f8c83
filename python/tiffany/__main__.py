"""``python -m tiffany``: a short tour of the runtime on the virtual clock.

Several prioritized workers, a task that depends on them, a supervisor that
gives a slow task a deadline and cancels it, the events as they happen, and a
metrics summary at the end.
"""

from __future__ import annotations

import tiffany


async def worker(name: str, steps: int) -> str:
    for step in range(steps):
        print(f"  [{tiffany.now():6.2f}s] {name:<8} step {step + 1}/{steps}")
        await tiffany.sleep(0.25)
    return f"{name} done"


async def slow_download() -> None:
    try:
        await tiffany.sleep(3600)  # an hour: it will not get that long
    finally:
        print(f"  [{tiffany.now():6.2f}s] slow     cleaned up after cancellation")


async def main() -> list[str]:
    urgent = tiffany.spawn(worker("urgent", 2), priority=1, name="urgent")
    normal = tiffany.spawn(worker("normal", 3), name="normal")
    batch = tiffany.spawn(worker("batch", 2), priority=200, name="batch")
    report = tiffany.spawn(worker("report", 1), deps=[urgent, normal, batch], name="report")

    slow = tiffany.spawn(slow_download(), name="slow")
    try:
        await tiffany.join(slow, timeout=1.0)
    except tiffany.JoinTimeout:
        print(f"  [{tiffany.now():6.2f}s] supervisor: slow task missed its 1s deadline, cancelling")
        slow.cancel()
    try:
        await slow
    except tiffany.TaskCancelled:
        print(f"  [{tiffany.now():6.2f}s] supervisor: slow task is cancelled")

    return [await t for t in (urgent, normal, batch, report)]


def demo() -> None:
    print("tiffany demo: prioritized tasks, a dependency, a timeout and a cancellation")
    print("(virtual clock: an hour of sleeping would take no wall time)\n")
    sched = tiffany.Scheduler(clock="virtual")
    counts: dict[str, int] = {}

    def on_event(event: tiffany.TaskEvent) -> None:
        counts[event.kind] = counts.get(event.kind, 0) + 1

    sched.on_event(on_event)
    results = sched.run(main())
    print(f"\nresults: {results}")
    print(f"virtual time elapsed: {sched.now():.2f}s")
    print("events by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    m = sched.metrics()
    print(
        f"metrics: spawned={m['spawned']} done={m['done']} failed={m['failed']} "
        f"cancelled={m['cancelled']} steps={m['steps']}"
    )


if __name__ == "__main__":
    demo()

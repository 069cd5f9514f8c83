"""Cancel scopes and a task group: an agent fans out three lookups, gives
the slow one a deadline, and cleans up politely when it is cut short.

Runs on the virtual clock, so the 30-second lookup costs no wall time.
"""

from __future__ import annotations

import tiffany


async def lookup(name: str, seconds: float) -> str:
    try:
        await tiffany.sleep(seconds)
        return f"{name}: found"
    finally:
        # Clean-up that must await, even though the lookup was cancelled.
        with tiffany.CancelScope(shield=True, deadline=tiffany.now() + 1):
            await tiffany.sleep(0.5)


async def main() -> None:
    results: dict[str, str] = {}

    async def into(name: str, seconds: float) -> None:
        results[name] = await lookup(name, seconds)

    with tiffany.move_on_after(10) as scope:
        async with tiffany.TaskGroup() as tg:
            tg.spawn(into("cache", 1), priority=1)
            tg.spawn(into("search", 5), name="search")
            tg.spawn(into("archive", 30), name="archive")
    print(f"gave up on the rest: {scope.cancelled_caught} at {tiffany.now()} s")
    print(f"results: {sorted(results.values())}")

    try:
        async with tiffany.TaskGroup() as tg:
            tg.spawn(lookup("mirror", 60))
            tg.spawn(fail_soon())
    except* ValueError as group:
        print(f"group failed: {[str(e) for e in group.exceptions]} at {tiffany.now()} s")


async def fail_soon() -> None:
    await tiffany.sleep(2)
    raise ValueError("mirror unreachable")


if __name__ == "__main__":
    tiffany.run(main(), clock="virtual")

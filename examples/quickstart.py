"""The quick start: spawn, await, dependencies and a join timeout."""

from __future__ import annotations

import tiffany


async def child(x: int) -> int:
    await tiffany.sleep(0.05)
    return x * 2


async def main() -> int:
    t = tiffany.spawn(child(21), priority=5, name="child")
    assert await t == 42  # a Task is awaitable: join
    u = tiffany.spawn(child(1), deps=[t])  # starts after t finished
    result: int = await tiffany.join(u, timeout=1.0)  # raises tiffany.JoinTimeout on timeout
    return result


if __name__ == "__main__":
    print(tiffany.run(main(), clock="virtual"))

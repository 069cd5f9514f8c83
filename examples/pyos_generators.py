"""Generator tasks in the pyos style: yield system calls, call subroutines."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import tiffany
import tiffany.lowlevel


def countdown(name: str, n: int) -> Generator[Any, Any, int]:
    tid: int = yield tiffany.lowlevel.GetTid()
    while n > 0:
        print(f"{name} (task {tid}): {n}")
        yield tiffany.sleep(1)
        n -= 1
    return tid


def add_slowly(a: int, b: int) -> Generator[Any, Any, int]:
    yield tiffany.sleep(0.5)
    return a + b


def main() -> Generator[Any, Any, int]:
    total: int = yield add_slowly(2, 3)  # a generator yielding a generator calls it
    return total


if __name__ == "__main__":
    sched = tiffany.Scheduler(clock="virtual")
    sched.spawn(countdown("a", 3))
    sched.spawn(countdown("b", 2))
    m = sched.spawn(main())
    sched.run()
    print("main returned", m.result(), "at", sched.now(), "virtual seconds")

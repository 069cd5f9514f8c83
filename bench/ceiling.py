"""``python -m bench.ceiling``: how much faster than uvloop can any loop be?

Some asyncio benchmarks spend most of their time in Python code that is the
same on every loop: the benchmark's own coroutines and the stdlib's
``asyncio.sleep``. No loop can make that code faster. This tool measures,
with valgrind's callgrind (instructions, so the host's load does not move
the figures), how many instructions an ``asyncio.sleep(0)`` switch costs

* on each loop given (uvloop, Tiffany, the stdlib's), and
* with no loop at all: the same coroutines driven by a scheduler that costs
  next to nothing — each coroutine resumed from C with ``send(None)``
  (``map`` of ``operator.methodcaller``), no task, no ready queue, no
  callback. That is a floor: every loop does at least this work.

The ratio of uvloop's count to the floor is the most any loop could be
faster than uvloop on this benchmark (its *ceiling*), whatever it does
natively. As in ``bench.ab``, each program runs with ``n`` operations and
with ``2 * n``, and the difference over ``n`` is the cost of one operation.
Needs ``valgrind`` on ``PATH`` and the peers installed in the environment
(``just setup``). Tiffany's count is that of the build installed in the
environment: ``just develop`` installs a debug build, so give Tiffany a
release build (``maturin develop --release``) before reading its figure.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.ab import per_op as ab_per_op

#: The benchmark on a loop: w workers, each switching n/w times.
ON_LOOP = """
import sys, asyncio
n, w = int(sys.argv[1]), {workers}
async def worker(k):
    for _ in range(k):
        await asyncio.sleep(0)
async def main():
    await asyncio.gather(*(worker(n // w) for _ in range(w)))
{factory}
with asyncio.Runner(loop_factory=factory) as r:
    r.run(main())
"""

FACTORIES = {
    "uvloop": "import uvloop\nfactory = uvloop.new_event_loop",
    "tiffany": "import tiffany\nfactory = tiffany.new_event_loop",
    "asyncio": "factory = asyncio.new_event_loop",
}

#: The same coroutines with no loop: each resumed from C until it ends.
FLOOR = """
import sys, asyncio, operator
n, w = int(sys.argv[1]), {workers}
async def worker(k):
    for _ in range(k):
        await asyncio.sleep(0)
workers = [worker(n // w) for _ in range(w)]
send = operator.methodcaller("send", None)
for _ in range(n // w):
    list(map(send, workers))      # each runs to the bare yield of sleep(0)
for w in workers:
    try:
        w.send(None)
    except StopIteration:
        pass
    else:
        raise SystemExit("a worker did not end")
"""


def instructions_per_op(program: str, n: int) -> float:
    """Instructions per switch (``bench.ab``'s method, with this environment)."""
    count = ab_per_op(Path(), program, n)
    if count is None:
        raise SystemExit("a program failed (is the loop installed? `just setup`)")
    return count[0]


def wall_per_op(program: str, n: int, reps: int) -> float:
    """Nanoseconds per switch on the wall clock: the best of ``reps`` runs with
    ``n`` minus the best with none (start-up cancels), over ``n``."""

    def best(count: int) -> float:
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", program, str(count)], check=True)
            times.append(time.perf_counter() - start)
        return min(times)

    return (best(n) - best(0)) / n * 1e9


def main() -> None:
    """Prints the cost per switch on each loop, the floor and uvloop's ceiling."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--loops",
        default="uvloop,tiffany",
        help="comma-separated loops to count (uvloop, tiffany, asyncio); default uvloop,tiffany",
    )
    parser.add_argument("-n", type=int, default=50_000, help="switches per run (default 50,000)")
    parser.add_argument(
        "--workers", type=int, default=100, help="coroutines sharing them (default 100)"
    )
    parser.add_argument(
        "--wall",
        type=int,
        metavar="REPS",
        help="measure wall-clock ns per switch instead (best of REPS runs; no valgrind)",
    )
    args = parser.parse_args()
    loops = [name.strip() for name in args.loops.split(",") if name.strip()]
    unknown = [name for name in loops if name not in FACTORIES]
    if unknown:
        raise SystemExit(f"unknown loop {unknown}")
    if not 0 < args.workers <= args.n:
        raise SystemExit("--workers must be between 1 and -n")
    if args.wall is not None:
        if args.wall < 1:
            raise SystemExit("--wall needs at least 1 repetition")
        unit = "ns per switch (wall)"

        def measure(program: str) -> float:
            return wall_per_op(program, args.n, args.wall)

    else:
        if shutil.which("valgrind") is None:
            raise SystemExit("valgrind is not installed (apt install valgrind)")
        unit = "instructions per switch"

        def measure(program: str) -> float:
            return instructions_per_op(program, args.n)

    floor = measure(FLOOR.format(workers=args.workers))
    print(f"{args.workers:,} coroutines, {args.n // args.workers:,} switches each\n")
    print(f"| `asyncio.sleep(0)` switch | {unit} | × the floor |")
    print("| --- | ---: | ---: |")
    costs = {}
    for name in loops:
        costs[name] = measure(ON_LOOP.format(factory=FACTORIES[name], workers=args.workers))
        print(f"| {name} | {costs[name]:,.0f} | {costs[name] / floor:.2f} |", flush=True)
    print(f"| no loop (the floor) | {floor:,.0f} | 1.00 |")
    if "uvloop" in costs:
        print(f"\nThe most any loop can be faster than uvloop here: {costs['uvloop'] / floor:.2f}×")


if __name__ == "__main__":
    main()

"""The wall-clock mode of ``bench.ab`` (``python -m bench.ab BASE [HEAD] --wall``).

On a host shared with other machines the wall clock's speed swings by up to
2x between runs minutes apart, so "run A's benchmark, then B's" cannot tell a
10% difference. This mode runs the programs of ``WALL_PROGRAMS`` in many
short processes, the sides alternating (A, B, A, B, ..., the order rotating
each round so neither side always goes first): both sides run under the same
load. Each process times its own operations ``inner`` times and prints the
best, which drops the scheduling hiccups; the table gives each side's min and
median over its processes, the ratios of medians and of mins, and each side's
spread (max/min), and says "no difference" when the change is within the
spread. Standard library only: the tests import it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# The wall mode's programs time themselves, so unlike bench.ab's PROGRAMS
# they need no run with zero operations. Each is a script run as
# ``python -c PROGRAM N INNER LOOP``: it defines ``async def measure(n)``, which
# does about ``n`` operations, times only them with ``time.perf_counter_ns()``
# and returns ns per operation (over the operations it really did, so a tiny
# ``n`` still gives a per-operation figure); the script runs it ``INNER``
# times and prints the best. A program that did different work than it
# should exits with an error instead of printing a figure.

#: What every program has: a trivial coroutine, and the check-and-divide
#: that ends a measurement.
_COMMON = """
async def nop():
    return 1
def per_op(ns, done, n):
    if done != n:
        raise SystemExit(f"did {done} operations, not {n}")
    return ns / n
"""
#: What an asyncio program starts with: its arguments and the event loop
#: (``LOOP``: ``tiffany``, ``uvloop`` or ``asyncio``, the stdlib's).
_LOOP_HEAD = """\
import socket, sys, time, asyncio
n, inner, loop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if loop == "tiffany":
    import tiffany
    factory = tiffany.new_event_loop
elif loop == "uvloop":
    import uvloop
    factory = uvloop.new_event_loop
else:
    factory = asyncio.new_event_loop
"""
_LOOP_TAIL = """
with asyncio.Runner(loop_factory=factory) as runner:
    print(min(runner.run(measure(n)) for _ in range(inner)))
"""
#: What a program on ``tiffany.Scheduler`` starts and ends with.
_SCHEDULER_HEAD = """\
import sys, time, tiffany
n, inner = int(sys.argv[1]), int(sys.argv[2])
"""
_SCHEDULER_TAIL = """
print(min(tiffany.Scheduler().run(measure(n)) for _ in range(inner)))
"""


@dataclass(frozen=True)
class WallProgram:
    """One program of the wall mode."""

    #: Operations per measurement (``-n`` overrides it).
    n: int
    #: The whole script (``python -c``-able): head, ``measure``, tail.
    source: str
    #: True for asyncio programs (they run on any event loop, so a ``--peer``
    #: loop runs them too); False for programs on ``tiffany.Scheduler``.
    on_loop: bool


def _on_loop(n: int, body: str) -> WallProgram:
    return WallProgram(n, _LOOP_HEAD + _COMMON + body + _LOOP_TAIL, on_loop=True)


def _on_scheduler(n: int, body: str) -> WallProgram:
    return WallProgram(n, _SCHEDULER_HEAD + _COMMON + body + _SCHEDULER_TAIL, on_loop=False)


#: ``tasks`` tasks share the switches; each has started (and made its first
#: switch) before the clock starts, so spawning is not timed.
_ASYNCIO_SWITCH = """
async def worker(k):
    for _ in range(k):
        await asyncio.sleep(0)
async def measure(n):
    w = min({tasks}, n)
    k = n // w
    tasks = [asyncio.create_task(worker(k)) for _ in range(w)]
    await asyncio.sleep(0)
    t0 = time.perf_counter_ns()
    await asyncio.gather(*tasks)
    return (time.perf_counter_ns() - t0) / (w * k)
"""

#: ``n`` trivial coroutines gathered ``batch`` at a time.
_GATHER = """
async def measure(n):
    batch = min({batch}, n)
    results = []
    t0 = time.perf_counter_ns()
    for _ in range(n // batch):
        results.append(await asyncio.gather(*[nop() for _ in range(batch)]))
    ns = time.perf_counter_ns() - t0
    return per_op(ns, sum(map(sum, results)), n // batch * batch)
"""

#: What the streams echoes share: ``nodelay(writer)`` and the server's
#: connection handler ``echo``.
_ECHO_SERVER = """
def nodelay(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
async def echo(reader, writer):
    nodelay(writer)
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
"""

#: name -> program (the unit is in the name). Only public APIs, so that
#: every revision runs them.
WALL_PROGRAMS: dict[str, WallProgram] = {
    "asyncio.sleep(0) switch, 100 tasks, per switch": _on_loop(
        200_000, _ASYNCIO_SWITCH.format(tasks=100)
    ),
    "asyncio.sleep(0) switch, 100,000 tasks, per switch": _on_loop(
        400_000, _ASYNCIO_SWITCH.format(tasks=100_000)
    ),
    "asyncio.TaskGroup of 100,000 trivial tasks, per task": _on_loop(
        100_000,
        """
async def measure(n):
    t0 = time.perf_counter_ns()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(nop()) for _ in range(n)]
    ns = time.perf_counter_ns() - t0
    return per_op(ns, sum(t.result() for t in tasks), n)
""",
    ),
    "asyncio.gather of 5,000 trivial coroutines, per task": _on_loop(
        100_000, _GATHER.format(batch=5_000)
    ),
    "asyncio.gather of 100,000 trivial coroutines, per task": _on_loop(
        100_000, _GATHER.format(batch=100_000)
    ),
    "asyncio.create_task + await, one at a time, per task": _on_loop(
        50_000,
        """
async def measure(n):
    done = 0
    t0 = time.perf_counter_ns()
    for _ in range(n):
        done += await asyncio.create_task(nop())
    return per_op(time.perf_counter_ns() - t0, done, n)
""",
    ),
    "asyncio streams echo over 127.0.0.1, 100 bytes, per round trip": _on_loop(
        5_000,
        _ECHO_SERVER
        + """
async def measure(n):
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    nodelay(writer)
    payload = b"x" * 100
    t0 = time.perf_counter_ns()
    for _ in range(n):
        writer.write(payload)
        await writer.drain()
        if await reader.readexactly(len(payload)) != payload:
            raise SystemExit("the echo differs")
    ns = time.perf_counter_ns() - t0
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return ns / n
""",
    ),
    # The harness's workload 14 in small: many connections, so a wake comes
    # back to code the other tasks' steps pushed out of the caches (the one
    # connection above is bound by its system calls' latency instead).
    "asyncio streams echo over 127.0.0.1, 100 clients, 100 bytes, per round trip": _on_loop(
        20_000,
        _ECHO_SERVER
        + """
async def client(port, rounds, payload, ready, go):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    nodelay(writer)
    ready.append(1)
    await go.wait()
    done = 0
    for _ in range(rounds):
        writer.write(payload)
        await writer.drain()
        if await reader.readexactly(len(payload)) != payload:
            raise SystemExit("the echo differs")
        done += 1
    writer.close()
    await writer.wait_closed()
    return done
async def measure(n):
    clients = min(100, n)
    rounds = n // clients
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ready, go = [], asyncio.Event()
    tasks = [
        asyncio.create_task(client(port, rounds, b"x" * 100, ready, go))
        for _ in range(clients)
    ]
    while len(ready) < clients:
        await asyncio.sleep(0)
    t0 = time.perf_counter_ns()
    go.set()
    done = sum(await asyncio.gather(*tasks))
    ns = time.perf_counter_ns() - t0
    server.close()
    await server.wait_closed()
    return per_op(ns, done, clients * rounds)
""",
    ),
    "tiffany.spawn + await on tiffany.Scheduler, per task": _on_scheduler(
        50_000,
        """
async def measure(n):
    t0 = time.perf_counter_ns()
    tasks = [tiffany.spawn(nop()) for _ in range(n)]
    done = 0
    for t in tasks:
        done += await t
    return per_op(time.perf_counter_ns() - t0, done, n)
""",
    ),
    "tiffany.sleep(0) switch on tiffany.Scheduler, 100 tasks, per switch": _on_scheduler(
        200_000,
        """
async def worker(k):
    for _ in range(k):
        await tiffany.sleep(0)
async def measure(n):
    w = min(100, n)
    k = n // w
    tasks = [tiffany.spawn(worker(k)) for _ in range(w)]
    await tiffany.sleep(0)
    t0 = time.perf_counter_ns()
    for t in tasks:
        await t
    return (time.perf_counter_ns() - t0) / (w * k)
""",
    ),
}


@dataclass(frozen=True)
class Side:
    """One column of the wall mode: whose processes, in which environment."""

    label: str
    #: The processes' whole environment (``PYTHONPATH`` picks the build).
    env: dict[str, str]
    #: The event loop of the asyncio programs.
    loop: str = "tiffany"
    #: A peer loop runs only the asyncio programs.
    peer: bool = False


def side_env(site: Path | None) -> dict[str, str]:
    """A process environment that imports tiffany from ``site`` (None: this
    Python's own installation, for an A/A check without a build)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return env


class WallError(RuntimeError):
    """A wall process failed, timed out or printed no figure."""


def wall_process(side: Side, program: WallProgram, n: int, inner: int, timeout: float) -> float:
    """Runs one process of ``program`` for ``side``; its best ns per operation."""
    cmd = [sys.executable, "-c", program.source, str(n), str(inner), side.loop]
    try:
        proc = subprocess.run(cmd, env=side.env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise WallError(f"timed out after {timeout:g} s") from e
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise WallError(lines[-1] if lines else f"exit status {proc.returncode}")
    try:
        return float(proc.stdout.split()[-1])
    except (IndexError, ValueError) as e:
        raise WallError(f"no figure in the output: {proc.stdout!r}") from e


@dataclass
class WallRow:
    """Every process's figure of one program, by side label."""

    name: str
    figures: dict[str, list[float]] = field(default_factory=dict)
    #: side label -> why its processes stopped (the side has no figures then).
    errors: dict[str, str] = field(default_factory=dict)


def run_wall(
    sides: list[Side],
    programs: dict[str, WallProgram],
    procs: int,
    inner: int,
    n: int | None = None,
    timeout: float = 600.0,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> list[WallRow]:
    """For each program, ``procs`` rounds of one process per side, the sides
    alternating; the order rotates by one each round (A B, B A, ...). A side
    whose process fails runs no more processes of that program."""
    rows = []
    started = time.monotonic()

    def say(text: str) -> None:
        log(f"[{time.monotonic() - started:5.0f}s] {text}")

    for name, program in programs.items():
        row = WallRow(name)
        active = [s for s in sides if program.on_loop or not s.peer]
        for s in active:
            row.figures[s.label] = []
        for r in range(procs):
            shift = r % len(active)
            for s in active[shift:] + active[:shift]:
                if s.label in row.errors:
                    continue
                try:
                    figure = wall_process(s, program, n or program.n, inner, timeout)
                except WallError as e:
                    row.errors[s.label] = str(e)
                    row.figures[s.label] = []
                    say(f"{name} [{s.label}] failed: {e}")
                    continue
                row.figures[s.label].append(figure)
                say(f"{name} [{s.label}] {r + 1}/{procs}: {figure:,.1f} ns")
        rows.append(row)
    return rows


def spread(figures: list[float]) -> float:
    """max/min of one side's processes: 1.0 when they all agree."""
    return max(figures) / min(figures)


def verdict(base: list[float], head: list[float], head_label: str) -> str:
    """What the ratio of medians says, given the spread within each side: no
    difference when the change is within the larger spread (as a fraction).

    (Then the ratio of mins points the same way as that of medians, too: a
    head median above the base's by more than the head's spread puts the head's
    min above the base's min.)
    """
    if len(base) < 2 or len(head) < 2:
        return "one process per side: no spread to judge by"
    noise = max(spread(base), spread(head)) - 1
    change = statistics.median(head) / statistics.median(base) - 1
    if abs(change) <= noise:
        return f"no difference (change {change:+.1%}, spread up to {noise:.1%})"
    way = "slower" if change > 0 else "faster"
    return f"{head_label} {way} by {abs(change):.1%} (spread up to {noise:.1%})"


def wall_table(rows: list[WallRow], base: str, head: str, peer: str | None) -> list[str]:
    """The Markdown table of the wall mode, one line per program."""
    ratio = f"{head}/{base}"
    headers = ["program", f"{base} min", f"{base} median", f"{head} min", f"{head} median"]
    headers += [f"{ratio} medians", f"{ratio} mins", f"spread {base}", f"spread {head}"]
    if peer is not None:
        headers += [f"{peer} median", f"{head}/{peer} medians"]
    headers.append("verdict")
    lines = [
        "| " + " | ".join(headers) + " |",
        "| --- | " + "---: | " * (len(headers) - 2) + "--- |",
    ]
    med = statistics.median
    for row in rows:
        a, b = row.figures[base], row.figures[head]
        cells = [row.name]
        for side in (a, b):
            cells += [_ns(min(side)), _ns(med(side))] if side else ["n/a", "n/a"]
        both = bool(a and b)
        cells.append(f"{med(b) / med(a):.3f}" if both else "n/a")
        cells.append(f"{min(b) / min(a):.3f}" if both else "n/a")
        cells += [f"{spread(s):.3f}" if s else "n/a" for s in (a, b)]
        if peer is not None:
            p = row.figures.get(peer, [])
            cells.append(_ns(med(p)) if p else "n/a")
            cells.append(f"{med(b) / med(p):.3f}" if p and b else "n/a")
        if row.errors:
            cells.append("failed: " + "; ".join(f"{k}: {v}" for k, v in row.errors.items()))
        else:
            cells.append(verdict(a, b, head))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ns(x: float) -> str:
    return f"{x:,.1f}"

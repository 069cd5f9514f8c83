"""``python -m bench.ab BASE [HEAD]``: instructions per operation, two revisions compared.

Wall-clock figures move with the host: on a shared 2-core machine every
runtime can run 1.5-2.5x slower one day than another, and ratios between
runtimes move too, because the peers and Tiffany do not stress the machine
the same way. The question "did this change make Tiffany slower?" is
answered better by counting the instructions a fixed program executes,
which the host's load does not change. This tool builds a release wheel of
each revision (``BASE`` and ``HEAD``, git revisions; ``HEAD`` omitted means
the working tree), runs the same small programs under valgrind's callgrind
with each, and prints the instructions per operation side by side.

Each program runs twice per revision, with ``n`` operations and with
``2 * n``; the difference divided by ``n`` is the cost of one operation,
without the interpreter's start-up, imports and whatever runs once (a
program's first connection, a lazily made table). A run with no operation
would not do: its early way out skips those one-time paths, and they would be
counted as the operations' cost. Each run's count leaves out the real
clock's calibration (:func:`calibration`), whose length under valgrind
varies from run to run. The runs use ``PYTHONHASHSEED=0``, so hashing (and
so the order of sets and dicts) is the same in every run. Needs ``valgrind``
(and its ``callgrind_annotate``) on ``PATH``.

``--cache`` turns on callgrind's cache simulation (a first-level cache as the
host's) and adds the first-level instruction- and data-cache misses per
operation beside the instructions: a change can keep its instruction count
and still cost time in misses (where an asyncio task's wake on the loop
costs most: see the book's Performance chapter).

``--wall`` measures wall-clock time instead, in alternating processes of
both revisions (``bench/wall.py``): for the changes instruction counts
misjudge (memory traffic, cache misses, system calls).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import ROOT, loadavg
from bench.wall import WALL_PROGRAMS, Side, WallProgram, run_wall, side_env, wall_table

AB_DIR = ROOT / "target/ab"

#: name -> (operations, program). The program reads the count from
#: ``sys.argv[1]`` and does that many operations (the unit is in the name).
PROGRAMS: dict[str, tuple[int, str]] = {
    "tiffany.sleep(0) switch, per switch": (
        50_000,
        """
import sys, tiffany
n = int(sys.argv[1])
async def worker(k):
    for _ in range(k):
        await tiffany.sleep(0)
async def main():
    tasks = [tiffany.spawn(worker(n // 100)) for _ in range(100)]
    for t in tasks:
        await t
tiffany.Scheduler().run(main())
""",
    ),
    "tiffany.spawn + await, per task": (
        20_000,
        """
import sys, tiffany
n = int(sys.argv[1])
async def nop():
    return 1
async def main():
    tasks = [tiffany.spawn(nop()) for _ in range(n)]
    for t in tasks:
        await t
tiffany.Scheduler().run(main())
""",
    ),
    "tiffany.sleep, virtual clock, per sleeping task": (
        20_000,
        """
import sys, tiffany
n = int(sys.argv[1])
async def sleeper(i):
    await tiffany.sleep((i * 7919 % 1000) / 1000)
async def main():
    tasks = [tiffany.spawn(sleeper(i)) for i in range(n)]
    for t in tasks:
        await t
tiffany.Scheduler(clock="virtual").run(main())
""",
    ),
    "asyncio.sleep(0) on the loop, per switch": (
        50_000,
        """
import sys, asyncio, tiffany
n = int(sys.argv[1])
async def worker(k):
    for _ in range(k):
        await asyncio.sleep(0)
async def main():
    await asyncio.gather(*(worker(n // 100) for _ in range(100)))
with asyncio.Runner(loop_factory=tiffany.new_event_loop) as r:
    r.run(main())
""",
    ),
    "loop.call_soon, per callback": (
        100_000,
        """
import sys, asyncio, tiffany
n = int(sys.argv[1])
async def main():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = [n]
    def cb():
        left[0] -= 1
        if left[0] == 0:
            done.set_result(None)
    for _ in range(n):
        loop.call_soon(cb)
    if n:
        await done
with asyncio.Runner(loop_factory=tiffany.new_event_loop) as r:
    r.run(main())
""",
    ),
    # Real sockets: how many events an iteration finds depends on timing,
    # so this count moves by up to about 20% between runs of one build.
    "asyncio Protocol echo on the loop, per round trip (user space)": (
        2_000,
        """
import sys, asyncio, socket, tiffany
n = int(sys.argv[1])
clients, payload = 10, b"x" * 100
async def main():
    loop = asyncio.get_running_loop()
    class Server(asyncio.Protocol):
        def connection_made(self, tr):
            tr.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.tr = tr
        def data_received(self, data):
            self.tr.write(data)
    class Client(asyncio.Protocol):
        def __init__(self, done, rounds):
            self.done, self.left, self.got = done, rounds, 0
        def connection_made(self, tr):
            self.tr = tr
            tr.write(payload)
        def data_received(self, data):
            self.got += len(data)
            if self.got < len(payload):
                return
            self.got = 0
            self.left -= 1
            if self.left:
                self.tr.write(payload)
            else:
                self.tr.close()
                self.done.set_result(None)
    server = await loop.create_server(Server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    done = []
    for _ in range(clients if n else 0):
        f = loop.create_future()
        await loop.create_connection(lambda f=f: Client(f, n // clients), "127.0.0.1", port)
        done.append(f)
    await asyncio.gather(*done)
    server.close()
    await server.wait_closed()
with asyncio.Runner(loop_factory=tiffany.new_event_loop) as r:
    r.run(main())
""",
    ),
    # Real sockets too, with two task wakes per round trip (the server's
    # read and the client's): the wake of an asyncio task in its cost.
    "asyncio streams echo on the loop, per round trip": (
        2_000,
        """
import sys, asyncio, socket, tiffany
n = int(sys.argv[1])
clients, payload = 10, b"x" * 100
def nodelay(writer):
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
async def serve(reader, writer):
    nodelay(writer)
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
async def client(port, rounds):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    nodelay(writer)
    for _ in range(rounds):
        writer.write(payload)
        await writer.drain()
        assert await reader.readexactly(len(payload)) == payload
    writer.close()
    await writer.wait_closed()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await asyncio.gather(*(client(port, n // clients) for _ in range(clients)))
    server.close()
    await server.wait_closed()
with asyncio.Runner(loop_factory=tiffany.new_event_loop) as r:
    r.run(main())
""",
    ),
    "asyncio.create_task + await, per task": (
        20_000,
        """
import sys, asyncio, tiffany
n = int(sys.argv[1])
async def nop():
    return 1
async def main():
    await asyncio.gather(*(nop() for _ in range(n)))
with asyncio.Runner(loop_factory=tiffany.new_event_loop) as r:
    r.run(main())
""",
    ),
}


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")


def build(rev: str | None, rebuild: bool = True) -> tuple[str, Path]:
    """Builds a release wheel of ``rev`` (None: the working tree) into its own site dir."""
    if rev is None:
        label, src = "worktree", ROOT
    else:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        if not sha:
            raise SystemExit(f"not a revision: {rev}")
        label, src = sha, AB_DIR / f"src-{sha}"
        if not src.exists():
            _run(["git", "worktree", "add", "--detach", str(src), sha], cwd=ROOT)
    wheels = AB_DIR / f"wheels-{label}"
    site = AB_DIR / f"site-{label}"
    if not rebuild and site.exists():
        return label, site
    shutil.rmtree(wheels, ignore_errors=True)
    shutil.rmtree(site, ignore_errors=True)
    maturin = Path(sys.executable).parent / "maturin"
    print(f"building {label} (release)...", file=sys.stderr)
    # A cargo target directory per revision. (One shared by both reused the
    # other revision's build of the workspace's own crates: cargo names a
    # workspace member's artifacts the same whatever the checkout's path,
    # and finds them fresh when they are newer than this checkout's files.)
    _run(
        [str(maturin), "build", "--release", "--quiet", "--out", str(wheels)]
        + ["--target-dir", str(AB_DIR / f"cargo-{label}")],
        cwd=src,
    )
    (wheel,) = wheels.glob("tiffany-*.whl")
    _run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        + ["--no-deps", "--target", str(site), str(wheel)]
    )
    return label, site


#: The events of a run with callgrind's cache simulation, in its order.
CACHE_EVENTS = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")


def counts(site: Path, program: str, n: int, cache: bool = False) -> list[int] | None:
    """What callgrind counts for one run of ``program`` with ``n``, without
    the real clock's calibration (see :func:`calibration`): the instructions,
    and with ``cache`` every event of :data:`CACHE_EVENTS`.

    None when the program fails with that revision (an API it does not have).
    """
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "program.py"
        script.write_text(program)
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out"]
            + (["--cache-sim=yes"] if cache else [])
            + [sys.executable, str(script), str(n)],
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
        )
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            print(f"  failed (n={n}): {lines[-1] if lines else '?'}", file=sys.stderr)
            return None
        found = re.search(r"Collected :((?: \d+)+)", proc.stderr)
        if found is None:
            raise SystemExit("no instruction count in callgrind's output")
        annotated = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--auto=no", f"{tmp}/out"],
            capture_output=True,
            text=True,
        ).stdout
    total = [int(x) for x in found.group(1).split()]
    once = calibration(annotated)
    return [t - (once[i] if i < len(once) else 0) for i, t in enumerate(total)]


#: A line of ``callgrind_annotate --inclusive=yes`` output for a
#: ``once_cell`` cell's initialisation: its inclusive counts, one per event.
_ONCE_CELL_INIT = re.compile(r"^\s*(\d[\d,]*\s.*?)\S*once_cell::imp::OnceCell<T>::initialize \[")
#: A count's share of the total, which follows it: `` ( 1.97%)``.
_SHARE = re.compile(r"\([^)]*\)")


def calibration(annotated: str) -> list[int]:
    """The counts (one per event, instructions first) of the real clock's
    calibration in one run, from ``callgrind_annotate --inclusive=yes``
    output: those of the ``once_cell`` initialisation with the most
    instructions (``quanta`` calibrates its clock in one, once per process;
    ``pyo3``'s are small).

    The calibration reads the clock until its readings settle, and under
    valgrind that takes a number of reads that varies from run to run by
    a million instructions or more: with ``n`` = 2,000 operations, several
    hundred instructions per operation of noise. It is one-time work, not an
    operation's cost, so it is left out. Empty when there is none.
    """
    found: list[list[int]] = []
    for line in annotated.splitlines():
        m = _ONCE_CELL_INIT.match(line)
        if m is not None:
            # One count per event; "." is a zero.
            cells = _SHARE.sub(" ", m.group(1)).split()
            found.append([0 if c == "." else int(c.replace(",", "")) for c in cells])
    return max(found, key=lambda c: c[0], default=[])


def per_op(site: Path, program: str, n: int, cache: bool = False) -> list[float] | None:
    """Counts per operation (instructions first; with ``cache`` every event of
    :data:`CACHE_EVENTS`): the run with ``2 * n`` minus the run with ``n``,
    over ``n``. (Not minus a run with none: see the module's documentation.)
    """
    once, twice = counts(site, program, n, cache), counts(site, program, 2 * n, cache)
    if once is None or twice is None:
        return None
    return [(b - a) / n for a, b in zip(once, twice, strict=True)]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return value


def main(argv: list[str] | None = None) -> None:
    """Builds both revisions and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", nargs="?", help="the revision to compare against (e.g. main~3)")
    parser.add_argument("head", nargs="?", help="the revision measured (default: the working tree)")
    parser.add_argument("--no-build", action="store_true", help="reuse the last builds")
    parser.add_argument(
        "--only",
        metavar="SUBSTRING",
        default="",
        help="run only the programs whose name contains it",
    )
    parser.add_argument(
        "-n",
        type=_positive,
        metavar="OPS",
        help="operations per measurement for every program (default: each program's own)",
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="callgrind's cache simulation: first-level instruction- and data-cache "
        "misses per operation beside the instructions",
    )
    wall = parser.add_argument_group("wall-clock mode")
    wall.add_argument(
        "--wall",
        action="store_true",
        help="interleaved wall-clock processes instead of callgrind counts",
    )
    wall.add_argument(
        "--procs", type=_positive, default=5, help="processes per side and program (default 5)"
    )
    wall.add_argument(
        "--inner",
        type=_positive,
        default=7,
        help="repetitions inside each process, the best kept (default 7)",
    )
    wall.add_argument(
        "--peer",
        choices=["uvloop", "asyncio"],
        help="also run the asyncio programs on this loop, in the same alternation",
    )
    wall.add_argument(
        "--installed",
        action="store_true",
        help="no build, no revisions: both sides (A, B) import this Python's own tiffany "
        "(an A/A check of the method, and the test's quick run)",
    )
    wall.add_argument(
        "--timeout",
        type=_seconds,
        default=600.0,
        help="seconds one process may take (default 600)",
    )
    # Intermixed: `just bench-ab-wall BASE HEAD` puts --wall between the revisions.
    args = parser.parse_intermixed_args(argv)
    for option in ("installed", "peer"):
        if getattr(args, option) and not args.wall:
            parser.error(f"--{option} needs --wall")
    if args.cache and args.wall:
        parser.error("--cache is callgrind's: not with --wall")
    if args.installed and args.base is not None:
        parser.error("--installed takes no revisions")
    if not args.installed and args.base is None:
        parser.error("the BASE revision is required (or --wall --installed)")
    names = [k for k in (WALL_PROGRAMS if args.wall else PROGRAMS) if args.only in k]
    if not names:
        parser.error(f"no program's name contains {args.only!r}")
    if args.wall:
        _main_wall(args, {k: WALL_PROGRAMS[k] for k in names})
    else:
        _main_callgrind(args, {k: PROGRAMS[k] for k in names})


def _main_wall(args: argparse.Namespace, programs: dict[str, WallProgram]) -> None:
    if args.peer == "uvloop":
        probe = subprocess.run([sys.executable, "-c", "import uvloop"], capture_output=True)
        if probe.returncode != 0:
            raise SystemExit("--peer uvloop: uvloop is not installed (just setup)")
    if args.installed:
        sides = [Side("A", side_env(None)), Side("B", side_env(None))]
    else:
        AB_DIR.mkdir(parents=True, exist_ok=True)
        base_label, base_site = build(args.base, not args.no_build)
        head_label, head_site = build(args.head, not args.no_build)
        if base_label == head_label:
            head_label += " (again)"
        sides = [Side(base_label, side_env(base_site)), Side(head_label, side_env(head_site))]
    if args.peer is not None:
        sides.append(Side(args.peer, sides[1].env, loop=args.peer, peer=True))
    print(
        f"ns per operation; processes per side: {args.procs}, each the best of "
        f"{args.inner} runs; load average before: {loadavg()}",
        flush=True,
    )
    rows = run_wall(sides, programs, args.procs, args.inner, args.n, args.timeout)
    print()
    for line in wall_table(rows, sides[0].label, sides[1].label, args.peer):
        print(line)
    print(f"\nload average after: {loadavg()}")


def _main_callgrind(args: argparse.Namespace, programs: dict[str, tuple[int, str]]) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt install valgrind)")
    AB_DIR.mkdir(parents=True, exist_ok=True)
    base_label, base_site = build(args.base, not args.no_build)
    head_label, head_site = build(args.head, not args.no_build)
    print(callgrind_header(base_label, head_label, args.cache))
    for name, (n, program) in programs.items():
        n = args.n or n
        a = per_op(base_site, program, n, args.cache)
        b = per_op(head_site, program, n, args.cache)
        print(callgrind_row(name, a, b, args.cache), flush=True)


def _measures(cache: bool) -> list[tuple[str, list[int]]]:
    """The table's measures: a name and the events it adds up."""
    if not cache:
        return [("instructions", [0])]
    i = CACHE_EVENTS.index
    return [
        ("instructions", [i("Ir")]),
        ("I1 misses", [i("I1mr")]),
        ("D1 misses", [i("D1mr"), i("D1mw")]),
    ]


def callgrind_header(base: str, head: str, cache: bool) -> str:
    """The Markdown header of the callgrind table."""
    cells = ["program"]
    for measure, _ in _measures(cache):
        suffix = f" ({measure})" if cache else ""
        cells += [f"{base}{suffix}", f"{head}{suffix}", "change"]
    aligns = ["---"] + ["---:"] * (len(cells) - 1)
    return "| " + " | ".join(cells) + " |\n| " + " | ".join(aligns) + " |"


def callgrind_row(name: str, a: list[float] | None, b: list[float] | None, cache: bool) -> str:
    """One program's line of the callgrind table (``a``, ``b``: its counts
    per operation on each side, as :func:`per_op` gives them)."""
    cells = [name]
    for _, events in _measures(cache):
        x = None if a is None else sum(a[e] for e in events)
        y = None if b is None else sum(b[e] for e in events)
        change = "n/a" if x is None or y is None or x == 0 else f"{(y - x) / x:+.1%}"
        cells += [_fmt(x), _fmt(y), change]
    return "| " + " | ".join(cells) + " |"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


if __name__ == "__main__":
    main()

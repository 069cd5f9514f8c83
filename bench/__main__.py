"""``python -m bench``: the benchmark suite (``just bench`` builds Tiffany first).

A full run writes docs/mdbook/src/benchmarks.md; a ``--quick`` run writes
target/bench/benchmarks-quick.md. Raw results go to target/bench/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time

from bench import native
from bench.daemon import kept_section
from bench.harness import (
    OUT_DIR,
    ROOT,
    WORKER_ENV,
    build_tiffany,
    execute,
    git_commit,
    loadavg,
    machine,
    plan,
)
from bench.report import (
    SUMMARY_HEADERS,
    WorkloadReport,
    detail_table,
    native_summary_rows,
    native_table,
    summary_rows,
)
from bench.report import table as md_table
from bench.runtimes import RUNTIMES, install_peers, probe
from bench.workloads import BY_KEY, WORKLOADS

PAGE = ROOT / "docs/mdbook/src/benchmarks.md"

METHOD = """\
How the figures are made:

- Every measurement runs in a fresh Python process (`python -m bench.worker`)
  that imports only the runtime under test, so runtimes share no state.
- Runs are interleaved: for each repetition, for each workload, every runtime
  runs once, in an order that rotates from one repetition to the next.
- The figure is the median over the repetitions; the spread is min – max.
- Every worker counts the work it did (steps, tasks, bytes, round trips) and
  the harness checks the totals against the workload's parameters; a run that
  did different work is an error, never a figure.
- The asyncio, uvloop and rloop columns share one implementation (the
  asyncio API) and differ only in the event loop. The code of each workload,
  one function per runtime side by side, is in `bench/workloads/`.
- The machine has 2 cores and other processes (a compiler, say) may have run
  at the same time; the load average before and after the run is given above.
  Treat differences of a few percent as noise.
"""

WORKLOAD_NOTES = {
    "switch": 'Time from "every task has started" to "every task is done" over '
    "tasks × yields: the cost of one yield round trip, spawning excluded "
    "(`total incl. spawn` is the whole run).",
    "spawn": "Whole run (spawn, run, finish, wait) over tasks; each runtime waits the "
    "structured way: Tiffany's `Scheduler.run` returns when every task has finished, "
    "asyncio's `TaskGroup`, trio's nursery, gevent's `joinall`. Peak RSS includes "
    "the interpreter.",
    "timers_real": "Wall time from the first spawn to the last wake-up, minus the "
    "longest sleep. Durations are the same for every runtime (fixed seed).",
    "timers_virtual": "Wall time of the whole run; the clock at the end is checked "
    "to equal the longest sleep.",
    "echo_100": "Client and server in the same process, over 127.0.0.1, TCP_NODELAY.",
    "echo_10k": "Client and server in the same process, over 127.0.0.1, TCP_NODELAY.",
    "memory": "RSS growth from just before spawning to when every task has started "
    "and blocked, over tasks; every task waits on one Event.",
    "join": "One task, repeatedly: spawn a child that sleeps 0 and returns 1, wait for "
    "it. `tiffany (native child)` is a Python task joining a native (Rust) task: "
    "`tiffany.testing.spawn_native_sleep(sched, 0, 1)`.",
    "telemetry": "Workload 1 on Tiffany with no subscriber, with one `on_event` "
    "subscriber (a Python call per event), with one `on_events` subscriber (batches), "
    "and with the timing metrics off; "
    "the added time per transition is (median with − median without) over the "
    "number of events of the run (counted in a second, untimed run).",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, 2 repetitions")
    ap.add_argument("--reps", type=int, help="repetitions (default 5; --quick: 2)")
    ap.add_argument(
        "--native",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the Criterion benches (workloads 7 and 9; default: yes in a full run,"
        " no with --quick)",
    )
    ap.add_argument(
        "--only", help=f"comma-separated workloads (of: {', '.join(w.key for w in WORKLOADS)})"
    )
    ap.add_argument("--runtimes", help="comma-separated runtimes (default: all available)")
    ap.add_argument("--no-install", action="store_true", help="do not pip install the peers")
    ap.add_argument(
        "--no-build",
        action="store_true",
        help="use the tiffany importable from .venv instead of building a release wheel",
    )
    ap.add_argument("--timeout", type=float, default=600, help="seconds per measurement")
    ap.add_argument("--output", help="where to write the Markdown page")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    reps = args.reps or (2 if args.quick else 5)
    workloads = [BY_KEY[k] for k in args.only.split(",")] if args.only else WORKLOADS
    # Only a full run of everything regenerates the book's page.
    full = not (args.quick or args.only or args.runtimes)
    output = args.output or (PAGE if full else OUT_DIR / "benchmarks-quick.md")
    raw_path = OUT_DIR / ("results.json" if full else "results-quick.json")
    command = os.environ.get("BENCH_COMMAND") or shlex.join(["python", "-m", "bench", *argv])
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    unavailable: dict[str, str] = {}
    if not args.no_install:
        print("Installing the peers with pip ...", flush=True)
        unavailable.update({k: f"pip install failed: {v}" for k, v in install_peers().items()})
    build = "the tiffany importable from .venv (--no-build; build mode unknown)"
    if not args.no_build:
        print("Building a release wheel of tiffany into target/bench/site ...", flush=True)
        try:
            build = f"release wheel {build_tiffany()}, installed into target/bench/site"
        except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
            print(f"Could not build tiffany: {e}", file=sys.stderr)
            return 1
    versions = probe(WORKER_ENV)
    for name, info in versions.items():
        if info["error"] and name not in unavailable:
            unavailable[name] = info["error"]
    skipped: set[str] = set()
    if args.runtimes:
        wanted = set(args.runtimes.split(","))
        skipped = {r.name for r in RUNTIMES if r.name not in wanted} - set(unavailable)
        unavailable.update({name: "not run (--runtimes)" for name in skipped})
    if "tiffany" in unavailable:
        print(f"tiffany cannot be imported: {unavailable['tiffany']}", file=sys.stderr)
        return 1
    for name, why in unavailable.items():
        print(f"{name}: {why}" if name in skipped else f"{name}: unavailable ({why})")
    available = {r.name for r in RUNTIMES} - set(unavailable)

    load_before = loadavg()
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    planned = plan(workloads, available, args.quick)
    execute(planned, reps, args.timeout, log=lambda s: print(s, flush=True))

    native_results: dict[str, native.Estimate] | None = None
    native_error = ""
    if args.native is None:
        args.native = not args.quick
    if args.native:
        print("Running the Criterion benches (cargo bench) ...", flush=True)
        try:
            native_results = native.run(ROOT, OUT_DIR / "criterion.txt")
        except (RuntimeError, OSError) as e:
            native_error = str(e)
    duration = time.monotonic() - t0
    load_after = loadavg()

    reports = [
        WorkloadReport(w, outs, unavailable, args.quick, frozenset(skipped)) for w, outs in planned
    ]
    summary = md_table(
        SUMMARY_HEADERS,
        summary_rows(reports) + native_summary_rows(native_results),
        right=set(range(3, 10)),
    )
    details = []
    for rep in reports:
        w = rep.workload
        details.append(
            f"### {w.number}. {w.title(rep.params())}\n\n"
            f"{WORKLOAD_NOTES.get(w.key, '')}\n\n"
            f"{detail_table(rep)}\n"
        )
    if native_results:
        native_text = native_table(native_results)
    elif native_error:
        native_text = f"The Criterion run failed: {native_error}"
    else:
        native_text = "Not run this time (`--no-native`, or `--quick` without `--native`)."

    m = machine()
    info_rows = [
        ["date", started.strftime("%Y-%m-%d %H:%M UTC")],
        ["command", f"`{command}`"],
        ["mode", ("quick" if args.quick else "full") + f", {reps} repetitions"],
        ["duration", f"{duration / 60:.1f} min"],
        ["machine", f"{m['cpu']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']}"],
        ["load average (1, 5, 15 min)", f"before {load_before}; after {load_after}"],
        ["Python", f"{platform.python_implementation()} {platform.python_version()}"],
        ["tiffany", f"{versions['tiffany']['version']}, commit {git_commit()}; {build}"],
    ]
    for r in RUNTIMES[1:]:
        v = versions.get(r.name, {})
        label = "asyncio (stdlib)" if r.module is None else r.name
        info_rows.append([label, v.get("version") or f"unavailable: {unavailable.get(r.name)}"])
    info = md_table(["", ""], info_rows, right=set())

    page = f"""# Benchmarks

Tiffany against asyncio, uvloop, rloop, trio and gevent on the same workloads.
This page is generated by `just bench` (`python -m bench`, code in `bench/`);
do not edit it by hand. `just bench --quick` is a short version that writes
`target/bench/benchmarks-quick.md` instead.

{info}

## Summary

Medians over the repetitions. "Tiffany vs best peer" compares Tiffany with the
best of the other runtimes on that workload (better = faster, more round trips
or less memory).

{summary}

{METHOD}
## Workloads

{chr(10).join(details)}
## Native (Criterion)

`cargo bench -p tiffany-scheduler --bench native`: native (Rust) tasks on the
kernel, without Python. "Per element" is per unit of work (a yield, a spawned
task, a sleeping task, a join; from Criterion's throughput); "per iteration"
is Criterion's time, which for the `native_sleep_virtual` group is a whole
scenario of that many tasks.

{native_text}
"""
    print()
    print(summary)
    print()
    for d in details:
        print(d)
    if native_results or native_error:
        print(native_text)
    if os.path.abspath(output) == os.path.abspath(PAGE):
        # The Service mode section is `just bench-daemon`'s: keep it.
        kept = kept_section(PAGE)
        if kept:
            page += "\n" + kept
    with open(output, "w") as f:
        f.write(page)
    raw = {
        "command": command,
        "date": started.isoformat(),
        "reps": reps,
        "quick": args.quick,
        "versions": versions,
        "results": [
            {
                "workload": o.workload.key,
                "entry": o.entry.label,
                "params": o.params,
                "figures": o.figures,
                "results": o.results,
                "errors": o.errors,
            }
            for _, outs in planned
            for o in outs
        ],
        "native": {k: vars(v) for k, v in (native_results or {}).items()},
    }
    raw_path.write_text(json.dumps(raw, indent=1))
    print(f"Wrote {output} and {raw_path}")
    failed = sum(len(o.errors) for _, outs in planned for o in outs)
    if failed:
        print(f"{failed} measurement(s) failed; see the tables.", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

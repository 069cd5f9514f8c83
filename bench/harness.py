"""Runs the plan: every workload on every runtime, interleaved, in fresh processes.

For each repetition, for each workload, every entry (runtime or variant) runs
once, in its own subprocess (``python -m bench.worker``); the order of the
entries rotates from one repetition to the next so no runtime always runs
first or last. A run whose counts differ from the workload's expected counts
is an error, not a figure.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.workloads import Entry, Params, Result, Workload

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "target/bench"
#: Where the harness installs its own release build of Tiffany. Workers put it
#: first on PYTHONPATH, so a debug ``maturin develop`` of the working tree
#: running meanwhile (another developer, the test suite) cannot swap the
#: extension module under a measurement.
SITE = OUT_DIR / "site"
WORKER_ENV: dict[str, str] = dict(os.environ)


def build_tiffany() -> str:
    """Builds a release wheel of Tiffany and installs it into SITE; returns its name.

    The first build compiles the crates from scratch (a minute or two).
    """
    wheels = OUT_DIR / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    maturin = Path(sys.executable).parent / "maturin"
    proc = subprocess.run(
        [str(maturin), "build", "--release", "--quiet", "--out", str(wheels)]
        # Its own cargo target directory: a `maturin develop` of the working
        # tree running at the same time shares target/maturin otherwise.
        + ["--target-dir", str(OUT_DIR / "cargo")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise RuntimeError("maturin build --release failed")
    (wheel,) = wheels.glob("tiffany-*.whl")
    shutil.rmtree(SITE, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        + ["--no-deps", "--target", str(SITE), str(wheel)],
        check=True,
    )
    WORKER_ENV["PYTHONPATH"] = os.pathsep.join(
        [str(SITE), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return wheel.name


@dataclass
class Outcome:
    """Every run of one entry of one workload."""

    workload: Workload
    entry: Entry
    params: Params
    results: list[Result] = field(default_factory=list)
    figures: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.figures) if self.figures else None

    def extra_median(self, index: int) -> float | None:
        _, _, fn = self.workload.extras[index]
        values = [fn(r, self.params) for r in self.results]
        return statistics.median(values) if values else None


def run_one(workload: Workload, entry: Entry, params: Params, timeout: float) -> Result:
    """One measurement in a fresh interpreter; raises RuntimeError on any failure."""
    spec = {"module": workload.module, "runtime": entry.runtime, "params": params}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.worker", json.dumps(spec)],
            cwd=ROOT,
            env=WORKER_ENV,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"timed out after {timeout:g} s") from e
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise RuntimeError(tail[0])
    result: Result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = workload.expected(params)
    if result["counts"] != expected:
        raise RuntimeError(f"did different work: {result['counts']} != expected {expected}")
    return result


def plan(
    workloads: list[Workload], available: set[str], quick: bool
) -> list[tuple[Workload, list[Outcome]]]:
    out = []
    for w in workloads:
        base = w.quick if quick else w.full
        outcomes = [
            Outcome(w, e, {**base, **e.params}) for e in w.entries if e.runtime in available
        ]
        out.append((w, outcomes))
    return out


def execute(
    planned: list[tuple[Workload, list[Outcome]]], reps: int, timeout: float, log: Any = print
) -> None:
    total = reps * sum(len(o) for _, o in planned)
    done = 0
    started = time.monotonic()
    for rep in range(reps):
        for w, outcomes in planned:
            if not outcomes:
                continue
            shift = rep % len(outcomes)
            for o in outcomes[shift:] + outcomes[:shift]:
                done += 1
                try:
                    r = run_one(w, o.entry, o.params, timeout)
                    fig = w.figure(r, o.params)
                    o.results.append(r)
                    o.figures.append(fig)
                    shown = f"{fig:,.1f} {w.unit}"
                except (RuntimeError, KeyError, ValueError) as e:
                    o.errors.append(str(e))
                    shown = f"ERROR: {e}"
                elapsed = time.monotonic() - started
                log(
                    f"[{done}/{total} {elapsed:5.0f}s] rep {rep + 1}/{reps}"
                    f"  {w.key:<15} {o.entry.label:<24} {shown}"
                )


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "crates", "python"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + (" (with uncommitted changes to crates/ or python/)" if dirty else "")
    except OSError:
        return "unknown"


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": str(len(os.sched_getaffinity(0))),
        "memory": mem,
        "kernel": os.uname().release,
    }

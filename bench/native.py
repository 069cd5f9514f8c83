"""Workload 7 (native side): the kernel's Criterion benchmarks, run with ``--native``.

Runs ``cargo bench -p tiffany-scheduler --bench native`` and reads the
estimates it prints (the middle of Criterion's confidence interval): the time
per iteration and, where the benchmark declares a throughput in elements, the
time per element (per yield, per spawned task, per sleeping task, per join; see
``crates/scheduler/benches/native.rs``).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

COMMAND = ["cargo", "bench", "-p", "tiffany-scheduler", "--bench", "native"]

_TIME = re.compile(r"time:\s+\[\S+ \S+ (?P<value>[\d.]+) (?P<unit>\S+) \S+ \S+\]")
_THRPT = re.compile(r"thrpt:\s+\[\S+ \S+ (?P<value>[\d.]+) (?P<unit>\S+) \S+ \S+\]")
_TO_NS = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
_ELEMS = {"elem/s": 1.0, "Kelem/s": 1e3, "Melem/s": 1e6, "Gelem/s": 1e9}


@dataclass
class Estimate:
    per_iteration_ns: float
    per_element_ns: float | None = None


def parse(output: str) -> dict[str, Estimate]:
    """{benchmark id: estimates} from Criterion's console output."""
    out: dict[str, Estimate] = {}
    name = ""
    for line in output.splitlines():
        t = _TIME.search(line)
        if t is not None:
            before = line[: t.start()].strip()
            if before:
                name = before
            out[name] = Estimate(float(t["value"]) * _TO_NS[t["unit"]])
            continue
        th = _THRPT.search(line)
        if th is not None and name in out and th["unit"] in _ELEMS:
            out[name].per_element_ns = 1e9 / (float(th["value"]) * _ELEMS[th["unit"]])
            continue
        if line and not line[0].isspace() and "/" in line and " " not in line.strip():
            name = line.strip()
    return out


def run(root: Path, log_path: Path) -> dict[str, Estimate]:
    proc = subprocess.run(COMMAND, cwd=root, capture_output=True, text=True)
    log_path.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"cargo bench failed (exit {proc.returncode}); see {log_path}")
    return parse(proc.stdout)

"""The tiffanyd benchmark (``python -m bench.daemon``), and its section of the book.

``just bench-daemon`` builds a release ``tiffanyd`` and the benchmark
(``bench/daemon/daemon_bench.rs``, the ``daemon_bench`` example of
``crates/daemon``), then runs this driver, which runs the benchmark, checks its
numbers against the targets of service mode (16 clients at least 3x the raw
``fdatasync`` rate; replay of 1,000,000 records in at most 3 s), and writes the
"Service mode" section of docs/mdbook/src/benchmarks.md between its markers
(``just bench``, which regenerates the rest of the page, keeps that section).
Options after ``--`` go to the benchmark (``--seconds``, ``--dir``,
``--records``, ``--replays``); ``--no-page`` prints without writing the page.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.harness import ROOT, git_commit, loadavg, machine
from bench.report import table

PAGE = ROOT / "docs/mdbook/src/benchmarks.md"
BINARY = ROOT / "target/release/examples/daemon_bench"
START = "<!-- service-mode:start (written by `just bench-daemon`) -->"
END = "<!-- service-mode:end -->"

#: Submissions per second with 16 clients, as a multiple of raw fdatasyncs per second.
GROUP_COMMIT_TARGET = 3.0
#: Seconds to replay 1,000,000 records.
REPLAY_TARGET = 3.0


def met(ok: bool) -> str:
    """How a target fared, for the page."""
    return "met" if ok else "**not met**"


def section(result: dict[str, Any], command: str) -> str:
    """The page's "Service mode" section for one run's ``result``, markers included."""
    m = machine()
    raw = result["raw_fdatasync_per_second"]
    rows = [
        [
            f"{s['clients']}",
            f"{s['per_second']:,.0f}",
            f"{s['x_raw_fdatasync']:.1f}x",
            f"{s['p50_us']:,.0f}",
            f"{s['p99_us']:,.0f}",
            f"{s['p999_us']:,.0f}",
        ]
        for s in result["submit"]
    ]
    submit = table(
        ["clients", "submits/s", "vs raw fdatasync", "p50 µs", "p99 µs", "p99.9 µs"],
        rows,
        right={1, 2, 3, 4, 5},
    )
    rp = result["replay"]
    sixteen = next(s for s in result["submit"] if s["clients"] == 16)
    replay_ok = rp["records"] < 1_000_000 or rp["min_seconds"] <= REPLAY_TARGET
    info = table(
        ["", ""],
        [
            ["date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")],
            ["command", f"`{command}`"],
            ["machine", f"{m['cpu']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']}"],
            ["load average (1, 5, 15 min)", loadavg()],
            ["tiffany", f"commit {git_commit()}, release build"],
        ],
        right=set(),
    )
    seconds = ", ".join(f"{s:.2f}" for s in rp["seconds"])
    return f"""{START}
## Service mode (tiffanyd)

`just bench-daemon` (`bench/daemon/`): a release `tiffanyd` on a Unix socket,
with every submission durable (`fdatasync`) before it is acknowledged. One job
holds the only running slot, so every submission stays queued and the figure is
the submit path alone. The disk's raw rate, one 128-byte write and one
`fdatasync` at a time, is measured in the same run: **{raw:,.0f} fdatasyncs/s**.

{info}

{submit}

Group commit (16 clients share each sync): **{sixteen["x_raw_fdatasync"]:.1f}x**
the raw fdatasync rate, target ≥ {GROUP_COMMIT_TARGET:.0f}x:
{met(sixteen["x_raw_fdatasync"] >= GROUP_COMMIT_TARGET)}.

Replay of a {rp["records"]:,}-record job log ({rp["bytes"] / 1e6:.0f} MB; a
submission and an end per job) into the job table, {len(rp["seconds"])} times:
min **{rp["min_seconds"]:.2f} s**, median {rp["median_seconds"]:.2f} s (all: {seconds});
the log's own read and checks alone: {rp["log_read_seconds"]:.2f} s. Target ≤
{REPLAY_TARGET:.0f} s: {met(replay_ok)}. Decoding the bodies alone, on one
thread: {rp["decode_seconds"]:.2f} s as replay does it (a plain struct), against
{rp["decode_tagged_seconds"]:.2f} s through serde's internally tagged enum (ADR 9).
{END}
"""


def write_section(text: str, page: Path = PAGE) -> None:
    """Puts ``text`` in ``page`` in place of the old section, or at the end."""
    old = page.read_text() if page.exists() else "# Benchmarks\n"
    if START in old and END in old:
        head, rest = old.split(START, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    page.write_text(new)


def kept_section(page: Path = PAGE) -> str:
    """The section as ``page`` has it now (markers included), or ``""``."""
    if not page.exists():
        return ""
    text = page.read_text()
    if START not in text or END not in text:
        return ""
    return START + text.split(START, 1)[1].split(END, 1)[0] + END + "\n"


def main(argv: list[str]) -> int:
    write = "--no-page" not in argv
    args = [a for a in argv if a != "--no-page"]
    if not BINARY.exists():
        print(f"{BINARY} is missing: run `just bench-daemon`", file=sys.stderr)
        return 2
    proc = subprocess.run(
        [str(BINARY), *args, "--json"], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False
    )
    lines = proc.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(line)
    if proc.returncode != 0 or not lines:
        print(f"the benchmark failed (exit {proc.returncode})", file=sys.stderr)
        return 1
    result = json.loads(lines[-1])
    if write:
        command = " ".join(["just bench-daemon", *args])
        write_section(section(result, command))
        print(f"wrote the Service mode section of {PAGE.relative_to(ROOT)}")
    return 0

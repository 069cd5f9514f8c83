"""The wall-clock mode of the A/B benchmark (``python -m bench.ab --wall``).

End to end, both sides point at this environment's own tiffany
(``--installed``: no build), with tiny sizes, one repetition per process.
Only the table's shape, its arithmetic and the alternation are asserted,
never a timing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.wall import WALL_PROGRAMS, Side, WallProgram, run_wall, side_env, verdict, wall_table

ROOT = Path(__file__).resolve().parents[2]
NUMBER = re.compile(r"^[\d,]+\.\d+$")


def ab(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bench.ab ARGS`` from the repository's root, bounded."""
    return subprocess.run(
        [sys.executable, "-m", "bench.ab", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )


def table(stdout: str) -> tuple[list[str], list[list[str]]]:
    """The Markdown table in the output: its headers and its rows' cells."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    headers, _, *rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return headers, rows


def number(cell: str) -> float:
    assert NUMBER.match(cell), cell
    return float(cell.replace(",", ""))


def test_every_wall_program_runs_on_both_sides() -> None:
    proc = ab("--wall", "--installed", "-n", "200", "--procs", "1", "--inner", "1")
    assert proc.returncode == 0, proc.stderr
    headers, rows = table(proc.stdout)
    assert headers == [
        "program",
        "A min",
        "A median",
        "B min",
        "B median",
        "B/A medians",
        "B/A mins",
        "spread A",
        "spread B",
        "verdict",
    ]
    assert [r[0] for r in rows] == list(WALL_PROGRAMS)
    for row in rows:
        a_min, a_med, b_min, b_med, by_med, by_min, spread_a, spread_b = map(number, row[1:9])
        assert a_min > 0 and b_min > 0
        # One process per side: its figure is both the min and the median.
        assert (a_min, b_min) == (a_med, b_med)
        assert by_med == pytest.approx(b_med / a_med, abs=0.002)
        assert by_min == pytest.approx(b_min / a_min, abs=0.002)
        assert spread_a == spread_b == 1.0
        assert row[9] == "one process per side: no spread to judge by"
    # Every process of every program: A's and B's, one each.
    assert proc.stderr.count(" [A] 1/1: ") == proc.stderr.count(" [B] 1/1: ") == len(rows)


def test_sides_alternate_with_a_peer_and_rows_judge_the_spread() -> None:
    proc = ab(
        "--wall",
        "--installed",
        *("-n", "100", "--procs", "2", "--inner", "1"),
        *("--only", "100 tasks", "--peer", "uvloop"),
    )
    assert proc.returncode == 0, proc.stderr
    headers, rows = table(proc.stdout)
    assert headers[9:] == ["uvloop median", "B/uvloop medians", "verdict"]
    names = [name for name in WALL_PROGRAMS if "100 tasks" in name]
    assert [r[0] for r in rows] == names and len(names) == 2
    on_loop, on_scheduler = rows
    assert number(on_loop[10]) == pytest.approx(number(on_loop[4]) / number(on_loop[9]), abs=0.002)
    # The peer runs only the asyncio programs.
    assert on_scheduler[9:11] == ["n/a", "n/a"]
    for row in rows:
        assert re.fullmatch(
            r"no difference \(change [+-]\d+\.\d%, spread up to \d+\.\d%\)"
            r"|B (slower|faster) by \d+\.\d% \(spread up to \d+\.\d%\)",
            row[11],
        ), row[11]
    # The order rotates each round: A B uvloop, then B uvloop A (the asyncio
    # program); A B, then B A (the program on tiffany.Scheduler).
    order = re.findall(r"\[(\w+)\] (\d)/2", proc.stderr)
    assert order == [
        *[("A", "1"), ("B", "1"), ("uvloop", "1"), ("B", "2"), ("uvloop", "2"), ("A", "2")],
        *[("A", "1"), ("B", "1"), ("B", "2"), ("A", "2")],
    ]


def test_verdict_compares_the_change_with_the_spread() -> None:
    assert verdict([100.0, 104.0, 102.0], [120.0, 118.0, 125.0], "new") == (
        "new slower by 17.6% (spread up to 5.9%)"
    )
    assert verdict([100.0, 104.0, 102.0], [80.0, 82.0, 81.0], "new") == (
        "new faster by 20.6% (spread up to 4.0%)"
    )
    # A 10% change inside a 30% spread is no finding.
    assert verdict([100.0, 130.0, 110.0], [120.0, 121.0, 122.0], "new") == (
        "no difference (change +10.0%, spread up to 30.0%)"
    )
    assert verdict([100.0], [150.0], "new") == "one process per side: no spread to judge by"


def test_a_failing_or_hanging_program_is_reported_in_its_row() -> None:
    sides = [Side("A", side_env(None)), Side("B", side_env(None))]
    fails = {"fails": WallProgram(1, "raise SystemExit('no such API')", on_loop=False)}
    hangs = {"hangs": WallProgram(1, "import time\ntime.sleep(60)", on_loop=False)}
    log: list[str] = []
    rows = run_wall(sides, fails, procs=3, inner=1, timeout=60.0, log=log.append)
    rows += run_wall(sides, hangs, procs=3, inner=1, timeout=0.5, log=log.append)
    assert [r.errors for r in rows] == [
        {"A": "no such API", "B": "no such API"},
        {"A": "timed out after 0.5 s", "B": "timed out after 0.5 s"},
    ]
    # A side that failed runs no more processes of that program.
    assert len(log) == 4
    _, _, failed, hung = wall_table(rows, "A", "B", None)
    assert failed.startswith("| fails | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | failed: ")
    assert "A: no such API; B: no such API" in failed
    assert "A: timed out after 0.5 s" in hung


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--wall", "--installed", "--only", "no such program"], "no program's name contains"),
        (["--wall", "--installed", "--procs", "0"], "must be a whole number of at least 1"),
        (["--wall", "--installed", "-n", "many"], "must be a whole number of at least 1"),
        (["--installed"], "--installed needs --wall"),
        (["main", "--peer", "uvloop"], "--peer needs --wall"),
        (["--wall", "--installed", "--timeout", "0"], "must be a number of seconds above 0"),
        (["--wall", "--installed", "main"], "--installed takes no revisions"),
        (["--wall"], "the BASE revision is required"),
        # HEAD after --wall (as `just bench-ab-wall BASE HEAD` puts it) is read as HEAD;
        # --only is checked before anything is built.
        (["main", "--wall", "main", "--only", "no such program"], "no program's name contains"),
    ],
)
def test_bad_arguments_are_refused(args: list[str], message: str) -> None:
    proc = ab(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


def test_instructions_per_op_leave_out_what_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A program's one-time path (a first connection, a lazy import) is not an
    operation's cost: ``per_op`` compares runs of ``n`` and ``2 * n``
    operations, never a run of none, whose early return skips that path."""
    import bench.ab

    start_up, once, each = 1_000_000, 50_000, 7

    def fake_counts(site: Path, program: str, n: int, cache: bool = False) -> list[int]:
        return [start_up + (once if n else 0) + each * n, 3 * n]

    monkeypatch.setattr(bench.ab, "counts", fake_counts)
    assert bench.ab.per_op(Path(), "", 1_000) == [each, 3]


def test_the_clock_calibration_is_left_out_of_a_count() -> None:
    """The real clock's calibration (a ``once_cell`` initialisation whose
    length varies from run to run under valgrind) is one-time work: the
    counts of the largest such initialisation are what a run's totals are
    reduced by, event by event ("." is a zero)."""
    from bench.ab import calibration

    annotated = "\n".join(
        [
            "482,000,000 (100.0%) 9,000 (100.0%)  PROGRAM TOTALS",
            "  9,477,543 ( 1.97%)  6,591 ( 0.06%)  /r/once_cell-1.21.4/src/imp_std.rs:"
            "once_cell::imp::OnceCell<T>::initialize [/s/_native.abi3.so]",
            "  9,473,219 ( 1.97%)  6,320 ( 0.05%)  /r/once_cell-1.21.4/src/imp_std.rs:"
            "once_cell::imp::OnceCell<T>::initialize::{{closure}} [/s/_native.abi3.so]",
            "     41,000 ( 0.01%)      .          /r/once_cell-1.21.4/src/imp_std.rs:"
            "once_cell::imp::OnceCell<T>::initialize [/s/_native.abi3.so]",
            "  3,276,528 ( 0.68%)      4 ( 0.00%)  /r/quanta-0.12.6/src/lib.rs:"
            "quanta::Clock::now [/s/_native.abi3.so]",
        ]
    )
    assert calibration(annotated) == [9_477_543, 6_591]
    assert calibration("482,000,000 (100.0%)  PROGRAM TOTALS") == []


def test_the_cache_table_adds_up_each_measure() -> None:
    """With ``--cache`` each program's line gives instructions, I1 misses and
    D1 misses (read and write misses added) per operation, for both sides."""
    from bench.ab import CACHE_EVENTS, callgrind_header, callgrind_row

    def per_event(**values: float) -> list[float]:
        return [values.get(e, 0.0) for e in CACHE_EVENTS]

    a = per_event(Ir=1_000, I1mr=100, D1mr=30, D1mw=10)
    b = per_event(Ir=1_100, I1mr=150, D1mr=20, D1mw=10)
    headers, _ = table(callgrind_header("old", "new", True) + "\n")
    assert headers == [
        "program",
        "old (instructions)",
        "new (instructions)",
        "change",
        "old (I1 misses)",
        "new (I1 misses)",
        "change",
        "old (D1 misses)",
        "new (D1 misses)",
        "change",
    ]
    row = callgrind_row("p", a, b, True).strip("|").split("|")
    assert [c.strip() for c in row] == [
        "p",
        "1,000",
        "1,100",
        "+10.0%",
        "100",
        "150",
        "+50.0%",
        "40",
        "30",
        "-25.0%",
    ]
    assert "n/a" in callgrind_row("p", None, b, True)
    plain = callgrind_row("p", [1_000.0], [900.0], False).strip("|").split("|")
    assert [c.strip() for c in plain] == ["p", "1,000", "900", "-10.0%"]

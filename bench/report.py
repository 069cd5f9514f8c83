"""Tables: printed on the terminal and written as the book's benchmarks page.

The same Markdown pipe tables serve both: padded, they read well as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.harness import Outcome
from bench.native import Estimate
from bench.runtimes import PEERS
from bench.workloads import NATIVE_ROWS, Workload


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right if right is not None else set(range(1, len(headers)))
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if i in right else "-" * w for i, w in enumerate(widths)]
    return "\n".join([line(headers), "| " + " | ".join(rule) + " |", *map(line, rows)])


def ratio_text(tiffany: float | None, other: float | None, higher_is_better: bool) -> str:
    """How Tiffany compares with ``other``: "2.10× better" or "1.50× worse"."""
    if not tiffany or not other:
        return "—"
    r = tiffany / other if higher_is_better else other / tiffany
    return f"{r:.2f}× better" if r >= 1 else f"{1 / r:.2f}× worse"


@dataclass
class WorkloadReport:
    workload: Workload
    outcomes: list[Outcome]
    #: Runtimes not run: name -> reason (could not be installed or imported, or
    #: left out with --runtimes: those are also in ``skipped``).
    unavailable: dict[str, str]
    quick: bool
    skipped: frozenset[str] = frozenset()

    def by_label(self) -> dict[str, Outcome]:
        return {o.entry.label: o for o in self.outcomes}

    def derived(self) -> tuple[str, float, str] | None:
        w = self.workload
        m = {o.entry.label: o.median for o in self.outcomes if o.median is not None}
        if w.derive is None or not self.outcomes:
            return None
        params = self.outcomes[0].params
        try:
            return w.derive(m, {o.entry.label: o.results for o in self.outcomes}, params)
        except (KeyError, IndexError, ZeroDivisionError):
            # An entry the figure needs was not run (or has no result).
            return None

    def params(self) -> dict[str, Any]:
        return self.workload.quick if self.quick else self.workload.full

    def cell(self, runtime: str) -> str:
        """The summary cell of a peer runtime: its median, or why there is none."""
        w = self.workload
        if runtime in w.not_applicable:
            return f"n/a ({w.not_applicable[runtime]})"
        if runtime in self.unavailable:
            return "not run" if runtime in self.skipped else "unavailable"
        o = self.by_label().get(runtime)
        if o is None:
            return "—"
        if o.median is None:
            return "error"
        return fmt(o.median)

    def best_peer(self) -> tuple[str, float] | None:
        peers = [(o.entry.label, o.median) for o in self.outcomes if o.entry.runtime in PEERS]
        figures = [(name, m) for name, m in peers if m is not None]
        if not figures:
            return None
        pick = max if self.workload.higher_is_better else min
        return pick(figures, key=lambda x: x[1])

    def target(self) -> tuple[str, str]:
        t = self.workload.target
        if t is None:
            return "", ""
        m = {o.entry.label: o.median for o in self.outcomes if o.median is not None}
        d = self.derived()
        if d is not None:
            m[d[0]] = d[1]
        met, detail = t.check(m, self.quick)
        verdict = "not judged" if met is None else ("met" if met else "**not met**")
        return t.text, f"{verdict}: {detail}"


SUMMARY_HEADERS = [
    "#",
    "workload",
    "unit",
    "tiffany",
    *PEERS,
    "best peer",
    "Tiffany vs best peer",
    "target",
    "verdict",
]


def summary_rows(reports: list[WorkloadReport]) -> list[list[str]]:
    rows = []
    for rep in reports:
        w = rep.workload
        title = w.title(rep.params())
        target, verdict = rep.target()
        d = rep.derived()
        if d is not None:
            name, value, unit = d
            rows.append(
                [str(w.number), title, unit, fmt(value), *["n/a"] * len(PEERS), "", "", target]
                + [verdict]
            )
            continue
        by = rep.by_label()
        tiffany = by.get("tiffany")
        best = rep.best_peer()
        rows.append(
            [
                str(w.number),
                title,
                w.unit,
                fmt(tiffany.median) if tiffany else "—",
                *[rep.cell(p) for p in PEERS],
                f"{best[0]} {fmt(best[1])}" if best else "—",
                ratio_text(
                    tiffany.median if tiffany else None,
                    best[1] if best else None,
                    w.higher_is_better,
                ),
                target,
                verdict,
            ]
        )
        for o in rep.outcomes:
            if o.entry.runtime == "tiffany" and o.entry.label != "tiffany":
                rows.append(
                    [str(w.number), f"{title}: {o.entry.label}", w.unit, fmt(o.median)]
                    + ["—"] * len(PEERS)
                    + ["", "", "", ""]
                )
    return rows


def native_summary_rows(native: dict[str, Estimate] | None) -> list[list[str]]:
    """Summary rows for the Criterion figures (workloads 7 and 9)."""
    rows = []
    for r in NATIVE_ROWS:
        found = [native.get(i) for i in r.ids] if native else []
        values = [e.per_element_ns or e.per_iteration_ns for e in found if e is not None]
        if len(values) != len(r.ids):
            figure, verdict = "run with --native", ""
        elif r.check is None:
            figure, verdict = fmt(values[0]), ""
        else:
            value, met, detail = r.check(values)
            figure = f"{value:.2f}×" if r.unit == "speed-up" else fmt(value)
            verdict = f"{'met' if met else '**not met**'}: {detail}"
        rows.append(
            [str(r.number), r.title, r.unit, figure, *["n/a"] * len(PEERS), "", "", r.target]
            + [verdict]
        )
    return rows


def detail_table(rep: WorkloadReport) -> str:
    w = rep.workload
    tiffany = rep.by_label().get("tiffany")
    headers = ["runtime", "how", f"median {w.unit}", "min – max", "runs"]
    headers += [f"{name} ({unit})" for name, unit, _ in w.extras]
    headers += ["Tiffany vs this"]
    rows = []
    for o in rep.outcomes:
        spread = f"{fmt(min(o.figures))} – {fmt(max(o.figures))}" if o.figures else "—"
        runs = f"{len(o.figures)}" + (f" ({len(o.errors)} failed)" if o.errors else "")
        extras = [fmt(o.extra_median(i)) for i in range(len(w.extras))]
        vs = (
            ratio_text(tiffany.median, o.median, w.higher_is_better)
            if tiffany is not None and o is not tiffany and o.entry.runtime != "tiffany"
            else ""
        )
        rows.append([o.entry.label, o.entry.note, fmt(o.median), spread, runs, *extras, vs])
    for runtime, why in w.not_applicable.items():
        rows.append([runtime, f"n/a: {why}", "", "", "", *[""] * len(w.extras), ""])
    for runtime, why in rep.unavailable.items():
        if runtime not in w.not_applicable:
            what = why if runtime in rep.skipped else f"unavailable: {why}"
            rows.append([runtime, what, "", "", "", *[""] * len(w.extras), ""])
    text = table(headers, rows, right={2, 3, 4, *range(5, 5 + len(w.extras))})
    errors = [f"- {o.entry.label}: {e}" for o in rep.outcomes for e in o.errors[:3]]
    d = rep.derived()
    if d is not None:
        text += f"\n\nDerived: **{fmt(d[1])} {d[2]}**."
    if errors:
        text += "\n\nErrors:\n\n" + "\n".join(errors)
    return text


def native_table(native: dict[str, Estimate]) -> str:
    rows = [[name, fmt(e.per_element_ns), fmt(e.per_iteration_ns)] for name, e in native.items()]
    headers = ["Criterion benchmark", "ns per element", "ns per iteration"]
    return table(headers, rows)

"""The registry of workloads: what each measures, at which sizes, on which runtimes.

Each workload family lives in its own module (``switch``, ``spawn``,
``timers``, ``echo``, ``memory``, ``join``) with one function per runtime
family, side by side: ``on_tiffany(params)``, ``on_asyncio(params,
loop_factory)`` (asyncio, uvloop and rloop), ``on_trio(params)`` and
``on_gevent(params)``. Each returns a dict with ``counts`` — the work it did
(steps, tasks, bytes, ...) — which the harness checks against
``Workload.expected(params)`` before using the figure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.runtimes import RUNTIMES

Params = dict[str, Any]
Result = dict[str, Any]
Derive = Callable[[dict[str, float], dict[str, list[Result]], Params], tuple[str, float, str]]


@dataclass(frozen=True)
class Entry:
    """One column of a workload: a runtime, possibly with a variant of the parameters."""

    runtime: str
    label: str
    params: Params = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Target:
    """A performance target for Tiffany, printed next to its figure.

    ``check(medians, quick)`` gets the median figure of every entry label and
    returns (met, detail); met is None when it cannot be judged.
    """

    text: str
    check: Callable[[dict[str, float], bool], tuple[bool | None, str]]


@dataclass(frozen=True)
class Workload:
    key: str
    number: int
    module: str
    full: Params
    quick: Params
    #: The title, given the parameters.
    title: Callable[[Params], str]
    unit: str
    higher_is_better: bool
    #: The figure of one run, given its result and parameters.
    figure: Callable[[Result, Params], float]
    #: The counts every run must report, given the parameters.
    expected: Callable[[Params], dict[str, int]]
    entries: list[Entry]
    #: Runtimes the workload does not apply to, and why.
    not_applicable: dict[str, str] = field(default_factory=dict)
    #: Secondary figures shown in the detailed table: (name, unit, function).
    extras: list[tuple[str, str, Callable[[Result, Params], float]]] = field(default_factory=list)
    target: Target | None = None
    #: A figure derived from the medians of several entries (name, value, unit),
    #: given the medians, every entry's results and the parameters; it is also
    #: passed to the target's check under its name.
    derive: Derive | None = None


def each_runtime(**notes: str) -> list[Entry]:
    return [Entry(r.name, r.name, note=notes.get(r.name, "")) for r in RUNTIMES]


def _ratio(tiffany: float | None, other: float | None, higher_is_better: bool) -> float | None:
    """How many times better Tiffany is than ``other`` (>1: Tiffany is better)."""
    if not tiffany or not other:
        return None
    return tiffany / other if higher_is_better else other / tiffany


def _at_most(limit: float, unit: str, entry: str = "tiffany") -> Callable[..., Any]:
    def check(m: dict[str, float], quick: bool) -> tuple[bool | None, str]:
        v = m.get(entry)
        if v is None:
            return None, "no figure"
        return v <= limit, f"{v:,.0f} {unit}"

    return check


def _switch_check(m: dict[str, float], quick: bool) -> tuple[bool | None, str]:
    v, uv = m.get("tiffany"), m.get("uvloop")
    if v is None:
        return None, "no figure"
    r = _ratio(v, uv, False)
    ok = v <= 200 and (r is None or r >= 8)
    return ok, f"{v:,.0f} ns/step, " + (f"{r:.1f}× uvloop" if r else "uvloop unavailable")


def _timers_check(m: dict[str, float], quick: bool) -> tuple[bool | None, str]:
    v, uv = m.get("tiffany"), m.get("uvloop")
    if v is None or uv is None:
        return None, "no figure"
    return v <= uv / 5, f"{v:,.0f} ms vs uvloop {uv:,.0f} ms ({uv / v:.1f}× less)"


def _virtual_check(m: dict[str, float], quick: bool) -> tuple[bool | None, str]:
    v = m.get("tiffany")
    if v is None:
        return None, "no figure"
    if quick:
        return None, f"{v:.2f} s at the quick size (judged at 1,000,000 only)"
    return v <= 2.0, f"{v:.2f} s"


def _echo_check(m: dict[str, float], quick: bool) -> tuple[bool | None, str]:
    v, uv = m.get("tiffany"), m.get("uvloop")
    if v is None or uv is None:
        return None, "no figure"
    return v >= 1.5 * uv, f"{v / uv:.2f}× uvloop"


def _telemetry_check(m: dict[str, float], quick: bool) -> tuple[bool | None, str]:
    v = m.get("added")
    if v is None:
        return None, "no figure"
    return v <= 30, f"{v:,.0f} ns added per transition"


def _telemetry_derive(
    m: dict[str, float], results: dict[str, list[Result]], p: Params
) -> tuple[str, float, str]:
    """Added ns per transition: (median with − median without) × steps / events.

    The figure judged is the batched subscriber's (``on_events``); the
    per-event subscriber's and the timing metrics' are given beside it.
    """

    def events_of(label: str) -> int:
        counts = sorted(int(r["events"]) for r in results[label])
        return counts[len(counts) // 2]

    steps = p["tasks"] * p["yields"]
    events = events_of("tiffany + on_events")

    def added(label: str, base: str = "tiffany") -> float:
        return float((m[label] - m[base]) * steps / events)

    batched = added("tiffany + on_events")
    per_event = added("tiffany + on_event")
    metrics = (m["tiffany"] - m["tiffany, timing metrics off"]) * steps / events
    return (
        "added",
        batched,
        f"ns per transition with one on_events subscriber ({events:,} events);"
        f" one on_event subscriber: {per_event:,.0f} ns;"
        f" timing metrics (on by default): {metrics:,.0f} ns",
    )


def _switch_figure(r: Result, p: Params) -> float:
    return float(r["seconds"] / (p["tasks"] * p["yields"]) * 1e9)


def _switch_expected(p: Params) -> dict[str, int]:
    return {"tasks": p["tasks"], "steps": p["tasks"] * p["yields"]}


def _echo(key: str, number: int, size: int, target: Target | None) -> Workload:
    return Workload(
        key=key,
        number=number,
        module="bench.workloads.echo",
        full={"clients": 100, "rounds": 1000, "size": size},
        quick={"clients": 50, "rounds": 200, "size": size},
        title=lambda p: (
            f"TCP echo, {p['size']:,} B: {p['clients']} clients × {p['rounds']:,} round trips"
        ),
        unit="round trips/s",
        higher_is_better=True,
        figure=lambda r, p: r["counts"]["round_trips"] / r["seconds"],
        expected=lambda p: {
            "round_trips": p["clients"] * p["rounds"],
            "client_bytes": p["clients"] * p["rounds"] * p["size"],
            "server_bytes": p["clients"] * p["rounds"] * p["size"],
        },
        entries=each_runtime(
            tiffany="sock_* helpers",
            asyncio="streams",
            uvloop="streams",
            rloop="streams",
            trio="SocketStream",
            gevent="gevent.socket",
        ),
        target=target,
    )


Judge = Callable[[dict[str, float], bool, bool], tuple[bool | None, str]]


def _beat_uvloop(factor: float) -> Judge:
    """Tiffany's loop at least ``factor`` times better than uvloop's."""

    def judged(m: dict[str, float], quick: bool, hib: bool) -> tuple[bool | None, str]:
        r = _ratio(m.get("tiffany"), m.get("uvloop"), hib)
        if r is None:
            return None, "no figure for tiffany or uvloop"
        return r >= factor, f"{r:.2f}× uvloop"

    return judged


ASYNCIO_ONLY = "asyncio programs only (runs on asyncio's event loops)"


def _aio(
    key: str,
    number: int,
    kind: str,
    full: Params,
    quick: Params,
    title: Callable[[Params], str],
    unit: str,
    higher_is_better: bool,
    figure: Callable[[Result, Params], float],
    expected: Callable[[Params], dict[str, int]],
    factor: float = 1.0,
) -> Workload:
    """An asyncio workload: the same code on tiffany.new_event_loop and the peers' loops."""
    judged = _beat_uvloop(factor)
    text = "faster than uvloop" if factor == 1.0 else f"≥ {factor:g}× uvloop"
    return Workload(
        key=key,
        number=number,
        module="bench.workloads.aio",
        full={"kind": kind, **full},
        quick={"kind": kind, **quick},
        title=title,
        unit=unit,
        higher_is_better=higher_is_better,
        figure=figure,
        expected=expected,
        entries=[
            Entry("tiffany", "tiffany", note="tiffany.new_event_loop"),
            Entry("asyncio", "asyncio"),
            Entry("uvloop", "uvloop"),
            Entry("rloop", "rloop"),
        ],
        not_applicable={"trio": ASYNCIO_ONLY, "gevent": ASYNCIO_ONLY},
        target=Target(text, lambda m, q: judged(m, q, higher_is_better)),
    )


NO_VIRTUAL_CLOCK = "no virtual clock"


def _lateness_check(m: dict[str, float], quick: bool) -> tuple[bool | None, str]:
    """Median and p99 lateness no worse than asyncio's (under the same load)."""
    v, a, r = m.get("tiffany"), m.get("asyncio"), m.get("p99 vs asyncio")
    if v is None or a is None or r is None:
        return None, "no figure"
    return (v <= a and r <= 1.0), (
        f"median {v:,.0f} µs vs asyncio {a:,.0f} µs; p99 {r:.2f}× asyncio's"
    )


def _lateness_derive(
    m: dict[str, float], results: dict[str, list[Result]], p: Params
) -> tuple[str, float, str]:
    """Tiffany's p99 over asyncio's (each the median over repetitions)."""

    def p99(label: str) -> float:
        vs = sorted(float(r["p99_us"]) for r in results[label])
        return vs[len(vs) // 2]

    t, a = p99("tiffany"), p99("asyncio")
    return "p99 vs asyncio", t / a, f"× (p99: tiffany {t:,.0f} µs, asyncio {a:,.0f} µs)"


WORKLOADS: list[Workload] = [
    Workload(
        key="switch",
        number=1,
        module="bench.workloads.switch",
        full={"tasks": 100_000, "yields": 10},
        quick={"tasks": 20_000, "yields": 10},
        title=lambda p: f"switch: {p['tasks']:,} tasks × {p['yields']} yields (sleep 0)",
        unit="ns/step",
        higher_is_better=False,
        figure=_switch_figure,
        expected=_switch_expected,
        entries=each_runtime(),
        extras=[("total incl. spawn", "s", lambda r, p: r["total_seconds"])],
        target=Target("≤ 200 ns/step and ≥ 8× uvloop", _switch_check),
    ),
    Workload(
        key="spawn",
        number=2,
        module="bench.workloads.spawn",
        full={"tasks": 1_000_000},
        quick={"tasks": 100_000},
        title=lambda p: f"spawn: {p['tasks']:,} trivial tasks, spawned and finished",
        unit="ns/task",
        higher_is_better=False,
        figure=lambda r, p: r["seconds"] / p["tasks"] * 1e9,
        expected=lambda p: {"tasks": p["tasks"]},
        entries=each_runtime(),
        extras=[("peak RSS", "MB", lambda r, p: r["maxrss_kb"] / 1024)],
        target=Target("≤ 400 ns/task", _at_most(400, "ns/task")),
    ),
    Workload(
        key="timers_real",
        number=3,
        module="bench.workloads.timers",
        full={"tasks": 100_000, "max_sleep": 0.5, "seed": 1, "virtual": False},
        quick={"tasks": 20_000, "max_sleep": 0.5, "seed": 1, "virtual": False},
        title=lambda p: (
            f"timers, real clock: {p['tasks']:,} tasks sleeping 0–{p['max_sleep']} s"
            " (wall time beyond the longest sleep)"
        ),
        unit="ms",
        higher_is_better=False,
        figure=lambda r, p: r["overhead"] * 1e3,
        expected=lambda p: {"tasks": p["tasks"]},
        entries=each_runtime(),
        extras=[("wall time", "s", lambda r, p: r["seconds"])],
        target=Target("≤ 1/5 of uvloop's", _timers_check),
    ),
    Workload(
        key="timers_virtual",
        number=4,
        module="bench.workloads.timers",
        full={"tasks": 1_000_000, "max_sleep": 3600.0, "seed": 2, "virtual": True},
        quick={"tasks": 100_000, "max_sleep": 3600.0, "seed": 2, "virtual": True},
        title=lambda p: (
            f"timers, virtual clock: {p['tasks']:,} tasks sleeping 0–{p['max_sleep'] / 3600:g} h"
            " (wall time)"
        ),
        unit="s",
        higher_is_better=False,
        figure=lambda r, p: r["seconds"],
        expected=lambda p: {"tasks": p["tasks"]},
        entries=[
            Entry("tiffany", "tiffany", note='Scheduler(clock="virtual")'),
            Entry("trio", "trio", note="MockClock(autojump_threshold=0)"),
        ],
        not_applicable={
            "asyncio": NO_VIRTUAL_CLOCK,
            "uvloop": NO_VIRTUAL_CLOCK,
            "rloop": NO_VIRTUAL_CLOCK,
            "gevent": NO_VIRTUAL_CLOCK,
        },
        target=Target("1,000,000 sleepers ≤ 2 s", _virtual_check),
    ),
    _echo("echo_100", 5, 100, Target("≥ 1.5× uvloop", _echo_check)),
    _echo("echo_10k", 5, 10_000, None),
    Workload(
        key="memory",
        number=6,
        module="bench.workloads.memory",
        full={"tasks": 100_000},
        quick={"tasks": 20_000},
        title=lambda p: f"memory: {p['tasks']:,} idle tasks (RSS growth per task)",
        unit="B/task",
        higher_is_better=False,
        figure=lambda r, p: r["rss_delta"] / p["tasks"],
        expected=lambda p: {"blocked": p["tasks"], "released": p["tasks"]},
        entries=each_runtime(
            tiffany="tiffany.Event",
            asyncio="asyncio.Event",
            uvloop="asyncio.Event",
            rloop="asyncio.Event",
            trio="trio.Event",
            gevent="gevent.event.Event",
        ),
        target=Target("≤ 600 B/idle task", _at_most(600, "B/task")),
    ),
    Workload(
        key="join",
        number=7,
        module="bench.workloads.join",
        full={"joins": 100_000, "child": "python"},
        quick={"joins": 20_000, "child": "python"},
        title=lambda p: f"join a child: {p['joins']:,} × (spawn a child that sleeps 0, join it)",
        unit="ns/join",
        higher_is_better=False,
        figure=lambda r, p: r["seconds"] / p["joins"] * 1e9,
        expected=lambda p: {"joins": p["joins"]},
        entries=[
            Entry(
                "tiffany",
                "tiffany (native child)",
                {"child": "native"},
                "tiffany.testing.spawn_native_sleep(sched, 0, 1)",
            ),
            Entry("tiffany", "tiffany", note="Python child"),
            *each_runtime(trio="a nursery per child")[1:],
        ],
    ),
    Workload(
        key="telemetry",
        number=8,
        module="bench.workloads.switch",
        full={"tasks": 100_000, "yields": 10},
        quick={"tasks": 20_000, "yields": 10},
        title=lambda p: (
            f"telemetry: switch ({p['tasks']:,} × {p['yields']}) with one event subscriber,"
            " and with the timing metrics off (whole run, spawn included)"
        ),
        unit="ns/step",
        higher_is_better=False,
        figure=lambda r, p: r["total_seconds"] / (p["tasks"] * p["yields"]) * 1e9,
        expected=_switch_expected,
        entries=[
            Entry("tiffany", "tiffany", note="no subscriber, timing metrics on (the default)"),
            Entry(
                "tiffany",
                "tiffany, timing metrics off",
                {"timing_metrics": False},
                "Scheduler(timing_metrics=False)",
            ),
            Entry(
                "tiffany",
                "tiffany + on_event",
                {"subscriber": "on_event"},
                "sched.on_event(lambda e: None)",
            ),
            Entry(
                "tiffany",
                "tiffany + on_events",
                {"subscriber": "on_events"},
                "sched.on_events(lambda batch: None)",
            ),
        ],
        derive=_telemetry_derive,
        target=Target("≤ 30 ns added per transition", _telemetry_check),
    ),
    Workload(
        key="lateness",
        number=10,
        module="bench.workloads.lateness",
        full={"wakes": 300, "sleep": 0.01, "busy": 2},
        quick={"wakes": 60, "sleep": 0.01, "busy": 2},
        title=lambda p: (
            f"wake-up lateness under load: a task sleeping {p['sleep'] * 1e3:g} ms"
            f" × {p['wakes']} beside {p['busy']} busy tasks yielding (tiffany: priority 1"
            " vs 200)"
        ),
        unit="µs (median)",
        higher_is_better=False,
        figure=lambda r, p: r["median_us"],
        expected=lambda p: {"wakes": p["wakes"]},
        entries=[
            Entry("tiffany", "tiffany", note="priority 1 sleeper, priority 200 busy tasks"),
            *(
                e
                for e in each_runtime(
                    asyncio="no priorities", uvloop="no priorities", rloop="no priorities"
                )
                if e.runtime in ("asyncio", "uvloop", "rloop")
            ),
        ],
        not_applicable={
            "trio": "not measured (no priorities either; asyncio stands for them)",
            "gevent": "not measured",
        },
        extras=[("p99", "µs", lambda r, p: r["p99_us"])],
        derive=_lateness_derive,
        target=Target("median and p99 no worse than asyncio's", _lateness_check),
    ),
    _aio(
        "aio_call_soon",
        11,
        "call_soon",
        {"callbacks": 1_000_000},
        {"callbacks": 200_000},
        lambda p: f"asyncio call_soon: {p['callbacks']:,} callbacks",
        "ns/callback",
        False,
        lambda r, p: r["seconds"] / p["callbacks"] * 1e9,
        lambda p: {"callbacks": p["callbacks"]},
    ),
    _aio(
        "aio_call_later",
        12,
        "call_later",
        {"timers": 100_000},
        {"timers": 20_000},
        lambda p: f"asyncio call_later: {p['timers']:,} timers over 10 ms (time beyond 10 ms)",
        "ns/timer",
        False,
        lambda r, p: r["seconds"] / p["timers"] * 1e9,
        lambda p: {"timers": p["timers"]},
    ),
    _aio(
        "aio_switch",
        13,
        "switch",
        {"tasks": 100_000, "yields": 10},
        {"tasks": 20_000, "yields": 10},
        lambda p: f"asyncio switch: {p['tasks']:,} tasks × {p['yields']} asyncio.sleep(0)",
        "ns/step",
        False,
        _switch_figure,
        _switch_expected,
    ),
    _aio(
        "aio_echo_streams",
        14,
        "echo_streams",
        {"clients": 100, "rounds": 1000, "size": 100},
        {"clients": 50, "rounds": 200, "size": 100},
        lambda p: (
            f"asyncio TCP echo, streams, {p['size']} B: {p['clients']} clients"
            f" × {p['rounds']:,} round trips"
        ),
        "round trips/s",
        True,
        lambda r, p: r["counts"]["round_trips"] / r["seconds"],
        lambda p: {
            "round_trips": p["clients"] * p["rounds"],
            "client_bytes": p["clients"] * p["rounds"] * p["size"],
            "server_bytes": p["clients"] * p["rounds"] * p["size"],
        },
    ),
    _aio(
        "aio_echo_protocol",
        15,
        "echo_protocol",
        {"clients": 100, "rounds": 1000, "size": 100},
        {"clients": 50, "rounds": 200, "size": 100},
        lambda p: (
            f"asyncio TCP echo, Protocol, {p['size']} B: {p['clients']} clients"
            f" × {p['rounds']:,} round trips"
        ),
        "round trips/s",
        True,
        lambda r, p: r["counts"]["round_trips"] / r["seconds"],
        lambda p: {
            "round_trips": p["clients"] * p["rounds"],
            "client_bytes": p["clients"] * p["rounds"] * p["size"],
            "server_bytes": p["clients"] * p["rounds"] * p["size"],
        },
        factor=1.5,
    ),
    _aio(
        "aio_http",
        16,
        "http",
        {"requests": 10_000, "concurrency": 50},
        {"requests": 2_000, "concurrency": 50},
        lambda p: (
            f"HTTP: aiohttp server, httpx client, {p['requests']:,} requests,"
            f" {p['concurrency']} at a time"
        ),
        "requests/s",
        True,
        lambda r, p: r["counts"]["requests"] / r["seconds"],
        lambda p: {"requests": p["requests"]},
    ),
    _aio(
        "aio_gather",
        17,
        "gather",
        {"tasks": 100_000},
        {"tasks": 20_000},
        lambda p: f"asyncio.gather of {p['tasks']:,} trivial tasks",
        "ns/task",
        False,
        lambda r, p: r["seconds"] / p["tasks"] * 1e9,
        lambda p: {"tasks": p["tasks"]},
        factor=3.0,
    ),
]

BY_KEY = {w.key: w for w in WORKLOADS}

#: Summary rows drawn from the Criterion run (``--native``): (workload number,
#: title, Criterion id(s), unit, target text, check). A check gets the
#: estimates (ns) of the ids, in order, and returns (figure, met, detail).
NativeCheck = Callable[[list[float]], tuple[float, bool, str]]


@dataclass(frozen=True)
class NativeRow:
    number: int
    title: str
    ids: tuple[str, ...]
    unit: str
    target: str
    check: NativeCheck | None


def _yield_check(ns: list[float]) -> tuple[float, bool, str]:
    return ns[0], ns[0] <= 50, f"{ns[0]:.0f} ns"


def _sharding_check(ns: list[float]) -> tuple[float, bool, str]:
    speedup = ns[0] / ns[1]
    return speedup, speedup >= 1.8, f"{speedup:.2f}× on 2 shards"


NATIVE_ROWS = [
    NativeRow(
        7,
        "native yield round trip: a task yields and is resumed (Criterion one_task, defaults)",
        ("native_yield_round_trip/one_task/real_default",),
        "ns",
        "≤ 50 ns",
        _yield_check,
    ),
    NativeRow(
        7,
        "native yield round trip, no clock reads (virtual clock, per-step accounting)",
        ("native_yield_round_trip/one_task/virtual_per_step_no_timing",),
        "ns",
        "",
        None,
    ),
    NativeRow(
        7,
        "native yield to another task: two tasks taking turns (Criterion ping_pong, defaults)",
        ("native_yield_round_trip/ping_pong/real_default",),
        "ns",
        "",
        None,
    ),
    NativeRow(
        7,
        "native yield to another task, no clock reads (virtual clock, per-step accounting)",
        ("native_yield_round_trip/ping_pong/virtual_per_step_no_timing",),
        "ns",
        "",
        None,
    ),
    NativeRow(
        7,
        "native spawn + finish, batches of 1,000 (Criterion)",
        ("native_spawn/batch_1000_pooled",),
        "ns/task",
        "",
        None,
    ),
    NativeRow(
        9,
        "sharding: 64 CPU-bound native tasks on 1 and on 2 shards (Criterion)",
        ("sharding/64_cpu_bound_tasks/1_shards", "sharding/64_cpu_bound_tasks/2_shards"),
        "speed-up",
        "≥ 1.8× on 2 shards",
        _sharding_check,
    ),
]

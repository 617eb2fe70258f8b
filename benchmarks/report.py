"""Markdown from the measurements: per-broker tables (median and range of every run), then
aiotq against the best peer on each scenario, next to the issue's targets."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

BROKER_TITLES = {"redis": "Redis", "amqp": "RabbitMQ", "sqlite": "SQLite"}
RAW = ("raw-redis", "raw-aiopika")
#: aiotq in a setup other than its defaults: never a peer, and never aiotq's headline.
VARIANTS = ("aiotq-redis-results", "aiotq-uvloop", "aiotq-v2-lazy")


@dataclass(slots=True)
class Cell:
    """Every run of one (broker, scenario, framework): values, or why there are none."""

    runs: list[dict[str, float]] = field(default_factory=list)
    problem: str | None = None

    def median(self, key: str) -> float | None:
        values = [run[key] for run in self.runs if key in run]
        return statistics.median(values) if values else None

    def spread(self, key: str) -> tuple[float, float]:
        values = [run[key] for run in self.runs]
        return min(values), max(values)


Table = dict[tuple[str, str, str], Cell]


def collect(records: Iterable[dict[str, Any]]) -> Table:
    table: Table = defaultdict(Cell)
    for record in records:
        cell = table[(record["broker"], record["scenario"], record["adapter"])]
        if record.get("ok"):
            cell.runs.append(record["values"])
        elif not cell.runs:
            problem = record.get("na") and f"n/a ({record['na']})"
            cell.problem = problem or f"failed ({record.get('error', '?')})"
    return table


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def rate_cell(cell: Cell | None, key: str = "rate") -> str:
    if cell is None:
        return "—"
    median = cell.median(key)
    if median is None:
        return cell.problem or "—"
    low, high = cell.spread(key)
    return _num(median) if low == high else f"{_num(median)} ({_num(low)}-{_num(high)})"


def latency_cell(cell: Cell | None) -> str:
    if cell is None:
        return "—"
    if cell.median("p50") is None:
        return cell.problem or "—"
    parts = " / ".join(_num(cell.median(q) or 0) for q in ("p50", "p90", "p99"))
    samples = cell.median("samples") or 0
    low, high = cell.spread("p50")
    note = f" (p50 {_num(low)}-{_num(high)})" if len(cell.runs) > 1 else ""
    return f"{parts}{note}" + (f" [{samples:.0f} calls]" if samples < 450 else "")


def _rows(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def broker_section(table: Table, broker: str, adapters: Sequence[str],
                   pools: dict[str, str]) -> list[str]:
    present = [a for a in adapters if any(key[0] == broker and key[2] == a for key in table)]
    if not present:
        return []

    def get(scenario: str, adapter: str) -> Cell | None:
        return table.get((broker, scenario, adapter))

    out = [f"## {BROKER_TITLES[broker]}", "",
           "Throughput, tasks/s: median (min-max) of every run.", ""]
    out += _rows(["framework", "worker", "A delay() x100 gathered", "A batch API",
                  "A producer reuse", "B1 drain", "B2 drain + results"],
                 ([a, pools.get(a, ""), rate_cell(get("A:delay", a)),
                   rate_cell(get("A:batch", a)), rate_cell(get("A:producer", a)),
                   rate_cell(get("B1", a)), rate_cell(get("B2", a))] for a in present))
    out += ["", "Round trip, ms: p50 / p90 / p99 (medians over runs).", ""]
    out += _rows(["framework", "C defaults", "C polling tuned to 1 ms"],
                 ([a, latency_cell(get("C", a)), latency_cell(get("C-tuned", a))]
                  for a in present))
    if any(get("D", a) for a in present):
        out += ["", "D: a worker holding far ETAs (RSS in MB; due tasks drained meanwhile).",
                ""]
        out += _rows(["framework", "RSS idle", "RSS holding", "Δ RSS", "due drain, tasks/s"],
                     (_d_cells(a, get("D", a)) for a in present if get("D", a)))
    return [*out, ""]


def _d_cells(adapter: str, cell: Cell | None) -> list[str]:
    if cell is None or not cell.runs:
        return [adapter, rate_cell(cell), "", "", ""]
    return [adapter, *(rate_cell(cell, key) for key in ("idle_mb", "held_mb", "delta_mb")),
            rate_cell(cell)]


@dataclass(frozen=True, slots=True)
class Target:
    broker: str
    scenario: str
    label: str
    #: aiotq's value and the best peer's: (name, value); None when unmeasured.
    pick: Callable[[Table, str], tuple[float | None, tuple[str, float] | None]]
    goal: str
    met: Callable[[float, float | None], bool]


def _best(table: Table, broker: str, scenarios: Sequence[str], key: str, higher: bool,
          ours_name: str = "aiotq") -> tuple[float | None, tuple[str, float] | None]:
    """``ours_name``'s best and the best peer's best over ``scenarios`` (e.g. C and
    C-tuned)."""
    ours: list[float] = []
    peers: list[tuple[str, float]] = []
    for (b, scenario, adapter), cell in table.items():
        value = cell.median(key)
        if b != broker or scenario not in scenarios or value is None:
            continue
        if adapter == ours_name:
            ours.append(value)
        elif adapter in RAW or adapter in VARIANTS or adapter == "aiotq":
            continue
        elif broker != "sqlite" or adapter == "huey":
            peers.append((adapter, value))
    choose = max if higher else min
    return (choose(ours) if ours else None,
            choose(peers, key=lambda p: p[1]) if peers else None)


def _throughput(scenarios: Sequence[str],
                ours_name: str = "aiotq") -> Callable[[Table, str], Any]:
    return lambda table, broker: _best(table, broker, scenarios, "rate", True, ours_name)


def _latency(key: str, ours_name: str = "aiotq") -> Callable[[Table, str], Any]:
    return lambda table, broker: _best(table, broker, ("C", "C-tuned"), key, False,
                                       ours_name)


def _at_least(factor: float) -> Callable[[float, float | None], bool]:
    return lambda ours, peer: peer is not None and ours >= factor * peer


def _at_most(limit: float) -> Callable[[float, float | None], bool]:
    return lambda ours, _peer: ours <= limit


TARGETS = [
    Target("redis", "A", "A delay()", _throughput(["A:delay"]), "≥ 2x best peer",
           _at_least(2)),
    Target("redis", "A", "A best API", _throughput(["A:delay", "A:batch", "A:producer"]),
           "≥ 2x best peer", _at_least(2)),
    Target("redis", "B1", "B1", _throughput(["B1"]), "≥ 3x best peer", _at_least(3)),
    Target("redis", "B2", "B2", _throughput(["B2"]), "≥ 3x best peer", _at_least(3)),
    Target("redis", "C", "C p50", _latency("p50"), "≤ 0.8 ms", _at_most(0.8)),
    Target("redis", "C", "C p99", _latency("p99"), "≤ 2 ms", _at_most(2.0)),
    Target("redis", "C", "C p50 on uvloop (aiotq-uvloop)", _latency("p50", "aiotq-uvloop"),
           "≤ 0.8 ms", _at_most(0.8)),
    Target("redis", "C", "C p99 on uvloop (aiotq-uvloop)", _latency("p99", "aiotq-uvloop"),
           "≤ 2 ms", _at_most(2.0)),
    Target("amqp", "A", "A delay() (confirms)", _throughput(["A:delay"]), "≥ 1x best peer",
           _at_least(1)),
    Target("amqp", "A", "A delay() (confirms) on version 2 lazy queues (aiotq-v2-lazy)",
           _throughput(["A:delay"], "aiotq-v2-lazy"), "≥ 1x best peer", _at_least(1)),
    Target("amqp", "B1", "B1", _throughput(["B1"]), "≥ 2x best peer", _at_least(2)),
    Target("amqp", "B2", "B2", _throughput(["B2"]), "≥ 2x best peer", _at_least(2)),
    Target("amqp", "C", "C p50", _latency("p50"), "≤ 1.0 ms", _at_most(1.0)),
    Target("amqp", "C", "C p50, results in Redis as dramatiq's (aiotq-redis-results)",
           _latency("p50", "aiotq-redis-results"), "≤ 1.0 ms", _at_most(1.0)),
    Target("amqp", "C", "C p50 on version 2 lazy queues (aiotq-v2-lazy)",
           _latency("p50", "aiotq-v2-lazy"), "≤ 1.0 ms", _at_most(1.0)),
    Target("amqp", "C", "C p50 on uvloop (aiotq-uvloop)", _latency("p50", "aiotq-uvloop"),
           "≤ 1.0 ms", _at_most(1.0)),
    Target("sqlite", "A", "A delay()", _throughput(["A:delay"]), "≥ 2x huey", _at_least(2)),
    Target("sqlite", "B1", "B1", _throughput(["B1"]), "≥ 2x huey", _at_least(2)),
]


def _d_row(table: Table) -> list[str] | None:
    cell = table.get(("redis", "D", "aiotq"))
    delta = cell.median("delta_mb") if cell else None
    if delta is None:
        return None
    return ["Redis", "D Δ RSS, 100k far ETAs (MB)", _num(delta), "—", "—", "≤ 50 MB",
            "yes" if delta <= 50 else "**no**"]


def targets_section(table: Table) -> list[str]:
    rows = []
    for target in TARGETS:
        ours, peer = target.pick(table, target.broker)
        if ours is None:
            continue
        ratio = ""
        if peer is not None and peer[1]:
            higher = target.scenario in ("A", "B1", "B2")
            ratio = f"{ours / peer[1]:.2f}x" if higher else f"{peer[1] / ours:.2f}x"
        rows.append([BROKER_TITLES[target.broker], target.label, _num(ours),
                     f"{peer[0]} {_num(peer[1])}" if peer else "—", ratio, target.goal,
                     "yes" if target.met(ours, peer[1] if peer else None) else "**no**"])
    d_row = _d_row(table)
    if d_row:
        rows.append(d_row)
    return ["## aiotq against the best peer", "",
            "Medians; raw clients are not peers. Throughput in tasks/s, latency in ms "
            "(the peer's better of defaults and 1 ms polling). A ratio above 1 means aiotq "
            "is ahead (more tasks/s, or less latency).", "",
            *_rows(["broker", "scenario", "aiotq", "best peer", "ratio", "target", "met"],
                   rows), ""]


def render(records: Sequence[dict[str, Any]], adapters: Sequence[str],
           pools: dict[str, str], header: Sequence[str]) -> str:
    table = collect(records)
    out = list(header)
    for broker in BROKER_TITLES:
        out += broker_section(table, broker, adapters, pools)
    out += targets_section(table)
    return "\n".join(out)

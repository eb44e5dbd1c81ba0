"""The harness's pure parts: percentiles, figures, targets and the results document.

Nothing here touches a database, a broker or the clock, so ``make test`` covers it without
running the benchmark.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation between closest ranks, the
    method numpy calls ``linear``. Refuses an empty sample rather than inventing a figure."""
    if not samples:
        raise ValueError("no samples")
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"a percentile is between 0 and 100, not {p}")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def percentiles(samples: Sequence[float],
                ps: Iterable[float] = PERCENTILES) -> dict[str, float]:
    """``{"p50": …, "p90": …, "p99": …, "p999": …}``; the key drops the decimal point."""
    ordered = sorted(samples)
    return {percentile_name(p): percentile(ordered, p) for p in ps}


def percentile_name(p: float) -> str:
    text = f"{p:g}".replace(".", "")
    return f"p{text}"


def rate(count: int, seconds: float) -> float:
    """Per second; 0 when nothing was timed (a stage that could not run)."""
    return count / seconds if seconds > 0 else 0.0


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
}


@dataclass(frozen=True)
class Target:
    """What a figure must reach: on its ``value`` or on its ``ratio`` to the baseline."""

    on: str  # "value" or "ratio"
    op: str  # one of _OPS
    limit: float

    def __post_init__(self) -> None:
        if self.on not in ("value", "ratio") or self.op not in _OPS:
            raise ValueError(f"bad target {self.on} {self.op} {self.limit}")

    def met(self, figure: Figure) -> bool:
        actual = figure.value if self.on == "value" else figure.ratio
        if actual is None or not math.isfinite(actual):
            return False
        return _OPS[self.op](actual, self.limit)

    def __str__(self) -> str:
        return f"{self.on} {self.op} {self.limit:g}"


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline: float | None = None

    @property
    def ratio(self) -> float | None:
        """value / baseline; None without a baseline, or when the baseline is 0."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "unit": self.unit, "baseline": self.baseline,
                "ratio": self.ratio}


# The targets. Figures not listed here are reported without a verdict.
TARGETS: dict[str, tuple[Target, ...]] = {
    "give_throughput": (Target("ratio", ">=", 0.6),),
    "give_p99_ms": (Target("value", "<=", 50.0),),
    "give_end_lag_s": (Target("value", "<", 1.0),),
    "e2e_p99_ms": (Target("value", "<=", 25.0),),
    "ingest_throughput": (Target("ratio", ">=", 0.25),),
    "replay_throughput": (Target("ratio", ">=", 0.5),),
    "replay_peak_rss_mb": (Target("value", "<=", 300.0), Target("ratio", "<=", 1.2)),
    "relay_throughput": (Target("ratio", ">=", 0.5),),
}

REQUIRED = ("give_throughput", "give_p99_ms", "e2e_p99_ms", "ingest_throughput",
            "replay_throughput", "replay_peak_rss_mb", "relay_throughput")


@dataclass(frozen=True)
class Verdict:
    figure: Figure
    targets: tuple[Target, ...]
    missed: tuple[Target, ...]

    @property
    def passed(self) -> bool | None:
        """True or False against the targets; None when the figure has none."""
        if not self.targets:
            return None
        return not self.missed


def judge(figure: Figure,
          targets: Mapping[str, tuple[Target, ...]] = TARGETS) -> Verdict:
    wanted = targets.get(figure.name, ())
    return Verdict(figure, wanted, tuple(t for t in wanted if not t.met(figure)))


def missing_required(figures: Iterable[Figure]) -> list[str]:
    """Required names that no figure carries (a stage skipped or failed)."""
    have = {f.name for f in figures}
    return [name for name in REQUIRED if name not in have]


def results_document(machine: Mapping[str, Any], figures: Iterable[Figure]) -> dict[str, Any]:
    """``{"machine": {...}, "figures": {NAME: {"value", "unit", "baseline", "ratio"}}}``."""
    out: dict[str, Any] = {"machine": dict(machine), "figures": {}}
    for figure in figures:
        if not math.isfinite(figure.value):
            raise ValueError(f"{figure.name} is not a finite number: {figure.value}")
        out["figures"][figure.name] = figure.as_json()
    return out


def seconds_of_work(lag_events: int, events_per_second: float) -> float:
    """A backlog of ``lag_events`` expressed as the time it takes at ``events_per_second``."""
    if lag_events <= 0:
        return 0.0
    if events_per_second <= 0:
        return math.inf
    return lag_events / events_per_second

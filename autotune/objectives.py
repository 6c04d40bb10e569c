"""Objectives: which figure of a Measurement a study optimises, and in which direction.

``throughput`` (samples/s, maximise), ``capacity`` (requests/s a config serves under open-loop
traffic with its latency quantile under ``--max-latency-ms``, maximise), ``latency`` (p50 ms; ``latency:p90``, ``latency:p99``, ...
pick the percentile; minimise), ``memory`` (peak RSS MB, minimise), ``gpu-memory`` (peak GPU MB
from NVML, minimise), ``startup`` (session creation plus first inference, seconds, minimise).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from autotune.config import Measurement
from autotune.errors import UsageError
from autotune.fmt import fmt_number

PERCENTILES = ("p50", "p90", "p95", "p99", "mean", "min", "max")
OBJECTIVE_HELP = (
    "throughput | capacity | latency[:p50|p90|p95|p99|mean] | memory | gpu-memory | startup"
)


@dataclass(frozen=True)
class Objective:
    name: str  # as the user wrote it, normalised: "latency:p99"
    direction: Literal["maximize", "minimize"]
    unit: str

    @property
    def slug(self) -> str:
        return self.name.replace(":", "-")

    def value(self, m: Measurement) -> float:
        kind, _, stat = self.name.partition(":")
        if kind == "throughput":
            return m.throughput
        if kind == "capacity":
            found = m.open_loop.capacity if m.open_loop is not None else None
            return found or 0.0  # no offered rate met the SLO
        if kind == "latency":
            return float(getattr(m.latency_ms, stat))
        if kind == "memory":
            if m.peak_rss_mb is None:
                raise ValueError("measurement has no peak memory")
            return m.peak_rss_mb
        if kind == "gpu-memory":
            if m.peak_gpu_mb is None:
                raise ValueError("measurement has no GPU memory figure (no NVML, or a CPU run)")
            return m.peak_gpu_mb
        return m.startup_s

    @property
    def pairable(self) -> bool:
        """Measured in paired blocks of warm workers (memory and startup need a process alone)."""
        return self.name.partition(":")[0] in ("throughput", "latency", "capacity")

    @property
    def open_loop(self) -> bool:
        """Measured under open-loop traffic only (a rate search per trial)."""
        return self.name == "capacity"

    def ratio(self, value: float, base: float) -> float:
        """How many times better ``value`` is than ``base`` (> 1 is better, either direction)."""
        if self.direction == "maximize":
            return value / base if base > 0 else float("inf")
        return base / value if value > 0 else float("inf")

    def gain(self, best: Measurement, baseline: Measurement) -> float:
        return self.ratio(self.value(best), self.value(baseline))

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "maximize" else a < b


def pareto_front(points: list[tuple[int, list[float]]], objectives: list[Objective]) -> list[int]:
    """The keys of the points no other point dominates (at least as good everywhere, better
    somewhere), in the order given."""

    def dominates(a: list[float], b: list[float]) -> bool:
        at_least = all(x == y or o.better(x, y) for o, x, y in zip(objectives, a, b, strict=True))
        return at_least and any(o.better(x, y) for o, x, y in zip(objectives, a, b, strict=True))

    return [k for k, v in points if not any(dominates(w, v) for j, w in points if j != k)]


def parse_objectives(texts: Sequence[str] | str) -> list[Objective]:
    """One or several objectives; several make a multi-objective study (a Pareto front)."""
    items = [texts] if isinstance(texts, str) else list(texts)
    objectives = [parse_objective(t) for part in items for t in part.split(",") if t.strip()]
    if not objectives:
        raise UsageError(f"give at least one --objective: {OBJECTIVE_HELP}")
    names = [o.name for o in objectives]
    if len(set(names)) != len(names):
        raise UsageError(f"--objective repeats itself: {', '.join(names)}")
    return objectives


def parse_objective(text: str) -> Objective:
    kind, _, stat = text.strip().lower().partition(":")
    if kind == "throughput" and not stat:
        return Objective("throughput", "maximize", "samples/s")
    if kind == "capacity" and not stat:
        return Objective("capacity", "maximize", "req/s")
    if kind == "latency" and (stat or "p50") in PERCENTILES:
        return Objective(f"latency:{stat or 'p50'}", "minimize", "ms")
    if kind == "memory" and not stat:
        return Objective("memory", "minimize", "MB")
    if kind == "startup" and not stat:
        return Objective("startup", "minimize", "s")
    if kind == "gpu-memory" and not stat:
        return Objective("gpu-memory", "minimize", "MB")
    raise UsageError(f"unknown objective {text!r}; use one of: {OBJECTIVE_HELP}")


#: Constraint name -> (what it bounds, how to read it from a measurement, unit).
CONSTRAINTS: dict[str, tuple[str, Callable[[Measurement], float | None], str]] = {
    "max_latency_ms": ("latency p99", lambda m: m.latency_ms.p99, "ms"),
    "max_startup_s": ("startup", lambda m: m.startup_s, "s"),
    "max_memory_mb": ("peak memory", lambda m: m.peak_rss_mb, "MB"),
    "max_gpu_memory_mb": ("peak GPU memory", lambda m: m.peak_gpu_mb, "MB"),
}


@dataclass(frozen=True)
class Limits:
    """Constraints a config must meet to be chosen; the sampler learns them (Optuna's
    constraints_func: a violation > 0 is infeasible)."""

    bounds: Mapping[str, float] = field(default_factory=dict)  # names from CONSTRAINTS

    def violations(self, m: Measurement) -> list[float]:
        out = []
        for name, limit in self.bounds.items():
            value = CONSTRAINTS[name][1](m)
            out.append(0.0 if value is None else value - limit)
        return out

    def feasible(self, m: Measurement) -> bool:
        return all(v <= 0 for v in self.violations(m))

    def broken(self, m: Measurement) -> list[str]:
        reasons = []
        for (name, limit), violation in zip(self.bounds.items(), self.violations(m), strict=True):
            if violation > 0:
                what, read, unit = CONSTRAINTS[name]
                reasons.append(f"{what} {fmt_number(read(m) or 0.0)} {unit} > {limit:g} {unit}")
        return reasons

    def describe(self) -> str:
        return ", ".join(
            f"{CONSTRAINTS[name][0]} <= {limit:g} {CONSTRAINTS[name][2]}"
            for name, limit in self.bounds.items()
        )

"""Frozen dataclasses that cross every process, file and storage boundary.

Each has a versioned JSON form (``"schema": "autotune.<kind>/v1"``); dicts appear only inside the
``to_dict``/``from_dict`` pairs below. Readers refuse a schema they do not know instead of
guessing, so a file written by a newer autotune fails with a clear message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from autotune.errors import AutotuneError

CONFIG_SCHEMA = "autotune.config/v1"
JOB_SCHEMA = "autotune.job/v1"
RESULT_SCHEMA = "autotune.result/v1"
TUNED_SCHEMA = "autotune.tuned/v1"

#: Names of ``onnxruntime.ExecutionMode`` members autotune may set.
EXECUTION_MODES = ("ORT_SEQUENTIAL", "ORT_PARALLEL")
#: Names of ``onnxruntime.GraphOptimizationLevel`` members, weakest first.
OPTIMIZATION_LEVELS = (
    "ORT_DISABLE_ALL",
    "ORT_ENABLE_BASIC",
    "ORT_ENABLE_EXTENDED",
    "ORT_ENABLE_LAYOUT",
    "ORT_ENABLE_ALL",
)
#: ``SessionOptions`` attributes autotune may set, with the Python type each takes.
SESSION_OPTIONS: Mapping[str, type] = {
    "intra_op_num_threads": int,
    "inter_op_num_threads": int,
    "execution_mode": str,
    "graph_optimization_level": str,
    "enable_cpu_mem_arena": bool,
    "enable_mem_pattern": bool,
    "enable_mem_reuse": bool,
    "use_deterministic_compute": bool,
}

FailureKind = Literal[
    "error",  # onnxruntime raised (session creation or run)
    "crash",  # the worker died by a signal
    "timeout",  # wall-clock limit hit, process group killed
    "oom",  # memory cap hit
    "fallback",  # a requested execution provider silently fell back to another
    "no_result",  # the worker exited without a (valid) result document
    "mismatch",  # outputs differ from the baseline's beyond tolerance
    "invalid",  # a known-bad combination of settings (autotune.rules); never started
    "interrupted",  # Ctrl-C, SIGTERM, or the tuner died while it ran; not counted
]


def _check_schema(data: Mapping[str, Any], expected: str, what: str) -> None:
    got = data.get("schema")
    if got != expected:
        raise AutotuneError(
            f"{what} has schema {got!r}, expected {expected!r}: "
            "it was written by another autotune version; re-run the tuning with this one"
        )


@dataclass(frozen=True)
class ProviderSpec:
    """One execution provider and its provider options (ONNX Runtime takes them as strings)."""

    name: str
    options: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProviderSpec:
        return cls(name=str(data["name"]), options={k: str(v) for k, v in data["options"].items()})


@dataclass(frozen=True)
class TrialConfig:
    """Everything needed to build and drive one InferenceSession.

    ``session_options`` maps :data:`SESSION_OPTIONS` names to values (enums by member name);
    anything left out keeps ONNX Runtime's default. ``config_entries`` go through
    ``SessionOptions.add_session_config_entry``.
    """

    providers: tuple[ProviderSpec, ...] = (ProviderSpec("CPUExecutionProvider"),)
    session_options: Mapping[str, int | bool | str] = field(default_factory=dict)
    config_entries: Mapping[str, str] = field(default_factory=dict)
    batch_size: int = 1
    io_binding: bool = False
    variant: str = "original"  # the model file: the original or a variant (int8, fp16, fused)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": CONFIG_SCHEMA,
            "variant": self.variant,
            "providers": [p.to_dict() for p in self.providers],
            "session_options": dict(self.session_options),
            "config_entries": dict(self.config_entries),
            "batch_size": self.batch_size,
            "io_binding": self.io_binding,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialConfig:
        _check_schema(data, CONFIG_SCHEMA, "config")
        unknown = set(data["session_options"]) - set(SESSION_OPTIONS)
        if unknown:
            raise AutotuneError(f"config sets unknown session options: {sorted(unknown)}")
        return cls(
            providers=tuple(ProviderSpec.from_dict(p) for p in data["providers"]),
            session_options=dict(data["session_options"]),
            config_entries={k: str(v) for k, v in data["config_entries"].items()},
            batch_size=int(data["batch_size"]),
            io_binding=bool(data["io_binding"]),
            variant=str(data.get("variant", "original")),
        )

    def describe(self) -> str:
        """A short human-readable summary, for progress lines and tables."""
        parts = [f"batch={self.batch_size}"]
        if self.variant != "original":
            parts.insert(0, f"variant={self.variant}")
        short = {
            "intra_op_num_threads": "intra",
            "inter_op_num_threads": "inter",
            "execution_mode": "mode",
            "graph_optimization_level": "opt",
            "enable_cpu_mem_arena": "arena",
            "enable_mem_pattern": "mempat",
        }
        for key, value in self.session_options.items():
            text = str(value).removeprefix("ORT_").removeprefix("ENABLE_").lower()
            parts.append(f"{short.get(key, key)}={text}")
        for key, value in self.config_entries.items():
            parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
        if self.io_binding:
            parts.append("iobinding")
        names = [p.name.removesuffix("ExecutionProvider") for p in self.providers]
        if names != ["CPU"]:
            parts.insert(0, "+".join(names))
        return " ".join(parts) if len(parts) > 1 or self.session_options else "ORT defaults"


@dataclass(frozen=True)
class InputSpec:
    """One model input as the worker must feed it: dtype, shape at batch size 1, batch axis."""

    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    shape: tuple[int, ...]
    batched: bool  # axis 0 is the batch axis and is replaced by the trial's batch size

    def shape_for(self, batch_size: int) -> tuple[int, ...]:
        if not self.batched:
            return self.shape
        return (batch_size, *self.shape[1:])


@dataclass(frozen=True)
class FeedPlan:
    """How to make the model's inputs: synthetic (seeded) or from a user ``.npz`` file."""

    inputs: tuple[InputSpec, ...]
    seed: int = 0
    data_path: str | None = None  # .npz holding some or all inputs; the rest is synthesised

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [asdict(i) for i in self.inputs],
            "seed": self.seed,
            "data_path": self.data_path,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeedPlan:
        inputs = tuple(
            InputSpec(
                name=i["name"], dtype=i["dtype"], shape=tuple(i["shape"]), batched=i["batched"]
            )
            for i in data["inputs"]
        )
        return cls(inputs=inputs, seed=int(data["seed"]), data_path=data["data_path"])


@dataclass(frozen=True)
class MeasureSettings:
    """How long the worker measures: a short warm-up, then timed runs until both minimums are
    met, up to a cap. Leading timed runs that are still outliers count as warm-up (judged from
    the data) and are replaced."""

    warmup_runs: int = 2
    warmup_s: float = 0.05
    min_runs: int = 10
    min_time_s: float = 0.5
    max_runs: int = 100_000
    max_time_s: float = 10.0
    # Timings too noisy (wide spread, many outliers): measure a second window of the same size
    # and keep the steadier one, as Triton Model Analyzer does. Off: on this project's machines
    # it hid the instability flag without making p50 repeat better across fresh workers
    # (benchmarks/noisy_retry.py, results/BENCHMARKS.md); kept for that benchmark.
    retry_noisy: bool = False


@dataclass(frozen=True)
class AccuracyCheck:
    """The accuracy guard's part of a job.

    The baseline's job writes the reference outputs for every batch size in
    ``write_batches`` to ``reference_path``; every other job compares its outputs on the same
    seeded inputs with them. ``rtol``/``atol`` override the per-dtype defaults.
    """

    reference_path: str | None = None
    write_batches: tuple[int, ...] = ()
    rtol: float | None = None
    atol: float | None = None
    metric: str | None = None  # cosine | top1-agreement | max-abs instead of elementwise rtol/atol
    threshold: float | None = None


@dataclass(frozen=True)
class WorkerJob:
    """What the runner hands one worker: the model, the config, the inputs, the timing rules."""

    model_path: str
    config: TrialConfig
    feeds: FeedPlan
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    accuracy: AccuracyCheck = field(default_factory=AccuracyCheck)

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": JOB_SCHEMA,
                "model_path": self.model_path,
                "config": self.config.to_dict(),
                "feeds": self.feeds.to_dict(),
                "measure": asdict(self.measure),
                "accuracy": asdict(self.accuracy),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WorkerJob:
        data = json.loads(text)
        _check_schema(data, JOB_SCHEMA, "worker job")
        return cls(
            model_path=data["model_path"],
            config=TrialConfig.from_dict(data["config"]),
            feeds=FeedPlan.from_dict(data["feeds"]),
            measure=MeasureSettings(**data["measure"]),
            accuracy=AccuracyCheck(
                **{**data["accuracy"], "write_batches": tuple(data["accuracy"]["write_batches"])}
            ),
        )


@dataclass(frozen=True)
class LatencyStats:
    """Per-run latency in milliseconds over the timed runs."""

    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    count: int
    mad: float  # median absolute deviation
    outliers: int  # runs with a modified z-score above 3.5 (median/MAD based)


@dataclass(frozen=True)
class Measurement:
    """One successful trial's figures. Times in seconds unless the name says otherwise."""

    batch_size: int
    import_s: float  # importing onnxruntime in the worker
    create_s: float  # InferenceSession(...) construction
    first_run_s: float  # the first inference (cuDNN searches, engine builds land here)
    latency_ms: LatencyStats
    throughput: float  # samples per second over the timed runs
    timed_s: float
    warmup_runs: int
    providers: tuple[str, ...]
    work_s: float  # the worker's time after importing onnxruntime: session, runs, checks
    unstable: tuple[str, ...] = ()  # why the figures are not to be trusted, with what to do
    notes: tuple[str, ...] = ()  # facts worth telling (a slow first inference, warm-up trimmed)
    max_abs_err: float | None = None  # against the baseline's outputs (accuracy guard)
    max_rel_err: float | None = None
    cosine: float | None = None  # lowest cosine similarity of an output with the baseline's
    top1_agreement: float | None = None  # share of rows whose argmax matches the baseline's
    peak_rss_mb: float | None = None  # the worker's own peak (VmHWM), else the OS's wait4 figure
    wall_s: float | None = None  # whole trial as the runner saw it, process start included
    peak_gpu_mb: float | None = None  # the worker's GPU memory from NVML (GPU providers only)
    # CPU time over wall time of the timed runs: how many cores the config keeps busy (spinning
    # threads count: a config as fast as another but burning more cores costs co-located work).
    cpu_cores: float | None = None

    @property
    def startup_s(self) -> float:
        return self.create_s + self.first_run_s

    @property
    def overhead_s(self) -> float | None:
        """Per-trial cost that is not the session's: process start, imports, transfers."""
        return None if self.wall_s is None else max(0.0, self.wall_s - self.work_s)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("providers", "unstable", "notes"):
            data[key] = list(data[key])
        data["startup_s"] = self.startup_s
        data["overhead_s"] = self.overhead_s
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["latency_ms"] = LatencyStats(**data["latency_ms"])
        for key in ("providers", "unstable", "notes"):
            kwargs[key] = tuple(data.get(key, ()))
        return cls(**kwargs)

    def with_process(
        self, *, peak_rss_mb: float | None, wall_s: float, peak_gpu_mb: float | None = None
    ) -> Measurement:
        return replace(self, peak_rss_mb=peak_rss_mb, wall_s=wall_s, peak_gpu_mb=peak_gpu_mb)


@dataclass(frozen=True)
class TrialFailure:
    """Why a trial produced no measurement. Failures are data, not exceptions."""

    kind: FailureKind
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)  # e.g. max_abs_err of a mismatch

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "details": dict(self.details)}


TrialOutcome = Measurement | TrialFailure


@dataclass(frozen=True)
class RoundFigures:
    """One config's objective values over the interleaved confirmation rounds."""

    trial_number: int
    values: tuple[float, ...]  # one per successful round, in round order
    failures: int
    median: float
    spread: float  # interquartile range over the median
    wins: int  # rounds in which it beat the baseline measured beside it (0 for the baseline)
    pairs: int  # rounds in which both it and the baseline produced a figure
    gain: float  # median against the baseline's median, > 1 is better (1 for the baseline)
    measurement: Measurement | None  # the round closest to the median, for the other figures
    # Several objectives: each one's median over the successful rounds, by objective name.
    medians: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["values"] = list(self.values)
        data["medians"] = dict(self.medians)
        data["measurement"] = self.measurement.to_dict() if self.measurement else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoundFigures:
        m = data["measurement"]
        return cls(
            trial_number=int(data["trial_number"]),
            values=tuple(data["values"]),
            failures=int(data["failures"]),
            median=float(data["median"]),
            spread=float(data["spread"]),
            wins=int(data["wins"]),
            pairs=int(data["pairs"]),
            gain=float(data["gain"]),
            measurement=Measurement.from_dict(m) if m else None,
            medians={str(k): float(v) for k, v in data.get("medians", {}).items()},
        )


@dataclass(frozen=True)
class Confirmation:
    """The finalists and the baseline re-measured in interleaved rounds, and the verdict."""

    rounds: int
    baseline: RoundFigures
    finalists: tuple[RoundFigures, ...]
    winner: int  # trial number; the baseline's when no finalist beat it beyond the noise
    threshold: float  # the least gain a finalist needed, > 1
    verdict: str
    # Several objectives: the trials (baseline included) no other re-measured one beats on every
    # objective's median; empty for one objective.
    front: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "baseline": self.baseline.to_dict(),
            "finalists": [f.to_dict() for f in self.finalists],
            "winner": self.winner,
            "threshold": self.threshold,
            "verdict": self.verdict,
            "front": list(self.front),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Confirmation:
        return cls(
            rounds=int(data["rounds"]),
            baseline=RoundFigures.from_dict(data["baseline"]),
            finalists=tuple(RoundFigures.from_dict(f) for f in data["finalists"]),
            winner=int(data["winner"]),
            threshold=float(data["threshold"]),
            verdict=str(data["verdict"]),
            front=tuple(int(n) for n in data.get("front", ())),
        )

    def figures(self, trial_number: int) -> RoundFigures:
        for f in (self.baseline, *self.finalists):
            if f.trial_number == trial_number:
                return f
        raise KeyError(trial_number)


@dataclass(frozen=True)
class SearchFigures:
    """What the search itself saw: its best trial, one measurement each, before confirmation."""

    trial_number: int
    metrics: Measurement
    baseline: Measurement
    speedup: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial_number,
            "metrics": self.metrics.to_dict(),
            "baseline": self.baseline.to_dict(),
            "speedup": self.speedup,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchFigures:
        return cls(
            trial_number=int(data["trial"]),
            metrics=Measurement.from_dict(data["metrics"]),
            baseline=Measurement.from_dict(data["baseline"]),
            speedup=float(data["speedup"]),
        )


@dataclass(frozen=True)
class TunedConfig:
    """The deployable result (``best.json``): the config, its figures and where they came from.

    ``metrics``, ``baseline`` and ``speedup`` are the confirmed figures (median round of the
    interleaved re-measurement) when a confirmation ran, else the search's own.
    """

    config: TrialConfig
    model_path: str
    model_sha256: str
    objective: str
    metrics: Measurement
    baseline: Measurement
    speedup: float  # objective of the best relative to the baseline, > 1 means better
    study_name: str
    storage: str
    trial_number: int
    environment: Mapping[str, Any]
    created: str
    search: SearchFigures
    confirmation: Confirmation | None = None
    inputs: FeedPlan | None = None  # how the tuning fed the model (profile, re-measurement)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": TUNED_SCHEMA,
            "inputs": self.inputs.to_dict() if self.inputs else None,
            "config": self.config.to_dict(),
            "model": {"path": self.model_path, "sha256": self.model_sha256},
            "objective": self.objective,
            "metrics": self.metrics.to_dict(),
            "baseline": self.baseline.to_dict(),
            "speedup": self.speedup,
            "study": {
                "name": self.study_name,
                "storage": self.storage,
                "trial": self.trial_number,
            },
            "search": self.search.to_dict(),
            "confirmation": self.confirmation.to_dict() if self.confirmation else None,
            "environment": dict(self.environment),
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TunedConfig:
        _check_schema(data, TUNED_SCHEMA, "tuned config")
        confirmation = data.get("confirmation")
        return cls(
            config=TrialConfig.from_dict(data["config"]),
            model_path=data["model"]["path"],
            model_sha256=data["model"]["sha256"],
            objective=data["objective"],
            metrics=Measurement.from_dict(data["metrics"]),
            baseline=Measurement.from_dict(data["baseline"]),
            speedup=float(data["speedup"]),
            study_name=data["study"]["name"],
            storage=data["study"]["storage"],
            trial_number=int(data["study"]["trial"]),
            environment=data["environment"],
            created=data["created"],
            search=SearchFigures.from_dict(data["search"]),
            confirmation=Confirmation.from_dict(confirmation) if confirmation else None,
            inputs=FeedPlan.from_dict(data["inputs"]) if data.get("inputs") else None,
        )

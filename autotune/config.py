"""Frozen dataclasses that cross every process, file and storage boundary.

Each has a versioned JSON form (``"schema": "autotune.<kind>/v1"``); dicts appear only inside the
``to_dict``/``from_dict`` pairs below. Readers refuse a schema they do not know instead of
guessing, so a file written by a newer autotune fails with a clear message.
"""

from __future__ import annotations

import json
import math
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
    "repeat",  # the sampler proposed a config the study measured already; not measured
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
    # Serving several concurrent callers: how many sessions they share (caller i runs on session
    # i % sessions), and whether those sessions share one process-wide thread pool
    # (``use_per_session_threads=False``, sized by ``set_global_thread_pool_sizes``).
    sessions: int = 1
    global_thread_pool: bool = False
    # Fix the model's named dynamic input dims this config serves at one size (the batch dim at
    # ``batch_size``, a dim the inputs pin) with ``add_free_dimension_override_by_name`` at
    # session creation; the session then accepts only those sizes (autotune.measure.session).
    free_dim_overrides: bool = False
    # Serving open-loop traffic (``--rate``): how many server threads take requests off the
    # queue at once (0: one per usable CPU), and the server-side dynamic batcher, with Triton's
    # semantics: a free server takes the oldest waiting request and waits up to
    # ``max_queue_delay_ms`` for more of the same shape, up to ``max_batch``, then runs them as one
    # batch (autotune.measure.openloop).
    server_threads: int = 0
    max_batch: int = 1
    max_queue_delay_ms: float = 0.0

    @property
    def batches_requests(self) -> bool:
        """The server joins waiting requests into one run."""
        return self.max_batch > 1

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": CONFIG_SCHEMA,
            "variant": self.variant,
            "providers": [p.to_dict() for p in self.providers],
            "session_options": dict(self.session_options),
            "config_entries": dict(self.config_entries),
            "batch_size": self.batch_size,
            "io_binding": self.io_binding,
            "sessions": self.sessions,
            "global_thread_pool": self.global_thread_pool,
        }
        if self.free_dim_overrides:  # left out when off: configs from before it compare equal
            data["free_dim_overrides"] = True
        if self.server_threads:  # the same for the open-loop serving knobs
            data["server_threads"] = self.server_threads
        if self.max_batch != 1:
            data["max_batch"] = self.max_batch
            data["max_queue_delay_ms"] = self.max_queue_delay_ms
        return data

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
            sessions=int(data.get("sessions", 1)),
            global_thread_pool=bool(data.get("global_thread_pool", False)),
            free_dim_overrides=bool(data.get("free_dim_overrides", False)),
            server_threads=int(data.get("server_threads", 0)),
            max_batch=int(data.get("max_batch", 1)),
            max_queue_delay_ms=float(data.get("max_queue_delay_ms", 0.0)),
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
        if self.sessions != 1:
            parts.append(f"sessions={self.sessions}")
        if self.global_thread_pool:
            parts.append("global-pool")
        if self.free_dim_overrides:
            parts.append("freedims")
        if self.server_threads:
            parts.append(f"servers={self.server_threads}")
        if self.max_batch != 1:
            parts.append(f"max_batch={self.max_batch} delay={self.max_queue_delay_ms:g}ms")
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
    # The model's symbol on each axis whose size a shape mix may change (None elsewhere); empty
    # when no axis may change.
    symbols: tuple[str | None, ...] = ()

    def shape_for(self, batch_size: int, dims: Mapping[str, int] | None = None) -> tuple[int, ...]:
        shape = list(self.shape)
        for axis, symbol in enumerate(self.symbols):
            if symbol is not None and dims and symbol in dims:
                shape[axis] = dims[symbol]
        if self.batched:
            shape[0] = batch_size
        return tuple(shape)


@dataclass(frozen=True)
class FeedPlan:
    """How to make the model's inputs: synthetic (seeded) or from a user ``.npz`` file."""

    inputs: tuple[InputSpec, ...]
    seed: int = 0
    data_path: str | None = None  # .npz holding some or all inputs; the rest is synthesised
    # Samples in the data's pool: rows along the batch axis of the batched inputs in
    # ``data_path`` (1 for synthetic data). Timed runs cycle through them.
    pool_rows: int = 1
    # N when the model itself fixes the batch (axis 0 static at N > 1 in every input of rank
    # >= 2): the batch size is N, one run is N samples, and no other size can be served.
    fixed_batch: int | None = None
    # Axis 0 is static above 1 but not one batch of every input (they disagree): a run's samples
    # are unknown, so throughput counts runs (batch size 1) and says so.
    counts_runs: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [asdict(i) for i in self.inputs],
            "seed": self.seed,
            "data_path": self.data_path,
            "pool_rows": self.pool_rows,
            "fixed_batch": self.fixed_batch,
            "counts_runs": self.counts_runs,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeedPlan:
        inputs = tuple(
            InputSpec(
                name=i["name"],
                dtype=i["dtype"],
                shape=tuple(i["shape"]),
                batched=i["batched"],
                symbols=tuple(i.get("symbols", ())),
            )
            for i in data["inputs"]
        )
        return cls(
            inputs=inputs,
            seed=int(data["seed"]),
            data_path=data["data_path"],
            pool_rows=int(data.get("pool_rows", 1)),
            fixed_batch=int(data["fixed_batch"]) if data.get("fixed_batch") else None,
            counts_runs=bool(data.get("counts_runs", False)),
        )


@dataclass(frozen=True)
class ShapePoint:
    """One shape of a shape mix: values for the model's named dynamic dims, and its weight."""

    dims: Mapping[str, int]
    weight: float = 1.0

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.dims.items())

    def to_dict(self) -> dict[str, Any]:
        return {"dims": dict(self.dims), "weight": self.weight}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShapePoint:
        return cls(
            dims={str(k): int(v) for k, v in data["dims"].items()}, weight=float(data["weight"])
        )


@dataclass(frozen=True)
class Traffic:
    """Open-loop arrivals (``--rate``, ``--trace``, ``--objective capacity``): requests arrive on
    a schedule that never waits for the server, and each one's latency runs from its scheduled
    arrival (autotune.measure.openloop).

    With ``max_latency_ms`` and no rate, every trial searches the highest offered rate its
    config serves with the ``quantile`` latency under the limit and at least
    ``min_completed`` of the requests answered: its capacity.
    """

    rate: float | None = None  # offered requests/s
    arrivals: str = "poisson"  # or "uniform"
    trace: tuple[float, ...] = ()  # replayed arrival offsets in seconds, instead of a rate
    max_latency_ms: float | None = None  # the SLO a capacity search holds
    quantile: str = "p99"
    min_completed: float = 0.99

    @property
    def finds_capacity(self) -> bool:
        return self.rate is None and not self.trace

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["trace"] = list(self.trace)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Traffic:
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["trace"] = tuple(float(t) for t in data.get("trace", ()))
        return cls(**kwargs)


@dataclass(frozen=True)
class Workload:
    """How the deployment drives the model: requests in flight at once, and the shape mix.

    ``concurrency`` caller threads issue requests back to back; ``shapes`` (empty: the feed
    plan's one shape) are each measured under that load and aggregated with their weights.
    With ``traffic``, requests arrive open-loop instead, and the config's server threads take
    them (``concurrency`` is then the most server threads the search tries).
    """

    concurrency: int = 1
    shapes: tuple[ShapePoint, ...] = ()
    traffic: Traffic | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "concurrency": self.concurrency,
            "shapes": [p.to_dict() for p in self.shapes],
        }
        if self.traffic is not None:  # left out when closed-loop: earlier studies compare equal
            data["traffic"] = self.traffic.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Workload:
        if not data:
            return cls()
        traffic = data.get("traffic")
        return cls(
            concurrency=int(data.get("concurrency", 1)),
            shapes=tuple(ShapePoint.from_dict(p) for p in data.get("shapes", ())),
            traffic=Traffic.from_dict(traffic) if traffic else None,
        )


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
    metric: str | None = None  # cosine | top1-agreement | max-abs | score instead of rtol/atol
    threshold: float | None = None
    outputs: tuple[str, ...] = ()  # the outputs judged (--accuracy-outputs); () = float outputs
    mask_input: str | None = None  # an input whose zeros mark padded positions (--accuracy-mask)
    judge: str | None = None  # the user's own check, "module:function" (--accuracy-fn)


@dataclass(frozen=True)
class WorkerJob:
    """What the runner hands one worker: the model, the config, the inputs, the timing rules."""

    model_path: str
    config: TrialConfig
    feeds: FeedPlan
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    accuracy: AccuracyCheck = field(default_factory=AccuracyCheck)
    workload: Workload = field(default_factory=Workload)

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": JOB_SCHEMA,
                "model_path": self.model_path,
                "config": self.config.to_dict(),
                "feeds": self.feeds.to_dict(),
                "measure": asdict(self.measure),
                "accuracy": asdict(self.accuracy),
                "workload": self.workload.to_dict(),
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
                **{
                    **data["accuracy"],
                    "write_batches": tuple(data["accuracy"]["write_batches"]),
                    "outputs": tuple(data["accuracy"].get("outputs", ())),
                }
            ),
            workload=Workload.from_dict(data.get("workload")),
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
class ShapeFigures:
    """One shape of a shape mix as a trial measured it (under the study's concurrency)."""

    label: str  # e.g. "sequence_length=128"
    weight: float
    latency_ms: LatencyStats
    throughput: float  # samples per second
    first_run_s: float  # this shape's first inference: part of startup

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShapeFigures:
        return cls(
            label=str(data["label"]),
            weight=float(data["weight"]),
            latency_ms=LatencyStats(**data["latency_ms"]),
            throughput=float(data["throughput"]),
            first_run_s=float(data["first_run_s"]),
        )


@dataclass(frozen=True)
class RateProbe:
    """One open-loop window at one offered rate."""

    offered_rate: float  # requests/s scheduled
    achieved_rate: float  # requests/s answered
    latency_ms: float  # the traffic's quantile, unfinished requests counted at the window's close
    completed: float  # share of the offered requests answered
    met: bool  # the SLO held (and enough requests were answered)


@dataclass(frozen=True)
class OpenLoopFigures:
    """What open-loop traffic showed: the window the figures come from, and every probe."""

    offered_rate: float
    achieved_rate: float
    sent: int
    completed: int
    unfinished: int  # not answered by the window's close (counted as misses)
    queue_depth_max: int
    queue_depth_mean: float
    mean_batch: float  # requests per run (server-side batching)
    late_dispatch_s: float  # how far the load generator itself ran behind its schedule
    server_threads: int
    capacity: float | None = None  # requests/s at the SLO (a capacity search), else None
    probes: tuple[RateProbe, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["probes"] = [asdict(p) for p in self.probes]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpenLoopFigures:
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["probes"] = tuple(RateProbe(**p) for p in data.get("probes", ()))
        return cls(**kwargs)


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
    concurrency: int = 1  # caller threads with a request in flight during the timed window
    # A shape mix: each shape's own figures; ``latency_ms`` and ``throughput`` then aggregate
    # them by weight (per-sample time averaged), and ``first_run_s`` sums their first runs.
    per_shape: tuple[ShapeFigures, ...] = ()
    open_loop: OpenLoopFigures | None = None  # open-loop traffic: rates, queue, capacity

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
        data["per_shape"] = [f.to_dict() for f in self.per_shape]
        data["open_loop"] = self.open_loop.to_dict() if self.open_loop else None
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
        kwargs["per_shape"] = tuple(ShapeFigures.from_dict(f) for f in data.get("per_shape", ()))
        open_loop = data.get("open_loop")
        kwargs["open_loop"] = OpenLoopFigures.from_dict(open_loop) if open_loop else None
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


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class HostNoise:
    """How steady the host was during a paired confirmation.

    ``twin_ratio`` is the median paired ratio of the baseline's config against itself in a
    second worker (1 on a steady host); ``margin`` adds the uncertainty of that median: the
    least gain a finalist must show beyond noise. ``steal`` is the share of CPU time the
    hypervisor took (``/proc/stat``), ``mode_switches`` the baseline blocks more than 25 % off
    its median (the host changed speed).
    """

    twin_ratio: float
    twin_spread: float
    margin: float
    steal: float | None
    mode_switches: int
    blocks: int
    # The baseline's objective during the confirmation over its search figure (1: same host
    # mode); a config's ranking can flip between a VM's speed modes.
    search_shift: float | None = None
    # The twin's median ratio within each set of worker processes (the duel restarts them).
    twin_legs: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "search_shift": _finite(self.search_shift),
            "twin_ratio": _finite(self.twin_ratio),
            "twin_spread": _finite(self.twin_spread),
            "margin": _finite(self.margin),
            "steal": _finite(self.steal),
            "mode_switches": self.mode_switches,
            "blocks": self.blocks,
            "twin_legs": [_finite(v) for v in self.twin_legs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostNoise:
        def number(key: str, missing: float) -> float:
            value = data.get(key)
            return missing if value is None else float(value)

        return cls(
            twin_ratio=number("twin_ratio", math.nan),
            twin_spread=number("twin_spread", math.nan),
            margin=number("margin", math.inf),
            steal=data.get("steal"),
            mode_switches=int(data.get("mode_switches", 0)),
            blocks=int(data.get("blocks", 0)),
            search_shift=data.get("search_shift"),
            twin_legs=tuple(float(v) for v in data.get("twin_legs", ()) if v is not None),
        )


@dataclass(frozen=True)
class Confirmation:
    """The finalists and the baseline re-measured (in paired blocks of warm workers, or in
    interleaved rounds of fresh ones), and the verdict.

    ``kind`` is ``winner``, ``no gain`` or ``too noisy`` (the host's noise was larger than the
    gain it would have to show); ``rounds`` counts cycles of blocks for ``paired blocks``.
    """

    rounds: int
    baseline: RoundFigures
    finalists: tuple[RoundFigures, ...]
    winner: int  # trial number; the baseline's when no finalist beat it beyond the noise
    threshold: float  # the least gain a finalist needed, > 1
    verdict: str
    # Several objectives: the trials (baseline included) no other re-measured one beats on every
    # objective's median; empty for one objective.
    front: tuple[int, ...] = ()
    method: str = "fresh rounds"  # or "paired blocks"
    noise: HostNoise | None = None
    kind: str = ""  # winner | no gain | too noisy (derived from the winner when not given)
    confirmed_at: str = ""  # ISO time the confirmation ended
    trials: int = 0  # the study's finished trials it covered (a re-run with none new reuses it)
    # One line each, shown after the verdict: e.g. the search's measurement of the defaults
    # was an outlier against the confirmation's, so its ratios are not left unexplained.
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.kind:  # studies from before the kinds, and the fresh-rounds verdicts
            won = self.winner != self.baseline.trial_number
            object.__setattr__(self, "kind", "winner" if won else "no gain")

    def to_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "baseline": self.baseline.to_dict(),
            "finalists": [f.to_dict() for f in self.finalists],
            "winner": self.winner,
            "threshold": self.threshold,
            "verdict": self.verdict,
            "front": list(self.front),
            "method": self.method,
            "noise": self.noise.to_dict() if self.noise else None,
            "kind": self.kind,
            "confirmed_at": self.confirmed_at,
            "trials": self.trials,
            "notes": list(self.notes),
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
            method=str(data.get("method", "fresh rounds")),
            noise=HostNoise.from_dict(data["noise"]) if data.get("noise") else None,
            kind=str(data.get("kind", "")),
            confirmed_at=str(data.get("confirmed_at", "")),
            trials=int(data.get("trials", 0)),
            notes=tuple(str(n) for n in data.get("notes", ())),
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
class SweepPoint:
    """One config measured at one concurrency in the sweep after the search."""

    role: Literal["baseline", "chosen"]
    trial_number: int
    concurrency: int
    sessions: int  # the config's sessions, capped at the callers
    measurement: Measurement | None
    failure: str | None = None  # why it produced no figures

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "trial": self.trial_number,
            "concurrency": self.concurrency,
            "sessions": self.sessions,
            "measurement": self.measurement.to_dict() if self.measurement else None,
            "failure": self.failure,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepPoint:
        m = data.get("measurement")
        return cls(
            role=data["role"],
            trial_number=int(data["trial"]),
            concurrency=int(data["concurrency"]),
            sessions=int(data["sessions"]),
            measurement=Measurement.from_dict(m) if m else None,
            failure=data.get("failure"),
        )


@dataclass(frozen=True)
class ConcurrencySweep:
    """The chosen config and ONNX Runtime's defaults at concurrency 1, 2, 4, ... (interleaved).

    ``max_latency_ms`` is the study's p99 limit, if any; ``highest_ok`` the highest concurrency
    at which the chosen config still met it (None: at none, or no limit).
    """

    points: tuple[SweepPoint, ...]
    max_latency_ms: float | None = None
    highest_ok: int | None = None

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(sorted({p.concurrency for p in self.points}))

    def at(self, role: str, concurrency: int) -> SweepPoint | None:
        return next(
            (p for p in self.points if p.role == role and p.concurrency == concurrency), None
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "points": [p.to_dict() for p in self.points],
            "max_latency_ms": self.max_latency_ms,
            "highest_ok": self.highest_ok,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConcurrencySweep:
        return cls(
            points=tuple(SweepPoint.from_dict(p) for p in data["points"]),
            max_latency_ms=data.get("max_latency_ms"),
            highest_ok=data.get("highest_ok"),
        )


@dataclass(frozen=True)
class TunedConfig:
    """The deployable result (``best.json``): the config, its figures and where they came from.

    ``metrics``, ``baseline`` and ``speedup`` are the confirmed figures when a confirmation ran
    (paired blocks: all of a config's blocks merged, under open loop its median-capacity block;
    fresh rounds: the median round), else the search's own.
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
    workload: Workload = field(default_factory=Workload)  # the load it was tuned for
    sweep: ConcurrencySweep | None = None
    # This run's time: {"search_s": S, "confirmation_s": C, "overhead_s_median": M}.
    tuning: Mapping[str, float] = field(default_factory=dict)
    # Why the config was not re-measured against the defaults ("" when it was, or when it is
    # the defaults): its figures are then one search measurement, which a deployment is warned of.
    unconfirmed: str = ""
    # What the baseline ran: ONNX Runtime's defaults (the study's providers and their fixed
    # options) on the original model, sha256 included (a variant's best.json names its own
    # file above). ``autotune check`` measures against them; None in files from before.
    defaults: TrialConfig | None = None
    original_model: tuple[str, str] | None = None  # (path, sha256)

    @property
    def confirmed(self) -> bool:
        return not self.unconfirmed

    def workload_dict(self) -> dict[str, Any]:
        """The workload plus how the config serves it: what a deployment must reproduce."""
        threads = self.config.session_options.get("intra_op_num_threads", 0)
        return {
            **self.workload.to_dict(),
            "sessions": self.config.sessions,
            "intra_op_num_threads": threads,
            "global_thread_pool": self.config.global_thread_pool,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": TUNED_SCHEMA,
            "confirmed": self.confirmed,
            **({"unconfirmed": self.unconfirmed} if self.unconfirmed else {}),
            "tuning": dict(self.tuning),
            "workload": self.workload_dict(),
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
            "sweep": self.sweep.to_dict() if self.sweep else None,
            "environment": dict(self.environment),
            "created": self.created,
            **({"defaults": self._defaults_dict()} if self.defaults is not None else {}),
        }

    def _defaults_dict(self) -> dict[str, Any]:
        assert self.defaults is not None
        path, sha = self.original_model or (self.model_path, self.model_sha256)
        return {"config": self.defaults.to_dict(), "model": {"path": path, "sha256": sha}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TunedConfig:
        _check_schema(data, TUNED_SCHEMA, "tuned config")
        confirmation = data.get("confirmation")
        defaults = data.get("defaults")
        unconfirmed = data.get("unconfirmed", "")
        if "confirmed" not in data and not confirmation and data["metrics"] != data["baseline"]:
            unconfirmed = "written before autotune recorded it, with no confirmation"
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
            workload=Workload.from_dict(data.get("workload")),
            sweep=ConcurrencySweep.from_dict(data["sweep"]) if data.get("sweep") else None,
            tuning={str(k): float(v) for k, v in (data.get("tuning") or {}).items()},
            unconfirmed=str(unconfirmed or ""),
            defaults=TrialConfig.from_dict(defaults["config"]) if defaults else None,
            original_model=(defaults["model"]["path"], defaults["model"]["sha256"])
            if defaults
            else None,
        )

"""What a study run is asked to do: everything ``tuning.prepare`` derived from the options.

Its own module, so the modules that open a study and run it both take it without importing
each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autotune.config import FeedPlan, MeasureSettings, Workload
from autotune.model import ModelInfo
from autotune.objectives import Limits, Objective
from autotune.space import SearchSpace


@dataclass(frozen=True)
class TuneRequest:
    model: ModelInfo
    feeds: FeedPlan
    space: SearchSpace  # resolved (machine bounds and batch sizes bound)
    objective: Objective  # the primary one: it picks the best, the finalists and the winner
    storage: str
    study_name: str
    trials: int  # total for the study, baseline included
    timeout_s: float | None = None  # wall clock for this invocation
    seed: int | None = None
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    trial_timeout_s: float | None = None  # default: derived from the baseline
    environment: Mapping[str, Any] = field(default_factory=dict)
    worker_command: Sequence[str] | None = None
    reference_path: str | None = None  # the accuracy guard's reference outputs (None: no guard)
    rtol: float | None = None
    atol: float | None = None
    max_memory_mb: float | None = None  # per-trial resident memory cap
    memory_constraint: bool = False  # the cap was set by the user: hitting it violates it
    max_gpu_memory_mb: float | None = None  # per-trial GPU memory cap (NVML), a constraint
    max_failures: int = 10  # consecutive failed trials that stop the study
    patience: int | None = None  # trials since the study's best that end the search
    static_shapes: bool = True  # input shapes never change in this study (one batch size)
    objectives: tuple[Objective, ...] = ()  # several: a multi-objective study (Pareto front)
    limits: Limits = field(default_factory=Limits)  # constraints a chosen config must meet
    variant_paths: Mapping[str, str] = field(default_factory=dict)  # variant name -> model file
    variant_maker: Any = None  # makes a recipe again with nodes kept in float (VariantMaker)
    accuracy: tuple[str, float] | None = None  # --accuracy for the variants (else their default)
    judged_outputs: tuple[str, ...] = ()  # --accuracy-outputs (default: the float outputs)
    mask_input: str | None = None  # --accuracy-mask: padded positions are not judged
    judge: str | None = None  # --accuracy-fn, the user's own check (for every trial)
    finalists: int = 3  # configs re-measured against the baseline after the search (0: none)
    rounds: int = 5  # the confirmation's length: fresh rounds, or the paired duel's cycles
    wait_for_lock: bool = True  # queue behind another autotune measuring here, or fail at once
    workload: Workload = field(default_factory=Workload)  # concurrency and shape mix
    paired: bool = True  # confirm in paired blocks of warm workers (throughput, latency)
    reconfirm: bool = False  # measure the confirmation again even if the study has one
    storage_retry_s: float = 120.0  # the storage retry policy's bound (--storage-retry-s)
    spool_dir: str = ""  # measured trials the database could not take wait here (default: none)
    sweep_levels: tuple[int, ...] = ()  # concurrencies to measure chosen and defaults at, after
    target_rate: float | None = None  # --target-rate: machines needed at capacity (the report)

    @property
    def all_objectives(self) -> tuple[Objective, ...]:
        return self.objectives or (self.objective,)

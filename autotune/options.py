"""The options of a tuning run, declared once.

:class:`RunOptions` is the one declaration: each field has its type, its default and, in its
metadata (:class:`Flag`), the command-line flag, the help text and the bounds. ``autotune run``
builds its flags from it (``cli.py``), ``autotune.tune(model, **options)`` takes its field names
as keywords, and both reach :meth:`RunOptions.__post_init__`, which checks the bounds with the
same message whichever way the values came. Everything the study needs is derived from it in
one place, ``tuning.prepare``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from autotune.errors import UsageError
from autotune.objectives import OBJECTIVE_HELP


@dataclass(frozen=True)
class Flag:
    """How an option shows on the command line, and the smallest value it takes."""

    help: str
    names: tuple[str, ...] = ()  # default: --field-name (a bool: --field-name/--no-field-name)
    cli_type: Any = None  # the type typer parses (default: the field's own)
    low: float | None = None  # the smallest value allowed (None: no bound)
    why: str = ""  # what to give instead, after a value below ``low``
    show_default: bool = True


def option(default: Any, help: str, **flag: Any) -> Any:
    """A field of :class:`RunOptions` with its flag."""
    return field(default=default, metadata={"flag": Flag(help, **flag)})


@dataclass(frozen=True)
class RunOptions:
    """What ``autotune run`` and ``autotune.tune`` take. Values are checked on creation."""

    model: Path
    objective: tuple[str, ...] = option(
        ("throughput",),
        f"{OBJECTIVE_HELP}; repeat for a Pareto front.",
        names=("--objective", "-o"),
        cli_type=list[str],
    )
    space: str = option("cpu", "Search space: a name from search_spaces/ or a .yaml path.")
    trials: int = option(30, "Total trials in the study; re-running resumes up to this.", low=1)
    timeout_s: float | None = option(
        None, "Stop starting trials after this many seconds.", names=("--timeout",), low=1
    )
    storage: str | None = option(None, "Optuna storage URL (default: sqlite:///OUT/autotune.db).")
    study: str | None = option(None, "Study name (default: MODEL-SHA8-SPACE-OBJECTIVE).")
    out: Path = option(Path("results"), "Folder for the study database and results.")
    shapes: tuple[str, ...] = option(
        (), "Input shape, NAME=1x3x224x224 (repeatable).", names=("--shape",),
        cli_type=list[str] | None,
    )  # fmt: skip
    dims: tuple[str, ...] = option(
        (), "Symbolic dim value, SYMBOL=128, or a mix of shapes, SYMBOL=32,128,512 (repeatable).",
        names=("--dim",), cli_type=list[str] | None,
    )  # fmt: skip
    dim_weights: str | None = option(
        None, "Weights of the --dim shape mix, e.g. 0.5,0.3,0.2 (default: equal)."
    )
    inputs: Path | None = option(
        None, "Input data (.npz by input name): a pool of samples along axis 0."
    )
    concurrency: int = option(
        1,
        "Requests in flight at once: caller threads driving the sessions in every trial.",
        low=1,
        why="give the number of requests the deployment has in flight at once (1 for one caller)",
    )
    rate: float | None = option(
        None,
        "Open-loop traffic: requests per second arriving on their own schedule, latency counted "
        "from each one's arrival (not with --concurrency).",
    )
    arrivals: str = option("poisson", "Arrival process of --rate: poisson or uniform.")
    trace: Path | None = option(
        None, "Open-loop traffic replayed from arrival times in seconds (.csv or .npy)."
    )
    slo: str = option(
        "latency:p99", "The latency quantile --max-latency-ms bounds for capacity: latency:p95, ..."
    )
    batching: bool | None = option(
        None,
        "Search server-side dynamic batching (max_batch, max_queue_delay_ms) under open-loop "
        "traffic (default: on when the model's batch dim is dynamic).",
        show_default=False,
    )
    target_rate: float | None = option(
        None, "With capacity: the fleet's total requests/s, to say how many machines each needs.",
        low=0,
    )  # fmt: skip
    sweep: bool | None = option(
        None,
        "After the search, measure the chosen config and the defaults at concurrency 1, 2, 4, "
        "... (default: on with --concurrency above 1).",
        show_default=False,
    )
    batch_sizes: str | None = option(
        None, "Batch sizes to search, e.g. 1,2,4,8 (dynamic batch only)."
    )
    seed: int = option(0, "Seed for the sampler and synthetic inputs.")
    min_time_s: float = option(
        0.5, "Minimum timed seconds per trial.", names=("--min-time",), low=0.01
    )
    min_runs: int = option(10, "Minimum timed runs per trial.", low=2)
    trial_timeout_s: float | None = option(
        None, "Wall-clock limit per trial (default: from the baseline, >= 60 s).",
        names=("--trial-timeout",), low=1,
    )  # fmt: skip
    rtol: float | None = option(
        None, "Accuracy guard: relative tolerance (default: per dtype).", low=0
    )
    atol: float | None = option(
        None, "Accuracy guard: absolute tolerance (default: per dtype).", low=0
    )
    finalists: int = option(3, "Top configs re-measured against the baseline (0: none).", low=0)
    rounds: int = option(
        5,
        "Confirmation length: max(12, 2 x ROUNDS) cycles of paired blocks at least (open-loop "
        "traffic: max(6, ROUNDS + 1); ROUNDS fresh-process rounds for memory and startup).",
        low=1,
    )
    wait: bool = option(True, "Queue behind another autotune measuring here, or fail.")
    max_memory_mb: float | None = option(
        None,
        "Per-trial memory cap; a trial past it is killed and counts as a constraint violation "
        "(default: 80% of the memory available now).",
        low=1,
    )
    max_failures: int = option(10, "Stop the study after this many failed trials in a row.", low=1)
    patience: int | None = option(
        None, "Stop the search after this many trials without a new best (then confirm).", low=1
    )
    max_latency_ms: float | None = option(
        None,
        "Constraint: p99 latency per run; the sampler learns it. With --objective capacity, the "
        "latency SLO each trial's rate search holds (the quantile of --slo).",
        low=0,
    )
    max_startup_s: float | None = option(
        None, "Constraint: session creation + first inference.", low=0
    )
    variants: str | None = option(
        None,
        "Model variants to search: int8-dynamic, int8-static, int4 (each its grid of "
        "quantization recipes), fp16, fused, one recipe (int8-dynamic.pc.rr.matmul), or auto.",
    )
    calibration: Path | None = option(None, "Calibration data (.npz) for int8-static.")
    accuracy: str | None = option(
        None,
        "Accuracy a variant needs against the original: cosine>=X, top1-agreement>=X or "
        "max-abs<=X (default per variant); score>=X for --accuracy-fn's score.",
    )
    accuracy_outputs: str | None = option(
        None, "The outputs the accuracy guard judges, NAME,... (default: the float outputs)."
    )
    accuracy_mask: str | None = option(
        None,
        "An input whose zeros mark padding (e.g. attention_mask): padded positions of outputs "
        "shaped like it are not judged.",
    )
    accuracy_fn: str | None = option(
        None,
        "Your own accuracy check, MODULE:FUNCTION or FILE.py:FUNCTION, called as "
        "f(reference, candidate) (dicts of arrays by output name); returns a bool, or a score "
        "judged by --accuracy score>=X.",
    )
    max_gpu_memory_mb: float | None = option(
        None, "GPU memory cap per trial (NVML); also the CUDA arena's gpu_mem_limit.", low=1
    )
    reconfirm: bool = option(
        False,
        "Measure the confirmation again on a finished study (else its stored verdict is "
        "reported); a changed verdict is shown and the previous best.json kept.",
        names=("--reconfirm",),
    )
    paired: bool = option(
        True,
        "Confirm throughput and latency in paired blocks of warm workers, or in interleaved "
        "rounds of fresh processes (the verdicts of before).",
        names=("--paired/--fresh-rounds",),
    )
    storage_retry_s: float = option(
        120.0,
        "How long to wait out an unreachable or locked study database before giving up.",
        names=("--storage-retry-s",),
        low=0,
    )
    # Not an option: the worker a test or benchmark starts instead of autotune's own.
    worker_command: Sequence[str] | None = field(default=None, metadata={"internal": True})

    def __post_init__(self) -> None:
        """Take what the API is handed as well (a str path, a list, batch sizes as ints) and
        check every bound, naming the flag and the keyword."""
        set_ = object.__setattr__
        set_(self, "model", Path(self.model))
        set_(self, "out", Path(self.out))
        for name in ("inputs", "calibration", "trace"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, Path(value))
        objective = self.objective
        set_(self, "objective", (objective,) if isinstance(objective, str) else tuple(objective))
        for name in ("shapes", "dims"):
            set_(self, name, tuple(getattr(self, name) or ()))
        batch_sizes = self.batch_sizes
        if batch_sizes is not None and not isinstance(batch_sizes, str):
            set_(self, "batch_sizes", ",".join(str(b) for b in batch_sizes) or None)
        for f in fields(self):
            flag: Flag | None = f.metadata.get("flag")
            value = getattr(self, f.name)
            if flag is None or flag.low is None or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"{flag_name(f.name)} ({f.name}) takes a number, got {value!r}")
            if not math.isfinite(value) or value < flag.low:
                raise UsageError(
                    f"{flag_name(f.name)} {value:g} is below {flag.low:g} ({f.name})"
                    + (f"; {flag.why}" if flag.why else "")
                )


def public_options() -> list[str]:
    """The options a user sets: every flag of ``autotune run``, every keyword of ``tune``."""
    return [f.name for f in fields(RunOptions) if "flag" in f.metadata]


def flag_of(name: str) -> Flag:
    return next(f.metadata["flag"] for f in fields(RunOptions) if f.name == name)


def flag_name(name: str) -> str:
    """The option's long flag as a user types it: ``--min-time`` for ``min_time_s``."""
    names = flag_of(name).names
    return names[0].split("/")[0] if names else "--" + name.replace("_", "-")


#: Options that belong to the machine a run happens on, not to a job submitted for many kinds of
#: machine: ``autotune agent`` sets them (its database, results folder, study and lock wait).
MACHINE_OPTIONS = ("storage", "study", "out", "wait", "storage_retry_s")
#: Options that name a local file: a submitted job carries the file itself, not its path.
FILE_OPTIONS = ("inputs", "calibration", "trace", "space", "accuracy_fn")


def job_options(options: RunOptions) -> dict[str, Any]:
    """The options a job records, as JSON: those set away from their defaults, without the
    model and the ``MACHINE_OPTIONS`` (paths as text, repeatable options as lists)."""
    values: dict[str, Any] = {}
    for f in fields(RunOptions):
        if "flag" not in f.metadata or f.name in MACHINE_OPTIONS:
            continue
        value = getattr(options, f.name)
        if value == f.default:
            continue
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        values[f.name] = value
    return values


def options_of_job(model: Path, values: dict[str, Any], **machine: Any) -> RunOptions:
    """The :class:`RunOptions` of a recorded job on this machine (``machine``: the
    ``MACHINE_OPTIONS`` the agent sets), checked as ``autotune run`` checks them."""
    unknown = sorted(set(values) - set(public_options()) | set(values) & set(MACHINE_OPTIONS))
    if unknown:
        raise UsageError(
            f"the job has options this autotune does not take ({', '.join(unknown)}): "
            "upgrade autotune on this machine"
        )
    return RunOptions(model=model, **values, **machine)

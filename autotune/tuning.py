"""From a model file and the user's options to ``best.json``: the path ``autotune run`` takes.

Prepares everything the study needs (model interface, inputs, resolved space, storage, study
name) from the :class:`~autotune.options.RunOptions`, runs :func:`autotune.study.tune`, writes
``best.json`` and the summary table. The Python entry point is :func:`tune`; the CLI builds a
``RunOptions`` and calls :func:`run_tuning`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autotune.config import (
    FeedPlan,
    MeasureSettings,
    ShapePoint,
    Traffic,
    TunedConfig,
    Workload,
)
from autotune.confirm.sweep import sweep_levels
from autotune.errors import UsageError
from autotune.interrupt import STOP, check_stop
from autotune.machine import environment, usable_cpus
from autotune.measure.accuracy import load_judge
from autotune.measure.openloop import ARRIVAL_KINDS, read_trace
from autotune.measure.serving import QUANTILES
from autotune.model import (
    PRECISION_TOLERANCES,
    ModelInfo,
    describe_inputs,
    parse_dim_flags,
    parse_shape_flags,
    read_model,
    resolve_inputs,
)
from autotune.objectives import Limits, Objective, parse_objectives
from autotune.options import RunOptions, public_options
from autotune.results.export import (
    keep_previous,
    previous_best,
    tuned_config,
    verdict_change,
    write_best,
)
from autotune.results.tables import progress_line, summary_table
from autotune.space import SearchSpace, default_batch_sizes, load_space, parse_batch_sizes
from autotune.storage import shown, storage_url
from autotune.study import TuneRequest, TuneResult, check_storage
from autotune.study import tune as run_study
from autotune.variants.build import (
    DEFAULT_ACCURACY,
    METRICS,
    VariantMaker,
    auto_variants,
    build_variants,
    parse_accuracy,
    parse_variants,
)
from autotune.variants.recipes import family_of


@dataclass(frozen=True)
class RunOutcome:
    tuned: TunedConfig
    best_path: Path
    table: str
    result: TuneResult  # how the study ended: interrupted, stopped by failures, its reason


def default_study_name(
    model_path: str, sha256: str, space: str, objective_slug: str, workload: Workload | None = None
) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model_path).stem) or "model"
    name = f"{stem}-{sha256[:8]}-{space}-{objective_slug}"
    if workload is not None and workload.concurrency > 1:
        name += f"-c{workload.concurrency}"
    if workload is not None and workload.shapes:
        name += f"-{len(workload.shapes)}shapes"
    traffic = workload.traffic if workload is not None else None
    if traffic is not None and traffic.max_latency_ms is not None:
        name += f"-{traffic.quantile}-{traffic.max_latency_ms:g}ms"
    elif traffic is not None:
        name += f"-r{traffic.rate:g}" if traffic.rate else f"-trace{len(traffic.trace)}"
    return name


def _check_writable(path: Path) -> Path:
    """Refuse an output folder that cannot be written, without creating anything yet."""
    path = path.resolve()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = "it is a file" if not existing.is_dir() else f"{existing} is not writable"
        raise UsageError(f"--out {path} cannot be used ({why}); pick another folder")
    return path


def default_memory_cap_mb() -> float:
    """A per-trial cap that leaves the host room: 80 % of the memory available now."""
    import psutil

    return 0.8 * psutil.virtual_memory().available / 2**20


def with_gpu_memory_limit(space: SearchSpace, limit_mb: float) -> SearchSpace:
    """The cap as the CUDA provider's arena limit too (a constraint for every trial, not a knob)."""
    providers = tuple(
        replace(p, options={**p.options, "gpu_mem_limit": str(int(limit_mb * 2**20))})
        if p.name == "CUDAExecutionProvider"
        else p
        for p in space.providers
    )
    return replace(space, providers=providers)


def with_variants(
    request: TuneRequest, options: RunOptions, echo: Callable[[str], None]
) -> TuneRequest:
    """Make the requested model variants (cached); the study judges each once and searches those
    that pass as one knob."""
    names = parse_variants(options.variants)
    if not names:
        return request
    if "auto" in names:
        names = auto_variants(request.model.path, request.space.providers[0].name)
        echo(f"variants: auto picked {', '.join(names) or 'none'} for this model and provider")
    calibration = str(options.calibration) if options.calibration else None
    made = build_variants(
        request.model, names, feeds=request.feeds, calibration=calibration, say=echo
    )
    data = "your --inputs" if options.inputs else "synthetic inputs"
    for family in dict.fromkeys(family_of(name) for name in made):
        metric = request.accuracy or DEFAULT_ACCURACY[family]
        count = sum(family_of(name) == family for name in made)
        echo(
            f"variants {family} ({count} recipe(s)): each judged once before the search, searched "
            f"only with {metric[0]} {METRICS[metric[0]]} {metric[1]:g} on {data}"
        )
    return replace(
        request,
        variant_paths={name: v.path for name, v in made.items()},
        variant_maker=VariantMaker(request.model, request.feeds, calibration, echo),
    )


def pick_space(name: str) -> str:
    """``auto``: the space of the best provider that really works here; else ``name``."""
    if name != "auto":
        return name
    from autotune.doctor import best_space

    return best_space()[0]


def check_provider_works(provider: str) -> None:
    """A GPU provider that is listed but cannot create a session is refused before any trial."""
    if provider == "CPUExecutionProvider":
        return
    from autotune.doctor import probe, reason_of

    result = probe(provider)
    if not result.get("ok"):
        raise UsageError(
            f"{provider} is listed by onnxruntime but does not work here ({reason_of(result)}); "
            "run `autotune doctor` for the fix, or tune with --space cpu"
        )


def _available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def model_tolerance(model: ModelInfo) -> tuple[float | None, float | None]:
    """The guard's default tolerances for this model's precision (None: per output dtype)."""
    return PRECISION_TOLERANCES.get(model.precision, (None, None))


def guard_options(
    options: RunOptions, model: ModelInfo, accuracy: tuple[str, float] | None
) -> tuple[tuple[str, ...], str | None, str | None]:
    """--accuracy-outputs, --accuracy-mask and --accuracy-fn, checked against the model."""
    names = tuple(n.strip() for n in (options.accuracy_outputs or "").split(",") if n.strip())
    unknown = [n for n in names if n not in model.outputs]
    if unknown:
        raise UsageError(
            f"--accuracy-outputs names {unknown}, not outputs of the model; its outputs: "
            f"{', '.join(model.outputs)}"
        )
    mask = options.accuracy_mask
    if mask is not None and mask not in [i.name for i in model.inputs]:
        raise UsageError(
            f"--accuracy-mask {mask!r} is not an input of the model; its inputs: "
            f"{', '.join(i.name for i in model.inputs)}"
        )
    judge = options.accuracy_fn
    if judge is not None:
        where, _, function = judge.rpartition(":")
        if where.endswith(".py"):  # the workers load it by path, from wherever they run
            judge = f"{Path(where).resolve()}:{function}"
        try:
            load_judge(judge)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if accuracy is not None and accuracy[0] == "score" and judge is None:
        raise UsageError("--accuracy score>=X judges the score of --accuracy-fn; give one")
    return names, mask, judge


#: Concurrent callers per usable CPU beyond which a run measures the queue, not the model.
MAX_CALLERS_PER_CPU = 8


def check_concurrency(concurrency: int, cpus: int) -> None:
    """Refuse more callers than the machine can serve at all: every trial would start that many
    threads, each waiting its turn for a core, and time how long the queue is."""
    if concurrency > MAX_CALLERS_PER_CPU * cpus:
        raise UsageError(
            f"--concurrency {concurrency} is {concurrency / cpus:.0f}x this machine's {cpus} "
            f"usable CPUs: so many callers measure queueing, not the model; give at most "
            f"{MAX_CALLERS_PER_CPU * cpus} ({MAX_CALLERS_PER_CPU} per CPU), the requests the "
            "deployment runs at once on one machine of this size"
        )


def fixed_dims(
    model: ModelInfo, feeds: FeedPlan, shapes: Sequence[ShapePoint], batch_size: int
) -> dict[str, int]:
    """The named dims free-dimension overrides would fix here (none: the knob changes nothing)."""
    from autotune.config import TrialConfig
    from autotune.measure.session import free_dimension_overrides

    config = TrialConfig(batch_size=batch_size, free_dim_overrides=True)
    return free_dimension_overrides(model.path, config, feeds, shapes)


def resolve_space(
    space: SearchSpace,
    options: RunOptions,
    model: ModelInfo,
    feeds: FeedPlan,
    workload: Workload,
    batch_sizes: Sequence[int],
    study_dir: Path,
) -> SearchSpace:
    """The loaded ``space`` for this model, machine and workload, resolved in one call: bound
    to the machine and the batch sizes, capped for GPU memory, and checked against the
    providers that really work here."""
    cpus = usable_cpus()
    check_concurrency(workload.concurrency, cpus)
    traffic = workload.traffic
    space = space.resolve(
        batch_sizes=batch_sizes,
        cpus=cpus,
        static_shapes=len(batch_sizes) == 1 and not workload.shapes,
        study_dir=str(study_dir),
        concurrency=workload.concurrency,
        fixable_dims=bool(fixed_dims(model, feeds, workload.shapes, batch_sizes[0])),
        open_loop=traffic is not None,
        batching=traffic is not None and model.has_dynamic_batch and options.batching is not False,
        max_delay_ms=(traffic.max_latency_ms or 40.0) / 4 if traffic is not None else 10.0,
    )
    if options.max_gpu_memory_mb is not None:
        space = with_gpu_memory_limit(space, options.max_gpu_memory_mb)
    space.check_providers(_available_providers())
    check_provider_works(space.providers[0].name)
    return space


def traffic_of(options: RunOptions, objectives: Sequence[Objective]) -> Traffic | None:
    """Open-loop traffic from --rate, --trace or --objective capacity (None: closed-loop
    callers, as --concurrency sets), checked before anything is measured."""
    capacity = any(o.open_loop for o in objectives)
    if options.rate is None and options.trace is None and not capacity:
        if options.batching:
            raise UsageError(
                "--batching batches requests that arrive on their own: give --rate, --trace or "
                "--objective capacity"
            )
        return None
    if options.rate is not None and not (math.isfinite(options.rate) and options.rate > 0):
        raise UsageError(f"--rate {options.rate:g}: give the requests per second, above 0")
    if options.rate is not None and options.trace is not None:
        raise UsageError("--rate and --trace both set the arrivals: give one")
    if capacity and (options.rate is not None or options.trace is not None):
        raise UsageError(
            "--objective capacity searches the rate itself: drop --rate/--trace, or keep them "
            "and optimise the latency at that rate (-o latency:p99)"
        )
    if not capacity and any(o.name == "throughput" for o in objectives):
        raise UsageError(
            "--rate and --trace fix the requests per second, so throughput cannot differ: "
            "optimise the latency at that rate (-o latency:p99), or the rate itself "
            "(-o capacity --max-latency-ms X)"
        )
    if capacity and options.max_latency_ms is None:
        raise UsageError(
            "--objective capacity needs --max-latency-ms X, the latency limit the served rate "
            "must hold (p99 by default; --slo latency:p95 picks another quantile)"
        )
    if options.concurrency != 1:
        raise UsageError(
            "--concurrency sets closed-loop callers; open-loop traffic (--rate, --trace, "
            "capacity) is served by server threads the search picks: drop --concurrency"
        )
    if options.arrivals not in ARRIVAL_KINDS:
        raise UsageError(f"--arrivals {options.arrivals!r}: use {' or '.join(ARRIVAL_KINDS)}")
    kind, _, quantile = options.slo.partition(":")
    if kind != "latency" or quantile not in QUANTILES:
        raise UsageError(f"--slo {options.slo!r}: use latency:{'|'.join(QUANTILES)}")
    trace: tuple[float, ...] = ()
    if options.trace is not None:
        try:
            trace = tuple(float(t) for t in read_trace(options.trace))
        except ValueError as exc:
            raise UsageError(f"--trace: {exc}") from None
    return Traffic(
        rate=options.rate,
        arrivals=options.arrivals,
        trace=trace,
        max_latency_ms=options.max_latency_ms if capacity else None,
        quantile=quantile,
    )


def describe_traffic(traffic: Traffic) -> str:
    """One line on the open-loop traffic a run measures."""
    if traffic.trace:
        what = f"{len(traffic.trace)} arrivals replayed from --trace"
    elif traffic.rate is not None:
        what = f"{traffic.rate:g} requests/s, {traffic.arrivals} arrivals"
    else:
        what = (
            f"capacity: the most requests/s, {traffic.arrivals} arrivals, with "
            f"{traffic.quantile} <= {traffic.max_latency_ms:g} ms and >= "
            f"{traffic.min_completed:.0%} answered"
        )
    return (
        f"open loop, {what}; latency counted from each request's arrival. Server threads, "
        "sessions, threads and the batcher are searched; the baseline is one session at the "
        "defaults called by one server thread per usable CPU"
    )


def _limits(options: RunOptions, traffic: Traffic | None) -> Limits:
    """The constraints a chosen config must meet (with capacity, --max-latency-ms is the SLO
    each trial's rate search holds, not a constraint)."""
    slo = traffic is not None and traffic.finds_capacity
    bounds = {
        "max_latency_ms": None if slo else options.max_latency_ms,
        "max_startup_s": options.max_startup_s,
        "max_memory_mb": options.max_memory_mb,
        "max_gpu_memory_mb": options.max_gpu_memory_mb,
    }
    return Limits({name: value for name, value in bounds.items() if value is not None})


@dataclass(frozen=True)
class CheckedOptions:
    """What :func:`check_options` made of the options: everything that holds on any machine."""

    objectives: tuple[Objective, ...]
    workload: Workload
    accuracy: tuple[str, float] | None
    space: SearchSpace
    model: ModelInfo
    feeds: FeedPlan
    guard: tuple[tuple[str, ...], str | None, str | None]
    batch_sizes: tuple[int, ...]


def check_options(options: RunOptions, *, space_name: str | None = None) -> CheckedOptions:
    """Every check of the options that does not depend on the machine (its CPUs, providers,
    folders and database): ``autotune run`` makes them first, ``autotune submit`` makes them
    for machines it never sees. ``space_name`` replaces ``--space auto``'s probe here."""
    objectives = parse_objectives(options.objective)
    traffic = traffic_of(options, objectives)
    if traffic is not None and options.batch_sizes is not None:
        raise UsageError(
            "--batch-sizes sets the batch a caller sends; under open-loop traffic each request "
            "is one sample and server-side batching (--batching) joins them: drop --batch-sizes"
        )
    parse_variants(options.variants)  # validated here, made after every other check
    accuracy = parse_accuracy(options.accuracy)
    if options.calibration is not None and not options.calibration.is_file():
        raise UsageError(f"--calibration file not found: {options.calibration}")
    shapes = parse_shape_flags(options.shapes)
    dims = parse_dim_flags(options.dims)
    requested_batches = parse_batch_sizes(options.batch_sizes)
    space = load_space(space_name or pick_space(options.space))
    model = read_model(options.model)
    resolved = resolve_inputs(
        model,
        shapes=shapes,
        dims=dims,
        data_path=str(options.inputs) if options.inputs else None,
        seed=options.seed,
        dim_weights=options.dim_weights,
    )
    workload = Workload(concurrency=options.concurrency, shapes=resolved.shapes, traffic=traffic)
    if options.batching and not model.has_dynamic_batch:
        raise UsageError(
            "--batching: the model's batch dim is fixed, so requests cannot be joined into one "
            "run; drop --batching (or export the model with a dynamic batch dim)"
        )
    guard = guard_options(options, model, accuracy)
    throughput = any(o.name == "throughput" for o in objectives)
    batch_sizes = default_batch_sizes(
        objective="throughput" if throughput and traffic is None else "latency",
        has_dynamic_batch=model.has_dynamic_batch,
        pinned=resolved.pinned_batch,
        requested=requested_batches,
    )
    return CheckedOptions(
        tuple(objectives), workload, accuracy, space, model, resolved.plan, guard,
        tuple(batch_sizes),
    )  # fmt: skip


def prepare(options: RunOptions) -> TuneRequest:
    """Validate every input and build the study request; nothing is written before this passes."""
    checked = check_options(options)
    objectives, workload, accuracy = checked.objectives, checked.workload, checked.accuracy
    model, guard, batch_sizes, space = (
        checked.model, checked.guard, checked.batch_sizes, checked.space
    )  # fmt: skip
    out = _check_writable(options.out)
    slug = "_".join(o.slug for o in objectives)
    name = options.study or default_study_name(model.path, model.sha256, space.name, slug, workload)
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
        raise UsageError(f"--study {name!r} may hold only letters, digits and _ . : -")
    space = resolve_space(space, options, model, checked.feeds, workload, batch_sizes, out / name)
    storage = storage_url(options.storage, out)
    check_storage(storage, options.storage_retry_s)
    sweep = options.sweep if options.sweep is not None else workload.concurrency > 1
    return TuneRequest(
        model=model,
        feeds=checked.feeds,
        space=space,
        objective=objectives[0],
        objectives=tuple(objectives),
        storage=storage,
        study_name=name,
        trials=options.trials,
        timeout_s=options.timeout_s,
        seed=options.seed,
        measure=MeasureSettings(min_runs=options.min_runs, min_time_s=options.min_time_s),
        trial_timeout_s=options.trial_timeout_s,
        environment=environment(),
        worker_command=options.worker_command,
        reference_path=str(out / name / "reference.npz"),
        spool_dir=str(out / name / "spool"),
        judged_outputs=guard[0],
        mask_input=guard[1],
        judge=guard[2],
        rtol=options.rtol if options.rtol is not None else model_tolerance(model)[0],
        atol=options.atol if options.atol is not None else model_tolerance(model)[1],
        finalists=options.finalists,
        rounds=options.rounds,
        paired=options.paired,
        storage_retry_s=options.storage_retry_s,
        wait_for_lock=options.wait,
        max_memory_mb=options.max_memory_mb or default_memory_cap_mb(),
        memory_constraint=options.max_memory_mb is not None,
        max_failures=options.max_failures,
        patience=options.patience,
        static_shapes=len(batch_sizes) == 1 and not workload.shapes,
        max_gpu_memory_mb=options.max_gpu_memory_mb,
        accuracy=accuracy,
        workload=workload,
        reconfirm=options.reconfirm,
        sweep_levels=sweep_levels(usable_cpus(), workload.concurrency) if sweep else (),
        limits=_limits(options, workload.traffic),
        target_rate=options.target_rate,
    )


def run_tuning(options: RunOptions, *, echo: Callable[[str], None]) -> RunOutcome:
    """Prepare, run the study and write best.json. A stop request (Ctrl-C, SIGTERM) that came
    before the study started ends the run there with ``KeyboardInterrupt``: no study and no
    best.json written (the results folder and a variant cache may be)."""
    request = prepare(options)
    check_stop()
    out = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    request = with_variants(request, options, echo)
    check_stop()
    _echo_header(request, options, echo)
    result = run_study(
        request,
        on_trial=lambda record, progress: echo(
            progress_line(record, progress, request.objective, request.limits)
        ),
        on_message=echo,
    )
    return write_result(request, result, out)


def _echo_header(request: TuneRequest, options: RunOptions, echo: Callable[[str], None]) -> None:
    """What the run is about to do: model, inputs, load, space, study, objective, guard."""
    model = request.model
    weights = f", weights in {len(model.external)} external file(s)" if model.external else ""
    echo(f"model:   {model.path} (sha256 {model.sha256[:12]}, {model.precision}{weights})")
    echo(f"inputs:  {describe_inputs(request.feeds, request.workload.shapes)}")
    if request.workload.traffic is not None:
        echo(f"load:    {describe_traffic(request.workload.traffic)}")
    elif request.workload.concurrency > 1:
        echo(
            f"load:    {request.workload.concurrency} concurrent callers; sessions, threads per "
            "session and the thread pool searched with the other knobs"
        )
    batches = ",".join(map(str, request.space.batch_sizes))
    echo(
        f"space:   {request.space.name} ({len(request.space.params)} knobs, batch sizes {batches})"
    )
    echo(f"study:   {request.study_name} in {shown(request.storage)}")
    echo(
        "objective: "
        + ", ".join(f"{o.name} ({o.direction})" for o in request.all_objectives)
        + f", {request.trials} trials"
    )
    data = "your --inputs" if options.inputs else "synthetic inputs (pass --inputs for real data)"
    why = (
        f" (the defaults for {model.precision})" if model.precision in PRECISION_TOLERANCES else ""
    )
    rtol = "per dtype" if request.rtol is None else f"{request.rtol:g}"
    atol = "per dtype" if request.atol is None else f"{request.atol:g}"
    echo(
        f"accuracy guard: outputs compared with the baseline's on {data}; rtol {rtol}, "
        f"atol {atol}{why if options.rtol is None and options.atol is None else ''}"
    )
    judged = ", ".join(request.judged_outputs) or "the float outputs"
    echo(
        f"accuracy guard judges: {judged}"
        + (f"; positions where {request.mask_input} is 0 left out" if request.mask_input else "")
        + (f"; by your check {request.judge}" if request.judge else "")
    )
    echo(
        f"limits:  {request.max_memory_mb:.0f} MB per trial, stop after {request.max_failures} failures in a row"
        + (f" or {request.patience} trials without a new best" if request.patience else "")
    )
    if request.limits.bounds:
        echo(f"constraints: {request.limits.describe()} (the sampler learns them)")


def write_result(request: TuneRequest, result: TuneResult, out: Path) -> RunOutcome:
    """The write phase: best.json (never replaced by a run cut short before its confirmation;
    the previous one kept when the verdict changed) and the summary table."""
    tuned = tuned_config(
        result,
        model=request.model,
        objective=request.objective,
        environment=request.environment,
        feeds=request.feeds,
        variant_paths=result.variant_paths,
        workload=request.workload,
    )
    destination = out / tuned.study_name / "best.json"
    old = previous_best(destination)
    change: list[str] = []
    written = True
    if result.reused and old is not None and old.trial_number == tuned.trial_number:
        path, tuned, written = destination, old, False  # the stored verdict, as deployed
    elif result.interrupted and old is not None and result.confirmation is None:
        # what a deployment loads is not replaced by a run cut short before its confirmation
        path, written = destination, False
        change = [
            f"best.json is left as it was: this run was interrupted before its confirmation "
            f"(its pick: #{tuned.trial_number})"
        ]
    else:
        if old is not None:
            change = verdict_change(old, tuned)
            if change:  # the same verdict again: new figures, nothing to keep
                change.append(f"the previous best.json is kept as {keep_previous(destination)}")
        path = write_best(tuned, out)
    table = summary_table(
        tuned,
        result,
        request.objective,
        request.all_objectives,
        request.limits,
        request.target_rate,
    )
    if not tuned.confirmed and written:
        table += (
            f"\nUNCONFIRMED: {tuned.unconfirmed}; re-run the same command to confirm it "
            '(best.json says "confirmed": false)'
        )
    if change:
        table += "\n" + "\n".join(change)
    table += f"\n{'wrote' if written else 'unchanged'} {path}\n"
    if request.workload.traffic is not None:
        table += (
            f"serve it with: autotune.load_pool({str(path)!r}) (its sessions, server threads "
            "and batcher; pool.submit(feeds) returns a future), or export -f triton"
        )
    elif request.workload.concurrency > 1:
        table += (
            f"serve {request.workload.concurrency} concurrent callers with: "
            f"autotune.load_pool({str(path)!r}) (its sessions, thread pools and workload)"
        )
    else:
        table += f"load it with: autotune.load_session({str(path)!r})"
    return RunOutcome(
        tuned=tuned,
        best_path=path,
        table=table,
        result=result,
    )


def tune(
    model: str | os.PathLike[str],
    *,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> TunedConfig:
    """Tune ``model`` and return the tuned config (also written to ``OUT/STUDY/best.json``).

    ``options`` are :class:`autotune.options.RunOptions`' fields, the same set as ``autotune
    run``'s flags (``min_time_s`` for ``--min-time``, ``shapes`` for ``--shape``, ...), checked
    with the same messages; ``progress`` gets the lines ``autotune run`` prints. Raises
    :class:`autotune.AutotuneError` with a message that says what to fix.

    Example:
        >>> tuned = autotune.tune("model.onnx", objective="latency:p99", trials=20)
        >>> tuned.speedup, tuned.config.session_options
    """
    unknown = sorted(set(options) - set(public_options()))
    if unknown:
        raise UsageError(
            f"tune() takes no option {', '.join(unknown)}; its options: "
            f"{', '.join(public_options())}"
        )
    request = RunOptions(model=Path(model), **options)
    STOP.clear()  # a stop request belongs to the run it interrupted
    return run_tuning(request, echo=progress or (lambda line: None)).tuned

"""Writing results: ``best.json`` (a :class:`TunedConfig`), always atomically."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autotune.config import (
    ConcurrencySweep,
    Confirmation,
    FeedPlan,
    Measurement,
    MeasureSettings,
    SearchFigures,
    TrialConfig,
    TunedConfig,
    WorkerJob,
    Workload,
)
from autotune.errors import AutotuneError, UsageError
from autotune.model import (
    STRING_DTYPE,
    ModelInfo,
    copy_external_files,
    has_external_data,
    model_sha256,
)
from autotune.objectives import Objective
from autotune.storage import shown
from autotune.study import StudyView, TrialRecord, TuneResult


def user_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: never a truncated file.

    The file gets the mode any new file of the user's gets (0666 less the umask), not
    ``mkstemp``'s 0600: a service running as another user must be able to read best.json.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.fchmod(fd, 0o666 & ~user_umask())
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def export_path(dest: str | None, folder: Path, default: str) -> Path:
    """Where an export goes: ``folder/default`` without ``--dest``; ``DIR/default`` for a
    ``--dest`` that is a folder or ends with a slash; else ``--dest`` itself."""
    if dest is None:
        return folder / default
    path = Path(dest).expanduser()
    if dest.endswith(("/", os.sep)) or path.is_dir():
        return path / default
    return path


def _tuned(
    *,
    record: TrialRecord,
    search_best: TrialRecord,
    baseline: TrialRecord,
    objective: Objective,
    confirmation: Confirmation | None,
    source: tuple[str, str],
    variant_paths: Mapping[str, str] | None,
    study: tuple[str, str],
    environment: Mapping[str, Any],
    feeds: FeedPlan | None,
    workload: Workload | None = None,
    sweep: ConcurrencySweep | None = None,
    tuning: Mapping[str, float] | None = None,
    why_unconfirmed: str = "no confirmation ran",
) -> TunedConfig:
    """A TunedConfig for ``record``: its confirmed figures when the confirmation measured it,
    else its search measurement, marked unconfirmed with ``why_unconfirmed`` (the defaults
    need no confirmation); ``search`` always says what the search itself saw."""
    found, base = search_best.outcome, baseline.outcome
    assert isinstance(found, Measurement) and isinstance(base, Measurement)
    search = SearchFigures(search_best.number, found, base, objective.gain(found, base))
    own = record.outcome
    assert isinstance(own, Measurement)
    metrics, base_metrics, speedup = own, base, objective.gain(own, base)
    unconfirmed = "" if record.number == baseline.number else why_unconfirmed
    if confirmation is not None:
        measured = {f.trial_number for f in (confirmation.baseline, *confirmation.finalists)}
        if record.number in measured:
            figures = confirmation.figures(record.number)
            base_metrics = confirmation.baseline.measurement or base
            metrics = figures.measurement or own
            speedup = figures.gain
            unconfirmed = ""
        elif unconfirmed:
            unconfirmed = (
                f"trial #{record.number} was not among the configs the confirmation measured"
            )
    model_path, model_sha = _model_file(record.config, *source, variant_paths)
    return TunedConfig(
        config=record.config,
        model_path=model_path,
        model_sha256=model_sha,
        objective=objective.name,
        metrics=metrics,
        baseline=base_metrics,
        speedup=speedup,
        study_name=study[0],
        storage=shown(study[1]),
        trial_number=record.number,
        environment=dict(environment),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        search=search,
        confirmation=confirmation,
        inputs=feeds,
        workload=workload or Workload(),
        sweep=sweep,
        tuning=dict(tuning or {}),
        unconfirmed=unconfirmed,
        defaults=baseline.config,
        original_model=source,
    )


def tuned_config(
    result: TuneResult,
    *,
    model: ModelInfo,
    objective: Objective,
    environment: Mapping[str, Any],
    feeds: FeedPlan | None = None,
    variant_paths: Mapping[str, str] | None = None,
    workload: Workload | None = None,
) -> TunedConfig:
    """best.json's content: the confirmed figures when a confirmation ran, else the search's."""
    if result.interrupted:
        why = "the run was interrupted before its confirmation: one search measurement"
    else:
        why = "no confirmation ran (--finalists 0, or no finalist): one search measurement"
    return _tuned(
        record=result.best,
        search_best=result.search_best,
        baseline=result.baseline,
        objective=objective,
        confirmation=result.confirmation,
        source=(model.path, model.sha256),
        variant_paths=variant_paths,
        study=(result.study_name, result.storage),
        environment=environment,
        feeds=feeds,
        workload=workload,
        sweep=result.sweep,
        tuning=result.timing,
        why_unconfirmed=why,
    )


def _model_file(
    config: TrialConfig, source: str, sha: str, variant_paths: Mapping[str, str] | None
) -> tuple[str, str]:
    """The model file a config runs: the original, or the variant it names."""
    if config.variant == "original":
        return source, sha
    path = (variant_paths or {}).get(config.variant)
    if path is None or not Path(path).is_file():
        raise AutotuneError(f"the {config.variant} variant's file is missing; re-run the study")
    return path, model_sha256(path)


def write_best(tuned: TunedConfig, out_dir: Path) -> Path:
    """best.json, with a variant's model file copied beside it (what a deployment ships)."""
    folder = out_dir / tuned.study_name
    if tuned.config.variant != "original":
        copy = folder / f"model.{tuned.config.variant}.onnx"
        if not copy.is_file() or model_sha256(copy) != tuned.model_sha256:
            folder.mkdir(parents=True, exist_ok=True)
            copy_external_files(Path(tuned.model_path), copy)  # weights first, then the graph
            partial = copy.with_name(f".{copy.name}.part")
            shutil.copyfile(tuned.model_path, partial)
            partial.replace(copy)
        tuned = replace(tuned, model_path=str(copy))
    path = folder / "best.json"
    write_json_atomic(path, tuned.to_dict())
    return path


def previous_best(path: Path) -> TunedConfig | None:
    """The best.json a run is about to replace, if there is a readable one."""
    from autotune.measure.session import read_tuned

    if not path.is_file():
        return None
    try:
        return read_tuned(path)
    except (AutotuneError, KeyError, TypeError, ValueError):
        return None


def keep_previous(path: Path) -> Path:
    """Keep the deployed best.json as best.prev.json before a run replaces it (atomically)."""
    prev = path.with_name("best.prev.json")
    partial = prev.with_name(f".{prev.name}.part")
    shutil.copyfile(path, partial)
    partial.replace(prev)
    return prev


def verdict_change(old: TunedConfig, new: TunedConfig) -> list[str]:
    """Lines that show a changed verdict: old against new, with both sets of figures."""

    def kind(t: TunedConfig) -> str:
        return t.confirmation.kind if t.confirmation else "search only"

    def when(t: TunedConfig) -> str:
        return t.confirmation.confirmed_at if t.confirmation else t.created

    if old.trial_number == new.trial_number and kind(old) == kind(new):
        return []
    return [
        "verdict changed:",
        f"  before ({when(old)}): trial #{old.trial_number} [{old.config.describe()}], "
        f"{kind(old)}, {old.speedup:.2f}x against the defaults",
        f"  now    ({when(new)}): trial #{new.trial_number} [{new.config.describe()}], "
        f"{kind(new)}, {new.speedup:.2f}x against the defaults",
    ]


def tuned_for_trial(view: StudyView, number: int | None = None) -> TunedConfig:
    """The tuned config of one trial of a stored study (default: the chosen one)."""
    baseline = view.baseline
    record = view.chosen if number is None else view.record(number)
    if baseline is None or record is None or not isinstance(baseline.outcome, Measurement):
        raise AutotuneError(f"study {view.name!r} has no successful baseline to export against")
    if not isinstance(record.outcome, Measurement):
        raise UsageError(
            f"trial #{record.number} failed ({record.outcome.kind}); export a successful trial"
        )
    return _tuned(
        record=record,
        search_best=record,
        baseline=baseline,
        objective=view.objective,
        confirmation=view.confirmation,
        source=(str(view.attrs["model_path"]), str(view.attrs["model_sha256"])),
        variant_paths=view.attrs.get("variants"),
        study=(view.name, view.storage),
        environment=view.attrs.get("environment", {}),
        feeds=FeedPlan.from_dict(view.attrs["inputs"]) if "inputs" in view.attrs else None,
        workload=Workload.from_dict(view.attrs.get("workload")),
        sweep=ConcurrencySweep.from_dict(view.attrs["sweep"])
        if view.attrs.get("sweep") and number is None
        else None,
    )


def python_snippet(tuned: TunedConfig, *, beside: Path | None = None) -> str:
    """Standalone code that serves the tuned workload with plain onnxruntime calls.

    It builds the config's sessions (and the global thread pool when the config shares one),
    then, run as a script, sends one request per concurrent caller on sample data and prints
    the output shapes. The model is the script's first argument; else, for a script written
    to ``beside``, the model where it lay relative to the script; else where it was tuned.
    """
    config = tuned.config
    enums = {
        "execution_mode": "ExecutionMode",
        "graph_optimization_level": "GraphOptimizationLevel",
    }
    pooled = ("intra_op_num_threads", "inter_op_num_threads")
    workload = tuned.workload
    callers = workload.concurrency
    batcher = ""
    if workload.traffic is not None:  # open loop: the server threads are the callers
        callers = config.server_threads or int(tuned.environment.get("usable_cpus") or 1)
        if config.max_batch > 1:
            batcher = (
                f"\nIts server-side batcher (max_batch {config.max_batch}, max_queue_delay_ms "
                f"{config.max_queue_delay_ms:g}) is not in this script: serve with "
                "autotune.load_pool(best.json).submit, or export -f triton."
            )
    lines = [
        f'"""Tuned by autotune (study {tuned.study_name}, trial #{tuned.trial_number}):',
        f"{tuned.objective} {tuned.speedup:.2f}x against ONNX Runtime's defaults under "
        f"{callers} concurrent caller(s) on "
        f'{tuned.environment.get("cpu_model", "this machine")}.{batcher}"""',
        "",
        "import sys",
        "from concurrent.futures import ThreadPoolExecutor",
        "from pathlib import Path",
        "",
        "import numpy as np",
        "import onnxruntime as ort",
        "",
        *_model_lines(tuned.model_path, beside),
        f"BATCH_SIZE = {config.batch_size}",
        f"CONCURRENCY = {callers}  # requests in flight at once",
        f"SESSIONS = {config.sessions}  # caller i runs on session i % SESSIONS",
        "",
    ]
    if config.global_thread_pool:
        intra = config.session_options.get("intra_op_num_threads", 0)
        inter = config.session_options.get("inter_op_num_threads", 0)
        lines += [
            "# One process-wide thread pool shared by every session (once per process).",
            f"ort.set_global_thread_pool_sizes({intra}, {inter})",
        ]
    lines.append("options = ort.SessionOptions()")
    if config.global_thread_pool:
        lines.append("options.use_per_session_threads = False")
    for name, value in config.session_options.items():
        if config.global_thread_pool and name in pooled:
            continue
        text = f"ort.{enums[name]}.{value}" if name in enums else repr(value)
        lines.append(f"options.{name} = {text}")
    for key, value in config.config_entries.items():
        lines.append(f"options.add_session_config_entry({key!r}, {value!r})")
    from autotune.measure.session import free_dimension_overrides

    fixed = free_dimension_overrides(tuned.model_path, config, tuned.inputs, workload.shapes)
    if fixed:
        lines.append("# the served shape, fixed at session creation (other sizes are refused)")
    for symbol, size in fixed.items():
        lines.append(f"options.add_free_dimension_override_by_name({symbol!r}, {size})")
    providers = ", ".join(f"({p.name!r}, {dict(p.options)!r})" for p in config.providers)
    lines += [
        f"providers = [{providers}]",
        "sessions = [",
        "    ort.InferenceSession(MODEL, sess_options=options, providers=providers)",
        "    for _ in range(SESSIONS)",
        "]",
    ]
    if config.io_binding:
        lines.append(
            "# tuned with IO binding: bind inputs and outputs on the device (session.io_binding())"
        )
    shapes = {}
    for spec in tuned.inputs.inputs if tuned.inputs else ():
        dims = workload.shapes[0].dims if workload.shapes else None
        shapes[spec.name] = (list(spec.shape_for(config.batch_size, dims)), spec.dtype)
    lines += [
        "",
        "",
        "def infer(caller, feeds):",
        '    """One request from caller number `caller` (0 .. CONCURRENCY-1)."""',
        "    return sessions[caller % SESSIONS].run(None, feeds)",
        "",
        "",
        "def sample_feeds():",
        '    """Zeros (empty texts for string inputs) of the tuned shapes and dtypes: replace with '
        'real requests."""',
        f"    shapes = {shapes!r}",
        "    return {",
        f"        name: np.full(shape, '', object) if dtype == {STRING_DTYPE!r} else "
        "np.zeros(shape, dtype)",
        "        for name, (shape, dtype) in shapes.items()",
        "    }",
        "",
        "",
        'if __name__ == "__main__":',
        "    feeds = sample_feeds()",
        "    with ThreadPoolExecutor(CONCURRENCY) as callers:",
        "        answers = list(callers.map(lambda c: infer(c, feeds), range(CONCURRENCY)))",
        "    for output, value in zip(sessions[0].get_outputs(), answers[0]):",
        '        print(output.name, "x".join(map(str, np.shape(value))))',
    ]
    return "\n".join(lines) + "\n"


def _model_lines(model_path: str, beside: Path | None) -> list[str]:
    """The snippet's MODEL: its first argument, the model relative to the script, or the
    path it was tuned at."""
    lines = [f"TUNED_AT = {model_path!r}"]
    if beside is None:
        return [*lines, "MODEL = sys.argv[1] if len(sys.argv) > 1 else TUNED_AT"]
    relative = os.path.relpath(Path(model_path).resolve(), beside.resolve().parent)
    return [
        *lines,
        "# The model: the first argument; else where it lay relative to this file; else where",
        "# it was tuned.",
        f"BESIDE = Path(__file__).resolve().parent / {relative!r}",
        "MODEL = sys.argv[1] if len(sys.argv) > 1 else str(BESIDE if BESIDE.exists() else TUNED_AT)",
    ]


#: Session options ONNX Runtime reads from a model's ``ort_config`` metadata, as it numbers them.
ORT_CONFIG_OPTIONS = {
    "intra_op_num_threads",
    "inter_op_num_threads",
    "execution_mode",
    "graph_optimization_level",
}
ORT_CONFIG_LEVELS = {
    "ORT_DISABLE_ALL": 0, "ORT_ENABLE_BASIC": 1, "ORT_ENABLE_EXTENDED": 2, "ORT_ENABLE_ALL": 99,
}  # fmt: skip


def ort_config_model(tuned: TunedConfig, dest: Path) -> tuple[Path, list[str]]:
    """A copy of the model whose ``ort_config`` metadata holds the tuned session options.

    ONNX Runtime applies it when ``ORT_LOAD_CONFIG_FROM_MODEL=1`` is set, for intra/inter-op
    threads, execution mode and graph optimization level only. Returns what could not go in.
    """
    import onnx

    options: dict[str, int] = {}
    left_out = []
    for name, value in tuned.config.session_options.items():
        if name not in ORT_CONFIG_OPTIONS:
            left_out.append(f"session option {name}")
        elif name == "execution_mode":
            options[name] = 1 if value == "ORT_PARALLEL" else 0
        elif name == "graph_optimization_level":
            if value in ORT_CONFIG_LEVELS:
                options[name] = ORT_CONFIG_LEVELS[str(value)]
            else:
                left_out.append(f"graph_optimization_level {value}")
        else:
            options[name] = int(value)
    left_out += [f"session config entry {key}" for key in tuned.config.config_entries]
    left_out += [f"{p.name} options" for p in tuned.config.providers if p.options]
    if tuned.config.providers[0].name != "CPUExecutionProvider":
        left_out.append(f"the provider list ({tuned.config.providers[0].name} first)")
    if tuned.config.io_binding:
        left_out.append("IO binding")
    # The graph only: external weights stay in their files, copied beside the new graph.
    model = onnx.load(tuned.model_path, load_external_data=False)
    copy_external_files(Path(tuned.model_path), dest)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != "ort_config"]
    del model.metadata_props[:]
    for key, value in kept:
        model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(key="ort_config", value=json.dumps({"session_options": options}))
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.part")
    onnx.save(model, partial)
    partial.replace(dest)
    return dest, left_out


def optimized_model(tuned: TunedConfig, dest: Path) -> tuple[Path, TunedConfig]:
    """Save the graph as ONNX Runtime optimized it under the tuned settings, plus the config
    that loads it with optimizations off (the work is done once, not at every startup)."""
    from autotune.measure.session import create_session

    dest.parent.mkdir(parents=True, exist_ok=True)

    def saved(options: Any) -> None:
        options.optimized_model_filepath = str(dest)
        if has_external_data(tuned.model_path):  # keep the weights out of the graph, beside it
            weights = f"{dest.name}.data"
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", weights
            )
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
            )
        options.log_severity_level = 3  # the hardware-specific warning is ours to give, once

    create_session(
        tuned.model_path,
        tuned.config,
        feeds=tuned.inputs,
        shapes=tuned.workload.shapes,
        also=saved,
    )
    session = {**tuned.config.session_options, "graph_optimization_level": "ORT_DISABLE_ALL"}
    config = replace(tuned.config, session_options=session)
    return dest, replace(
        tuned, config=config, model_path=str(dest.resolve()), model_sha256=model_sha256(dest)
    )


def compare_startup(
    before: TunedConfig, after: TunedConfig, feeds: FeedPlan, *, rounds: int = 5
) -> tuple[float, float]:
    """Median session creation + first inference of two configs, interleaved in fresh workers."""
    from autotune.measure.runner import run_trial

    quick = MeasureSettings(warmup_runs=1, warmup_s=0.0, min_runs=2, min_time_s=0.0)
    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(rounds):
        for key, tuned in (("before", before), ("after", after)):
            job = WorkerJob(tuned.model_path, tuned.config, feeds, quick)
            outcome = run_trial(job, timeout_s=600)
            if not isinstance(outcome, Measurement):
                raise AutotuneError(f"measuring startup failed: {outcome.kind}: {outcome.message}")
            times[key].append(outcome.startup_s)
    return statistics.median(times["before"]), statistics.median(times["after"])

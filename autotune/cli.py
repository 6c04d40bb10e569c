"""The command line: thin typer commands over keyword-only calls.

Every :class:`AutotuneError` becomes one ``Error: ...`` line on stderr and a non-zero exit
(2 for usage errors, 1 otherwise); ``--debug`` (or ``AUTOTUNE_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from autotune.errors import AutotuneError, UsageError
from autotune.objectives import OBJECTIVE_HELP

app = typer.Typer(
    name="autotune",
    help="Find the fastest ONNX Runtime configuration for a model on this machine.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain click help: one option per line and its help wrapped below it, readable at 80
    # columns (rich's boxed tables cut defaults and help off there).
    rich_markup_mode=None,
)

T = TypeVar("T")
DebugOption = Annotated[
    bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
]


def _guarded(debug: bool, action: Callable[[], T]) -> T:
    try:
        return action()
    except AutotuneError as exc:
        if debug or os.environ.get("AUTOTUNE_DEBUG") == "1":
            raise
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(code=exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("Interrupted. Re-run the same command to resume the study.", err=True)
        raise typer.Exit(code=130) from None


@app.callback()
def _root() -> None:
    """Find the fastest ONNX Runtime configuration for a model on this machine."""


@app.command()
def run(
    model: Annotated[
        Path, typer.Argument(help="The .onnx model to tune.", show_default=False, metavar="MODEL")
    ],
    objective: Annotated[
        list[str] | None,
        typer.Option(
            "--objective",
            "-o",
            help=f"{OBJECTIVE_HELP} [default: throughput]; repeat for a Pareto front.",
        ),
    ] = None,
    space: Annotated[
        str, typer.Option(help="Search space: a name from search_spaces/ or a .yaml path.")
    ] = "cpu",
    trials: Annotated[
        int, typer.Option(min=1, help="Total trials in the study; re-running resumes up to this.")
    ] = 30,
    timeout: Annotated[
        float | None, typer.Option(min=1, help="Stop starting trials after this many seconds.")
    ] = None,
    storage: Annotated[
        str | None, typer.Option(help="Optuna storage URL (default: sqlite:///OUT/autotune.db).")
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="Study name (default: MODEL-SHA8-SPACE-OBJECTIVE).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the study database and results.")] = Path(
        "results"
    ),
    shape: Annotated[
        list[str] | None, typer.Option(help="Input shape, NAME=1x3x224x224 (repeatable).")
    ] = None,
    dim: Annotated[
        list[str] | None,
        typer.Option(
            help="Symbolic dim value, SYMBOL=128, or a mix of shapes, SYMBOL=32,128,512 "
            "(repeatable)."
        ),
    ] = None,
    dim_weights: Annotated[
        str | None,
        typer.Option(help="Weights of the --dim shape mix, e.g. 0.5,0.3,0.2 (default: equal)."),
    ] = None,
    inputs: Annotated[
        Path | None,
        typer.Option(help="Input data (.npz by input name): a pool of samples along axis 0."),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            help="Requests in flight at once: caller threads driving the sessions in every trial."
        ),
    ] = 1,
    sweep: Annotated[
        bool | None,
        typer.Option(
            "--sweep/--no-sweep",
            help="After the search, measure the chosen config and the defaults at concurrency "
            "1, 2, 4, ... (default: on with --concurrency above 1).",
            show_default=False,
        ),
    ] = None,
    batch_sizes: Annotated[
        str | None, typer.Option(help="Batch sizes to search, e.g. 1,2,4,8 (dynamic batch only).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the sampler and synthetic inputs.")] = 0,
    min_time: Annotated[
        float, typer.Option(min=0.01, help="Minimum timed seconds per trial.")
    ] = 0.5,
    min_runs: Annotated[int, typer.Option(min=2, help="Minimum timed runs per trial.")] = 10,
    trial_timeout: Annotated[
        float | None,
        typer.Option(
            min=1, help="Wall-clock limit per trial (default: from the baseline, >= 60 s)."
        ),
    ] = None,
    rtol: Annotated[
        float | None,
        typer.Option(min=0, help="Accuracy guard: relative tolerance (default: per dtype)."),
    ] = None,
    atol: Annotated[
        float | None,
        typer.Option(min=0, help="Accuracy guard: absolute tolerance (default: per dtype)."),
    ] = None,
    finalists: Annotated[
        int, typer.Option(min=0, help="Top configs re-measured against the baseline (0: none).")
    ] = 3,
    rounds: Annotated[
        int,
        typer.Option(
            min=1,
            help="Confirmation length: max(12, 2 x ROUNDS) cycles of paired blocks at least "
            "(ROUNDS fresh-process rounds for memory and startup).",
        ),
    ] = 5,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait", help="Queue behind another autotune measuring here, or fail."
        ),
    ] = True,
    max_memory_mb: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="Per-trial memory cap; a trial past it is killed and counts as a constraint "
            "violation (default: 80% of the memory available now).",
        ),
    ] = None,
    max_failures: Annotated[
        int, typer.Option(min=1, help="Stop the study after this many failed trials in a row.")
    ] = 10,
    patience: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Stop the search after this many trials without a new best (then confirm).",
        ),
    ] = None,
    max_latency_ms: Annotated[
        float | None,
        typer.Option(min=0, help="Constraint: p99 latency per run; the sampler learns it."),
    ] = None,
    max_startup_s: Annotated[
        float | None,
        typer.Option(min=0, help="Constraint: session creation + first inference."),
    ] = None,
    variants: Annotated[
        str | None,
        typer.Option(
            help="Model variants to search: int8-dynamic, int8-static, int4 (each its grid of "
            "quantization recipes), fp16, fused, one recipe (int8-dynamic.pc.rr.matmul), or auto."
        ),
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="Calibration data (.npz) for int8-static.")
    ] = None,
    accuracy: Annotated[
        str | None,
        typer.Option(
            help="Accuracy a variant needs against the original: cosine>=X, "
            "top1-agreement>=X or max-abs<=X (default per variant); score>=X for "
            "--accuracy-fn's score."
        ),
    ] = None,
    accuracy_outputs: Annotated[
        str | None,
        typer.Option(
            help="The outputs the accuracy guard judges, NAME,... (default: the float outputs)."
        ),
    ] = None,
    accuracy_mask: Annotated[
        str | None,
        typer.Option(
            help="An input whose zeros mark padding (e.g. attention_mask): padded positions "
            "of outputs shaped like it are not judged."
        ),
    ] = None,
    accuracy_fn: Annotated[
        str | None,
        typer.Option(
            help="Your own accuracy check, MODULE:FUNCTION or FILE.py:FUNCTION, called as "
            "f(reference, candidate) (dicts of arrays by output name); returns a bool, or a "
            "score judged by --accuracy score>=X."
        ),
    ] = None,
    max_gpu_memory_mb: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="GPU memory cap per trial (NVML); also the CUDA arena's gpu_mem_limit.",
        ),
    ] = None,
    reconfirm: Annotated[
        bool,
        typer.Option(
            "--reconfirm",
            help="Measure the confirmation again on a finished study (else its stored verdict "
            "is reported); a changed verdict is shown and the previous best.json kept.",
        ),
    ] = False,
    storage_retry_s: RetryOption = 120.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print best.json (and its path) instead of the table.")
    ] = False,
    debug: DebugOption = False,
) -> None:
    """Tune MODEL: measure ONNX Runtime's defaults, search the space, write best.json."""
    from autotune.interrupt import stop_on_signals

    with stop_on_signals(lambda line: typer.echo(line, err=True)):  # before anything else
        from autotune.tuning import RunOptions, run_tuning

        options = RunOptions(
            model=model,
            objective=tuple(objective or ["throughput"]),
            space=space,
            trials=trials,
            timeout_s=timeout,
            storage=storage,
            study=study,
            out=out,
            shapes=tuple(shape or ()),
            dims=tuple(dim or ()),
            dim_weights=dim_weights,
            inputs=inputs,
            concurrency=concurrency,
            sweep=sweep,
            reconfirm=reconfirm,
            storage_retry_s=storage_retry_s,
            batch_sizes=batch_sizes,
            seed=seed,
            min_time_s=min_time,
            min_runs=min_runs,
            trial_timeout_s=trial_timeout,
            rtol=rtol,
            atol=atol,
            finalists=finalists,
            rounds=rounds,
            wait=wait,
            max_memory_mb=max_memory_mb,
            max_failures=max_failures,
            patience=patience,
            max_gpu_memory_mb=max_gpu_memory_mb,
            max_latency_ms=max_latency_ms,
            max_startup_s=max_startup_s,
            variants=variants,
            calibration=calibration,
            accuracy=accuracy,
            accuracy_outputs=accuracy_outputs,
            accuracy_mask=accuracy_mask,
            accuracy_fn=accuracy_fn,
        )
        echo = (lambda line: None) if quiet else (lambda line: typer.echo(line, err=True))
        outcome = _guarded(debug, lambda: run_tuning(options, echo=echo))
    if json_output:
        typer.echo(
            json.dumps({"path": str(outcome.best_path), **outcome.tuned.to_dict()}, indent=2)
        )
    else:
        typer.echo(outcome.table)
    if outcome.result.interrupted:
        typer.echo(
            "Interrupted: the results above are what completed. "
            "Re-run the same command to resume the study.",
            err=True,
        )
        raise typer.Exit(code=130)
    if outcome.result.failed_out:
        typer.echo(f"Error: stopped early: {outcome.result.stop_reason}", err=True)
        raise typer.Exit(code=1)


@app.command()
def doctor(
    provider: Annotated[
        list[str] | None,
        typer.Option(
            help="Provider that must work, e.g. CUDAExecutionProvider (repeatable); "
            "the exit code is 1 when one does not."
        ),
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Check the ONNX Runtime install: packages, GPU, libraries, and which providers really work."""
    from autotune.doctor import diagnose

    d = _guarded(debug, lambda: diagnose(list(provider) if provider else None))
    for line in d.lines:
        typer.echo(line)
    if d.fixes:
        typer.echo("to fix:")
        for fix in dict.fromkeys(d.fixes):
            typer.echo(f"  - {fix}")
    missing = [p for p in provider or [] if not d.works(p)]
    if missing or not d.install_ok:
        raise typer.Exit(code=1)


StorageOption = Annotated[
    str | None, typer.Option(help="Optuna storage URL (default: sqlite:///OUT/autotune.db).")
]
OutOption = Annotated[Path, typer.Option(help="Results folder of `autotune run`.")]
RetryOption = Annotated[
    float,
    typer.Option(
        "--storage-retry-s",
        min=0,
        help="How long to wait out an unreachable or locked study database before giving up.",
    ),
]


def _storage(storage: str | None, out: Path, retry_s: float = 120.0) -> str:
    from autotune.storage import storage_url
    from autotune.study._retry import BOUND

    BOUND["s"] = retry_s
    return storage_url(storage, out)


@app.command()
def show(
    study: Annotated[str | None, typer.Option(help="A study to show trial by trial.")] = None,
    storage: StorageOption = None,
    out: OutOption = Path("results"),
    storage_retry_s: RetryOption = 120.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    debug: DebugOption = False,
) -> None:
    """List the studies, or show one study's trials (baseline and chosen marked)."""
    from autotune.show import studies_table, trial_row, trials_table
    from autotune.study import list_studies, load_study_view

    url = _storage(storage, out, storage_retry_s)
    if study is None:
        rows = _guarded(debug, lambda: list_studies(url))
        typer.echo(json.dumps(rows, indent=2) if json_output else studies_table(rows))
        return
    view = _guarded(debug, lambda: load_study_view(url, study))
    if json_output:
        payload = {
            "study": view.name,
            "objective": view.objective.name,
            "attrs": dict(view.attrs),
            "trials": [trial_row(view, r) for r in view.records],
        }
        typer.echo(json.dumps(payload, indent=2, default=str))
    else:
        typer.echo(trials_table(view))


FORMATS = ("json", "python", "ort-config", "optimized-model")


@app.command()
def export(
    study: Annotated[
        str | None,
        typer.Option(help="The study to export from (default: the storage's only study)."),
    ] = None,
    format: Annotated[str, typer.Option("--format", "-f", help=" | ".join(FORMATS))] = "json",
    trial: Annotated[
        int | None, typer.Option(help="Trial number (default: the chosen config).")
    ] = None,
    storage: StorageOption = None,
    out: OutOption = Path("results"),
    storage_retry_s: RetryOption = 120.0,
    dest: Annotated[
        str | None,
        typer.Option(
            help="A file, a folder (DIR/) for the default file name, or - for stdout "
            "(json, python). Default: OUT/STUDY/<file>."
        ),
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Write a trial's configuration in the form a deployment takes."""
    from autotune.export import (
        compare_startup,
        export_path,
        optimized_model,
        ort_config_model,
        python_snippet,
        tuned_for_trial,
        write_json_atomic,
        write_text_atomic,
    )
    from autotune.study import load_study_view, the_study

    if format not in FORMATS:
        typer.echo(f"Error: unknown --format {format!r}; use one of {', '.join(FORMATS)}", err=True)
        raise typer.Exit(code=2)

    if dest == "-" and format not in ("json", "python"):
        typer.echo(
            f"Error: --format {format} writes an .onnx file, not text: give --dest a file or "
            "folder, not -",
            err=True,
        )
        raise typer.Exit(code=2)

    def do() -> None:
        url = _storage(storage, out, storage_retry_s)
        view = load_study_view(url, the_study(url, study))
        tuned = tuned_for_trial(view, trial)
        stem = Path(tuned.model_path).stem
        default = {
            "json": f"trial-{tuned.trial_number}.json",
            "python": "session.py",
            "ort-config": f"{stem}.ort-config.onnx",
            "optimized-model": f"{stem}.optimized.onnx",
        }[format]
        if dest == "-":
            text = (
                json.dumps(tuned.to_dict(), indent=2) + "\n"
                if format == "json"
                else python_snippet(tuned)
            )
            sys.stdout.write(text)
            return
        path = export_path(dest, out.resolve() / view.name, default)
        if format == "json":
            write_json_atomic(path, tuned.to_dict())
            typer.echo(f"wrote {path}")
        elif format == "python":
            write_text_atomic(path, python_snippet(tuned, beside=path))
            typer.echo(f"wrote {path}; run it: python {path} [MODEL]")
        elif format == "ort-config":
            path, left_out = ort_config_model(tuned, path)
            typer.echo(f"wrote {path}; load it with ORT_LOAD_CONFIG_FROM_MODEL=1")
            for item in left_out:
                typer.echo(f"warning: ort_config cannot carry {item}; set it in code", err=True)
        else:
            path, optimized = optimized_model(tuned, path)
            config_path = path.with_suffix(".json")
            write_json_atomic(config_path, optimized.to_dict())
            typer.echo(f"wrote {path} and {config_path} (graph optimizations off at load)")
            if tuned.inputs is not None:
                before, after = compare_startup(tuned, optimized, tuned.inputs)
                verdict = "faster" if after < before else "NOT faster"
                typer.echo(
                    f"startup (session creation + first run, median of 5 interleaved fresh "
                    f"processes): {before * 1e3:.1f} ms -> {after * 1e3:.1f} ms: {verdict}"
                )
            if tuned.config.session_options.get("graph_optimization_level") in (
                None,
                "ORT_ENABLE_ALL",
                "ORT_ENABLE_LAYOUT",
            ):
                typer.echo(
                    "note: a model optimized at ORT_ENABLE_ALL may hold hardware-specific "
                    "operators; load it on the same kind of machine",
                    err=True,
                )

    _guarded(debug, do)


@app.command()
def profile(
    config: Annotated[
        Path, typer.Argument(help="A best.json (or exported trial JSON).", metavar="CONFIG")
    ],
    runs: Annotated[int, typer.Option(min=1, help="Profiled steady-state runs.")] = 20,
    top: Annotated[int, typer.Option(min=1, help="Operators to list.")] = 15,
    debug: DebugOption = False,
) -> None:
    """Run a tuned config with ONNX Runtime's profiler and list the operators that take the time."""
    from autotune.profile import profile as run_profile

    trace, ops = _guarded(
        debug, lambda: run_profile(config, runs=runs, out_dir=config.resolve().parent / "profile")
    )
    typer.echo(f"{'operator':<28} {'provider':<26} {'ms/run':>9} {'calls/run':>9} {'share':>7}")
    for op in ops[:top]:
        typer.echo(
            f"{op.op_type:<28} {op.provider:<26} {op.total_ms:>9.3f} {op.calls:>9} {op.share:>7.1%}"
        )
    typer.echo(f"trace kept at {trace} (open it in chrome://tracing or Perfetto)")


@app.command()
def report(
    study: Annotated[
        str | None,
        typer.Option(help="The study to report on (default: the storage's only study)."),
    ] = None,
    storage: StorageOption = None,
    out: OutOption = Path("results"),
    storage_retry_s: RetryOption = 120.0,
    dest: Annotated[
        Path | None, typer.Option(help="Report folder (default: OUT/STUDY/report).")
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Write PNG plots and an HTML/Markdown page: history, knob importance, batch trade-off."""
    from autotune.plots import write_report
    from autotune.study import load_study_view, param_importances, the_study

    def do() -> Path:
        url = _storage(storage, out, storage_retry_s)
        name = the_study(url, study)
        view = load_study_view(url, name)
        return write_report(
            view, param_importances(url, name), dest or out.resolve() / name / "report"
        )

    index = _guarded(debug, do)
    typer.echo(f"wrote {index} (and report.md, PNG plots beside it)")


@app.command()
def dashboard(
    storage: StorageOption = None,
    out: OutOption = Path("results"),
    storage_retry_s: RetryOption = 120.0,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8080,
    debug: DebugOption = False,
) -> None:
    """Serve optuna-dashboard for the study storage on 127.0.0.1 (pip install optuna-dashboard)."""
    url = _storage(storage, out, storage_retry_s)

    def serve() -> None:
        try:
            from optuna_dashboard import run_server
        except ImportError:
            raise UsageError(
                "the dashboard needs optuna-dashboard: pip install 'ort-autotune[dashboard]'"
            ) from None
        from autotune.study import list_studies

        list_studies(url)  # a clear error for a missing or unusable storage
        typer.echo(f"optuna-dashboard for {url} at http://127.0.0.1:{port}/ (Ctrl-C stops it)")
        run_server(url, host="127.0.0.1", port=port)

    _guarded(debug, serve)


def main() -> None:
    app(prog_name="autotune")


if __name__ == "__main__":
    main()

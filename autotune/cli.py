"""The command line: thin typer commands over keyword-only calls.

Every :class:`AutotuneError` becomes one ``Error: ...`` line on stderr and a non-zero exit
(2 for usage errors, 1 otherwise); ``--debug`` (or ``AUTOTUNE_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from autotune.errors import AutotuneError, UsageError

if TYPE_CHECKING:
    from autotune.config import TunedConfig

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


def run(model: Path, quiet: bool, json_output: bool, debug: bool, **values: Any) -> None:
    """Tune MODEL: measure ONNX Runtime's defaults, search the space, write best.json."""
    from autotune.interrupt import stop_on_signals

    with stop_on_signals(lambda line: typer.echo(line, err=True)):  # before anything else
        from autotune.options import RunOptions
        from autotune.tuning import run_tuning

        echo = (lambda line: None) if quiet else (lambda line: typer.echo(line, err=True))
        outcome = _guarded(debug, lambda: run_tuning(RunOptions(model=model, **values), echo=echo))
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


def _run_parameters() -> list[inspect.Parameter]:
    """``run``'s flags: one per public field of RunOptions, as it declares them, then the
    flags that only shape what the terminal shows."""
    import typing
    from dataclasses import MISSING, fields

    from autotune.options import Flag, RunOptions

    types = typing.get_type_hints(RunOptions)

    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(
            "model",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[
                Path,
                typer.Argument(
                    help="The .onnx model to tune.", show_default=False, metavar="MODEL"
                ),
            ],
        )
    ]
    for f in fields(RunOptions):
        flag: Flag | None = f.metadata.get("flag")
        if flag is None:
            continue
        default = f.default if f.default is not MISSING else None
        if isinstance(default, tuple):  # typer takes a list for a repeatable option
            default = list(default) or None
        bound = f"  [min: {flag.low:g}]" if flag.low is not None else ""
        info = typer.Option(*flag.names, help=flag.help + bound, show_default=flag.show_default)
        kind = flag.cli_type or types[f.name]
        params.append(
            inspect.Parameter(f.name, keyword, default=default, annotation=Annotated[kind, info])
        )
    quiet = typer.Option("--quiet", "-q", help="No progress lines.")
    shown = typer.Option("--json", help="Print best.json (and its path) instead of the table.")
    params += [
        inspect.Parameter("quiet", keyword, default=False, annotation=Annotated[bool, quiet]),
        inspect.Parameter("json_output", keyword, default=False, annotation=Annotated[bool, shown]),
        inspect.Parameter("debug", keyword, default=False, annotation=DebugOption),
    ]
    return params


run.__signature__ = inspect.Signature(_run_parameters())  # type: ignore[attr-defined]
app.command()(run)


def submit(
    model: Path,
    storage: str,
    classes: str | None,
    model_url: str | None,
    storage_retry_s: float,
    json_output: bool,
    debug: bool,
    **values: Any,
) -> None:
    """Submit MODEL to the tuning service: checked now, tuned by `autotune agent` on each class
    of machine; prints the job id and returns."""

    def do() -> int:
        from autotune.service import jobs
        from autotune.service.db import Database

        submission = jobs.checked_submission(model, values, classes, model_url)
        db = Database(storage, retry_s=storage_retry_s, say=lambda line: typer.echo(line, err=True))
        job_id = jobs.submit(db, submission)
        known = jobs.class_fingerprints(db)
        for name in submission.classes or ():
            if name not in known:
                typer.echo(
                    f"note: no agent of class {name} has started yet; the job waits for one",
                    err=True,
                )
        return job_id

    job_id = _guarded(debug, do)
    if json_output:
        typer.echo(json.dumps({"job": job_id}))
        return
    where = f"classes {classes}" if classes else "every class that has an agent"
    typer.echo(
        f"job {job_id} submitted for {where}; follow it: autotune jobs {job_id} --storage ..."
    )


def _submit_parameters() -> list[inspect.Parameter]:
    """``submit``'s flags: ``run``'s options that hold on any machine, then its own."""
    from autotune.options import MACHINE_OPTIONS

    keyword = inspect.Parameter.KEYWORD_ONLY
    kept = [
        p for p in _run_parameters()
        if p.name not in (*MACHINE_OPTIONS, "quiet", "json_output", "debug")
    ]  # fmt: skip
    own = {
        "storage": (str, typer.Option(help="The service's PostgreSQL database URL.")),
        "classes": (
            str | None,
            typer.Option(help="Classes of machine that must serve it, comma-separated "
                         "(default: every class that has an agent)."),
        ),
        "model_url": (
            str | None,
            typer.Option(help="Agents fetch the model from this file:// or http(s):// URL "
                         "instead of the database (for models too large for it)."),
        ),
        "storage_retry_s": (float, typer.Option(help="Wait this long for the database.")),
        "json_output": (bool, typer.Option("--json", help="Print {\"job\": ID}.")),
        "debug": (bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")),
    }  # fmt: skip
    defaults = {"storage": inspect.Parameter.empty, "classes": None, "model_url": None,
                "storage_retry_s": 10.0, "json_output": False, "debug": False}  # fmt: skip
    return kept + [
        inspect.Parameter(name, keyword, default=defaults[name], annotation=Annotated[kind, info])
        for name, (kind, info) in own.items()
    ]


submit.__signature__ = inspect.Signature(_submit_parameters())  # type: ignore[attr-defined]
app.command()(submit)

ServiceStorage = Annotated[str, typer.Option(help="The service's PostgreSQL database URL.")]
ServiceRetry = Annotated[float, typer.Option(help="Wait this long for the database (seconds).")]


@app.command()
def agent(
    storage: ServiceStorage,
    out: Annotated[Path, typer.Option(help="Folder for the studies' local files.")] = Path(
        "results"
    ),
    poll_s: Annotated[
        float, typer.Option(min=0.1, help="Seconds between looks at the queue.")
    ] = 5.0,
    storage_retry_s: Annotated[
        float, typer.Option(help="How long a tuning waits for the database before handing back.")
    ] = 120.0,
    exit_when_idle: Annotated[
        bool, typer.Option("--exit-when-idle", help="Exit when no job waits for this class.")
    ] = False,
    debug: DebugOption = False,
) -> None:
    """Serve the tuning service on this machine: claim jobs for its class, tune, store best.json."""
    from autotune.service.agent import Agent, AgentSettings

    settings = AgentSettings(
        storage=storage, out=out.resolve(), poll_s=poll_s, storage_retry_s=storage_retry_s,
        exit_when_idle=exit_when_idle,
    )  # fmt: skip
    say = lambda line: typer.echo(line, err=True)  # noqa: E731
    code = _guarded(debug, lambda: Agent(settings, say).serve())
    raise typer.Exit(code=code)


def _service(storage: str, retry_s: float) -> Any:
    from autotune.service.db import Database

    return Database(storage, retry_s=retry_s, say=lambda line: typer.echo(line, err=True))


@app.command()
def jobs(
    job: Annotated[int | None, typer.Argument(help="One job to show in full.")] = None,
    storage: ServiceStorage = "",
    storage_retry_s: ServiceRetry = 10.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    debug: DebugOption = False,
) -> None:
    """List the service's jobs by class (state, verdict, speedup), or show one side by side."""
    from autotune.service import jobs as queue
    from autotune.service import view

    def read() -> tuple[list[dict[str, Any]], dict[str, int]]:
        db = _service(storage, storage_retry_s)
        rows = queue.job_rows(db, job)
        running = [t["study"] for j in rows for t in j["tasks"] if t["state"] == "running"]
        return rows, queue.progress_of(db, running)

    rows, progress = _guarded(debug, read)
    if json_output:
        payload = [view.job_json(row, progress) for row in rows]
        typer.echo(json.dumps(payload[0] if job is not None else payload, indent=2, default=str))
    elif job is not None:
        typer.echo(view.job_detail(rows[0], progress))
    else:
        typer.echo(view.jobs_table(rows, progress))


@app.command()
def cancel(
    job: Annotated[int, typer.Argument(help="The job to withdraw.")],
    storage: ServiceStorage = "",
    storage_retry_s: ServiceRetry = 10.0,
    debug: DebugOption = False,
) -> None:
    """Withdraw a job: queued classes are dropped, agents stop running ones."""
    from autotune.service import jobs as queue

    count = _guarded(debug, lambda: queue.cancel(_service(storage, storage_retry_s), job))
    typer.echo(f"job {job} cancelled ({count} class(es) were still to do or running)")


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
    job: Annotated[
        int | None,
        typer.Option(help="A job of the service (--storage): its classes side by side."),
    ] = None,
    debug: DebugOption = False,
) -> None:
    """List the studies, or show one study's trials (baseline and chosen marked)."""
    from autotune.results.show import studies_table, trial_row, trials_table
    from autotune.study import list_studies, load_study_view

    if job is not None:
        jobs(job, storage or "", min(storage_retry_s, 10.0), json_output, debug)
        return
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


FORMATS = ("json", "python", "ort-config", "optimized-model", "triton")


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
            "(json, python). Default: OUT/STUDY/<file>. -f triton: the model repository "
            "(required); the model goes in DIR/NAME."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="-f triton: the model's NAME in the repository (default: the study's)."),
    ] = None,
    job: Annotated[
        int | None,
        typer.Option(help="A job of the service (--storage): export its config for --class."),
    ] = None,
    machine_class: Annotated[
        str,
        typer.Option(
            "--class", help="With --job: the class whose config to take (auto: this machine's)."
        ),
    ] = "auto",
    debug: DebugOption = False,
) -> None:
    """Write a trial's configuration in the form a deployment takes."""
    problem = _export_flags_problem(format, dest, name)
    if job is not None and (trial is not None or study is not None):
        problem = "--job exports the job's config for its class: drop --trial and --study"
    if problem:
        typer.echo(f"Error: {problem}", err=True)
        raise typer.Exit(code=2)

    def do() -> None:
        from autotune.results.export import export_path, python_snippet, tuned_for_trial
        from autotune.study import load_study_view, the_study

        if job is not None:
            from autotune.service.deploy import fetch_config

            tuned = fetch_config(_service(storage or "", storage_retry_s), job, machine_class)[0]
            folder, json_name = tuned.study_name, "best.json"
        else:
            url = _storage(storage, out, storage_retry_s)
            view = load_study_view(url, the_study(url, study))
            tuned = tuned_for_trial(view, trial)
            folder, json_name = view.name, f"trial-{tuned.trial_number}.json"
        if format == "triton":
            assert dest is not None
            _export_triton(tuned, Path(dest).expanduser(), name)
        elif dest == "-":
            text = json.dumps(tuned.to_dict(), indent=2) + "\n" if format == "json" else None
            sys.stdout.write(text or python_snippet(tuned))
        else:
            stem = Path(tuned.model_path).stem
            default = {
                "json": json_name,
                "python": "session.py",
                "ort-config": f"{stem}.ort-config.onnx",
                "optimized-model": f"{stem}.optimized.onnx",
            }[format]
            _export_file(format, tuned, export_path(dest, out.resolve() / folder, default))

    _guarded(debug, do)


def _export_flags_problem(format: str, dest: str | None, name: str | None) -> str:
    """What is wrong with export's flags together ("" when nothing is)."""
    if format not in FORMATS:
        return f"unknown --format {format!r}; use one of {', '.join(FORMATS)}"
    if format == "triton" and dest in (None, "-"):
        return "-f triton writes a model repository: give --dest DIR/"
    if name is not None and format != "triton":
        return "--name is for -f triton only"
    if dest == "-" and format not in ("json", "python"):
        return (
            f"--format {format} writes an .onnx file, not text: give --dest a file or folder, not -"
        )
    return ""


def _export_file(format: str, tuned: TunedConfig, path: Path) -> None:
    """One export format written to ``path``, with what to do next."""
    from autotune.results.export import (
        ort_config_model,
        python_snippet,
        write_json_atomic,
        write_text_atomic,
    )

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
        _export_optimized(tuned, path)


def _export_optimized(tuned: TunedConfig, path: Path) -> None:
    """-f optimized-model: the pre-optimized graph, its config, and startup before and after."""
    from autotune.results.export import compare_startup, optimized_model, write_json_atomic

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


def _export_triton(tuned: TunedConfig, repository: Path, name: str | None) -> None:
    """``export -f triton``: the model repository, and a warning for each knob it cannot carry."""
    from autotune.results.triton import model_name, write_repository

    folder, left_out = write_repository(tuned, repository, model_name(name, tuned.study_name))
    typer.echo(f"wrote {folder}; serve it: tritonserver --model-repository {repository}")
    for item in left_out:
        typer.echo(f"warning: config.pbtxt cannot carry {item}", err=True)


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
    from autotune.results.profile import profile as run_profile

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
def check(
    config: Annotated[Path, typer.Argument(help="The best.json to check.", metavar="BEST_JSON")],
    against: Annotated[
        Path | None,
        typer.Option(help="Check this other tuned config against BEST_JSON's, not the defaults."),
    ] = None,
    min_gain: Annotated[
        float | None,
        typer.Option(help="The least gain to accept now (exit 1 below it), e.g. 1.05."),
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Confirmation length, as for run.")] = 5,
    model: Annotated[
        Path | None, typer.Option(help="The tuned model here, if it moved (its sha256 must match).")
    ] = None,
    inputs: Annotated[
        Path | None, typer.Option(help="The input data (.npz), if the tuning's moved.")
    ] = None,
    retune_if_lost: Annotated[
        bool,
        typer.Option(
            "--retune-if-lost",
            help="When the verdict is lost, tune again into a study named for this machine; "
            "the old best.json is kept.",
        ),
    ] = False,
    trials: Annotated[int, typer.Option(min=1, help="Trials of a --retune-if-lost study.")] = 30,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    debug: DebugOption = False,
) -> None:
    """Re-measure a tuned config against ONNX Runtime's defaults (or --against another) here:
    holds (exit 0), weaker or lost (1), too noisy (3)."""
    from autotune.check import check as run_check
    from autotune.interrupt import stop_on_signals

    say = (lambda line: None) if json_output else (lambda line: typer.echo(line, err=True))
    with stop_on_signals(lambda line: typer.echo(line, err=True)):
        result = _guarded(
            debug,
            lambda: run_check(
                config,
                against=against,
                model=model,
                inputs=inputs,
                rounds=rounds,
                min_gain=min_gain,
                say=say,
            ),
        )
        if retune_if_lost and result.verdict == "lost":
            result = _retune(result, config, trials, say, debug)
    if json_output:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        typer.echo("\n".join(line for line in result.lines() if line))
    raise typer.Exit(code=result.exit_code)


def _retune(result: Any, config: Path, trials: int, say: Callable[[str], None], debug: bool) -> Any:
    """--retune-if-lost: a new study for this machine; both best.json paths are printed."""
    from dataclasses import replace

    from autotune.check import read_checked, retune_options
    from autotune.tuning import run_tuning

    def tune() -> Path:
        options = retune_options(read_checked(config), config, trials=trials)
        say(f"lost: retuning into study {options.study} (the old best.json stays at {config})")
        return run_tuning(options, echo=say).best_path

    written = _guarded(debug, tune)
    return replace(result, retuned=f"{written} (the old one: {config})")


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
    job: Annotated[
        int | None,
        typer.Option(
            help="A job of the service (--storage): its classes side by side, and "
            "each class's study report."
        ),
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Write PNG plots and an HTML/Markdown page: history, knob importance, batch trade-off."""
    from autotune.results.page import write_report
    from autotune.study import load_study_view, param_importances, the_study

    if job is not None:
        from autotune.service.report import write_job_report

        folder = dest or out.resolve() / f"job{job}" / "report"
        page = _guarded(
            debug, lambda: write_job_report(_service(storage or "", storage_retry_s), job, folder)
        )
        typer.echo(f"wrote {page} (each class's study report beside it)")
        return

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

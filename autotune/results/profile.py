"""``autotune profile best.json``: where the time goes, per operator, under the tuned config.

A child process (``python -m autotune.results.profile``) builds the tuned session with ONNX Runtime's
profiler on, runs it on the study's inputs and prints a JSON summary; the trace file is kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.errors import AutotuneError, UsageError


@dataclass(frozen=True)
class OpTime:
    op_type: str
    provider: str
    total_ms: float
    calls: int
    share: float  # of all node time


def summarize_trace(events: list[dict[str, Any]], runs: int) -> list[OpTime]:
    """Node kernel times of an ONNX Runtime trace, summed per operator type."""
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        key = (str(args.get("op_name", "?")), str(args.get("provider", "?")))
        totals[key][0] += float(event.get("dur", 0)) / 1e3
        totals[key][1] += 1
    overall = sum(t for t, _ in totals.values()) or 1.0
    ops = [
        OpTime(op, provider, total / runs, int(calls) // runs, total / overall)
        for (op, provider), (total, calls) in totals.items()
    ]
    return sorted(ops, key=lambda o: o.total_ms, reverse=True)


def _profiled(options: Any, prefix: Path) -> None:
    options.enable_profiling = True
    options.profile_file_prefix = str(prefix)


def _child(config_path: str, runs: int, out_dir: str) -> dict[str, Any]:
    from autotune.measure.session import Runner, create_session, read_tuned
    from autotune.model import make_feeds

    tuned = read_tuned(config_path)
    if tuned.inputs is None:
        raise UsageError(f"{config_path} has no input description; re-run the tuning to refresh it")
    session = create_session(  # as a deployment's: GPU libraries, pools, the fallback check
        tuned.model_path,
        tuned.config,
        feeds=tuned.inputs,
        shapes=tuned.workload.shapes,
        also=lambda options: _profiled(options, Path(out_dir) / "profile"),
    )
    run = Runner(session, make_feeds(tuned.inputs, tuned.config.batch_size), tuned.config)
    run()  # the first run is startup, not steady state: profiled but reported apart
    for _ in range(runs):
        run()
    trace = session.end_profiling()
    return {"trace": trace, "runs": runs + 1}


#: The profiling child's wall-clock limit: a session that hangs (a GPU build stuck, a deadlock)
#: must not hang the command.
PROFILE_TIMEOUT_S = 600.0


def profile(
    config_path: Path, *, runs: int, out_dir: Path, timeout_s: float = PROFILE_TIMEOUT_S
) -> tuple[Path, list[OpTime]]:
    if not config_path.is_file():
        raise UsageError(f"tuned config not found: {config_path}")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "autotune.results.profile",
                str(config_path),
                str(runs),
                str(out_dir),
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise AutotuneError(
            f"profiling took longer than {timeout_s:.0f} s and was stopped; profile fewer --runs"
        ) from None
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = " ".join(done.stderr.split())[-400:]
        raise AutotuneError(f"profiling failed (exit {done.returncode}): {tail}") from None
    if "error" in result:
        raise AutotuneError(f"profiling failed: {result['error']}")
    trace = Path(result["trace"])
    events = json.loads(trace.read_text())
    return trace, summarize_trace(events, result["runs"])


if __name__ == "__main__":
    try:
        print(json.dumps(_child(sys.argv[1], int(sys.argv[2]), sys.argv[3])))
    except Exception as exc:  # reported by the parent as one line
        print(json.dumps({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"}))

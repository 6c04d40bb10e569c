"""How much does ``session.set_denormal_as_zero`` speed up a model that computes on denormals?

A chain of 256x256 MatMuls whose activations stay in float32's denormal range (|x| < 1.18e-38),
run with the key at "0" (ORT's default) and at "1" in one process, in interleaved short blocks
that rotate which arm goes first; a third arm, "0" on normal-range data, is the chain's speed
without denormals. Prints each arm's median run time, the ratio of the medians, the median of
the per-block ratios, and the machine and CPU ISA lines the other benchmarks print. Writes
nothing.

    python benchmarks/denormals.py --blocks 10 --runs 5

Flush-to-zero is a per-thread CPU mode, and ONNX Runtime sets it on the thread creating a
session only for the process's first session (later sessions set it on their own pool threads
only), while new threads inherit the mode of the thread that starts them. So each arm has its
own caller thread, both started before any session: the "1" arm's session is created first, on
its thread; the "0" arm's session is created and run on a thread that never had the mode. A
check of each arm's outputs (all zero, or denormal) confirms the arms are what they claim.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))

from _report import cpu_flags, machine_line  # noqa: E402  (beside this script)

from autotune.config import TrialConfig  # noqa: E402
from autotune.measure.lock import machine_lock  # noqa: E402
from autotune.measure.session import create_session  # noqa: E402

KEY = "session.set_denormal_as_zero"
TINY = float(np.finfo(np.float32).tiny)


def build_model(path: Path, size: int, depth: int) -> None:
    """``depth`` MatMuls by size x size weights of std 1/sqrt(size): activations keep scale."""
    rng = np.random.default_rng(0)
    nodes, weights = [], []
    for i in range(depth):
        w = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
        weights.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"h{i + 1}"]))
    nodes[0].input[0] = "x"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(
        nodes,
        "denormal_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def denormal_input(size: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    magnitude = rng.uniform(TINY / 100, TINY, (size, size))
    return (magnitude * rng.choice([-1.0, 1.0], (size, size))).astype(np.float32)


def timed(session: Any, feeds: dict[str, np.ndarray], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--depth", type=int, default=8, help="MatMuls in the chain")
    parser.add_argument("--threads", type=int, default=1, help="intra_op_num_threads")
    parser.add_argument("--blocks", type=int, default=10, help="interleaved blocks per arm")
    parser.add_argument("--runs", type=int, default=5, help="runs per block")
    args = parser.parse_args(argv)
    command = "python benchmarks/denormals.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    # Both caller threads start now, before any session exists, so neither inherits the mode.
    callers = {flag: ThreadPoolExecutor(max_workers=1) for flag in ("1", "0")}
    for pool in callers.values():
        pool.submit(lambda: None).result()

    model = Path(tempfile.mkdtemp(prefix="autotune-denormals-")) / "chain.onnx"
    build_model(model, args.size, args.depth)
    feeds = {"x": denormal_input(args.size)}
    sessions = {}
    for flag in ("1", "0"):  # "1" first: the process's first session sets its creating thread
        config = TrialConfig(
            session_options={"intra_op_num_threads": args.threads}, config_entries={KEY: flag}
        )
        sessions[flag] = callers[flag].submit(create_session, model, config).result()

    def on(flag: str, fn: Any, *extra: Any) -> Any:
        return callers[flag].submit(fn, sessions[flag], feeds, *extra).result()

    check = {}
    for flag in ("0", "1"):
        y = on(flag, lambda s, f: s.run(None, f)[0])
        check[flag] = (int((y == 0).sum()), int(((y != 0) & (np.abs(y) < TINY)).sum()), y.size)
    print(f"{machine_line()}\n{cpu_flags()}")
    print(
        f"Model: {args.depth} MatMuls {args.size}x{args.size}, input |x| in "
        f"[{TINY / 100:.2e}, {TINY:.2e}); intra_op_num_threads={args.threads}."
    )
    for flag, (zeros, denormals, size) in check.items():
        print(f"  {KEY}={flag}: outputs exactly 0: {zeros}/{size}, denormal: {denormals}/{size}")
    if check["1"][0] != check["1"][2] or check["0"][1] == 0:
        print("WARNING: the arms do not differ as intended; the figures below mean nothing")

    # A control: the "0" session on normal-range data, the speed the chain has without denormals.
    normal = {"x": np.random.default_rng(2).standard_normal((args.size, args.size)).astype("f4")}
    arms = {"0": ("0", feeds), "1": ("1", feeds), "0, normal data": ("0", normal)}
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    ratios = []
    started = time.perf_counter()
    with machine_lock(wait=True, on_wait=print):  # as autotune's trials: never beside another's
        for flag, data in arms.values():
            callers[flag].submit(timed, sessions[flag], data, 2).result()  # warm-up
        names = list(arms)
        for block in range(args.blocks):
            medians = {}
            for arm in names[block % 3 :] + names[: block % 3]:  # rotate which goes first
                flag, data = arms[arm]
                block_times = callers[flag].submit(timed, sessions[flag], data, args.runs).result()
                times[arm] += block_times
                medians[arm] = statistics.median(block_times)
            ratios.append(medians["0"] / medians["1"])
    wall = time.perf_counter() - started

    median = {arm: statistics.median(t) * 1000 for arm, t in times.items()}
    print(
        f"{args.blocks} blocks x {args.runs} runs per arm, rotating which goes first "
        f"({wall:.1f} s timed):"
    )
    for arm in arms:
        q1, _, q3 = statistics.quantiles(times[arm], n=4)
        print(
            f"  {KEY}={arm}: median {median[arm]:.2f} ms per run "
            f"(IQR {q1 * 1000:.2f}-{q3 * 1000:.2f} ms)"
        )
    print(
        f'  speedup of "1" over "0": {median["0"] / median["1"]:.2f}x (ratio of medians), '
        f"{statistics.median(ratios):.2f}x (median of per-block ratios, "
        f'min {min(ratios):.2f}x, max {max(ratios):.2f}x); "0" on denormals vs on normal '
        f"data: {median['0'] / median['0, normal data']:.2f}x slower"
    )
    print(f"\n{command}")
    for pool in callers.values():
        pool.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

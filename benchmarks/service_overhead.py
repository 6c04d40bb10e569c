"""What the service adds to a tuning: `autotune submit` + `autotune agent` against `autotune run`.

Each pair runs the same model and options both ways, alternating which goes first: `run` into a
fresh results folder (SQLite), and `submit` then `agent --exit-when-idle` on a fresh database of
a throwaway local PostgreSQL server (fresh model cache too, so the fetch is counted). Wall times
are the commands' own, from outside; the service's extra is the difference per pair. The trials
themselves are as noisy as the machine: read the median of the differences, not one pair.

    python benchmarks/service_overhead.py --pairs 5 --out results/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _report import cpu_flags, footer, write_section  # noqa: E402

from autotune.zoo import fetch  # noqa: E402

OPTIONS = ["--trials", "6", "--min-time", "0.1", "--min-runs", "5", "--seed", "1",
           "--finalists", "0", "--batch-sizes", "1,2"]  # fmt: skip
CLI = [sys.executable, "-m", "autotune.cli"]


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env, timeout=600)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="magika")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the section into this BENCHMARKS.md")
    args = parser.parse_args()
    from tests.conftest import PgServer

    started = time.monotonic()
    model = str(fetch(args.model))
    server = PgServer()
    rows = []
    try:
        for pair in range(args.pairs):
            with tempfile.TemporaryDirectory() as folder:
                env = {**os.environ, "AUTOTUNE_CACHE_DIR": f"{folder}/cache"}
                url = server.new_database(f"pair{pair}")
                plain = [*CLI, "run", model, "--out", f"{folder}/run", *OPTIONS]
                submit = [*CLI, "submit", model, "--storage", url, *OPTIONS]
                agent = [*CLI, "agent", "--storage", url, "--out", f"{folder}/agent",
                         "--exit-when-idle", "--poll-s", "0.2"]  # fmt: skip

                if pair % 2 == 0:
                    run_s = timed(plain, env)
                    submit_s, agent_s = timed(submit, env), timed(agent, env)
                else:
                    submit_s, agent_s = timed(submit, env), timed(agent, env)
                    run_s = timed(plain, env)
            rows.append((run_s, submit_s, agent_s))
            print(f"pair {pair}: run {run_s:.1f} s, submit {submit_s:.1f} s + agent {agent_s:.1f} s",
                  flush=True)  # fmt: skip
    finally:
        server.remove()
    extra = [s + a - r for r, s, a in rows]
    table = ["| pair | `run` | `submit` | `agent` (claim, fetch, tune, store) | service extra |",
             "|---|---|---|---|---|"]  # fmt: skip
    table += [
        f"| {i} | {r:.1f} s | {s:.1f} s | {a:.1f} s | {s + a - r:+.1f} s |"
        for i, (r, s, a) in enumerate(rows)
    ]
    body = "\n".join(
        [
            f"The same {args.model} study (`{' '.join(OPTIONS)}`) run by `autotune run` and by the "
            "service (`submit`, then one `agent --exit-when-idle` on a fresh database and a fresh "
            "model cache), pairs alternating which goes first. Each command is a new Python "
            "process, so both sides pay the imports.",
            "",
            *table,
            "",
            f"Median service extra: {statistics.median(extra):+.1f} s per job "
            f"(median `run` {statistics.median(r for r, _, _ in rows):.1f} s; "
            f"median `submit` {statistics.median(s for _, s, _ in rows):.1f} s).",
            "",
            cpu_flags(),
            *footer(
                "python benchmarks/service_overhead.py " + shlex.join(sys.argv[1:]),
                (time.monotonic() - started) / 60,
            ),
        ]
    )
    if args.out:
        write_section(args.out, "Service: what an agent adds to a tuning", body)
    print(body)


if __name__ == "__main__":
    main()

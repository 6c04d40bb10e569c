"""The finalist selection and the winner's decision, on figures built by hand."""

from __future__ import annotations

from dataclasses import replace

from autotune.config import RoundFigures, TrialConfig, TrialFailure
from autotune.confirm.rounds import (
    MIN_GAIN,
    confirm,
    decide,
    pick_finalists,
    sign_test_p,
    spread_along_front,
)
from autotune.objectives import parse_objective
from tests.conftest import MEASUREMENT

THROUGHPUT = parse_objective("throughput")
LATENCY = parse_objective("latency")
MEMORY = parse_objective("memory")


def _m(throughput: float):  # type: ignore[no-untyped-def]
    return replace(MEASUREMENT, throughput=throughput)


def _cfg(threads: int) -> TrialConfig:
    return TrialConfig(session_options={"intra_op_num_threads": threads})


def test_pick_finalists_best_first_distinct_and_not_the_baseline() -> None:
    records = [
        (1, _cfg(1), _m(100.0)),
        (2, _cfg(2), _m(300.0)),
        (3, _cfg(2), _m(310.0)),  # the same config as #2, measured luckier
        (4, TrialConfig(), _m(400.0)),  # the baseline's config, proposed again
        (5, _cfg(3), TrialFailure("crash", "SIGSEGV")),
        (6, _cfg(4), _m(200.0)),
    ]
    picked = pick_finalists(records, TrialConfig(), THROUGHPUT, 2)
    assert [n for n, _, _ in picked] == [3, 6]


def _fig(number: int, values: tuple[float, ...], wins: int, gain: float, spread: float = 0.01):  # type: ignore[no-untyped-def]
    median = sorted(values)[len(values) // 2]
    return RoundFigures(number, values, 0, median, spread, wins, len(values), gain, None)


def test_sign_test() -> None:
    assert sign_test_p(5, 5) == 1 / 32
    assert sign_test_p(4, 5) == 6 / 32
    assert sign_test_p(0, 0) == 1.0


def test_a_clear_winner_is_chosen_with_its_gain() -> None:
    base = _fig(0, (100, 101, 99, 100, 100), 0, 1.0)
    good = _fig(7, (130, 131, 129, 130, 128), 5, 1.30)
    bigger_but_erratic = _fig(8, (300, 60, 310, 50, 320), 3, 3.0, spread=1.5)
    result = decide(base, [good, bigger_but_erratic], rounds=5, objective=THROUGHPUT)
    assert result.winner == 7
    assert "1.30x better" in result.verdict and "won 5/5 paired rounds" in result.verdict


def test_gains_within_the_noise_keep_the_baseline() -> None:
    base = _fig(0, (100, 104, 96, 100, 102), 0, 1.0, spread=0.04)
    small = _fig(3, (101, 103, 102, 101, 102), 5, 1.01, spread=0.02)
    result = decide(base, [small], rounds=5, objective=THROUGHPUT)
    assert result.winner == 0
    assert "no finalist beat" in result.verdict and "keeping the defaults" in result.verdict
    assert result.threshold == 1 + MIN_GAIN


def test_a_winner_must_win_enough_paired_rounds() -> None:
    base = _fig(0, (100,) * 5, 0, 1.0)
    assert decide(base, [_fig(4, (300,) * 5, 5, 3.0)], rounds=5, objective=THROUGHPUT).winner == 4
    lucky = _fig(4, (300, 90, 300, 300, 300), 4, 3.0)  # 4 of 5: p = 0.19
    assert decide(base, [lucky], rounds=5, objective=THROUGHPUT).winner == 0


def test_undecided_finalists_get_more_rounds() -> None:
    """Better by 1.5x but losing round 2: rounds are added until the sign test can decide."""
    calls: list[int] = []

    def measure(config: TrialConfig):  # type: ignore[no-untyped-def]
        threads = int(config.session_options["intra_op_num_threads"])
        calls.append(threads)
        round_index = calls.count(threads)
        value = 100.0 if threads == 1 else (90.0 if round_index == 2 else 150.0)
        return replace(MEASUREMENT, throughput=value)

    result = confirm(
        (0, _cfg(1), MEASUREMENT), [(5, _cfg(2), MEASUREMENT)],
        objective=THROUGHPUT, rounds=5, measure=measure, max_rounds=12,
    )  # fmt: skip
    assert result.rounds == 8  # 7 wins of 8: p = 0.035
    assert result.winner == 5 and result.finalists[0].wins == 7


def test_confirm_interleaves_rounds_and_computes_paired_wins() -> None:
    """A B C, A B C, ...: the measure callable sees the configs in that order every round."""
    order: list[int] = []
    latencies = {1: [2.0, 2.2, 2.1], 2: [1.0, 1.1, 1.0], 3: [3.0, 1.5, 3.0]}

    def measure(config: TrialConfig):  # type: ignore[no-untyped-def]
        threads = int(config.session_options["intra_op_num_threads"])
        order.append(threads)
        value = latencies[threads][sum(1 for t in order if t == threads) - 1]
        return replace(MEASUREMENT, latency_ms=replace(MEASUREMENT.latency_ms, p50=value))

    result = confirm(
        (0, _cfg(1), MEASUREMENT),
        [(5, _cfg(2), MEASUREMENT), (6, _cfg(3), MEASUREMENT)],
        objective=LATENCY,
        rounds=3,
        measure=measure,
        max_rounds=3,
    )
    assert order == [1, 2, 3] * 3
    fast, mixed = result.finalists
    assert fast.wins == 3 and fast.gain == 2.1 / 1.0
    assert mixed.wins == 1  # beat the baseline only in round 2
    assert result.winner == 0  # 3 of 3 is not enough for the sign test (p = 0.125)
    assert result.baseline.values == (2.0, 2.2, 2.1)


def test_failed_rounds_are_counted_not_ranked() -> None:
    def measure(config: TrialConfig):  # type: ignore[no-untyped-def]
        if config.session_options["intra_op_num_threads"] == 2:
            return TrialFailure("crash", "SIGSEGV")
        return MEASUREMENT

    result = confirm(
        (0, _cfg(1), MEASUREMENT), [(5, _cfg(2), MEASUREMENT)],
        objective=THROUGHPUT, rounds=2, measure=measure,
    )  # fmt: skip
    assert result.finalists[0].failures == 2 and result.winner == 0
    assert "every finalist failed" in result.verdict


def test_pareto_finalists_are_spread_along_the_front_ends_included() -> None:
    front = [(n, _cfg(n), _m(float(100 * n))) for n in range(1, 8)]  # 7 points
    picked = spread_along_front(front, THROUGHPUT, 3)
    assert [n for n, _, _ in picked] == [7, 4, 1]  # best end, middle, other end
    assert [n for n, _, _ in spread_along_front(front[:2], THROUGHPUT, 3)] == [2, 1]
    assert spread_along_front(front, THROUGHPUT, 0) == []


def test_several_objectives_keep_every_median_and_redraw_the_front() -> None:
    """The search said #5 trades throughput for memory; re-measured, #6 turns out to use more
    memory than the baseline and falls off the front."""
    figures = {1: (100.0, 80.0), 2: (150.0, 90.0), 3: (120.0, 95.0)}  # threads -> (tput, MB)

    def measure(config: TrialConfig):  # type: ignore[no-untyped-def]
        throughput, memory = figures[int(config.session_options["intra_op_num_threads"])]
        return replace(MEASUREMENT, throughput=throughput, peak_rss_mb=memory)

    result = confirm(
        (0, _cfg(1), MEASUREMENT), [(5, _cfg(2), MEASUREMENT), (6, _cfg(3), MEASUREMENT)],
        objective=THROUGHPUT, rounds=5, measure=measure, also=[MEMORY],
    )  # fmt: skip
    assert result.baseline.medians == {"throughput": 100.0, "memory": 80.0}
    assert result.figures(6).medians == {"throughput": 120.0, "memory": 95.0}
    assert result.front == (0, 5)  # #6 is beaten by #5 on both
    assert result.winner == 5  # judged on the first objective, as with one objective
    again = type(result).from_dict(result.to_dict())
    assert again.front == (0, 5) and again.figures(5).medians == result.figures(5).medians


def test_one_objective_records_no_front() -> None:
    result = confirm(
        (0, _cfg(1), MEASUREMENT), [(5, _cfg(2), MEASUREMENT)],
        objective=THROUGHPUT, rounds=1, measure=lambda config: MEASUREMENT,
    )  # fmt: skip
    assert result.front == () and result.baseline.medians == {}

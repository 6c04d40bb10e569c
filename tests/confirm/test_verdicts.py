"""A finished study is finished: a re-run measures nothing; --reconfirm measures again and shows
a changed verdict, keeping the previous best.json.

The verdicts are made deterministic with a wrapper worker that slows one side by 3 ms a request
on a sub-millisecond model: first the defaults (so a finalist must win), then everything but the
defaults (so on --reconfirm the defaults must win back).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from autotune.measure.session import read_tuned
from autotune.tuning import RunOptions, run_tuning

SLOWED = """
import json, sys, time
from pathlib import Path
config = json.loads(Path(sys.argv[sys.argv.index("--job") + 1]).read_text())["config"]
defaults = not config["session_options"] and not config["config_entries"]
if defaults == {slow_defaults}:
    from autotune.measure import session
    run = session.Runner.__call__
    def slowed(self):
        time.sleep(0.003)
        return run(self)
    session.Runner.__call__ = slowed
from autotune.measure.worker import main
sys.exit(main())
"""
NEVER = [sys.executable, "-c", "import sys; sys.exit(3)"]  # any worker started would fail


def _options(
    model: Path, out: Path, slow_defaults: bool | None, finalists: int = 1, **extra: object
) -> RunOptions:
    command = (
        NEVER
        if slow_defaults is None
        else [sys.executable, "-c", SLOWED.replace("{slow_defaults}", str(slow_defaults))]
    )
    return RunOptions(
        model=model, objective=("throughput",), trials=5, out=out, batch_sizes="1",
        min_time_s=0.05, min_runs=5, finalists=finalists, rounds=1, seed=4,
        worker_command=command,
        **extra,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture(scope="module")
def won(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A study whose defaults are slowed: a finalist wins the paired confirmation."""
    out = tmp_path_factory.mktemp("verdicts")
    outcome = run_tuning(_options(tiny_model, out, slow_defaults=True), echo=lambda line: None)
    confirmation = outcome.tuned.confirmation
    assert confirmation is not None and confirmation.kind == "winner", confirmation
    return out, outcome.best_path


def test_a_rerun_reports_the_stored_verdict_and_measures_nothing(
    tiny_model: Path, won: tuple[Path, Path]
) -> None:
    out, best = won
    before = best.read_bytes(), best.stat().st_mtime_ns
    said: list[str] = []
    outcome = run_tuning(_options(tiny_model, out, slow_defaults=None), echo=said.append)
    assert outcome.result.reused and outcome.result.ran == 0
    assert not any(r.outcome.kind == "no_result" for r in outcome.result.records if not r.ok)  # type: ignore[union-attr]
    assert any("already confirmed" in line and "nothing was measured" in line for line in said)
    stored = read_tuned(best).confirmation
    assert stored is not None and stored.verdict in outcome.table
    assert f"unchanged {best}" in outcome.table
    assert (best.read_bytes(), best.stat().st_mtime_ns) == before  # not rewritten
    assert not best.with_name("best.prev.json").exists()


def test_reconfirm_with_the_same_verdict_updates_best_json_and_keeps_no_previous(
    tiny_model: Path, won: tuple[Path, Path]
) -> None:
    """One finalist, still slowed defaults: the same winner again is no change to keep."""
    out, best = won
    old = read_tuned(best)
    outcome = run_tuning(
        _options(tiny_model, out, slow_defaults=True, reconfirm=True), echo=lambda line: None
    )
    new = read_tuned(best)
    assert new.trial_number == old.trial_number and new.confirmation is not None
    assert new.confirmation.kind == "winner" and new.confirmed
    assert new.confirmation.confirmed_at >= old.confirmation.confirmed_at  # type: ignore[union-attr]
    assert "verdict changed" not in outcome.table and f"wrote {best}" in outcome.table
    assert not best.with_name("best.prev.json").exists()


def test_reconfirm_shows_a_changed_verdict_and_keeps_the_previous_best(
    tiny_model: Path, won: tuple[Path, Path]
) -> None:
    out, best = won
    old = read_tuned(best)
    outcome = run_tuning(
        _options(tiny_model, out, slow_defaults=False, reconfirm=True), echo=lambda line: None
    )
    assert outcome.result.ran == 0 and not outcome.result.reused
    new = read_tuned(best)
    assert new.confirmation is not None and new.confirmation.kind != "winner"
    assert new.trial_number == 0  # the defaults, now that every other config is slowed
    assert "verdict changed:" in outcome.table
    assert f"trial #{old.trial_number}" in outcome.table and "trial #0" in outcome.table
    previous = best.with_name("best.prev.json")
    assert "the previous best.json is kept as" in outcome.table and previous.is_file()
    assert json.loads(previous.read_text())["study"]["trial"] == old.trial_number
    assert new.tuning["confirmation_s"] > 0 and new.tuning["search_s"] >= 0
    assert previous.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

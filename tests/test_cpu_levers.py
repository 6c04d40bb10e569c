"""The CPU levers: no trial spent on a config the study measured already, quantization recipes
screened for accuracy once before the search, and a guard that judges as the user would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from autotune.cli import app
from autotune.measure.accuracy import compare, judged

runner = CliRunner()
QUICK = ["--min-time", "0.05", "--min-runs", "5", "--seed", "1", "--finalists", "0"]


def _study(out: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'autotune.db'}")


def test_a_config_measured_once_is_never_measured_again(magika: Path, tmp_path: Path) -> None:
    """A space of two configs and a budget of eight: the sampler re-proposes measured configs;
    each repeat is recorded, not measured and not counted, and the search ends when the space
    is exhausted instead of burning the budget on copies."""
    space = tmp_path / "two.yaml"
    space.write_text(
        "schema: autotune.space/v1\n"
        "description: two configs\n"
        "providers:\n  - name: CPUExecutionProvider\n"
        "params:\n"
        "  enable_mem_pattern:\n    target: session_option\n    type: bool\n"
    )
    result = runner.invoke(
        app,
        ["run", str(magika), "--space", str(space), "--trials", "8", "--out", str(tmp_path),
         "--batch-sizes", "1", "--json", "--quiet", *QUICK],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    name = json.loads(result.stdout)["study"]["name"]
    trials = _study(tmp_path, name).trials
    measured = [t for t in trials if t.user_attrs.get("failure_kind") != "repeat"]
    repeats = [t for t in trials if t.user_attrs.get("failure_kind") == "repeat"]
    assert len(measured) == 3  # the baseline and the two configs, each once
    configs = [json.dumps(t.user_attrs["config"], sort_keys=True) for t in measured]
    assert len(set(configs)) == 3
    assert repeats and all("measurement" not in t.user_attrs for t in repeats)
    numbers = {t.number for t in measured}
    assert all(t.user_attrs["repeat_of"] in numbers for t in repeats)


def test_the_guard_judges_float_outputs_or_those_named() -> None:
    reference = {"logits": np.ones((2, 3), np.float32), "label": np.array([1, 0], np.int64)}
    assert set(judged(reference, floats_only=True)) == {"logits"}  # a label passes through
    assert set(judged(reference, ["label"])) == {"label"}
    only_ints = {"label": np.array([1, 0], np.int64)}
    assert set(judged(only_ints, floats_only=True)) == {"label"}  # nothing else to judge
    zipmap = {"probs": np.ones((2, 2), np.float32), "probs#keys": np.array([0, 1])}
    assert set(judged(zipmap, ["probs"])) == {"probs", "probs#keys"}


def test_padded_positions_are_left_out_by_the_mask() -> None:
    """Hidden states at padded positions are whatever the model leaves there: not judged."""
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((2, 4, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.int64)
    moved = reference.copy()
    moved[0, 3] += 5.0  # a padded position
    moved[1, 2:] -= 3.0
    assert not compare({"h": moved}, {"h": reference}).ok
    assert compare({"h": moved}, {"h": reference}, mask=mask).ok
    moved[1, 1] += 1.0  # a real token
    result = compare({"h": moved}, {"h": reference}, mask=mask)
    assert not result.ok and "'h'" in result.message


def test_the_users_check_decides() -> None:
    reference = {"y": np.ones(4, np.float32)}
    off = {"y": np.full(4, 2.0, np.float32)}
    assert compare(off, reference, judge=lambda ref, out: True).ok
    refused = compare(reference, reference, judge=lambda ref, out: False)
    assert not refused.ok and "returned False" in refused.message
    scored = compare(off, reference, judge=lambda ref, out: 0.7, metric="score", threshold=0.8)
    assert not scored.ok and "score 0.7 needs >= 0.8" in scored.message
    assert compare(off, reference, judge=lambda r, o: 0.9, metric="score", threshold=0.8).ok
    unjudged = compare(off, reference, judge=lambda ref, out: 0.9)
    assert not unjudged.ok and "give --accuracy score>=X" in unjudged.message


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--accuracy-outputs", "nope"], "--accuracy-outputs names ['nope'], not outputs"),
        (["--accuracy-mask", "nope"], "--accuracy-mask 'nope' is not an input of the model"),
        (["--accuracy-fn", "no_such_module_here:f"], "cannot import no_such_module_here"),
        (["--accuracy-fn", "json:no_such_function"], "json has no function 'no_such_function'"),
        (["--accuracy", "score>=0.5"], "--accuracy score>=X judges the score of --accuracy-fn"),
    ],
)
def test_bad_guard_flags_are_one_line_and_exit_2(
    flags: list[str], message: str, magika: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["run", str(magika), "--out", str(tmp_path / "o"), *flags])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_the_users_check_runs_in_every_trial_and_can_stop_the_study(
    magika: Path, tmp_path: Path
) -> None:
    """A check file given by path: each worker calls it with the baseline's and its own outputs.
    One that refuses everything fails every trial the same way: an error, not "no gain"."""
    check = tmp_path / "mycheck.py"
    calls = tmp_path / "calls"
    check.write_text(
        "import os\n"
        f"CALLS = {str(calls)!r}\n"
        "def agree(reference, candidate):\n"
        "    with open(CALLS, 'a') as f:\n"
        "        f.write(','.join(sorted(candidate)) + '\\n')\n"
        "    return all(abs(reference[k] - candidate[k]).max() < 1e-3 for k in reference)\n"
        "def refuse(reference, candidate):\n"
        "    return False\n"
    )
    common = ["run", str(magika), "--trials", "4", "--batch-sizes", "1", *QUICK]
    fine = runner.invoke(app, [*common, "--out", str(tmp_path / "a"), "--accuracy-fn",
                               f"{check}:agree"])  # fmt: skip
    assert fine.exit_code == 0, fine.output
    assert f"by your check {check}:agree" in fine.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) >= 3 and all(lines)  # once per trial after the baseline, outputs by name
    refused = runner.invoke(app, [*common, "--out", str(tmp_path / "b"), "--accuracy-fn",
                                  f"{check}:refuse"])  # fmt: skip
    assert refused.exit_code == 1, refused.output
    assert "every trial after the baseline failed the same way" in refused.stderr
    assert "returned False" in refused.stderr


def test_only_variants_not_clearly_slower_are_queued_first() -> None:
    from autotune.study._screen import promising

    verdicts = {"fast": {"p50_ms": 1.5}, "near": {"p50_ms": 2.9}, "slow": {"p50_ms": 6.0}}
    assert promising(verdicts, ["fast", "near", "slow"], 2.0) == ["fast", "near"]
    assert promising(verdicts, ["fast", "slow"], 0.0) == ["fast", "slow"]  # no baseline figure

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

import autotune
from autotune.config import AccuracyCheck, Measurement, TrialConfig, TrialFailure, WorkerJob
from autotune.measure.accuracy import compare, load_reference, save_reference
from autotune.measure.runner import run_trial
from autotune.model import read_model, resolve_inputs
from tests.conftest import QUICK_MEASURE as FAST


def test_compare_uses_per_dtype_tolerances() -> None:
    ref = {"y": np.array([1.0, 2.0, np.nan], np.float32), "ids": np.array([1, 2], np.int64)}
    close = {"y": ref["y"] + np.float32(1e-6), "ids": ref["ids"].copy()}
    assert compare(close, ref).ok
    far = {"y": ref["y"] + np.float32(1e-2), "ids": ref["ids"].copy()}
    result = compare(far, ref)
    assert not result.ok and result.worst_output == "y"
    assert result.max_abs_err == pytest.approx(1e-2, rel=1e-3)
    assert "output 'y' differs" in result.message and "rtol 0.001" in result.message
    ints = compare({"y": ref["y"], "ids": np.array([1, 3])}, ref)
    assert not ints.ok and "'ids' differs in 1 of 2" in ints.message
    shape = compare({"y": ref["y"][:2], "ids": ref["ids"]}, ref)
    assert not shape.ok and "float32[2]" in shape.message
    missing = compare({"y": ref["y"]}, ref)
    assert not missing.ok and "'ids' of the baseline is missing" in missing.message


def test_tolerance_overrides() -> None:
    ref = {"y": np.array([1.0], np.float32)}
    out = {"y": np.array([1.0 + 1e-6], np.float32)}
    assert compare(out, ref).ok
    assert not compare(out, ref, rtol=0, atol=0).ok
    assert compare({"y": np.array([1.5], np.float32)}, ref, atol=1.0).ok


def test_metric_guards_for_variants() -> None:
    ref = {"logits": np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]], np.float32)}
    moved = {"logits": np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1]], np.float16)}  # row 2 flips
    result = compare(moved, ref, metric="top1-agreement", threshold=0.9)
    assert not result.ok and result.top1_agreement == 0.5
    assert "top1-agreement 0.5 against the baseline's outputs, needs >= 0.9" in result.message
    assert compare(moved, ref, metric="top1-agreement", threshold=0.5).ok
    assert compare(moved, ref, metric="max-abs", threshold=0.8).ok
    assert not compare(moved, ref, metric="cosine", threshold=0.99).ok
    assert 0 < (result.cosine or 0) < 1


def test_reference_round_trip_by_batch(tmp_path: Path) -> None:
    path = tmp_path / "ref.npz"
    save_reference(
        path, {1: {"a": np.zeros((1, 4))}, 4: {"a": np.ones((4, 4)), "onnx::Shape_1": np.arange(4)}}
    )
    got = load_reference(path, 4) or {}
    assert {k: v.shape for k, v in got.items()} == {"a": (4, 4), "onnx::Shape_1": (4,)}
    assert load_reference(path, 2) is None
    assert not list(tmp_path.glob("*.part*"))


def _job(model: Path, config: TrialConfig, check: AccuracyCheck) -> WorkerJob:
    return WorkerJob(str(model), config, resolve_inputs(read_model(model)).plan, FAST, check)


def test_graph_optimization_difference_is_caught_with_a_tight_tolerance(
    rapid: Path, tmp_path: Path
) -> None:
    """Real: ORT_DISABLE_ALL rounds differently from the default ORT_ENABLE_ALL on this CNN."""
    ref = str(tmp_path / "reference.npz")
    base = run_trial(
        _job(rapid, TrialConfig(), AccuracyCheck(ref, write_batches=(1, 2))), timeout_s=120
    )
    assert isinstance(base, Measurement) and Path(ref).is_file()
    unoptimized = TrialConfig(
        session_options={"graph_optimization_level": "ORT_DISABLE_ALL"}, batch_size=2
    )
    default_tol = run_trial(_job(rapid, unoptimized, AccuracyCheck(ref)), timeout_s=120)
    assert isinstance(default_tol, Measurement), default_tol
    assert default_tol.max_abs_err is not None and 0 < default_tol.max_abs_err < 1e-4
    tight = run_trial(_job(rapid, unoptimized, AccuracyCheck(ref, rtol=0, atol=0)), timeout_s=120)
    assert isinstance(tight, TrialFailure) and tight.kind == "mismatch"
    assert tight.details["max_abs_err"] > 0 and "differs from the baseline's" in tight.message


def test_mismatching_trials_are_rejected_never_ranked(magika: Path, tmp_path: Path) -> None:
    """Through the tuner: with zero tolerance, every config that rounds differently fails."""
    tuned = autotune.tune(
        magika, objective="latency", trials=8, out=tmp_path, rtol=0, atol=0,
        min_time_s=0.05, min_runs=5, finalists=2, rounds=2, seed=3,
    )  # fmt: skip
    study = optuna.load_study(
        study_name=tuned.study_name, storage=f"sqlite:///{tmp_path / 'autotune.db'}"
    )
    mismatched = [t for t in study.trials if t.user_attrs.get("failure_kind") == "mismatch"]
    assert mismatched, "a zero tolerance should reject some optimization levels"
    for trial in mismatched:
        assert trial.state.name == "FAIL"
        assert trial.user_attrs["failure_details"]["max_abs_err"] > 0
    confirmed = tuned.confirmation
    rejected = {t.number for t in mismatched}
    assert tuned.trial_number not in rejected
    if confirmed is not None:
        assert not rejected & {f.trial_number for f in confirmed.finalists}

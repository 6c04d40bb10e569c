"""Model variants on real models: dynamic int8 and fusion (MiniLM-L3), static int8 (CNN)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

import autotune
from autotune.cli import app
from autotune.errors import UsageError
from autotune.session import read_tuned
from autotune.variants import parse_accuracy, parse_variants

runner = CliRunner()
FAST = ["--min-time", "0.05", "--min-runs", "3", "--finalists", "0", "--seed", "3"]


@pytest.fixture(autouse=True)
def variant_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    folder = tmp_path_factory.getbasetemp() / "variant-cache"
    monkeypatch.setenv("AUTOTUNE_VARIANT_CACHE", str(folder))
    return folder


def _trials(out: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'autotune.db'}").trials


def test_parsing() -> None:
    assert parse_accuracy("cosine>=0.999") == ("cosine", 0.999)
    assert parse_accuracy("max-abs<=1e-2") == ("max-abs", 0.01)
    assert parse_variants("int8-dynamic, fused") == ("int8-dynamic", "fused")
    with pytest.raises(UsageError, match="malformed"):
        parse_accuracy("cosine<=0.9")
    with pytest.raises(UsageError, match="unknown --variants"):
        parse_variants("int4")


def test_minilm_dynamic_int8_and_fusion_under_the_guard(
    minilm: Path, tmp_path: Path, variant_cache: Path
) -> None:
    args = ["run", str(minilm), "--dim", "sequence_length=32", "-o", "latency", "--trials", "8",
            "--variants", "int8-dynamic,fused", "--out", str(tmp_path), *FAST]  # fmt: skip
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "variant int8-dynamic: made (dynamic int8" in first.stderr
    assert "variant fused: made (fused: " in first.stderr and "Attention" in first.stderr
    assert "may win only with cosine >= 0.9999 on synthetic inputs" in first.stderr
    [best] = tmp_path.glob("*/best.json")
    trials = [t for t in _trials(tmp_path, best.parent.name) if t.user_attrs.get("config")]
    by_variant: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for t in trials:
        by_variant.setdefault(t.user_attrs["config"].get("variant", "original"), []).append(t)
    assert {"int8-dynamic", "fused"} <= set(by_variant), "the sampler should try both variants"
    for t in by_variant["fused"]:
        assert t.state.name == "COMPLETE" and t.user_attrs["cosine"] >= 0.9999
    for t in by_variant["int8-dynamic"]:  # lossy on synthetic tokens: rejected, with its figure
        assert t.user_attrs["failure_kind"] == "mismatch"
        assert 0.5 < t.user_attrs["failure_details"]["cosine"] < 0.99

    # a fused trial exports and loads as a deployment would, from the variant's file
    fused = by_variant["fused"][0].number
    exported = runner.invoke(
        app, ["export", "--out", str(tmp_path), "--study", best.parent.name, "--trial", str(fused)]
    )
    assert exported.exit_code == 0, exported.output
    config = best.parent / f"trial-{fused}.json"
    tuned = read_tuned(config)
    assert tuned.config.variant == "fused" and "fused" in tuned.model_path
    feeds = {"input_ids": np.ones((1, 32), np.int64), "attention_mask": np.ones((1, 32), np.int64)}
    assert autotune.load_session(config).run(None, feeds)

    # resuming the study reuses the variants from the cache
    files = {p: p.stat().st_mtime_ns for p in variant_cache.glob("*.onnx")}
    more = list(args)
    more[more.index("--trials") + 1] = "10"
    again = runner.invoke(app, more)
    assert again.exit_code == 0, again.output
    assert (
        "variant int8-dynamic: cached" in again.stderr and "variant fused: cached" in again.stderr
    )
    assert {p: p.stat().st_mtime_ns for p in variant_cache.glob("*.onnx")} == files


def test_a_looser_accuracy_lets_int8_compete(minilm: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["run", str(minilm), "--dim", "sequence_length=32", "-o", "latency", "--trials", "6",
         "--variants", "int8-dynamic", "--accuracy", "cosine>=0.5", "--out", str(tmp_path), *FAST],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [best] = tmp_path.glob("*/best.json")
    int8 = [
        t for t in _trials(tmp_path, best.parent.name)
        if t.user_attrs.get("config", {}).get("variant") == "int8-dynamic"
    ]  # fmt: skip
    assert int8 and all(
        t.state.name == "COMPLETE" and 0.5 <= t.user_attrs["cosine"] < 1 for t in int8
    )


def test_static_int8_with_a_calibration_set(rapid: Path, tmp_path: Path) -> None:
    data = tmp_path / "calibration.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32))
    result = runner.invoke(
        app,
        ["run", str(rapid), "-o", "latency", "--trials", "5", "--variants", "int8-static",
         "--calibration", str(data), "--accuracy", "top1-agreement>=0.0", "--out", str(tmp_path / "o"), *FAST],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"static int8 QDQ, calibrated on 8 samples of {data}" in result.stderr
    [best] = (tmp_path / "o").glob("*/best.json")
    int8 = [
        t for t in _trials(tmp_path / "o", best.parent.name)
        if t.user_attrs.get("config", {}).get("variant") == "int8-static"
    ]  # fmt: skip
    assert int8, "the sampler should try the variant"
    for t in int8:
        assert t.state.name == "COMPLETE", t.user_attrs.get("failure_message")
        assert 0.0 <= t.user_attrs["top1_agreement"] <= 1.0 and t.user_attrs["cosine"] > 0.5


def test_missing_calibration_file_is_a_usage_error(rapid: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "run",
            str(rapid),
            "--variants",
            "int8-static",
            "--calibration",
            str(tmp_path / "none.npz"),
        ],
    )
    assert result.exit_code == 2 and "--calibration file not found" in result.stderr

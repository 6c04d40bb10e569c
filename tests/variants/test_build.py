"""Model variants on real models: dynamic int8 and fusion (MiniLM-L3), static int8 (CNN)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest
from typer.testing import CliRunner

import autotune
from autotune.cli import app
from autotune.errors import UsageError
from autotune.measure.session import read_tuned
from autotune.model import read_model, resolve_inputs
from autotune.study import records_of
from autotune.study._screen import promising
from autotune.variants.build import build_variant, parse_accuracy, parse_variants
from autotune.variants.recipes import expand

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
    """The study's trials less repeated proposals (recorded, never measured)."""
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'autotune.db'}")
    return [t for t in study.trials if t.user_attrs.get("failure_kind") != "repeat"]


def test_parsing() -> None:
    assert parse_accuracy("cosine>=0.999") == ("cosine", 0.999)
    assert parse_accuracy("max-abs<=1e-2") == ("max-abs", 0.01)
    assert parse_variants("int8-dynamic, fused") == ("int8-dynamic", "fused")
    assert parse_variants("int4,int8-dynamic.pc.rr.matmul") == ("int4", "int8-dynamic.pc.rr.matmul")
    with pytest.raises(UsageError, match="malformed"):
        parse_accuracy("cosine<=0.9")
    for bad in ("int3", "int8-dynamic.xx"):
        with pytest.raises(UsageError, match="unknown --variants"):
            parse_variants(bad)


def test_a_family_is_its_grid_of_recipes() -> None:
    dynamic = [r.name for r in expand(["int8-dynamic"])]
    assert len(dynamic) == 12 and len(set(dynamic)) == 12
    assert "int8-dynamic.pc.rr.matmul" in dynamic and "int8-dynamic.pt.all" in dynamic
    static = expand(["int8-static"])
    assert {r.options["calibration"] for r in static} == {"minmax", "entropy", "percentile"}
    assert {r.options["activation"] for r in static} == {"u8", "s8"}
    assert [r.options["accuracy_level"] for r in expand(["int4"])] == [4, 4]
    assert [r.name for r in expand(["int8-dynamic.pc.matmul", "int8-dynamic"])][0] == (
        "int8-dynamic.pc.matmul"
    )  # a recipe named first keeps its place, and is not made twice
    assert len(expand(["int8-dynamic.pc.matmul", "int8-dynamic"])) == 12


def test_int4_is_matmulnbits_at_accuracy_level_4(minilm: Path) -> None:
    """The default accuracy_level runs MatMulNBits on the slow fp32 path; level 4 is int8."""
    model = read_model(minilm)
    plan = resolve_inputs(model, dims={"sequence_length": 16}).plan
    [recipe] = [r for r in expand(["int4"]) if r.options["block_size"] == 32]
    variant = build_variant(model, recipe, feeds=plan)
    assert variant is not None and variant.name == "int4.b32"
    graph = onnx.load(variant.path, load_external_data=False).graph
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all(
        {a.name: a.i for a in n.attribute}.get("accuracy_level") == 4 for n in nbits
    )


@pytest.mark.filterwarnings(
    "ignore::autotune.measure.session.UnconfirmedConfigWarning"
)  # a search trial
def test_minilm_recipes_screened_once_and_sensitive_nodes_kept_in_float(
    minilm: Path, tmp_path: Path, variant_cache: Path
) -> None:
    """A per-tensor int8 recipe fails the guard on synthetic tokens: it is judged once before
    the search and leaves the space (no trial is spent on it); as its family's only recipe,
    it is made again with the few nodes bisection finds kept in float, which pass."""
    args = ["run", str(minilm), "--dim", "sequence_length=32", "-o", "latency", "--trials", "6",
            "--variants", "int8-dynamic.pt.all,fused", "--out", str(tmp_path), *FAST]  # fmt: skip
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    log = first.stderr
    assert "variant int8-dynamic.pt.all: made (dynamic int8" in log
    assert "variant fused: made (fused: " in log and "Attention" in log
    assert "variant int8-dynamic.pt.all: fails the accuracy guard (cosine 0." in log
    assert "variant fused: passes the accuracy guard" in log
    kept = re.search(r"variant (int8-dynamic\.pt\.all\+keep(\d+)): \2 of (\d+) node\(s\) kept", log)
    assert kept, log
    keep_name = kept[1]
    assert int(kept[2]) < int(kept[3])  # fewer than all the MatMuls
    [best] = tmp_path.glob("*/best.json")
    study = optuna.load_study(
        study_name=best.parent.name, storage=f"sqlite:///{tmp_path / 'autotune.db'}"
    )
    variants_tried = {t.user_attrs["config"].get("variant") for t in study.trials}
    assert "int8-dynamic.pt.all" not in variants_tried  # judged once, never a trial
    screen = study.user_attrs["variant_screen"]
    assert sorted(screen["passed"]) == sorted(["fused", keep_name])
    # Queued first: the passing variants whose quick look was not clearly slower than the
    # defaults (how fast each looked depends on the machine's load, so ask the rule).
    [base] = [r for r in records_of(study) if r.baseline]
    early = promising(screen["verdicts"], screen["passed"], base.outcome.latency_ms.p50)
    assert (f"{len(early)} passing variant(s) queued first at the defaults: " in log) == bool(early)
    assert screen["verdicts"]["int8-dynamic.pt.all"]["cosine"] < 0.99
    for t in study.trials:
        if t.user_attrs.get("failure_kind") == "repeat":
            continue  # a repeated proposal, recorded and not measured
        if t.user_attrs["config"].get("variant") in ("fused", keep_name):
            assert t.state.name == "COMPLETE", t.user_attrs.get("failure_message")
    # the nodes kept in float are plain MatMuls in the variant; the others are quantized
    graph = onnx.load(screen["paths"][keep_name], load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    plain = [
        n.name for n in graph.node
        if n.op_type == "MatMul" and any(i in weights for i in n.input)
    ]  # fmt: skip
    assert len(plain) == int(kept[2])
    assert sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in graph.node) > 0

    # a fused trial exports and loads as a deployment would, from the variant's file
    fused = next(
        t.number for t in _trials(tmp_path, best.parent.name)
        if t.user_attrs["config"].get("variant") == "fused"
    )  # fmt: skip
    exported = runner.invoke(
        app, ["export", "--out", str(tmp_path), "--study", best.parent.name, "--trial", str(fused)]
    )
    assert exported.exit_code == 0, exported.output
    config = best.parent / f"trial-{fused}.json"
    tuned = read_tuned(config)
    assert tuned.config.variant == "fused" and "fused" in tuned.model_path
    feeds = {"input_ids": np.ones((1, 32), np.int64), "attention_mask": np.ones((1, 32), np.int64)}
    assert autotune.load_session(config).run(None, feeds)

    # resuming the study reuses the variants from the cache and the stored verdicts
    files = {p: p.stat().st_mtime_ns for p in variant_cache.glob("*.onnx")}
    more = list(args)
    more[more.index("--trials") + 1] = "8"
    again = runner.invoke(app, more)
    assert again.exit_code == 0, again.output
    assert "variant int8-dynamic.pt.all: cached" in again.stderr
    assert "accuracy verdicts of 2 stored with the study are reused" in again.stderr
    assert "looking for the nodes" not in again.stderr
    assert {p: p.stat().st_mtime_ns for p in variant_cache.glob("*.onnx")} == files


def test_a_looser_accuracy_lets_int8_compete(minilm: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["run", str(minilm), "--dim", "sequence_length=32", "-o", "latency", "--trials", "6",
         "--variants", "int8-dynamic.pt.all", "--accuracy", "cosine>=0.5", "--out", str(tmp_path),
         *FAST],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [best] = tmp_path.glob("*/best.json")
    int8 = [
        t for t in _trials(tmp_path, best.parent.name)
        if t.user_attrs.get("config", {}).get("variant") == "int8-dynamic.pt.all"
    ]  # fmt: skip
    assert int8 and all(
        t.state.name == "COMPLETE" and 0.5 <= t.user_attrs["cosine"] < 1 for t in int8
    )


def test_static_int8_with_a_calibration_set(rapid: Path, tmp_path: Path) -> None:
    data = tmp_path / "calibration.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32))
    result = runner.invoke(
        app,
        ["run", str(rapid), "-o", "latency", "--trials", "5", "--variants",
         "int8-static.u8.minmax.pt,int8-static.s8.percentile.pc", "--calibration", str(data),
         "--accuracy", "top1-agreement>=0.0", "--out", str(tmp_path / "o"), *FAST],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"calibrated on 8 samples of {data}" in result.stderr
    assert "calibration=percentile" in result.stderr and "activation=s8" in result.stderr
    [best] = (tmp_path / "o").glob("*/best.json")
    int8 = [
        t for t in _trials(tmp_path / "o", best.parent.name)
        if t.user_attrs.get("config", {}).get("variant", "").startswith("int8-static")
    ]  # fmt: skip
    assert int8, "the sampler should try the variants"
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


def test_entropy_calibration_is_not_minmax_again(rapid: Path, tmp_path: Path) -> None:
    """quantize_static's own Entropy calibrator (128 bins into 128) returns the full range,
    MinMax's model byte for byte; autotune's computes the KL thresholds on a finer histogram."""
    data = tmp_path / "calibration.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32))
    model = read_model(rapid)
    plan = resolve_inputs(model, data_path=str(data)).plan
    made = {
        name: build_variant(model, recipe, feeds=plan, calibration=str(data))
        for recipe in expand(["int8-static.u8.minmax.pt", "int8-static.u8.entropy.pt"])
        for name in [recipe.name]
    }
    minmax, entropy = made["int8-static.u8.minmax.pt"], made["int8-static.u8.entropy.pt"]
    assert minmax is not None and entropy is not None
    assert minmax.sha256 != entropy.sha256
    assert "calibration=entropy" in entropy.note

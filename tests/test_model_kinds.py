"""Models as users have them: scikit-learn trees with ZipMap outputs, sequence and string outputs.

The tree model is a real scikit-learn random forest trained on a real dataset (the breast cancer
set shipped with scikit-learn) and converted by skl2onnx in the test, as users convert theirs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import optuna
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

import autotune
from autotune.cli import app
from autotune.measure.accuracy import as_tensors, compare, load_references, save_reference


def test_zipmap_outputs_are_flattened_stored_and_compared(
    forest: tuple[Path, Path], tmp_path: Path
) -> None:
    path, pool = forest
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = np.load(pool)["X"][:5]
    label, probability = session.run(None, {"X": rows})
    assert isinstance(probability, list) and isinstance(probability[0], dict)  # ZipMap
    outputs = {"output_label": label, "output_probability": probability}
    arrays, skipped = as_tensors(outputs)
    assert not skipped
    assert arrays["output_probability"].shape == (5, 2)
    assert arrays["output_probability"].dtype == np.float32
    assert list(arrays["output_probability#keys"]) == [0, 1]
    save_reference(tmp_path / "ref.npz", {"batch5": outputs})  # no pickled objects
    [reference] = load_references(tmp_path / "ref.npz").values()
    assert compare(outputs, reference).ok
    moved = [dict(row) for row in probability]
    moved[2] = {0: moved[2][0] - 0.25, 1: moved[2][1] + 0.25}
    result = compare({"output_label": label, "output_probability": moved}, reference)
    assert not result.ok and "output_probability" in result.message


def test_sequence_string_and_absent_outputs_are_compared(tmp_path: Path) -> None:
    """A real graph whose outputs are a sequence of tensors and a string tensor."""
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("SequenceConstruct", ["x", "r"], ["seq"]),
            helper.make_node("Identity", ["s"], ["words"]),
        ],
        "kinds",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("s", TensorProto.STRING, [2]),
        ],
        [
            helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("words", TensorProto.STRING, [2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.array([[-1, 2, 3], [4, -5, 6]], np.float32)
    seq, words = session.run(None, {"x": x, "s": np.array(["a", "b"], dtype=object)})
    outputs = {"seq": seq, "words": words, "maybe": None}
    arrays, skipped = as_tensors(outputs)
    assert not skipped and set(arrays) == {
        "seq#length", "seq[0]", "seq[1]", "words", "maybe#absent"
    }  # fmt: skip
    save_reference(tmp_path / "ref.npz", {"batch2": outputs})
    [reference] = load_references(tmp_path / "ref.npz").values()
    assert compare(outputs, reference).ok
    changed = compare({"seq": seq, "words": np.array(["a", "c"], dtype=object)}, reference)
    assert not changed.ok and "'words' differs" in changed.message
    assert "'maybe#absent' of the baseline is missing" in changed.message
    shorter = compare({"seq": seq[:1], "words": words, "maybe": None}, reference)
    assert not shorter.ok and "seq" in shorter.message


def test_tree_ensemble_tunes_end_to_end_and_batches(
    forest: tuple[Path, Path], tmp_path: Path
) -> None:
    """Every trial measured (no 'Object arrays cannot be loaded'), batch sizes searched, the
    exported config serves the sequence-of-maps output."""
    path, pool = forest
    result = CliRunner().invoke(
        app,
        ["run", str(path), "--inputs", str(pool), "--trials", "6", "--batch-sizes", "1,16,64",
         "--min-time", "0.05", "--min-runs", "5", "--finalists", "1", "--rounds", "2",
         "--out", str(tmp_path), "--seed", "3", "--json", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    storage = f"sqlite:///{tmp_path / 'autotune.db'}"
    study = optuna.load_study(study_name=payload["study"]["name"], storage=storage)
    failed = [
        t.user_attrs.get("failure_message")
        for t in study.trials
        if t.state.name == "FAIL" and t.user_attrs.get("failure_kind") != "repeat"
    ]  # fmt: skip  (a repeated proposal is recorded, not measured)
    assert not failed, failed
    batches = {t.user_attrs["config"]["batch_size"] for t in study.trials}
    assert len(batches) > 1
    measured = [
        t.user_attrs["measurement"] for t in study.trials
        if not t.user_attrs["baseline"] and t.user_attrs.get("failure_kind") != "repeat"
    ]  # fmt: skip
    assert all(m["cosine"] is not None and m["cosine"] > 0.999 for m in measured)
    session = autotune.load_session(payload["path"])
    _, probability = session.run(None, {"X": np.load(pool)["X"][:3]})
    assert len(probability) == 3 and set(probability[0]) == {0, 1}


@pytest.fixture(scope="module")
def fp16_rapid(rapid: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RapidOCR's classifier converted to fp16 inside, fp32 at its inputs and outputs, by
    ONNX Runtime's own converter (as users convert theirs)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    path = tmp_path_factory.mktemp("fp16") / "rapid-fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(rapid)), keep_io_types=True), str(path))
    return path


def test_precision_is_detected_and_sets_the_guard(
    rapid: Path, fp16_rapid: Path, tmp_path: Path
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from autotune.model import read_model
    from autotune.tuning import RunOptions, prepare

    int8 = tmp_path / "rapid-int8.onnx"
    quantize_dynamic(str(rapid), str(int8), weight_type=QuantType.QInt8)
    assert read_model(rapid).precision == "fp32"
    assert read_model(fp16_rapid).precision == "fp16"
    assert read_model(int8).precision == "int8"
    fp16 = prepare(RunOptions(model=fp16_rapid, out=tmp_path / "a"))
    assert (fp16.rtol, fp16.atol) == (1e-2, 1e-3)
    plain = prepare(RunOptions(model=rapid, out=tmp_path / "b"))
    assert (plain.rtol, plain.atol) == (None, None)  # float32's own, per output dtype
    mine = prepare(RunOptions(model=fp16_rapid, out=tmp_path / "c", rtol=0.5))
    assert mine.rtol == 0.5


def test_an_fp16_model_is_tuned_at_its_own_tolerance(fp16_rapid: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["run", str(fp16_rapid), "-o", "latency", "--trials", "3", "--out", str(tmp_path),
         "--min-time", "0.05", "--min-runs", "5", "--finalists", "0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert ", fp16)" in result.stderr
    assert "rtol 0.01, atol 0.001 (the defaults for fp16)" in result.stderr

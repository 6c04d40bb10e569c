"""Models with string inputs: a real scikit-learn text classifier converted with skl2onnx.

The model is a TfidfVectorizer (skl2onnx emits StringNormalizer + Tokenizer + TfIdfVectorizer)
feeding a LogisticRegression, trained on real English sentences (the docstrings of a few
standard library modules) to name the module a sentence comes from: a ``tensor(string)``
input and a ``tensor(string)`` label output. An .npz holds text without pickle only as numpy
unicode or bytes; onnxruntime takes an object array of str. Nothing here is mocked.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import unittest
from pathlib import Path

import numpy as np
import pytest

import autotune
from autotune.errors import UsageError
from autotune.measure.accuracy import compare, load_references, save_reference
from autotune.model import as_strings, load_npz, make_feeds, read_model, resolve_inputs

MODULES = (argparse, csv, json, unittest)


def _sentences(module: object) -> list[str]:
    text = " ".join((getattr(module, "__doc__", None) or "").split())
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str]]:
    """Real sentences and the module each comes from (a few dozen)."""
    texts, labels = [], []
    for module in MODULES:
        found = _sentences(module)
        texts += found
        labels += [module.__name__] * len(found)
    assert len(texts) >= 30, texts
    return texts, labels


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory, corpus: tuple[list, list]) -> Path:
    """text string [N, 1] -> label string [N], probabilities float [N, 4]."""
    from onnx import save
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    texts, labels = corpus
    pipeline = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression(max_iter=300))])
    pipeline.fit(texts, labels)
    onx = convert_sklearn(
        pipeline,
        initial_types=[("text", StringTensorType([None, 1]))],
        options={
            # onnxruntime's Tokenizer needs a regular expression of its own dialect, and its
            # StringNormalizer a locale this machine has ("en_US" by default; "C" always is).
            TfidfVectorizer: {"tokenexp": r"\b\w\w+\b", "locale": "C"},
            LogisticRegression: {"zipmap": False},
        },
        target_opset=17,
    )
    path = tmp_path_factory.mktemp("text") / "text.onnx"
    save(onx, path)
    return path


@pytest.fixture(scope="module")
def texts_npz(tmp_path_factory: pytest.TempPathFactory, corpus: tuple[list, list]) -> Path:
    """The texts as a user saves them: a numpy str array, one text per row."""
    path = tmp_path_factory.mktemp("feeds") / "texts.npz"
    np.savez(path, text=np.array(corpus[0][:24]).reshape(-1, 1))
    return path


def _is_str_objects(array: np.ndarray) -> bool:
    return array.dtype == object and all(type(v) is str for v in array.flat)


# --- the one conversion helper -------------------------------------------------------------


def test_unicode_and_bytes_arrays_become_object_arrays_of_str() -> None:
    unicode = np.array([["the json module"], ["été"]])
    converted = as_strings("text", unicode)
    assert _is_str_objects(converted) and converted.shape == (2, 1)
    assert converted.tolist() == [["the json module"], ["été"]]
    raw = np.array([[b"csv reader"], ["été".encode()]])
    assert raw.dtype.kind == "S"
    decoded = as_strings("text", raw)
    assert _is_str_objects(decoded) and decoded.tolist() == [["csv reader"], ["été"]]
    scalar = as_strings("text", np.array("one text"))
    assert _is_str_objects(scalar) and scalar.shape == ()
    already = np.array(["a", "b"], dtype=object)
    assert as_strings("text", already) is already


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((2, 1), np.float32), "has dtype float32, but input 'text' takes strings"),
        (np.array([1, 2]), "has dtype int64, but input 'text' takes strings"),
        (np.array([b"\xff\xfe"]), "holds bytes that are not UTF-8 text"),
        (np.array([1, "a"], dtype=object), "has dtype object, but input 'text' takes strings"),
    ],
)
def test_other_arrays_for_a_string_input_are_one_line_usage_errors(
    array: np.ndarray, message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        as_strings("text", array)
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert "numpy.savez('FILE.npz', text=numpy.array(" in text


# --- resolving and feeding -----------------------------------------------------------------


def test_a_string_input_without_data_says_how_to_save_it(text_model: Path) -> None:
    model = read_model(text_model)
    [spec] = model.inputs
    assert spec.dtype == "object" and spec.dims == (None, 1)
    with pytest.raises(UsageError) as caught:
        resolve_inputs(model)
    text = str(caught.value)
    assert "input 'text' takes strings" in text and "--inputs FILE.npz" in text
    assert "numpy.savez('FILE.npz', text=numpy.array([['text'], ['more text'], ...]))" in text
    assert "\n" not in text


def test_a_str_npz_is_a_pool_of_texts(text_model: Path, texts_npz: Path) -> None:
    resolved = resolve_inputs(read_model(text_model), data_path=str(texts_npz))
    plan = resolved.plan
    assert plan.pool_rows == 24 and plan.inputs[0].batched
    assert "text string Nx1; a pool of 24 samples" in resolved.describe()
    rows = np.load(texts_npz)["text"]
    batch = make_feeds(plan, 4, index=1)["text"]
    assert _is_str_objects(batch) and batch.shape == (4, 1)
    assert batch.tolist() == rows[4:8].tolist()


def test_bytes_npz_works_and_a_wrong_dtype_is_refused(
    text_model: Path, corpus: tuple[list, list], tmp_path: Path
) -> None:
    model = read_model(text_model)
    raw = tmp_path / "bytes.npz"
    np.savez(raw, text=np.array([t.encode() for t in corpus[0][:6]]).reshape(-1, 1))
    plan = resolve_inputs(model, data_path=str(raw)).plan
    assert make_feeds(plan, 2)["text"].tolist() == [[corpus[0][0]], [corpus[0][1]]]
    floats = tmp_path / "floats.npz"
    np.savez(floats, text=np.zeros((6, 1), np.float32))
    with pytest.raises(UsageError, match=r"has dtype float32, but input 'text' takes strings"):
        resolve_inputs(model, data_path=str(floats))


def test_an_object_npz_is_refused_with_how_to_save_text(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, text=np.array([["a"], ["b"]], dtype=object))  # pickled inside
    with pytest.raises(UsageError) as caught:
        load_npz(path)
    text = str(caught.value)
    assert "holds an object array" in text and "numpy str array" in text and "\n" not in text
    with pytest.raises(UsageError, match="^--calibration file not found"):
        load_npz(tmp_path / "missing.npz", flag="--calibration")


# --- the accuracy guard on a string output -------------------------------------------------


def test_string_outputs_round_trip_the_reference_without_pickle(
    text_model: Path, texts_npz: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(text_model), providers=["CPUExecutionProvider"])
    plan = resolve_inputs(read_model(text_model), data_path=str(texts_npz)).plan
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, make_feeds(plan, 8)), strict=True))
    assert outputs["label"].dtype == object  # what onnxruntime gives for tensor(string)
    path = tmp_path / "reference.npz"
    save_reference(path, {8: outputs})
    reference = load_references(path)["batch8"]  # read with allow_pickle=False
    assert reference["label"].dtype.kind == "U"
    assert compare(outputs, reference).ok
    # Another label (of another length) is a mismatch counted value by value.
    labels = outputs["label"].copy()
    labels[0] = "argparse" if labels[0] != "argparse" else "json"
    result = compare({**outputs, "label": labels}, reference)
    assert not result.ok and "output 'label' differs in 1 of 8 values" in result.message


# --- end to end through the CLI ------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*is unconfirmed")  # --finalists 0: one measurement
def test_run_tunes_a_text_model_and_load_session_serves_it(
    text_model: Path, texts_npz: Path, corpus: tuple[list, list], tmp_path: Path
) -> None:
    out = tmp_path / "results"
    env = {**os.environ, "AUTOTUNE_LOCK_FILE": str(tmp_path / "measure.lock")}
    done = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "run", str(text_model), "--inputs", str(texts_npz),
         "--trials", "3", "--finalists", "0", "--min-time", "0.05", "--min-runs", "3",
         "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "text string Nx1; a pool of 24 samples" in done.stdout + done.stderr
    [best] = out.glob("*/best.json")
    tuned = json.loads(best.read_text())
    assert tuned["inputs"]["inputs"][0]["dtype"] == "object"
    session = autotune.load_session(best)
    texts = np.array(corpus[0][-3:]).reshape(-1, 1)  # a str batch, as a user has it
    labels, probabilities = session.run(None, {"text": as_strings("text", texts)})
    assert labels.shape == (3,) and probabilities.shape == (3, len(MODULES))
    assert set(labels) <= {m.__name__ for m in MODULES}
    # export -f python writes plain onnxruntime code whose sample request is texts, not zeros
    script = tmp_path / "session.py"
    exported = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "export", "--out", str(out), "-f", "python",
         "--dest", str(script)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    served = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert served.returncode == 0, served.stderr
    batch = tuned["config"]["batch_size"]
    assert f"label {batch}\nprobabilities {batch}x{len(MODULES)}" in served.stdout

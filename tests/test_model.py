from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autotune.errors import UsageError
from autotune.model import (
    make_feeds,
    parse_dim_flags,
    parse_shape_flags,
    read_model,
    resolve_inputs,
)
from tests.conftest import SILERO_SHAPES


def test_reads_the_interface_of_real_models(magika: Path, rapid: Path, silero: Path) -> None:
    m = read_model(magika)
    assert [(i.name, i.dtype) for i in m.inputs] == [("bytes", "int32")]
    assert m.inputs[0].dims[1] == 2048 and m.has_dynamic_batch
    assert len(m.sha256) == 64 and m.size_bytes > 1_000_000
    assert read_model(rapid).batch_symbol == "DynamicDimension.0"
    s = read_model(silero)
    assert [i.name for i in s.inputs] == ["input", "state", "sr"]
    assert not s.has_dynamic_batch  # unnamed dims, state's batch is on axis 1
    assert s.inputs[2].dims == ()


def test_batched_inputs_take_the_trial_batch_size(magika: Path) -> None:
    plan = resolve_inputs(read_model(magika), seed=3).plan
    feeds = make_feeds(plan, 4)
    assert feeds["bytes"].shape == (4, 2048) and feeds["bytes"].dtype == np.int32
    assert set(np.unique(feeds["bytes"])) <= {0, 1}
    assert np.array_equal(make_feeds(plan, 4)["bytes"], feeds["bytes"])  # seeded


def test_unresolvable_dims_name_input_axis_and_flag(silero: Path) -> None:
    with pytest.raises(UsageError) as info:
        resolve_inputs(read_model(silero))
    message = str(info.value)
    assert "input 'input' axis 1 is dynamic (unnamed)" in message
    assert "--shape input=" in message
    assert "'sr' is an int64 scalar" in message and "--inputs" in message


def test_shapes_plus_partial_npz_resolve_silero(silero: Path, silero_sr: Path) -> None:
    resolved = resolve_inputs(
        read_model(silero), shapes=parse_shape_flags(SILERO_SHAPES), data_path=str(silero_sr)
    )
    feeds = make_feeds(resolved.plan, 1)
    assert feeds["input"].shape == (1, 512) and feeds["state"].shape == (2, 1, 128)
    assert feeds["sr"].dtype == np.int64 and int(feeds["sr"]) == 16000


def test_npz_data_is_a_pool_not_a_batch(rapid: Path, tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 224 * 224, dtype=np.float32).reshape(2, 3, 224, 224)
    np.savez(tmp_path / "x.npz", x=data)
    resolved = resolve_inputs(read_model(rapid), data_path=str(tmp_path / "x.npz"))
    assert resolved.pinned_batch is None  # the batch size follows the objective
    assert resolved.plan.pool_rows == 2
    assert "a pool of 2 samples" in resolved.describe()
    feeds = make_feeds(resolved.plan, 5)  # a batch larger than the pool wraps around it
    assert feeds["x"].shape == (5, 3, 224, 224)
    assert np.array_equal(feeds["x"][2], data[0]) and np.array_equal(feeds["x"][3], data[1])
    one, two = (make_feeds(resolved.plan, 1, index=k)["x"] for k in (0, 1))
    assert np.array_equal(one[0], data[0]) and np.array_equal(two[0], data[1])


def test_bad_npz_contents_are_reported(rapid: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", x=np.zeros((1, 3, 100, 100), np.float64), y=np.zeros(1))
    with pytest.raises(UsageError) as info:
        resolve_inputs(read_model(rapid), data_path=str(tmp_path / "bad.npz"))
    assert "'y', which is not a model input" in str(info.value)
    np.savez(tmp_path / "bad2.npz", x=np.zeros((1, 3, 100, 100), np.float64))
    with pytest.raises(UsageError) as info:
        resolve_inputs(read_model(rapid), data_path=str(tmp_path / "bad2.npz"))
    assert "dtype float64" in str(info.value) and "axis 2" in str(info.value)


def test_shape_flag_checks_rank_static_dims_and_names(rapid: Path) -> None:
    model = read_model(rapid)
    with pytest.raises(UsageError, match="rank 3"):
        resolve_inputs(model, shapes={"x": (1, 3, 224)})
    with pytest.raises(UsageError, match="axis 1, the model fixes it at 3"):
        resolve_inputs(model, shapes={"x": (1, 4, 224, 224)})
    with pytest.raises(UsageError, match="'images', which the model does not have"):
        resolve_inputs(model, shapes={"images": (1, 3, 224, 224)})
    assert resolve_inputs(model, shapes={"x": (2, 3, 224, 224)}).pinned_batch == 2


def test_dim_flag_sets_named_symbols(tiny_model: Path) -> None:
    model = read_model(tiny_model)
    assert resolve_inputs(model, dims={"batch": 4}).pinned_batch == 4
    with pytest.raises(UsageError, match="'seq', which is not a dim"):
        resolve_inputs(model, dims={"seq": 4})


@pytest.mark.parametrize("bad", ["x", "x=", "=1x2", "x=1x-2", "x=1,2", "x=0x3"])
def test_malformed_shape_flags(bad: str) -> None:
    if bad == "x=":  # an empty shape is a scalar, which is valid
        assert parse_shape_flags([bad]) == {"x": ()}
        return
    with pytest.raises(UsageError, match="--shape"):
        parse_shape_flags([bad])


@pytest.mark.parametrize("bad", ["seq", "seq=", "seq=-1", "seq=0", "=3", "seq=abc"])
def test_malformed_dim_flags(bad: str) -> None:
    with pytest.raises(UsageError, match="--dim"):
        parse_dim_flags([bad])


def test_unreadable_model_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        read_model(tmp_path / "missing.onnx")
    with pytest.raises(UsageError, match="is a directory"):
        read_model(tmp_path)
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 10)
    with pytest.raises(UsageError, match="not a valid ONNX model"):
        read_model(text)


def test_truncated_model_is_rejected(magika: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(magika.read_bytes()[:1_500_000])
    with pytest.raises(UsageError, match="truncated or not ONNX"):
        read_model(truncated)

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from autotune.config import ProviderSpec, TrialConfig
from autotune.measure.session import (
    ProviderFallbackError,
    Runner,
    create_session,
    provider_arguments,
    session_options,
)


def test_config_maps_onto_session_options() -> None:
    config = TrialConfig(
        session_options={
            "intra_op_num_threads": 2,
            "inter_op_num_threads": 1,
            "execution_mode": "ORT_PARALLEL",
            "graph_optimization_level": "ORT_ENABLE_BASIC",
            "enable_cpu_mem_arena": False,
            "enable_mem_pattern": False,
        },
        config_entries={"session.intra_op.allow_spinning": "0"},
    )
    options = session_options(config)
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.enable_cpu_mem_arena is False and options.enable_mem_pattern is False
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_provider_arguments_keep_order_and_options() -> None:
    config = TrialConfig(
        providers=(
            ProviderSpec("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}),
            ProviderSpec("CPUExecutionProvider"),
        )
    )
    assert provider_arguments(config) == [
        ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}),
        ("CPUExecutionProvider", {}),
    ]


def test_plain_and_io_binding_runs_agree(tiny_model: Path) -> None:
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)}
    plain = create_session(tiny_model, TrialConfig())
    expected = plain.run(None, feeds)[0]
    assert expected.shape == (3, 32)
    bound = TrialConfig(io_binding=True)
    run = Runner(create_session(tiny_model, bound), feeds, bound)
    for _ in range(3):  # the first run fixes the output buffers, later runs reuse them
        run()
        assert np.array_equal(run.outputs()[0], expected)
    plain_run = Runner(plain, feeds, TrialConfig())
    plain_run()
    assert np.array_equal(plain_run.outputs()[0], expected)


def test_cuda_request_without_cuda_libraries_is_a_fallback_error(tiny_model: Path) -> None:
    """Real here: onnxruntime-gpu on a machine without CUDA logs a warning and runs on CPU."""
    config = TrialConfig(
        providers=(ProviderSpec("CUDAExecutionProvider"), ProviderSpec("CPUExecutionProvider"))
    )
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA provider at all")
    try:
        import ctypes

        ctypes.CDLL("libcublasLt.so.13")
        pytest.skip("CUDA libraries are present: no fallback to observe")
    except OSError:
        pass
    with pytest.raises(ProviderFallbackError, match="runs on CPUExecutionProvider"):
        create_session(tiny_model, config)


def _tuned_file(model: Path, folder: Path, unconfirmed: str) -> Path:
    """A best.json for ``model`` whose config beat the defaults in one search measurement."""
    import dataclasses
    import json

    from autotune.config import SearchFigures, TunedConfig
    from autotune.model import model_sha256
    from tests.conftest import MEASUREMENT

    faster = dataclasses.replace(MEASUREMENT, throughput=MEASUREMENT.throughput * 1.3)
    tuned = TunedConfig(
        config=TrialConfig(session_options={"intra_op_num_threads": 1}),
        model_path=str(model), model_sha256=model_sha256(model), objective="throughput",
        metrics=faster, baseline=MEASUREMENT, speedup=1.3, study_name="s", storage="sqlite://",
        trial_number=4, environment={}, created="2026-12-02T00:00:00+00:00",
        search=SearchFigures(4, faster, MEASUREMENT, 1.3), unconfirmed=unconfirmed,
    )  # fmt: skip
    path = folder / "best.json"
    path.write_text(json.dumps(tuned.to_dict()))
    return path


def test_an_unconfirmed_best_json_says_so_and_loading_it_warns(
    tiny_model: Path, tmp_path: Path
) -> None:
    import json
    import warnings

    from autotune.measure.session import (
        UnconfirmedConfigWarning,
        load_pool,
        load_session,
        read_tuned,
    )

    path = _tuned_file(tiny_model, tmp_path, "the run was interrupted before its confirmation")
    data = json.loads(path.read_text())
    assert data["confirmed"] is False and "interrupted" in data["unconfirmed"]
    with pytest.warns(UnconfirmedConfigWarning, match="unconfirmed.*interrupted.*1.30x"):
        load_session(path)
    with pytest.warns(UnconfirmedConfigWarning):
        load_pool(path)

    confirmed = _tuned_file(tiny_model, tmp_path, "")
    assert json.loads(confirmed.read_text())["confirmed"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_session(confirmed)

    # a best.json written before the field: no confirmation and figures that are not the
    # defaults' mean one search measurement
    del data["confirmed"], data["unconfirmed"]
    path.write_text(json.dumps(data))
    assert not read_tuned(path).confirmed

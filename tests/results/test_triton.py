"""export -f triton: a model repository whose config.pbtxt Triton's own model-config protobuf
parses, for a model with a dynamic batch dim and one without: tuned configs built here, and one
real open-loop tuning exported through the CLI."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from autotune.cli import app
from autotune.config import ProviderSpec, SearchFigures, TrialConfig, TunedConfig, Workload
from autotune.errors import AutotuneError, UsageError
from autotune.model import model_sha256
from autotune.results.triton import (
    config_pbtxt,
    model_interface,
    model_name,
    unexpressed,
    write_repository,
)
from tests.conftest import MEASUREMENT


@pytest.fixture(scope="module")
def pb() -> ModuleType:
    """Triton's model_config_pb2, loaded from its file: tritonclient.grpc's __init__ needs
    grpcio, which pins protobuf below the version onnx runs with here."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or spec.origin is None:  # the test extra installs it: a broken install
        pytest.fail("tritonclient is not installed: pip install -e '.[test]'")
    path = Path(spec.origin).parent / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def parse(pb: ModuleType, text: str) -> Any:
    return text_format.Parse(text, pb.ModelConfig())


def params(config: Any) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


@pytest.fixture(scope="module")
def batched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dynamic batch: x [batch, 64] float and ids [batch, seq] int64 in; y [batch, 32], one
    score per sample [batch] and ids again out; weights in an external file."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "W")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["y"]),
            helper.make_node("ReduceSum", ["y"], ["score"], keepdims=0, axes=[1]),
            helper.make_node("Identity", ["ids"], ["ids_out"]),
        ],
        "batched",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("ids_out", TensorProto.INT64, ["batch", "seq"]),
        ],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("batched") / "batched.onnx"
    onnx.save(model, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    assert (path.parent / "weights.bin").is_file()
    return path


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No dynamic batch: x [1, 3, 8, 8] -> y [1, 3, 8, 8]."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("fixed") / "fixed.onnx"
    onnx.save(model, path)
    return path


def tuned(
    model: Path,
    config: TrialConfig,
    *,
    concurrency: int = 1,
    study: str = "batched-0a1b2c3d-cpu-throughput",
) -> TunedConfig:
    return TunedConfig(
        config=config,
        model_path=str(model),
        model_sha256=model_sha256(model),
        objective="throughput",
        metrics=MEASUREMENT,
        baseline=MEASUREMENT,
        speedup=1.4,
        study_name=study,
        storage="sqlite:///results/autotune.db",
        trial_number=7,
        environment={"cpu_model": "x", "usable_cpus": 6},
        created="2026-11-21T00:00:00+00:00",
        search=SearchFigures(7, MEASUREMENT, MEASUREMENT, 1.4),
        workload=Workload(concurrency=concurrency),
    )


SERVER = TrialConfig(
    session_options={
        "intra_op_num_threads": 2,
        "inter_op_num_threads": 1,
        "execution_mode": "ORT_PARALLEL",
        "graph_optimization_level": "ORT_ENABLE_BASIC",
        "enable_cpu_mem_arena": False,
        "enable_mem_pattern": False,
    },
    batch_size=4,
    sessions=1,
    server_threads=3,
    max_batch=8,
    max_queue_delay_ms=1.5,
)


def test_batched_model_repository(pb: ModuleType, batched: Path, tmp_path: Path) -> None:
    """max_batch_size covers max_batch requests of batch_size samples; dims leave the batch
    out; the batcher's delay is in microseconds; three server threads are three instances
    sharing the one session; the model and its weights file sit in 1/ and run."""
    folder, left_out = write_repository(tuned(batched, SERVER), tmp_path / "repo", "batched")
    assert folder == tmp_path / "repo" / "batched" and left_out == []
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["batched"]  # no staging
    config = parse(pb, (folder / "config.pbtxt").read_text())
    assert config.name == "batched" and config.backend == "onnxruntime"
    assert config.max_batch_size == 32
    inputs = {t.name: t for t in config.input}
    assert list(inputs["x"].dims) == [64] and inputs["x"].data_type == pb.TYPE_FP32
    assert list(inputs["ids"].dims) == [-1] and inputs["ids"].data_type == pb.TYPE_INT64
    outputs = {t.name: t for t in config.output}
    assert list(outputs["y"].dims) == [32] and list(outputs["ids_out"].dims) == [-1]
    score = outputs["score"]  # one scalar per sample: dims [1] reshaped to []
    assert list(score.dims) == [1] and score.HasField("reshape") and not score.reshape.shape
    assert config.dynamic_batching.max_queue_delay_microseconds == 1500
    assert list(config.dynamic_batching.preferred_batch_size) == [32]
    [group] = config.instance_group
    assert group.count == 3 and group.kind == pb.ModelInstanceGroup.KIND_CPU
    assert config.optimization.graph.level == -1  # ORT_ENABLE_BASIC in the backend's numbers
    assert params(config) == {
        "intra_op_thread_count": "2",
        "inter_op_thread_count": "1",
        "execution_mode": "1",
        "enable_mem_arena": "0",
        "enable_mem_pattern": "0",
        "share_session_between_instances": "1",
    }
    model = folder / "1" / "model.onnx"
    assert (folder / "1" / "weights.bin").is_file()
    assert model_sha256(model) == model_sha256(batched)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feeds = {"x": np.ones((2, 64), np.float32), "ids": np.zeros((2, 5), np.int64)}
    assert session.run(["y"], feeds)[0].shape == (2, 32)


def test_fixed_model_repository(pb: ModuleType, fixed: Path, tmp_path: Path) -> None:
    """No dynamic batch dim: max_batch_size 0 and the full dims; the batcher the config asked
    for is named instead."""
    config = TrialConfig(
        session_options={"graph_optimization_level": "ORT_DISABLE_ALL"},
        sessions=2,
        max_batch=4,
        max_queue_delay_ms=2.0,
    )
    folder, left_out = write_repository(
        tuned(fixed, config, concurrency=2), tmp_path / "repo", "fixed"
    )
    parsed = parse(pb, (folder / "config.pbtxt").read_text())
    assert parsed.max_batch_size == 0
    assert [list(t.dims) for t in (*parsed.input, *parsed.output)] == [[1, 3, 8, 8]] * 2
    assert not parsed.HasField("dynamic_batching")
    # A batching server with server_threads 0 ran one thread per usable CPU (6), over 2 sessions.
    assert [(g.count, g.kind) for g in parsed.instance_group] == [
        (3, pb.ModelInstanceGroup.KIND_CPU)
    ] * 2
    assert params(parsed) == {"share_session_between_instances": "1"}
    assert parsed.optimization.graph.level == 2  # ORT_DISABLE_ALL
    [note] = left_out
    assert "dynamic batcher (max_batch 4, 2 ms)" in note and "max_batch_size is 0" in note


def test_callers_on_sessions_become_instance_groups(pb: ModuleType, fixed: Path) -> None:
    """Closed loop: each concurrent caller is one instance; instance i runs on session
    i % sessions, each session an instance group sharing it; ORT_ENABLE_ALL is the default."""
    layouts = {
        (1, 1): ([1], False),
        (4, 4): ([4], False),
        (4, 1): ([4], True),
        (5, 2): ([3, 2], True),
    }
    for (callers, sessions), (counts, shared) in layouts.items():
        config = TrialConfig(
            session_options={"graph_optimization_level": "ORT_ENABLE_ALL"}, sessions=sessions
        )
        t = tuned(fixed, config, concurrency=callers)
        parsed = parse(pb, config_pbtxt(t, model_interface(fixed), name="m"))
        assert [g.count for g in parsed.instance_group] == counts, (callers, sessions)
        assert len({g.name for g in parsed.instance_group}) == len(counts)
        assert ("share_session_between_instances" in params(parsed)) is shared
        assert not parsed.optimization.HasField("graph")


def test_gpu_providers_in_the_backends_syntax(pb: ModuleType, batched: Path) -> None:
    """TensorRT as the ``tensorrt`` accelerator with the backend's keys, the CUDA options it
    reads at the top level there (enums as its numbers), the others under ``cuda``."""
    config = TrialConfig(
        providers=(
            ProviderSpec(
                "TensorrtExecutionProvider",
                {
                    "trt_fp16_enable": "1",
                    "trt_max_workspace_size": "4294967296",
                    "trt_builder_optimization_level": "5",
                    "trt_engine_cache_enable": "1",
                    "trt_engine_cache_path": "/cache/trt",
                    "trt_no_such_option": "1",
                },
            ),
            ProviderSpec(
                "CUDAExecutionProvider",
                {
                    "cudnn_conv_algo_search": "HEURISTIC",
                    "arena_extend_strategy": "kSameAsRequested",
                    "do_copy_in_default_stream": "0",
                    "use_tf32": "0",
                    "prefer_nhwc": "1",
                    "device_id": "0",
                },
            ),
            ProviderSpec("CPUExecutionProvider"),
        ),
    )
    t = tuned(batched, config)
    text = config_pbtxt(t, model_interface(batched), name="gpu")
    parsed = parse(pb, text)
    assert [g.kind for g in parsed.instance_group] == [pb.ModelInstanceGroup.KIND_GPU]
    accelerators = {
        a.name: dict(a.parameters)
        for a in parsed.optimization.execution_accelerators.gpu_execution_accelerator
    }
    assert accelerators["tensorrt"] == {
        "precision_mode": "FP16",
        "max_workspace_size_bytes": "4294967296",
        "trt_builder_optimization_level": "5",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": "/cache/trt",
    }
    assert accelerators["cuda"] == {"use_tf32": "0", "prefer_nhwc": "1"}
    assert params(parsed) == {
        "cudnn_conv_algo_search": "1",
        "arena_extend_strategy": "1",
        "do_copy_in_default_stream": "0",
    }
    assert unexpressed(t, model_interface(batched)) == [
        "TensorRT provider option trt_no_such_option=1"
    ]
    assert "#   - TensorRT provider option trt_no_such_option=1" in text


def test_knobs_the_backend_cannot_carry_are_named(pb: ModuleType, batched: Path) -> None:
    """Named in config.pbtxt's opening comment and returned, one line each; the file still
    parses and carries what it can."""
    config = replace(
        SERVER,
        session_options={
            **SERVER.session_options,
            "graph_optimization_level": "ORT_ENABLE_LAYOUT",
            "enable_mem_reuse": False,
        },
        config_entries={
            "session.intra_op.allow_spinning": "0",
            "session.use_device_allocator_for_initializers": "1",
        },
        io_binding=True,
        global_thread_pool=True,
        free_dim_overrides=True,
    )
    t = tuned(batched, config)
    notes = unexpressed(t, model_interface(batched))
    expected = [
        "graph_optimization_level ORT_ENABLE_LAYOUT",
        "session option enable_mem_reuse=False",
        "session config entry session.intra_op.allow_spinning=0",
        "global_thread_pool",
        "enable-global-threadpool=1",
        "io_binding",
        "free_dim_overrides",
    ]
    for item in expected:
        assert sum(item in note for note in notes) == 1, (item, notes)
    text = config_pbtxt(t, model_interface(batched), name="m")
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert len(header) == 4 + len(notes) and all(f"#   - {n}" in header for n in notes)
    parsed = parse(pb, text)
    assert params(parsed)["session.use_device_allocator_for_initializers"] == "1"
    assert not parsed.optimization.HasField("graph")  # Triton runs ORT_ENABLE_ALL


def test_an_existing_model_folder_is_refused(batched: Path, tmp_path: Path) -> None:
    t = tuned(batched, SERVER)
    write_repository(t, tmp_path, "m")
    before = (tmp_path / "m" / "config.pbtxt").stat().st_mtime_ns
    with pytest.raises(UsageError, match="already exists; remove it or export under another"):
        write_repository(t, tmp_path, "m")
    assert (tmp_path / "m" / "config.pbtxt").stat().st_mtime_ns == before


def test_a_changed_model_is_refused_and_nothing_is_left(batched: Path, tmp_path: Path) -> None:
    """The copy is checked against the tuned sha256 (graph and weights): a deployment with
    other weights would serve figures nobody measured."""
    t = replace(tuned(batched, SERVER), model_sha256="00" * 32)
    with pytest.raises(AutotuneError, match="is not the model this study tuned"):
        write_repository(t, tmp_path, "m")
    assert list(tmp_path.iterdir()) == []


def test_files_are_readable_per_the_users_umask(batched: Path, tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        folder, _ = write_repository(tuned(batched, SERVER), tmp_path, "m")
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o750
    assert (folder / "1").stat().st_mode & 0o777 == 0o750
    for file in ("config.pbtxt", "1/model.onnx", "1/weights.bin"):
        assert (folder / file).stat().st_mode & 0o777 == 0o640, file


def test_tensors_triton_cannot_serve_are_refused(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x"], ["seq"])],
        "sequence",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_value_info("seq", helper.make_sequence_type_proto(
            helper.make_tensor_type_proto(TensorProto.FLOAT, [2])))],
    )  # fmt: skip
    path = tmp_path / "sequence.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(UsageError, match="output 'seq' is a sequence_type, not a tensor"):
        model_interface(path)


def test_model_names() -> None:
    assert model_name(None, "magika-1.0.3-fe2d2eb4-cpu-throughput-c2") == (
        "magika-1.0.3-fe2d2eb4-cpu-throughput-c2"
    )
    assert model_name(None, ".my model/v2") == "my_model_v2"
    assert model_name("resnet50", "ignored") == "resnet50"
    for bad in ("", "a/b", "..", "a b"):
        with pytest.raises(UsageError, match="use letters, digits"):
            model_name(bad, "s")


def test_cli_exports_the_repository_of_a_tuned_study(
    pb: ModuleType, batched: Path, tmp_path: Path
) -> None:
    """The export command end to end on a real open-loop tuning: DIR/ gets the study-named
    model with the server threads and batcher it was tuned with, a second export into the same
    folder is refused, and the flags are checked."""
    runner = CliRunner()
    out = tmp_path / "results"
    tuned_run = runner.invoke(
        app,
        ["run", str(batched), "--dim", "seq=8", "--rate", "100", "-o", "latency:p99", "--trials", "3",
         "--min-time", "0.1", "--finalists", "0", "--study", "batched-run", "--out", str(out)],
    )  # fmt: skip
    assert tuned_run.exit_code == 0, tuned_run.output
    chosen = TunedConfig.from_dict(json.loads((out / "batched-run" / "best.json").read_text()))
    repo = tmp_path / "models"
    done = runner.invoke(app, ["export", "--out", str(out), "-f", "triton", "--dest", f"{repo}/"])
    assert done.exit_code == 0, done.output
    config = parse(pb, (repo / "batched-run" / "config.pbtxt").read_text())
    assert config.backend == "onnxruntime" and config.name == "batched-run"
    instances = sum(group.count for group in config.instance_group)
    servers = chosen.config.server_threads or chosen.environment["usable_cpus"]
    assert instances == servers
    assert (repo / "batched-run" / "1" / "model.onnx").is_file()
    assert f"tritonserver --model-repository {repo}" in done.stdout

    again = runner.invoke(app, ["export", "--out", str(out), "-f", "triton", "--dest", str(repo)])
    assert again.exit_code == 2 and again.stderr.count("\n") == 1
    assert "already exists" in again.stderr

    named = runner.invoke(
        app, ["export", "--out", str(out), "-f", "triton", "--dest", str(repo), "--name", "clf"]
    )
    assert named.exit_code == 0, named.output
    assert 'name: "clf"' in (repo / "clf" / "config.pbtxt").read_text()

    (tmp_path / "file").write_text("")
    for args, message in (
        (["-f", "triton", "--dest", str(tmp_path / "file")], "is a file: -f triton writes"),
        (["-f", "triton"], "-f triton writes a model repository: give --dest DIR/"),
        (["-f", "triton", "--dest", "-"], "give --dest DIR/"),
        (["--name", "clf"], "--name is for -f triton only"),
    ):
        refused = runner.invoke(app, ["export", "--out", str(out), *args])
        assert refused.exit_code == 2 and message in refused.stderr, args

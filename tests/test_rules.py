from __future__ import annotations

import pytest
from optuna.trial import FixedTrial

from autotune.config import ProviderSpec, TrialConfig
from autotune.rules import RuleContext, broken_rules
from autotune.space import load_space

STATIC = RuleContext(static_shapes=True)
DYNAMIC = RuleContext(static_shapes=False)


def _cuda(options: dict[str, str], **kwargs: object) -> TrialConfig:
    providers = (
        ProviderSpec("CUDAExecutionProvider", options),
        ProviderSpec("CPUExecutionProvider"),
    )
    return TrialConfig(providers=providers, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("config", "context", "broken"),
    [
        (_cuda({"enable_cuda_graph": "1"}), STATIC, ["cuda_graph_needs_io_binding"]),
        (_cuda({"enable_cuda_graph": "1"}, io_binding=True), STATIC, []),
        (
            _cuda({"enable_cuda_graph": "1"}, io_binding=True),
            DYNAMIC,
            ["cuda_graph_needs_static_shapes"],
        ),
        (
            _cuda(
                {"enable_cuda_graph": "1"},
                io_binding=True,
                session_options={"execution_mode": "ORT_PARALLEL"},
            ),
            STATIC,
            ["cuda_graph_not_with_parallel_execution"],
        ),
        (_cuda({"enable_cuda_graph": "0"}), DYNAMIC, []),
        (TrialConfig(io_binding=True), STATIC, ["io_binding_needs_a_gpu_provider"]),
        (TrialConfig(), DYNAMIC, []),
        (
            TrialConfig(
                providers=(
                    ProviderSpec("TensorrtExecutionProvider", {"trt_cuda_graph_enable": "1"}),
                )
            ),
            STATIC,
            ["cuda_graph_needs_io_binding"],
        ),
    ],
)
def test_rules(config: TrialConfig, context: RuleContext, broken: list[str]) -> None:
    assert [rule.name for rule in broken_rules(config, context)] == broken


@pytest.mark.parametrize("space_name", ["cpu", "cuda", "tensorrt"])
@pytest.mark.parametrize("batch_sizes", [(1,), (1, 8)])
def test_no_point_of_a_builtin_space_breaks_a_rule(
    space_name: str, batch_sizes: tuple[int, ...]
) -> None:
    """The spaces' when/requires conditions already keep the sampler away from every rule."""
    space = load_space(space_name).resolve(batch_sizes=batch_sizes, cpus=2)
    context = RuleContext(static_shapes=len(batch_sizes) == 1)
    points = space.grid()
    assert points
    for params in points:
        config = space.suggest(FixedTrial(params))
        assert broken_rules(config, context) == [], params


def test_cuda_space_maps_knobs_to_provider_options() -> None:
    space = load_space("cuda").resolve(batch_sizes=(1,), cpus=2)
    config = space.config_from_params(
        {
            "cudnn_conv_algo_search": "HEURISTIC",
            "cudnn_conv_use_max_workspace": False,
            "use_tf32": True,
            "prefer_nhwc": True,
            "io_binding": True,
            "execution_mode": "ORT_SEQUENTIAL",
            "enable_cuda_graph": True,
            "intra_op_num_threads": 1,
        }
    )
    cuda, cpu = config.providers
    assert cuda.name == "CUDAExecutionProvider" and cpu.name == "CPUExecutionProvider"
    assert cuda.options == {
        "cudnn_conv_algo_search": "HEURISTIC",
        "cudnn_conv_use_max_workspace": "0",
        "use_tf32": "1",
        "prefer_nhwc": "1",
        "enable_cuda_graph": "1",
    }
    assert config.io_binding and config.session_options["intra_op_num_threads"] == 1


def test_cuda_graph_is_only_searched_with_static_shapes() -> None:
    static = {p.name for p in load_space("cuda").resolve(batch_sizes=(4,), cpus=2).params}
    dynamic = {p.name for p in load_space("cuda").resolve(batch_sizes=(1, 4), cpus=2).params}
    assert "enable_cuda_graph" in static and "enable_cuda_graph" not in dynamic
    assert "batch_size" in dynamic


def test_tensorrt_caches_live_in_the_study_folder() -> None:
    space = load_space("tensorrt").resolve(batch_sizes=(1,), cpus=2, study_dir="/r/study")
    trt = space.providers[0]
    assert trt.options["trt_engine_cache_path"] == "/r/study/trt_engines"
    assert space.baseline().providers[0].options["trt_timing_cache_path"] == "/r/study/trt_timing"
    assert [p.name for p in space.providers] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
    ]  # fmt: skip


def test_gpu_memory_cap_becomes_the_cuda_arena_limit() -> None:
    from autotune.tuning import with_gpu_memory_limit

    space = with_gpu_memory_limit(load_space("cuda").resolve(batch_sizes=(1,), cpus=2), 2048)
    cuda, cpu = space.baseline().providers
    assert cuda.options == {"gpu_mem_limit": str(2048 * 2**20)} and cpu.options == {}


def test_gpu_monitor_without_nvml_reports_nothing() -> None:
    import os

    from autotune.gpu import GpuMemoryMonitor, gpu_devices

    monitor = GpuMemoryMonitor(os.getpid())
    if gpu_devices():
        pytest.skip("a GPU is visible here")
    assert not monitor.available and monitor.sample() is None and monitor.peak_mb is None
    monitor.close()

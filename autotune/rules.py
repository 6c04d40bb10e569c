"""Known-bad combinations of settings, as named rules checked before a config is measured.

The search spaces' ``when``/``requires`` conditions keep the sampler away from these; the rules
are the safety net for hand-written spaces and configs: a config that breaks one is a failed
trial of kind ``invalid`` that never starts a worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from autotune.config import TrialConfig

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


@dataclass(frozen=True)
class RuleContext:
    static_shapes: bool  # the input shapes never change between runs (one batch size)


@dataclass(frozen=True)
class Rule:
    name: str
    why: str
    broken: Callable[[TrialConfig, RuleContext], bool]


def uses_cuda_graph(config: TrialConfig) -> bool:
    return any(
        p.options.get(key) == "1"
        for p in config.providers
        for key in ("enable_cuda_graph", "trt_cuda_graph_enable")
    )


def _first_provider(config: TrialConfig) -> str:
    return config.providers[0].name if config.providers else "CPUExecutionProvider"


RULES: tuple[Rule, ...] = (
    Rule(
        "cuda_graph_needs_io_binding",
        "CUDA graphs replay fixed device addresses, so inputs and outputs must be bound",
        lambda c, ctx: uses_cuda_graph(c) and not c.io_binding,
    ),
    Rule(
        "cuda_graph_needs_static_shapes",
        "a captured CUDA graph is only valid for the input shapes it was captured with",
        lambda c, ctx: uses_cuda_graph(c) and not ctx.static_shapes,
    ),
    Rule(
        "cuda_graph_not_with_parallel_execution",
        "ORT_PARALLEL runs nodes from several threads, which a single CUDA graph cannot capture",
        lambda c, ctx: (
            uses_cuda_graph(c) and c.session_options.get("execution_mode") == "ORT_PARALLEL"
        ),
    ),
    Rule(
        "io_binding_needs_a_gpu_provider",
        "on the CPU provider IO binding only adds copies",
        lambda c, ctx: c.io_binding and _first_provider(c) not in GPU_PROVIDERS,
    ),
)


def broken_rules(config: TrialConfig, context: RuleContext) -> list[Rule]:
    return [rule for rule in RULES if rule.broken(config, context)]

"""The one place that maps a TrialConfig onto ONNX Runtime objects.

The worker builds its sessions here and so does a deployment: ``autotune.load_session`` reads a
``best.json`` and returns a ready ``InferenceSession`` through the same code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.config import TrialConfig, TunedConfig
from autotune.errors import AutotuneError

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime as ort


class ProviderFallbackError(AutotuneError):
    """A requested execution provider is not among those the session actually uses."""


def session_options(config: TrialConfig) -> ort.SessionOptions:
    import onnxruntime as ort

    options = ort.SessionOptions()
    for name, value in config.session_options.items():
        if name == "execution_mode":
            value = getattr(ort.ExecutionMode, str(value))
        elif name == "graph_optimization_level":
            value = getattr(ort.GraphOptimizationLevel, str(value))
        setattr(options, name, value)
    for key, value in config.config_entries.items():
        options.add_session_config_entry(key, value)
    return options


def provider_arguments(config: TrialConfig) -> list[tuple[str, dict[str, str]]]:
    """Providers in the ``(name, options)`` form InferenceSession takes, in priority order."""
    return [(p.name, dict(p.options)) for p in config.providers]


def check_providers(session: ort.InferenceSession, config: TrialConfig) -> None:
    """Fail when a requested provider silently fell back (ONNX Runtime only logs a warning)."""
    active = session.get_providers()
    missing = [p.name for p in config.providers if p.name not in active]
    if missing:
        raise ProviderFallbackError(
            f"requested {', '.join(missing)} but the session runs on {', '.join(active)} "
            "(provider libraries missing or incompatible; `autotune doctor` tells why)"
        )


def create_session(model_path: str | os.PathLike[str], config: TrialConfig) -> ort.InferenceSession:
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(model_path),
        sess_options=session_options(config),
        providers=provider_arguments(config),
    )
    check_providers(session, config)
    return session


def make_runner(
    session: ort.InferenceSession, feeds: Mapping[str, np.ndarray], config: TrialConfig
) -> Callable[[], Any]:
    """A no-argument callable that runs one inference the way the config says.

    With IO binding the inputs are bound once and outputs are bound to the first provider's
    device, so a timed call measures the run, not the copies.
    """
    if not config.io_binding:
        names = None  # all outputs
        feed = dict(feeds)
        return lambda: session.run(names, feed)
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_cpu_input(name, array)
    device = _device_of(config.providers[0].name)
    for output in session.get_outputs():
        binding.bind_output(output.name, device)

    def run() -> None:
        binding.synchronize_inputs()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return run


def outputs_of(
    session: ort.InferenceSession, feeds: Mapping[str, np.ndarray], config: TrialConfig
) -> list[np.ndarray]:
    """One inference's outputs as host arrays, through the same path the timed runs take."""
    if not config.io_binding:
        return list(session.run(None, dict(feeds)))
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_cpu_input(name, array)
    device = _device_of(config.providers[0].name)
    for output in session.get_outputs():
        binding.bind_output(output.name, device)
    session.run_with_iobinding(binding)
    return list(binding.copy_outputs_to_cpu())


def _device_of(provider: str) -> str:
    return {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}.get(
        provider, "cpu"
    )


def read_tuned(path: str | os.PathLike[str]) -> TunedConfig:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AutotuneError(f"tuned config not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise AutotuneError(f"{path} is not valid JSON: {exc}") from None
    return TunedConfig.from_dict(data)


def load_session(
    path: str | os.PathLike[str], *, model_path: str | os.PathLike[str] | None = None
) -> ort.InferenceSession:
    """A ready ``InferenceSession`` built from a ``best.json`` written by ``autotune run``.

    Args:
        path: the tuned config file.
        model_path: the model to load instead of the one recorded in the file (e.g. the same
            model copied to the deployment machine).

    Example:
        >>> session = autotune.load_session("results/magika-3b4f2c1a-cpu-throughput/best.json")
        >>> outputs = session.run(None, feeds)
    """
    tuned = read_tuned(path)
    model = Path(model_path) if model_path is not None else Path(tuned.model_path)
    if not model.is_file():
        raise AutotuneError(
            f"model {model} recorded in {path} does not exist here; pass model_path= to load it "
            "from where it is"
        )
    return create_session(model, tuned.config)

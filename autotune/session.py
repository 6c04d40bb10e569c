"""The one place that maps a TrialConfig onto ONNX Runtime objects.

The worker builds its sessions here and so does a deployment: ``autotune.load_session`` reads a
``best.json`` and returns a ready ``InferenceSession`` through the same code.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Mapping
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


def preload_gpu_libraries(config: TrialConfig) -> None:
    """Load CUDA/cuDNN from the nvidia-* pip packages (``autotune[cuda]``) when a GPU provider
    is asked for; onnxruntime finds them there only after this. Quiet when they are absent:
    the provider check then reports the fallback."""
    import onnxruntime as ort

    if _device_of(config.providers[0].name) == "cpu" or not hasattr(ort, "preload_dlls"):
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            ort.preload_dlls()
        except Exception:
            pass


def create_session(model_path: str | os.PathLike[str], config: TrialConfig) -> ort.InferenceSession:
    import onnxruntime as ort

    preload_gpu_libraries(config)
    session = ort.InferenceSession(
        str(model_path),
        sess_options=session_options(config),
        providers=provider_arguments(config),
    )
    check_providers(session, config)
    return session


class Runner:
    """Runs one inference the way the config says; ``outputs()`` copies the last run's outputs.

    With IO binding the inputs are copied to the first provider's device once, and after the
    first run the outputs stay bound to the buffers that run allocated: fixed addresses, as CUDA
    graphs need, and no per-run allocation in the timed calls. The accuracy check reads the
    outputs of those same runs, so it never disturbs a captured graph.
    """

    def __init__(
        self, session: ort.InferenceSession, feeds: Mapping[str, np.ndarray], config: TrialConfig
    ) -> None:
        self.session = session
        self.feeds = dict(feeds)
        self.binding: Any = None
        self._last: list[Any] = []
        self._fixed = False
        self._keep: list[Any] = []  # device inputs must outlive the binding
        if config.io_binding:
            self._bind(_device_of(config.providers[0].name))

    def _bind(self, device: str) -> None:
        import onnxruntime as ort

        self.binding = self.session.io_binding()
        for name, array in self.feeds.items():
            if device == "cpu":
                self.binding.bind_cpu_input(name, array)
            else:
                value = ort.OrtValue.ortvalue_from_numpy(array, device, 0)
                self.binding.bind_ortvalue_input(name, value)
                self._keep.append(value)
        for output in self.session.get_outputs():
            self.binding.bind_output(output.name, device)

    def __call__(self) -> None:
        if self.binding is None:
            self._last = self.session.run(None, self.feeds)
            return
        self.session.run_with_iobinding(self.binding)
        if not self._fixed:
            names = [o.name for o in self.session.get_outputs()]
            for name, value in zip(names, self.binding.get_outputs(), strict=True):
                self.binding.bind_ortvalue_output(name, value)
            self._fixed = True
        self.binding.synchronize_outputs()

    def outputs(self) -> list[np.ndarray]:
        if self.binding is None:
            return list(self._last)
        return list(self.binding.copy_outputs_to_cpu())


def outputs_of(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """One plain inference's outputs (the baseline's reference for each batch size)."""
    return list(session.run(None, dict(feeds)))


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

"""The one place that maps a TrialConfig onto ONNX Runtime objects.

The worker builds its sessions here and so does a deployment: ``autotune.load_session`` reads a
``best.json`` and returns a ready ``InferenceSession`` through the same code.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.config import FeedPlan, ShapePoint, TrialConfig, TunedConfig
from autotune.errors import AutotuneError
from autotune.measure.server import Server

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime as ort


class ProviderFallbackError(AutotuneError):
    """A requested execution provider is not among those the session actually uses."""


def session_options(
    config: TrialConfig, free_dims: Mapping[str, int] | None = None
) -> ort.SessionOptions:
    """The SessionOptions of ``config``; ``free_dims`` are the free-dimension overrides
    (:func:`free_dimension_overrides`) a ``free_dim_overrides`` config adds."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if config.global_thread_pool:
        options.use_per_session_threads = False  # the process-wide pool (set_thread_pools)
    for name, value in config.session_options.items():
        if config.global_thread_pool and name in ("intra_op_num_threads", "inter_op_num_threads"):
            continue  # sizes of the global pool, set once for the process

        if name == "execution_mode":
            value = getattr(ort.ExecutionMode, str(value))
        elif name == "graph_optimization_level":
            value = getattr(ort.GraphOptimizationLevel, str(value))
        setattr(options, name, value)
    for key, value in config.config_entries.items():
        options.add_session_config_entry(key, value)
    for symbol, size in (free_dims or {}).items():
        options.add_free_dimension_override_by_name(symbol, int(size))
    return options


def free_dimension_overrides(
    model_path: str | os.PathLike[str],
    config: TrialConfig,
    feeds: FeedPlan | None = None,
    shapes: Sequence[ShapePoint] = (),
) -> dict[str, int]:
    """The named dynamic dims of the model's inputs that ``config`` serves at one size, and
    that size: what a ``free_dim_overrides`` config fixes at session creation (empty when off).

    A symbol the feeds fix (``--dim S=N``, ``--shape``, ``--inputs``) gets its size. The batch
    dim stays free: a deployment sends smaller batches (the last of a stream, a quiet moment),
    and a session fixed at the tuned batch size refuses them. A symbol a shape mix varies
    (``--dim S=32,128``) or the inputs disagree on stays free, and so does every unnamed
    dynamic dim (ONNX Runtime overrides by name). Without ``feeds``: none.
    """
    if not config.free_dim_overrides or feeds is None:
        return {}
    model = model_input_dims(model_path)
    sizes: dict[str, set[int]] = {}
    batch_symbols = {
        model[spec.name][0] for spec in feeds.inputs if spec.batched and model.get(spec.name)
    }
    for spec in feeds.inputs:
        dims = model.get(spec.name)
        if dims is None:
            continue
        for point in shapes or (None,):
            shape = spec.shape_for(config.batch_size, point.dims if point else None)
            if len(shape) != len(dims):
                continue  # not the model's rank: ONNX Runtime refuses the feed itself
            for dim, size in zip(dims, shape, strict=True):
                if isinstance(dim, str):
                    sizes.setdefault(dim, set()).add(int(size))
    return {
        symbol: next(iter(s))
        for symbol, s in sizes.items()
        if len(s) == 1 and symbol not in batch_symbols
    }


def model_input_dims(path: str | os.PathLike[str]) -> dict[str, tuple[int | str | None, ...]]:
    """The dims of the model's tensor inputs (initializers left out): a static size, a named
    symbol, or None for an unnamed dynamic dim.

    Read from the protobuf wire format over a memory map, without importing onnx (most of a
    second) and without touching the weights, so a worker pays next to nothing for it.
    """
    import mmap

    try:
        with (
            Path(path).open("rb") as file,
            mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf,
        ):
            return _input_dims(buf)
    except (OSError, ValueError, IndexError) as exc:
        raise AutotuneError(f"cannot read the inputs of {path} (not ONNX?): {exc}") from exc


def _input_dims(buf: Any) -> dict[str, tuple[int | str | None, ...]]:
    initializers: set[str] = set()
    inputs: dict[str, tuple[int | str | None, ...]] = {}
    for graph in _messages(buf, (0, len(buf)), 7):  # ModelProto.graph
        for tensor in _messages(buf, graph, 5):  # GraphProto.initializer (TensorProto)
            initializers.update(_text(buf, v) for v in _messages(buf, tensor, 8))  # its name
        for value in _messages(buf, graph, 11):  # GraphProto.input (ValueInfoProto)
            names = [_text(buf, v) for v in _messages(buf, value, 1)]
            types = [_tensor_dims(buf, v) for v in _messages(buf, value, 2)]
            if names and types and types[-1] is not None:
                inputs[names[-1]] = types[-1]
    return {name: dims for name, dims in inputs.items() if name not in initializers}


def _tensor_dims(buf: Any, type_: tuple[int, int]) -> tuple[int | str | None, ...] | None:
    """TypeProto.tensor_type (1) -> shape (2) -> dim (1): dim_value (1) or dim_param (2)."""
    tensors = list(_messages(buf, type_, 1))
    if not tensors:
        return None  # a sequence, map or optional input: nothing to override
    dims: list[int | str | None] = []
    for shape in _messages(buf, tensors[-1], 2):
        for dim in _messages(buf, shape, 1):
            value: int | str | None = None
            for number, v in _fields(buf, *dim):
                if number == 1 and isinstance(v, int) and 0 < v < 1 << 63:  # a static size
                    value = v
                elif number == 2 and not isinstance(v, int):
                    value = _text(buf, v) or None  # a symbol; "" is unnamed
            dims.append(value)
    return tuple(dims)


def _messages(buf: Any, span: tuple[int, int], number: int) -> Any:
    """The spans of field ``number``'s length-delimited values in the message at ``span``."""
    for field, value in _fields(buf, *span):
        if field == number and not isinstance(value, int):
            yield value


def _fields(buf: Any, start: int, end: int) -> Any:
    """A protobuf message's fields in ``buf[start:end]``: ``(number, value)``, the value an
    int for a varint and a ``(start, end)`` span for a length-delimited field."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield key >> 3, value
        elif wire == 2:
            size, i = _varint(buf, i)
            if i + size > end:
                raise ValueError("truncated protobuf field")
            yield key >> 3, (i, i + size)
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")


def _varint(buf: Any, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _text(buf: Any, span: tuple[int, int]) -> str:
    return bytes(buf[span[0] : span[1]]).decode("utf-8", "replace")


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
    """Load CUDA/cuDNN from the nvidia-* pip packages (``ort-autotune[cuda]``) when a GPU provider
    is asked for; onnxruntime finds them there only after this. Quiet when they are absent:
    the provider check then reports the fallback."""
    import onnxruntime as ort

    if _device_of(config.providers[0].name) == "cpu" or not hasattr(ort, "preload_dlls"):
        return
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        contextlib.suppress(Exception),
    ):
        ort.preload_dlls()


def set_thread_pools(config: TrialConfig) -> None:
    """Create the process-wide thread pools a ``global_thread_pool`` config shares.

    ONNX Runtime allows this once per process, before the first session that uses them; a
    second, different request is refused with a clear error.
    """
    import onnxruntime as ort

    if not config.global_thread_pool:
        return
    intra = int(config.session_options.get("intra_op_num_threads", 0))
    inter = int(config.session_options.get("inter_op_num_threads", 0))
    try:
        ort.set_global_thread_pool_sizes(intra, inter)
    except Exception as exc:  # onnxruntime's pybind Fail
        if "already been created" not in str(exc):
            raise
        if _GLOBAL_POOL.get("sizes") != (intra, inter):
            raise AutotuneError(
                f"this process already has ONNX Runtime's global thread pools "
                f"(sizes {_GLOBAL_POOL.get('sizes', 'unknown')}); a config wanting "
                f"{(intra, inter)} must be loaded in a fresh process"
            ) from None
    _GLOBAL_POOL["sizes"] = (intra, inter)


_GLOBAL_POOL: dict[str, tuple[int, int]] = {}


def create_session(
    model_path: str | os.PathLike[str],
    config: TrialConfig,
    *,
    feeds: FeedPlan | None = None,
    shapes: Sequence[ShapePoint] = (),
    also: Callable[[ort.SessionOptions], None] | None = None,
) -> ort.InferenceSession:
    """The session ``config`` describes. ``feeds`` and ``shapes`` (the workload's shape mix)
    say which dims a ``free_dim_overrides`` config serves at one size; without them it fixes
    only the batch dim. ``also`` adds to the SessionOptions what is not the config's: the
    profiler (``autotune profile``), the optimized graph's file (``export -f optimized-model``)."""
    import onnxruntime as ort

    preload_gpu_libraries(config)
    set_thread_pools(config)
    free_dims = free_dimension_overrides(model_path, config, feeds, shapes)
    options = session_options(config, free_dims)
    if also is not None:
        also(options)
    session = ort.InferenceSession(
        str(model_path), sess_options=options, providers=provider_arguments(config)
    )
    check_providers(session, config)
    return session


class Runner:
    """Issues one caller's requests the way the config says, cycling through a pool of feeds.

    Each call runs the next feed of the pool (``start`` offsets callers so they do not all send
    the same sample at once); ``outputs()`` copies the last run's outputs.

    With IO binding the inputs are copied to the first provider's device once per pool entry,
    and after each entry's first run its outputs stay bound to the buffers that run allocated:
    fixed addresses, as CUDA graphs need, and no per-run allocation in the timed calls. The
    accuracy check reads the outputs of those same runs, so it never disturbs a captured graph.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
        config: TrialConfig,
        *,
        start: int = 0,
    ) -> None:
        self.session = session
        self.pool = [dict(feeds)] if isinstance(feeds, Mapping) else [dict(f) for f in feeds]
        self.index = start % len(self.pool)
        self.device = _device_of(config.providers[0].name) if config.io_binding else None
        self._bindings: dict[int, Any] = {}
        self._fixed: set[int] = set()
        self._keep: list[Any] = []  # device inputs must outlive their binding
        self._last: list[Any] = []
        self._last_binding: Any = None

    def _binding(self, slot: int) -> Any:
        import onnxruntime as ort

        if slot in self._bindings:
            return self._bindings[slot]
        binding = self.session.io_binding()
        for name, array in self.pool[slot].items():
            if self.device == "cpu":
                binding.bind_cpu_input(name, array)
            else:
                value = ort.OrtValue.ortvalue_from_numpy(array, self.device, 0)
                binding.bind_ortvalue_input(name, value)
                self._keep.append(value)
        for output in self.session.get_outputs():
            binding.bind_output(output.name, self.device)
        self._bindings[slot] = binding
        return binding

    def run_slot(self, slot: int) -> None:
        """Run pool entry ``slot`` (the accuracy guard walks the pool this way)."""
        if self.device is None:
            self._last = self.session.run(None, self.pool[slot])
            return
        binding = self._binding(slot)
        self.session.run_with_iobinding(binding)
        if slot not in self._fixed:
            names = [o.name for o in self.session.get_outputs()]
            for name, value in zip(names, binding.get_outputs(), strict=True):
                binding.bind_ortvalue_output(name, value)
            self._fixed.add(slot)
        binding.synchronize_outputs()
        self._last_binding = binding

    def __call__(self) -> None:
        slot = self.index
        self.index = (slot + 1) % len(self.pool)
        self.run_slot(slot)

    def outputs(self) -> list[np.ndarray]:
        if self.device is None:
            return list(self._last)
        return list(self._last_binding.copy_outputs_to_cpu())


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
    path: str | os.PathLike[str],
    *,
    model_path: str | os.PathLike[str] | None = None,
    verify: bool = True,
) -> ort.InferenceSession:
    """A ready ``InferenceSession`` built from a ``best.json`` written by ``autotune run``.

    Args:
        path: the tuned config file.
        model_path: the model to load instead of the one recorded in the file (e.g. the same
            model copied to the deployment machine).
        verify: check that the model (graph and external weight files) is byte for byte the
            one tuned, by its sha256; a different model raises AutotuneError. ``False`` skips
            the check (hashing reads the whole model once).

    Example:
        >>> session = autotune.load_session("results/magika-3b4f2c1a-cpu-throughput/best.json")
        >>> outputs = session.run(None, feeds)
    """
    tuned = read_tuned(path)
    model = _model_of(tuned, path, model_path, verify)
    _warn_unconfirmed(tuned, path)
    return create_session(model, tuned.config, feeds=tuned.inputs, shapes=tuned.workload.shapes)


class UnconfirmedConfigWarning(UserWarning):
    """A best.json whose config was never re-measured against ONNX Runtime's defaults."""


def _warn_unconfirmed(tuned: TunedConfig, path: str | os.PathLike[str]) -> None:
    if not tuned.confirmed:
        warnings.warn(
            f"{path} is unconfirmed ({tuned.unconfirmed}); its {tuned.speedup:.2f}x may not hold: "
            "re-run its `autotune run` command (with --finalists above 0) to confirm it",
            UnconfirmedConfigWarning,
            stacklevel=3,
        )


def _model_of(
    tuned: TunedConfig,
    path: str | os.PathLike[str],
    model_path: str | os.PathLike[str] | None,
    verify: bool,
) -> Path:
    from autotune.errors import UsageError
    from autotune.model import model_sha256

    model = Path(model_path) if model_path is not None else Path(tuned.model_path)
    if not model.is_file():
        raise AutotuneError(
            f"model {model} recorded in {path} does not exist here; pass model_path= to load it "
            "from where it is"
        )
    if verify:
        try:
            sha = model_sha256(model)
        except UsageError as exc:  # an external weights file is missing
            raise AutotuneError(str(exc)) from None
        if sha != tuned.model_sha256:
            raise AutotuneError(
                f"{model} is not the model {path} was tuned on (sha256 {sha[:12]}, tuned "
                f"{tuned.model_sha256[:12]}; its graph or weights differ): tune it, or pass "
                "verify=False to load it anyway"
            )
    return model


class SessionPool:
    """The sessions a tuned config serves its concurrent callers with, and the workload.

    ``run`` is safe to call from any number of threads: each thread keeps one session (assigned
    round-robin on its first call), as the tuning's callers did, so N callers spread over the
    sessions evenly. ``session_for(i)`` gives caller ``i``'s session for explicit dispatch.

    ``submit(feeds)`` serves a request as an open-loop tuning measured it: the config's server
    threads (one per usable CPU when it says 0) and its dynamic batcher
    (:mod:`autotune.measure.server`); it returns a future of the outputs. ``close()`` (or a
    ``with`` block) stops those threads.
    """

    def __init__(self, sessions: Sequence[ort.InferenceSession], tuned: TunedConfig) -> None:
        self.sessions = list(sessions)
        self.tuned = tuned
        self.concurrency = tuned.workload.concurrency
        self.batch_size = tuned.config.batch_size
        self._next = 0
        self._lock = threading.Lock()
        self._mine = threading.local()
        self._server: Server | None = None

    def submit(self, feeds: Mapping[str, Any]) -> Future[list[Any]]:
        """Queue one request for the config's server threads and batcher."""
        with self._lock:
            if self._server is None:
                from autotune.measure.serving import servers_of

                config = self.tuned.config
                self._server = Server(
                    [run_function(session) for session in self.sessions],
                    server_threads=servers_of(config.server_threads),
                    max_batch=config.max_batch,
                    delay_s=config.max_queue_delay_ms / 1e3,
                )
        return self._server.submit(feeds)

    def close(self) -> None:
        """Stop the server threads ``submit`` started (``run`` keeps working)."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.close()

    def __enter__(self) -> SessionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def session_for(self, caller: int) -> ort.InferenceSession:
        return self.sessions[caller % len(self.sessions)]

    def run(
        self, output_names: Sequence[str] | None, feeds: Mapping[str, Any], **kwargs: Any
    ) -> list[Any]:
        session = getattr(self._mine, "session", None)
        if session is None:
            with self._lock:
                session = self.session_for(self._next)
                self._next += 1
            self._mine.session = session
        return list(session.run(output_names, dict(feeds), **kwargs))


def run_function(session: ort.InferenceSession) -> Callable[[Mapping[str, Any]], list[Any]]:
    """``session.run`` for every output, as a function of the feeds (the open-loop servers)."""

    def run(feeds: Mapping[str, Any]) -> list[Any]:
        return list(session.run(None, dict(feeds)))

    return run


def load_pool(
    path: str | os.PathLike[str],
    *,
    model_path: str | os.PathLike[str] | None = None,
    verify: bool = True,
) -> SessionPool:
    """Everything a ``best.json`` needs to serve its workload: its sessions (with the global
    thread pool when the config shares one), its concurrency and batch size.

    A config with ``global_thread_pool`` creates ONNX Runtime's process-wide pools: after that,
    every session of the process must use them (ONNX Runtime allows one kind per process), so
    load such a config in the serving process before any other session. ``model_path`` and
    ``verify`` are as for :func:`load_session`.

    Example:
        >>> pool = autotune.load_pool("results/magika-3b4f2c1a-cpu-throughput-c4/best.json")
        >>> with ThreadPoolExecutor(pool.concurrency) as callers:
        ...     results = list(callers.map(lambda feeds: pool.run(None, feeds), requests))
    """
    tuned = read_tuned(path)
    model = _model_of(tuned, path, model_path, verify)
    _warn_unconfirmed(tuned, path)
    feeds, shapes = tuned.inputs, tuned.workload.shapes
    return SessionPool(
        [
            create_session(model, tuned.config, feeds=feeds, shapes=shapes)
            for _ in range(tuned.config.sessions)
        ],
        tuned,
    )

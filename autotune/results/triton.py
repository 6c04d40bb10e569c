"""``autotune export -f triton``: a Triton Inference Server model repository for a tuned config.

``write_repository`` lays out ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.onnx`` (with the
model's external weights files beside it) in a hidden folder, then renames it into place: a
server polling the repository never sees half a model. ``config_pbtxt`` is the pure part: the
tuned config in the ONNX Runtime backend's own terms (``parameters``, ``optimization``,
``gpu_execution_accelerator``), as its README and source read them.

What the backend has no setting for is named, never dropped silently: ``unexpressed`` returns
those knobs, and config.pbtxt lists them in its opening comment.

The layout (``instance_group``): a Triton instance runs one request batch at a time, so the
instances are the tuned executions in flight: ``server_threads`` when the config serves a queue
(one per usable CPU of the tuning machine when it serves open-loop traffic or batches with
``server_threads`` 0, as autotune's server did), else the workload's concurrent callers. The config's sessions become instance groups whose instances share
one ONNX Runtime session (``share_session_between_instances``), instance i on session
i % sessions, as autotune's callers were.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.config import TunedConfig
from autotune.errors import AutotuneError, UsageError

#: ONNX tensor element types Triton serves, by ``onnx.TensorProto`` name.
DATA_TYPES = {
    "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32", "UINT64": "TYPE_UINT64", "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64",
    "FLOAT16": "TYPE_FP16", "FLOAT": "TYPE_FP32", "DOUBLE": "TYPE_FP64",
    "STRING": "TYPE_STRING", "BFLOAT16": "TYPE_BF16",
}  # fmt: skip
#: ``optimization { graph { level } }`` as the backend maps it; ORT_ENABLE_ALL is its default.
GRAPH_LEVELS = {"ORT_DISABLE_ALL": 2, "ORT_ENABLE_BASIC": -1, "ORT_ENABLE_EXTENDED": 1}
#: Session options the backend reads from ``parameters``, under its own names.
SESSION_PARAMETERS = {
    "intra_op_num_threads": "intra_op_thread_count",
    "inter_op_num_threads": "inter_op_thread_count",
    "execution_mode": "execution_mode",
    "enable_cpu_mem_arena": "enable_mem_arena",
    "enable_mem_pattern": "enable_mem_pattern",
}
#: The one session config entry the backend passes to ONNX Runtime.
CONFIG_ENTRY_PARAMETERS = ("session.use_device_allocator_for_initializers",)
#: CUDA options the backend reads from the top-level ``parameters`` (its older syntax). It
#: rewrites these four after reading the ``cuda`` accelerator whenever ``parameters`` exists, so
#: they must go there, enums as its numbers.
CUDA_TOP_LEVEL: Mapping[str, Mapping[str, str] | None] = {
    "cudnn_conv_algo_search": {"EXHAUSTIVE": "0", "HEURISTIC": "1", "DEFAULT": "2"},
    "arena_extend_strategy": {"kNextPowerOfTwo": "0", "kSameAsRequested": "1"},
    "do_copy_in_default_stream": None,
    "gpu_mem_limit": None,
}
#: TensorRT provider options under the backend's ``tensorrt`` accelerator's keys; the precision
#: flags become ``precision_mode``. The backend refuses any other key.
TRT_RENAMED = {
    "trt_max_workspace_size": "max_workspace_size_bytes",
    "trt_int8_calibration_table_name": "int8_calibration_table_name",
    "trt_int8_use_native_calibration_table": "int8_use_native_calibration_table",
}
TRT_PRECISION = {"trt_fp16_enable": "FP16", "trt_bf16_enable": "BF16", "trt_int8_enable": "INT8"}
TRT_SAME = frozenset({
    "trt_max_partition_iterations", "trt_min_subgraph_size", "trt_dla_enable", "trt_dla_core",
    "trt_engine_cache_enable", "trt_engine_cache_path", "trt_engine_cache_prefix",
    "trt_dump_subgraphs", "trt_force_sequential_engine_build",
    "trt_context_memory_sharing_enable", "trt_layer_norm_fp32_fallback",
    "trt_timing_cache_enable", "trt_timing_cache_path", "trt_force_timing_cache",
    "trt_detailed_build_log", "trt_build_heuristics_enable", "trt_sparsity_enable",
    "trt_builder_optimization_level", "trt_auxiliary_streams", "trt_tactic_sources",
    "trt_extra_plugin_lib_paths", "trt_profile_min_shapes", "trt_profile_max_shapes",
    "trt_profile_opt_shapes", "trt_cuda_graph_enable", "trt_dump_ep_context_model",
    "trt_ep_context_file_path", "trt_ep_context_embed_mode",
})  # fmt: skip
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_NAME = re.compile(r"[^A-Za-z0-9_.-]")

Dim = int | str | None  # static size, named symbol, or unnamed dynamic dim


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # TYPE_FP32, ...
    dims: tuple[Dim, ...]


@dataclass(frozen=True)
class Interface:
    """The model's inputs and outputs as Triton serves them."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    @property
    def batchable(self) -> bool:
        """Triton may batch along axis 0: it is dynamic in every input and output (the backend's
        own rule) and, as autotune reads a batch dim, one symbol across the inputs."""
        tensors = (*self.inputs, *self.outputs)
        if not self.inputs or any(not t.dims or isinstance(t.dims[0], int) for t in tensors):
            return False
        firsts = {t.dims[0] for t in self.inputs}
        return len(self.inputs) == 1 or (len(firsts) == 1 and None not in firsts)


def model_interface(path: str | os.PathLike[str]) -> Interface:
    """The graph's inputs and outputs, read without the weights. A UsageError names one the
    backend cannot serve: it refuses to load a model with any such input or output."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    found: dict[str, list[Tensor]] = {"input": [], "output": []}
    for role, values in (("input", graph.input), ("output", graph.output)):
        for value in values:
            if value.name in initializers:
                continue
            tensor, why = _tensor(value)
            if tensor is None:
                raise UsageError(
                    f"{role} {value.name!r} is {why}: Triton's ONNX Runtime backend serves "
                    "tensors of plain element types only"
                )
            found[role].append(tensor)
    return Interface(tuple(found["input"]), tuple(found["output"]))


def _tensor(value: Any) -> tuple[Tensor | None, str]:
    import onnx

    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return None, f"a {kind or 'typeless value'}, not a tensor"
    tensor = value.type.tensor_type
    element = onnx.TensorProto.DataType.Name(tensor.elem_type)
    if element not in DATA_TYPES:
        return None, f"of element type {element}"
    dims: list[Dim] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or None)
    return Tensor(value.name, DATA_TYPES[element], tuple(dims)), ""


def model_name(name: str | None, study: str) -> str:
    """The model's folder and name in the repository: ``name`` as given (refused unless it is
    letters, digits, ``_``, ``-`` and ``.``), else the study name with anything else as ``_``."""
    if name is not None:
        if not name or _NAME.search(name) or name.startswith("."):
            raise UsageError(f"--name {name!r}: use letters, digits, '_', '-' and '.' only")
        return name
    return _NAME.sub("_", study).lstrip(".") or "model"


# --- what the config says, piece by piece: each returns its part and what it could not carry ---


def _executions(tuned: TunedConfig) -> int:
    """Requests the tuned config ran at once: the server threads of a queue, else the callers."""
    config = tuned.config
    if config.server_threads > 0:
        return config.server_threads
    if config.batches_requests or tuned.workload.traffic is not None:
        # open-loop traffic, or a batching server: one server thread per usable CPU
        return int(tuned.environment.get("usable_cpus") or tuned.workload.concurrency)
    return tuned.workload.concurrency


def instance_groups(tuned: TunedConfig) -> tuple[tuple[int, ...], bool]:
    """Instances per group (one group per session), and whether a group's instances share its
    session: instance i runs on session i % sessions, as autotune's caller i did."""
    executions = max(1, _executions(tuned))
    sessions = max(1, min(tuned.config.sessions, executions))
    if sessions == executions:
        return (executions,), False
    return tuple(len(range(i, executions, sessions)) for i in range(sessions)), True


def batching(tuned: TunedConfig, interface: Interface) -> tuple[int, int | None, list[str]]:
    """``max_batch_size``, the dynamic batcher's preferred batch (None: no dynamic batching),
    and what could not go in. A batch holds up to max_batch requests of batch_size samples."""
    config = tuned.config
    if not interface.batchable:
        notes = []
        if config.batches_requests:
            notes.append(
                f"the dynamic batcher (max_batch {config.max_batch}, "
                f"{config.max_queue_delay_ms:g} ms): axis 0 is not a dynamic batch dim of every "
                "input and output, so max_batch_size is 0"
            )
        return 0, None, notes
    largest = config.batch_size * config.max_batch
    return largest, largest if config.batches_requests else None, []


def session_parameters(tuned: TunedConfig) -> tuple[dict[str, str], int | None, list[str]]:
    """The backend's ``parameters`` for the session options and config entries, the graph
    optimization level (None: the backend's default, ORT_ENABLE_ALL), and what it lacks."""
    params: dict[str, str] = {}
    level = None
    notes = []
    for option, value in tuned.config.session_options.items():
        if option == "graph_optimization_level":
            if value in GRAPH_LEVELS:
                level = GRAPH_LEVELS[str(value)]
            elif value != "ORT_ENABLE_ALL":
                notes.append(f"graph_optimization_level {value} (Triton runs ORT_ENABLE_ALL)")
        elif option == "execution_mode":
            params["execution_mode"] = "1" if value == "ORT_PARALLEL" else "0"
        elif option in SESSION_PARAMETERS:
            text = str(int(value)) if isinstance(value, bool | int) else str(value)
            params[SESSION_PARAMETERS[option]] = text
        else:
            notes.append(f"session option {option}={value}")
    for key, value in tuned.config.config_entries.items():
        if key in CONFIG_ENTRY_PARAMETERS:
            params[key] = value
        else:
            notes.append(f"session config entry {key}={value}")
    return params, level, notes


def _cuda(options: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """CUDA options: (top-level parameters, the ``cuda`` accelerator's parameters, notes)."""
    top: dict[str, str] = {}
    accelerator: dict[str, str] = {}
    notes = []
    for key, value in options.items():
        if key == "device_id":  # Triton gives each instance its GPU
            continue
        if key not in CUDA_TOP_LEVEL:
            accelerator[key] = value
            continue
        numbers = CUDA_TOP_LEVEL[key]
        if numbers is None:
            top[key] = value
        elif value in numbers or value in numbers.values():
            top[key] = numbers.get(value, value)
        else:
            notes.append(f"CUDA provider option {key}={value}")
    return top, accelerator, notes


def _tensorrt(options: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """TensorRT options under the ``tensorrt`` accelerator's keys, and those it refuses."""
    params: dict[str, str] = {}
    notes = []
    for key, value in options.items():
        if key == "device_id":
            continue
        if key in TRT_PRECISION:
            if value.lower() not in ("1", "true"):
                continue
            if "precision_mode" in params:  # the backend takes one precision
                notes.append(f"TensorRT provider option {key}={value}")
            else:
                params["precision_mode"] = TRT_PRECISION[key]
        elif key in TRT_RENAMED:
            params[TRT_RENAMED[key]] = value
        elif key in TRT_SAME:
            params[key] = value
        else:
            notes.append(f"TensorRT provider option {key}={value}")
    return params, notes


@dataclass(frozen=True)
class Providers:
    kind: str  # KIND_CPU or KIND_GPU
    parameters: Mapping[str, str]  # the CUDA options the backend reads at the top level
    gpu: tuple[tuple[str, Mapping[str, str]], ...]  # gpu_execution_accelerator entries
    cpu: tuple[str, ...]  # cpu_execution_accelerator names
    notes: tuple[str, ...]


def providers(tuned: TunedConfig) -> Providers:
    """The execution providers as the instance kind and the backend's accelerators."""
    specs = tuned.config.providers
    kind = "KIND_GPU" if specs and specs[0].name in GPU_PROVIDERS else "KIND_CPU"
    top: dict[str, str] = {}
    gpu: list[tuple[str, Mapping[str, str]]] = []
    cpu: list[str] = []
    notes: list[str] = []
    for spec in specs:
        if spec.name == "TensorrtExecutionProvider":
            params, lost = _tensorrt(spec.options)
            gpu.insert(0, ("tensorrt", params))
            notes += lost
        elif spec.name == "CUDAExecutionProvider":
            cuda_top, params, lost = _cuda(spec.options)
            top.update(cuda_top)
            if params:
                gpu.append(("cuda", params))
            notes += lost
        elif spec.name == "OpenVINOExecutionProvider":
            cpu.append("openvino")
            notes += [f"OpenVINO provider option {k}={v}" for k, v in spec.options.items()]
        elif spec.name == "CPUExecutionProvider":
            notes += [f"CPU provider option {k}={v}" for k, v in spec.options.items()]
        else:
            notes.append(f"the {spec.name} (the backend runs TensorRT, CUDA, OpenVINO or the CPU)")
    return Providers(kind, top, tuple(gpu), tuple(cpu), tuple(notes))


def _serving_notes(tuned: TunedConfig) -> list[str]:
    config = tuned.config
    notes = []
    if config.global_thread_pool:
        threads = config.session_options
        notes.append(
            "global_thread_pool (a server-wide setting: start tritonserver with "
            "--backend-config=onnxruntime,enable-global-threadpool=1 "
            f"--backend-config=onnxruntime,intra_op_thread_count="
            f"{threads.get('intra_op_num_threads', 0)} "
            f"--backend-config=onnxruntime,inter_op_thread_count="
            f"{threads.get('inter_op_num_threads', 0)})"
        )
    if config.io_binding:
        notes.append(
            "io_binding (the backend binds every run itself; whether inputs already sit on "
            "the GPU is the client's choice, e.g. CUDA shared memory)"
        )
    if config.free_dim_overrides:
        notes.append(
            "free_dim_overrides (the backend has no free dimension overrides: the session "
            "keeps the model's dynamic dims)"
        )
    return notes


def unexpressed(tuned: TunedConfig, interface: Interface) -> list[str]:
    """Every tuned knob config.pbtxt cannot carry, one line each."""
    return [
        *session_parameters(tuned)[2],
        *providers(tuned).notes,
        *batching(tuned, interface)[2],
        *_serving_notes(tuned),
    ]


# --- rendering -------------------------------------------------------------------------------


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _parameter_lines(params: Mapping[str, str], indent: str, *, wrapped: bool) -> list[str]:
    """``parameters`` entries: the model's wrap the value (``{ string_value: ... }``), an
    accelerator's are plain strings."""
    return [
        f"{indent}parameters {{ key: {_quote(k)} value: "
        + (f"{{ string_value: {_quote(v)} }} }}" if wrapped else f"{_quote(v)} }}")
        for k, v in params.items()
    ]


def _tensor_lines(section: str, tensors: tuple[Tensor, ...], batched: bool) -> list[str]:
    lines = [f"{section} ["]
    for i, tensor in enumerate(tensors):
        dims = tensor.dims[1:] if batched else tensor.dims
        shown = [d if isinstance(d, int) else -1 for d in dims] or [1]
        lines += [
            "  {",
            f"    name: {_quote(tensor.name)}",
            f"    data_type: {tensor.data_type}",
            f"    dims: [ {', '.join(map(str, shown))} ]",
        ]
        if not dims and batched:  # one scalar per sample, as the backend's autocomplete writes
            lines.append("    reshape { shape: [ ] }")
        lines.append("  }," if i < len(tensors) - 1 else "  }")
    return [*lines, "]"]


def _header(tuned: TunedConfig, kind: str, notes: list[str]) -> list[str]:
    groups, shared = instance_groups(tuned)
    where = " on each GPU Triton sees" if kind == "KIND_GPU" else ""
    lines = [
        f"# Written by autotune export -f triton: study {tuned.study_name}, trial "
        f"#{tuned.trial_number} [{tuned.config.describe()}],",
        f"# {tuned.objective} {tuned.speedup:.2f}x against ONNX Runtime's defaults"
        + ("" if tuned.confirmed else f" (unconfirmed: {tuned.unconfirmed})")
        + ".",
        f"# instance_group: {sum(groups)} instance(s){where}, each running one batch at a "
        f"time, over {len(groups) if shared else sum(groups)} ONNX Runtime session(s)"
        + (" (share_session_between_instances)." if shared else "."),
    ]
    if notes:
        lines.append("# Tuned settings Triton's ONNX Runtime backend cannot carry:")
        lines += [f"#   - {note}" for note in notes]
    return lines


def config_pbtxt(tuned: TunedConfig, interface: Interface, *, name: str) -> str:
    """The model's config.pbtxt: pure, from the tuned config and the model's interface."""
    max_batch, preferred, _ = batching(tuned, interface)
    params, level, _ = session_parameters(tuned)
    found = providers(tuned)
    groups, shared = instance_groups(tuned)
    lines = [
        *_header(tuned, found.kind, unexpressed(tuned, interface)),
        "",
        f"name: {_quote(name)}",
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch}",
        *_tensor_lines("input", interface.inputs, max_batch > 0),
        *_tensor_lines("output", interface.outputs, max_batch > 0),
        "instance_group [",
    ]
    for i, count in enumerate(groups):
        end = "," if i < len(groups) - 1 else ""
        lines.append(
            f"  {{ name: {_quote(f'{name}_session{i}')} count: {count} kind: {found.kind} }}{end}"
        )
    lines.append("]")
    if preferred is not None:
        delay_us = round(tuned.config.max_queue_delay_ms * 1000)
        lines += [
            "dynamic_batching {",
            f"  preferred_batch_size: [ {preferred} ]",
            f"  max_queue_delay_microseconds: {delay_us}",
            "}",
        ]
    lines += _optimization_lines(level, found)
    every = {**params, **found.parameters}
    if shared:
        every["share_session_between_instances"] = "1"
    lines += _parameter_lines(every, "", wrapped=True)
    return "\n".join(lines) + "\n"


def _optimization_lines(level: int | None, found: Providers) -> list[str]:
    if level is None and not found.gpu and not found.cpu:
        return []
    lines = ["optimization {"]
    if level is not None:
        lines.append(f"  graph {{ level: {level} }}")
    if found.gpu or found.cpu:
        lines.append("  execution_accelerators {")
        for field, entries in (
            ("gpu_execution_accelerator", found.gpu),
            ("cpu_execution_accelerator", tuple((n, {}) for n in found.cpu)),
        ):
            if not entries:
                continue
            lines.append(f"    {field} [")
            for i, (accel, params) in enumerate(entries):
                lines.append("      {")
                lines.append(f"        name: {_quote(accel)}")
                lines += _parameter_lines(params, "        ", wrapped=False)
                lines.append("      }," if i < len(entries) - 1 else "      }")
            lines.append("    ]")
        lines.append("  }")
    return [*lines, "}"]


# --- writing ---------------------------------------------------------------------------------


def write_repository(tuned: TunedConfig, repository: Path, name: str) -> tuple[Path, list[str]]:
    """Write ``repository/name/`` (config.pbtxt, 1/model.onnx and its weights files) and
    return it with what config.pbtxt could not carry. An existing model folder is refused.

    Built in a hidden folder beside it and renamed into place; files and folders get the
    user's umask, not mkdtemp's 0700, so a server running as another user reads them.
    """
    from autotune.model import copy_external_files, model_sha256
    from autotune.results.export import user_umask

    if repository.exists() and not repository.is_dir():
        raise UsageError(f"{repository} is a file: -f triton writes into a folder (DIR/)")
    folder = repository / name
    if folder.exists():
        raise UsageError(f"{folder} already exists; remove it or export under another --name")
    source = Path(tuned.model_path)
    if not source.is_file():
        raise AutotuneError(f"the tuned model {source} is missing; export where it was tuned")
    interface = model_interface(source)
    text = config_pbtxt(tuned, interface, name=name)
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repository))
    try:
        staging.chmod(0o777 & ~user_umask())
        model = staging / "1" / "model.onnx"
        model.parent.mkdir()
        copy_external_files(source, model)
        shutil.copyfile(source, model)
        if model_sha256(model) != tuned.model_sha256:
            raise AutotuneError(
                f"{source} is not the model this study tuned (its graph or weights changed "
                "since); re-run the study on it"
            )
        (staging / "config.pbtxt").write_text(text, encoding="utf-8")
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder, unexpressed(tuned, interface)

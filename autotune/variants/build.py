"""Model variants as a search dimension: int8 quantization, fp16, transformer fusion.

Each variant is made once per source model and options with ONNX Runtime's own tools and kept
in a cache (``$AUTOTUNE_VARIANT_CACHE``, default ``~/.cache/autotune/variants``) keyed by the
source's sha256 and the options, so a resumed study reuses it. Which variant may win is the
accuracy guard's decision: outputs against the original fp32 model's, by a metric with a stated
per-variant default (``--accuracy`` overrides it).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autotune.config import FeedPlan
from autotune.errors import AutotuneError, UsageError
from autotune.interrupt import check_stop
from autotune.model import (
    STRING_DTYPE,
    ModelInfo,
    file_sha256,
    has_external_data,
    load_npz,
    make_feeds,
    model_sha256,
)
from autotune.variants.recipes import (
    BUILD_VERSION,
    FAMILIES,
    RECIPES,
    Recipe,
    build,
    exclusion_candidates,
    expand,
    family_of,
    recipe_for,
)

VARIANTS = FAMILIES
#: family -> (metric, threshold) the accuracy guard applies unless --accuracy says otherwise.
DEFAULT_ACCURACY: Mapping[str, tuple[str, float]] = {
    "int8-dynamic": ("cosine", 0.99),
    "int8-static": ("cosine", 0.99),
    "int4": ("cosine", 0.99),
    "fp16": ("cosine", 0.999),
    "fused": ("cosine", 0.9999),
}
METRICS = {"cosine": ">=", "top1-agreement": ">=", "max-abs": "<=", "score": ">="}
CALIBRATION_SAMPLES = 16


@dataclass(frozen=True)
class Variant:
    name: str
    path: str
    sha256: str
    note: str  # how it was made, e.g. "synthetic calibration (weaker than --calibration)"

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "sha256": self.sha256, "note": self.note}


def parse_accuracy(text: str | None) -> tuple[str, float] | None:
    """``cosine>=0.999`` -> ``("cosine", 0.999)``."""
    if not text:
        return None
    match = re.fullmatch(r"\s*([a-z0-9-]+)\s*(>=|<=)\s*([0-9.eE+-]+)\s*", text)
    if not match or match[1] not in METRICS or METRICS[match[1]] != match[2]:
        forms = ", ".join(f"{m}{op}X" for m, op in METRICS.items())
        raise UsageError(f"--accuracy {text!r} is malformed; use one of {forms}")
    return match[1], float(match[3])


def accuracy_for(name: str) -> tuple[str, float]:
    """The guard's default metric and threshold for a variant (by its family)."""
    return DEFAULT_ACCURACY[family_of(name)]


def parse_variants(text: str | None) -> tuple[str, ...]:
    """Families (each its whole recipe grid), single recipes (``int8-dynamic.pc.rr.matmul``)
    or ``auto``."""
    if not text:
        return ()
    names = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    unknown = [n for n in names if n not in (*VARIANTS, "auto") and recipe_for(n) is None]
    if unknown:
        example = RECIPES["int8-dynamic"][-1].name
        raise UsageError(
            f"unknown --variants {unknown}; use {', '.join(VARIANTS)}, auto, or one recipe "
            f"such as {example}"
        )
    return names


def auto_variants(model_path: str, provider: str) -> tuple[str, ...]:
    """The variants that make sense: BERT-like graphs get dynamic int8 (CPU) and fusion, CNNs
    static int8 (CPU), GPU providers fp16."""
    import onnx

    ops = {node.op_type for node in onnx.load(model_path, load_external_data=False).graph.node}
    transformer = (
        "Softmax" in ops
        and "MatMul" in ops
        and ("LayerNormalization" in ops or "ReduceMean" in ops)
    )
    cnn = "Conv" in ops
    gpu = provider != "CPUExecutionProvider"
    picked = []
    if transformer:
        picked += ["fused"] + ([] if gpu else ["int8-dynamic", "int4"])
    elif cnn and not gpu:
        picked.append("int8-static")
    if gpu:
        picked.append("fp16")
    return tuple(picked)


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "autotune" / "variants"
    return Path(os.environ.get("AUTOTUNE_VARIANT_CACHE", default))


class _Calibration:
    """onnxruntime.quantization's CalibrationDataReader over user data or synthetic samples."""

    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self._samples: Iterator[dict[str, np.ndarray]] = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._samples, None)


def calibration_samples(
    feeds: FeedPlan, data_path: str | None
) -> tuple[list[dict[str, np.ndarray]], str]:
    """Up to 16 single-sample feeds (batches of N for a model that fixes its batch at N): from
    --calibration (sliced on axis 0) or synthesised."""
    batch = feeds.fixed_batch or 1
    if data_path:
        strings = [s.name for s in feeds.inputs if s.dtype == STRING_DTYPE]
        data = load_npz(data_path, strings=strings, flag="--calibration")
        missing = [s.name for s in feeds.inputs if s.name not in data]
        if missing:
            raise UsageError(f"--calibration {data_path} lacks inputs {missing}")
        sizes = [len(data[s.name]) for s in feeds.inputs if s.batched]
        rows = min(sizes) if sizes else 1
        count = min(CALIBRATION_SAMPLES, -(-rows // batch))  # feeds of `batch` samples each
        offsets = np.arange(batch)
        samples = [
            {
                s.name: np.take(data[s.name], i * batch + offsets, axis=0, mode="wrap")
                if s.batched
                else data[s.name]
                for s in feeds.inputs
            }
            for i in range(count)
        ]
        return samples, f"calibrated on {min(count * batch, rows)} samples of {data_path}"
    samples = [
        make_feeds(FeedPlan(feeds.inputs, seed=feeds.seed + i, data_path=feeds.data_path), batch)
        for i in range(CALIBRATION_SAMPLES)
    ]
    return samples, "calibrated on synthetic inputs (weaker: pass --calibration data.npz)"


def _build(
    recipe: Recipe, source: str, dest: Path, feeds: FeedPlan, calibration: str | None
) -> str:
    external = has_external_data(source)  # a source with external weights: so is the variant
    if recipe.family == "int8-static":
        samples, note = calibration_samples(feeds, calibration)
        how = build(recipe, source, str(dest), external=external, calibration=_Calibration(samples))
        return f"{how}, {note}"
    if recipe.family in ("int8-dynamic", "int4"):
        return build(recipe, source, str(dest), external=external)
    if recipe.family == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(source), keep_io_types=True)
        onnx.save(model, str(dest), save_as_external_data=external, location=f"{dest.name}.data")
        return "fp16 weights and compute, fp32 inputs and outputs kept"
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(source, model_type="bert", opt_level=0, use_gpu=False)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    if not fused:
        raise AutotuneError(
            "the transformer optimizer found nothing to fuse (not a BERT-like graph)"
        )
    optimized.save_model_to_file(str(dest), use_external_data_format=external)
    return "fused: " + ", ".join(f"{k} x{v}" for k, v in fused.items())


def build_variant(
    model: ModelInfo,
    recipe: Recipe,
    *,
    feeds: FeedPlan,
    calibration: str | None = None,
    say: Any = None,
) -> Variant | None:
    """Make (or take from the cache) one recipe's model; None, with the reason said, when the
    tool cannot make it."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    source = (
        "synthetic"
        if not calibration or recipe.family != "int8-static"
        else file_sha256(calibration)
    )
    options = (
        f"{recipe.name}|{sorted(recipe.options.items())}|{recipe.exclude}|{source}|{feeds.seed}"
        f"|build {BUILD_VERSION}"  # a change in how recipes are made is a new cache entry
    )
    key = hashlib.sha256(f"{model.sha256}|{options}".encode()).hexdigest()[:16]
    dest = folder / f"{Path(model.path).stem}-{recipe.name}-{key}.onnx"
    note_file = dest.with_suffix(".txt")
    if dest.is_file() and note_file.is_file():
        note = note_file.read_text()
        if say:
            say(f"variant {recipe.name}: cached ({dest})")
    else:
        partial = dest.with_name(f".{dest.stem}.{os.getpid()}.part.onnx")
        try:
            note = _build(recipe, model.path, partial, feeds, calibration)
        except Exception as exc:  # a tool's failure leaves the variant out, with its reason
            for leftover in folder.glob(f"{partial.name}*"):
                leftover.unlink(missing_ok=True)
            if say:
                why = " ".join(str(exc).split())[:200]
                say(
                    f"variant {recipe.name}: could not be made ({type(exc).__name__}: {why}); left out"
                )
            return None
        partial.replace(dest)  # external weights keep the name the graph records
        note_file.write_text(note)
        if say:
            say(f"variant {recipe.name}: made ({note})")
    return Variant(recipe.name, str(dest), model_sha256(dest), note)


def build_variants(
    model: ModelInfo,
    names: Sequence[str],
    *,
    feeds: FeedPlan,
    calibration: str | None = None,
    say: Any = None,
) -> dict[str, Variant]:
    """Make (or take from the cache) every requested variant, a family as its whole recipe
    grid; a variant that cannot be made is reported and left out, never fatal."""
    made: dict[str, Variant] = {}
    for recipe in expand(names):
        check_stop()  # quantizing a grid takes a while: a stop ends it between recipes
        variant = build_variant(model, recipe, feeds=feeds, calibration=calibration, say=say)
        if variant is None:
            continue
        twin = next((v for v in made.values() if v.sha256 == variant.sha256), None)
        if twin is not None:  # e.g. MatMul + Gather and all ops on a model with no other op
            if say:
                say(f"variant {variant.name}: the same model as {twin.name}; left out")
            continue
        made[recipe.name] = variant
    return made


class VariantMaker:
    """Makes a recipe again with some of its nodes kept in float, for the accuracy screen."""

    def __init__(
        self, model: ModelInfo, feeds: FeedPlan, calibration: str | None, say: Any = None
    ) -> None:
        self.model, self.feeds, self.calibration, self.say = model, feeds, calibration, say

    def candidates(self, name: str) -> list[str]:
        import onnx

        recipe = recipe_for(name)
        if recipe is None:
            return []
        graph = onnx.load(self.model.path, load_external_data=False)
        return exclusion_candidates(graph, recipe)

    def make(self, name: str, nodes: Sequence[str]) -> tuple[str, str] | None:
        recipe = recipe_for(name)
        if recipe is None:
            return None
        variant = build_variant(
            self.model, recipe.excluding(nodes), feeds=self.feeds, calibration=self.calibration
        )
        return None if variant is None else (variant.name, variant.path)

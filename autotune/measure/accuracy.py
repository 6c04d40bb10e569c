"""The accuracy guard: every trial's outputs against the baseline's, on the same seeded inputs.

The baseline worker saves its outputs for every batch size of the study (``save_reference``);
each later worker compares its own outputs with them (``compare``). A config whose outputs differ
beyond tolerance is rejected, never ranked: graph optimizations, fp16 or TF32 paths and batch
size changes must not buy speed with wrong answers.

numpy only: this runs inside the measuring worker.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

#: dtype -> (rtol, atol). Floats allow the rounding differences of fusions and reordered
#: reductions (seen here: up to ~3e-6 absolute between optimization levels); everything else
#: must match exactly.
DEFAULT_TOLERANCES: Mapping[str, tuple[float, float]] = {
    "float16": (1e-2, 1e-3),
    "float32": (1e-3, 1e-5),
    "float64": (1e-7, 1e-9),
}


@dataclass(frozen=True)
class Comparison:
    ok: bool
    max_abs_err: float
    max_rel_err: float
    worst_output: str
    message: str  # empty when ok
    cosine: float | None = None  # lowest over float outputs
    top1_agreement: float | None = None  # lowest over float outputs of rank 2 ([batch, classes])
    skipped: tuple[str, ...] = ()  # outputs that cannot be compared, with why


def tolerance_for(dtype: np.dtype, rtol: float | None, atol: float | None) -> tuple[float, float]:
    default = DEFAULT_TOLERANCES.get(np.dtype(dtype).name, (0.0, 0.0))
    return (default[0] if rtol is None else rtol, default[1] if atol is None else atol)


#: Pooled samples the guard compares per batch size and shape: every batch covering the first
#: this many rows of the input pool (one batch for synthetic data).
ACCURACY_ROWS = 32


def as_tensors(outputs: Mapping[str, object]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Every output of any ONNX type as plain arrays the guard can store and compare, and the
    outputs it cannot (with why).

    - a tensor stays itself (string tensors become fixed-width unicode, not object arrays);
    - a sequence of maps with the same keys (scikit-learn's ZipMap: one map of class ->
      probability per row) becomes one ``[rows, keys]`` array plus ``NAME#keys``;
    - any other sequence becomes ``NAME[0]``, ``NAME[1]``, ...; a map ``NAME#keys`` and
      ``NAME#values``;
    - an optional output that is absent is compared as absent.

    Map values come back as Python floats; they compare as float32, the precision of
    ``map(*, float)``, by far the usual kind (a double map would be judged a little loosely).
    """
    arrays: dict[str, np.ndarray] = {}
    skipped: list[str] = []

    def values(items: list[object]) -> np.ndarray:
        array = np.asarray(items)
        return array.astype(np.float32) if array.dtype == np.float64 else array

    def add(name: str, value: object) -> None:
        if value is None:
            arrays[f"{name}#absent"] = np.zeros(0, np.int8)
        elif isinstance(value, np.ndarray):
            if value.dtype == object:
                try:
                    value = np.asarray(value.tolist(), dtype=str)
                except (TypeError, ValueError):
                    skipped.append(f"{name}: an object tensor of non-string values")
                    return
            arrays[name] = value
        elif isinstance(value, dict):
            keys = sorted(value)
            arrays[f"{name}#keys"] = np.asarray(keys)
            arrays[f"{name}#values"] = values([value[k] for k in keys])
        elif isinstance(value, (list, tuple)):
            if value and all(isinstance(v, dict) for v in value):
                keys = sorted(value[0])
                if all(sorted(v) == keys for v in value):
                    arrays[f"{name}#keys"] = np.asarray(keys)
                    arrays[name] = values([[v[k] for k in keys] for v in value])
                    return
            arrays[f"{name}#length"] = np.asarray(len(value))
            for i, item in enumerate(value):
                add(f"{name}[{i}]", item)
        elif np.isscalar(value):
            arrays[name] = np.asarray(value)
        else:
            skipped.append(f"{name}: a {type(value).__name__} cannot be compared")

    for name, value in outputs.items():
        add(name, value)
    return arrays, skipped


def reference_key(batch: int, slot: int = 0, shape: str = "") -> str:
    """Where one request's outputs live in the reference: batch size, pool batch, shape."""
    return f"batch{batch}" + (f"#{slot}" if slot else "") + (f"@{shape}" if shape else "")


def save_reference(
    path: str | os.PathLike[str], outputs_by_key: Mapping[int | str, Mapping[str, np.ndarray]]
) -> None:
    """Write the reference outputs atomically (a rename), so a reader never sees half a file.

    Keys are :func:`reference_key` strings (an int is a batch size's first pool batch).
    """
    arrays = {
        f"{reference_key(key) if isinstance(key, int) else key}:{name}": array
        for key, outputs in outputs_by_key.items()
        for name, array in as_tensors(outputs)[0].items()
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part.npz")
    np.savez(partial, **arrays)  # type: ignore[arg-type]
    Path(partial).replace(target)


def load_references(path: str | os.PathLike[str]) -> dict[str, dict[str, np.ndarray]]:
    """Every reference in the file, by :func:`reference_key`, then by output name: one read."""
    grouped: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as data:
        for name in data.files:
            key, _, output = name.partition(":")
            grouped.setdefault(key, {})[output] = data[name]
    return grouped


def load_reference(path: str | os.PathLike[str], key: int | str) -> dict[str, np.ndarray] | None:
    """The reference outputs (by output name) for one key, or None when there are none."""
    return load_references(path).get(reference_key(key) if isinstance(key, int) else key)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    x, y = np.nan_to_num(x), np.nan_to_num(y)
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    return 1.0 if norm == 0 else float(np.dot(x, y) / norm)


def _top1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.argmax(a, axis=-1) == np.argmax(b, axis=-1)))


def output_of(key: str) -> str:
    """The model output a stored array belongs to (``probs#keys``, ``seq[0]`` -> its output)."""
    return re.split(r"[#\[]", key, maxsplit=1)[0]


def judged(
    reference: Mapping[str, np.ndarray], names: Sequence[str] = (), floats_only: bool = False
) -> dict[str, np.ndarray]:
    """The part of the reference the guard judges: the outputs named, else (``floats_only``)
    the float outputs, so integer pass-through outputs and labels do not count; everything
    when there is no float output."""
    if names:
        return {k: v for k, v in reference.items() if output_of(k) in names}
    if floats_only:
        floats = {k: v for k, v in reference.items() if np.asarray(v).dtype.kind in "fc"}
        return floats or dict(reference)
    return dict(reference)


def _masked(out: np.ndarray, ref: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Only the positions the mask keeps, for outputs laid out like the mask ([batch, seq, ...])."""
    if mask is None or out.shape != ref.shape or ref.shape[: mask.ndim] != mask.shape:
        return out, ref
    keep = mask.astype(bool)
    return out[keep], ref[keep]


def compare(
    outputs: Mapping[str, object],
    reference: Mapping[str, np.ndarray],
    *,
    rtol: float | None = None,
    atol: float | None = None,
    metric: str | None = None,
    threshold: float | None = None,
    mask: np.ndarray | None = None,
    judge: Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], object] | None = None,
) -> Comparison:
    """Compare outputs with the reference by name.

    Without ``metric``: elementwise, ``|out - ref| <= atol + rtol * |ref|`` (NaN equals NaN),
    integers exactly. With ``metric`` (cosine, top1-agreement, max-abs) and ``threshold``: that
    figure decides, as for quantized or fp16 variants whose values legitimately move.
    ``mask`` (an input such as ``attention_mask``) leaves padded positions out of outputs laid
    out like it. ``judge(reference, candidate)`` is the user's own check: it returns a bool, or a
    score held against ``threshold`` (``--accuracy score>=X``); the figures are still reported.
    """
    outputs, skipped = as_tensors(outputs)
    if judge is not None:
        return _judged_by(judge, outputs, reference, skipped, metric, threshold, mask)
    worst = (0.0, 0.0, "")
    problems = []
    cosines: list[float] = []
    top1s: list[float] = []
    for name, ref in reference.items():
        if name not in outputs:
            problems.append(f"output {name!r} of the baseline is missing")
            continue
        out, ref = _masked(np.asarray(outputs[name]), np.asarray(ref), mask)
        problem, errors = _compare_output(name, out, ref, rtol, atol, metric)
        if problem:
            problems.append(problem)
        if errors is None:
            continue
        abs_err, rel_err = errors.abs_err, errors.rel_err
        worst = (
            (abs_err, max(rel_err, worst[1]), name)
            if abs_err > worst[0]
            else (worst[0], max(rel_err, worst[1]), worst[2])
        )
        cosines.append(errors.cosine)
        if errors.top1 is not None:
            top1s.append(errors.top1)
    cosine = min(cosines) if cosines else None
    top1 = min(top1s) if top1s else None
    if metric is not None and threshold is not None:
        problem = _metric_problem(metric, threshold, cosine, top1, worst[0])
        if problem:
            problems.append(problem)
    return Comparison(
        ok=not problems,
        max_abs_err=worst[0],
        max_rel_err=worst[1],
        worst_output=worst[2],
        message="; ".join(problems),
        cosine=cosine,
        top1_agreement=top1,
        skipped=tuple(skipped),
    )


@dataclass(frozen=True)
class _Errors:
    """How far one float output is from the reference's."""

    abs_err: float  # the largest absolute difference
    rel_err: float  # the largest relative one, where the reference is not ~0
    cosine: float
    top1: float | None  # argmax agreement, for an output of rank 2 only


def _compare_output(
    name: str,
    out: np.ndarray,
    ref: np.ndarray,
    rtol: float | None,
    atol: float | None,
    metric: str | None,
) -> tuple[str, _Errors | None]:
    """What is wrong with one output ("" when nothing), and its errors when it is a float
    output of the reference's shape."""
    # Texts of other lengths are other widths of one dtype: compared value by value below.
    same_dtype = out.dtype == ref.dtype or out.dtype.kind == ref.dtype.kind == "U"
    if out.shape != ref.shape or (not same_dtype and metric is None):
        return (
            f"output {name!r} is {out.dtype}{list(out.shape)}, "
            f"the baseline's {ref.dtype}{list(ref.shape)}"
        ), None
    if ref.dtype.kind not in "fc":
        mismatched = int(np.count_nonzero(out != ref))
        if mismatched:
            return f"output {name!r} differs in {mismatched} of {out.size} values", None
        return "", None
    return _float_errors(name, out, ref, rtol, atol, metric)


def _float_errors(
    name: str,
    out: np.ndarray,
    ref: np.ndarray,
    rtol: float | None,
    atol: float | None,
    metric: str | None,
) -> tuple[str, _Errors]:
    """A float output's errors against the reference; without ``metric``, the values beyond
    tolerance as a problem ("" when none)."""
    r_tol, a_tol = tolerance_for(ref.dtype, rtol, atol)
    a, b = out.astype(np.float64), ref.astype(np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.nan_to_num(np.where(both_nan, 0.0, np.abs(a - b)), nan=np.inf)
    abs_err = float(diff.max(initial=0.0))
    # Relative error where the reference is not ~0 (there only the absolute error means anything).
    floor = max(a_tol, 1e-12)
    rel_err = float((diff / np.maximum(np.abs(b), floor)).max(initial=0.0))
    # [batch, classes]: logits or scores, where the argmax is the answer
    errors = _Errors(abs_err, rel_err, _cosine(a, b), _top1(a, b) if ref.ndim == 2 else None)
    if metric is None:
        bad = int(np.count_nonzero(diff > a_tol + r_tol * np.abs(b)))
        if bad:
            return (
                f"output {name!r} differs from the baseline's in {bad} of {out.size} values "
                f"(max abs err {abs_err:.3g}, max rel err {rel_err:.3g}; rtol {r_tol:g}, atol {a_tol:g})"
            ), errors
    return "", errors


def _metric_problem(
    metric: str, threshold: float, cosine: float | None, top1: float | None, max_abs: float
) -> str:
    """Why the outputs fail the ``--accuracy`` metric ("" when they pass)."""
    value = {"cosine": cosine, "top1-agreement": top1, "max-abs": max_abs}[metric]
    if value is None:
        return f"{metric} cannot be computed for these outputs; choose another --accuracy"
    if (value < threshold) if metric != "max-abs" else (value > threshold):
        sign = ">=" if metric != "max-abs" else "<="
        return f"{metric} {value:.6g} against the baseline's outputs, needs {sign} {threshold:g}"
    return ""


def _judged_by(
    judge: Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], object],
    outputs: dict[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    skipped: list[str],
    metric: str | None,
    threshold: float | None,
    mask: np.ndarray | None,
) -> Comparison:
    """The user's check decides; the built-in figures come along for the report."""
    figures = compare(outputs, reference, mask=mask, metric="cosine", threshold=-1.0)
    answer = judge(dict(reference), dict(outputs))
    problems = []
    if isinstance(answer, (bool, np.bool_)):
        if not answer:
            problems.append("the --accuracy-fn check returned False")
    elif isinstance(answer, (int, float, np.number)):
        score = float(answer)
        if metric != "score" or threshold is None:
            problems.append(
                f"the --accuracy-fn check returned a score ({score:.6g}): give --accuracy "
                "score>=X to say which scores pass"
            )
        elif not score >= threshold:
            problems.append(f"the --accuracy-fn score {score:.6g} needs >= {threshold:g}")
    else:
        problems.append(
            f"the --accuracy-fn check returned a {type(answer).__name__}; return a bool or a number"
        )
    return replace(figures, ok=not problems, message="; ".join(problems), skipped=tuple(skipped))


@functools.lru_cache(maxsize=4)
def load_judge(spec: str) -> Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], object]:
    """The function ``module:function`` or ``path/to/file.py:function`` names.

    Raises ValueError with what is wrong (the tuner checks this before the study starts)."""
    import importlib
    import importlib.util

    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise ValueError(f"--accuracy-fn {spec!r} is not MODULE:FUNCTION or FILE.py:FUNCTION")
    try:
        if where.endswith(".py"):
            loader = importlib.util.spec_from_file_location(
                f"accuracy_fn_{abs(hash(where))}", where
            )
            if loader is None or loader.loader is None:
                raise ImportError(f"cannot load {where}")
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except (ImportError, OSError, SyntaxError) as exc:
        raise ValueError(f"--accuracy-fn {spec!r}: cannot import {where} ({exc})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"--accuracy-fn {spec!r}: {where} has no function {name!r}")
    return fn  # type: ignore[no-any-return]

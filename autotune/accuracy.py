"""The accuracy guard: every trial's outputs against the baseline's, on the same seeded inputs.

The baseline worker saves its outputs for every batch size of the study (``save_reference``);
each later worker compares its own outputs with them (``compare``). A config whose outputs differ
beyond tolerance is rejected, never ranked: graph optimizations, fp16 or TF32 paths and batch
size changes must not buy speed with wrong answers.

numpy only: this runs inside the measuring worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


def tolerance_for(dtype: np.dtype, rtol: float | None, atol: float | None) -> tuple[float, float]:
    default = DEFAULT_TOLERANCES.get(np.dtype(dtype).name, (0.0, 0.0))
    return (default[0] if rtol is None else rtol, default[1] if atol is None else atol)


def _key(batch: int, index: int) -> str:
    return f"batch{batch}_output{index}"


def save_reference(
    path: str | os.PathLike[str], outputs_by_batch: Mapping[int, Sequence[np.ndarray]]
) -> None:
    """Write the reference outputs atomically (a rename), so a reader never sees half a file."""
    arrays = {
        _key(batch, index): np.asarray(array)
        for batch, outputs in outputs_by_batch.items()
        for index, array in enumerate(outputs)
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part.npz")
    np.savez(partial, **arrays)  # type: ignore[arg-type]
    os.replace(partial, target)


def load_reference(path: str | os.PathLike[str], batch: int) -> list[np.ndarray] | None:
    """The reference outputs for one batch size, or None when the file has none for it."""
    with np.load(path, allow_pickle=False) as data:
        found: list[np.ndarray] = []
        while _key(batch, len(found)) in data.files:
            found.append(data[_key(batch, len(found))])
    return found or None


def compare(
    outputs: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    rtol: float | None = None,
    atol: float | None = None,
) -> Comparison:
    """Compare outputs elementwise: ``|out - ref| <= atol + rtol * |ref|`` (NaN equals NaN)."""
    worst = (0.0, 0.0, "")
    problems = []
    for name, out, ref in zip(names, outputs, reference, strict=True):
        out, ref = np.asarray(out), np.asarray(ref)
        if out.shape != ref.shape or out.dtype != ref.dtype:
            problems.append(
                f"output {name!r} is {out.dtype}{list(out.shape)}, "
                f"the baseline's {ref.dtype}{list(ref.shape)}"
            )
            continue
        if out.dtype.kind not in "fc":
            mismatched = int(np.count_nonzero(out != ref))
            if mismatched:
                problems.append(f"output {name!r} differs in {mismatched} of {out.size} values")
            continue
        r_tol, a_tol = tolerance_for(out.dtype, rtol, atol)
        a, b = out.astype(np.float64), ref.astype(np.float64)
        both_nan = np.isnan(a) & np.isnan(b)
        diff = np.where(both_nan, 0.0, np.abs(a - b))
        diff = np.nan_to_num(diff, nan=np.inf)
        abs_err = float(diff.max(initial=0.0))
        # Relative error where the reference is not ~0 (there only the absolute error means anything).
        floor = max(a_tol, 1e-12)
        rel_err = float((diff / np.maximum(np.abs(b), floor)).max(initial=0.0))
        if abs_err > worst[0]:
            worst = (abs_err, max(rel_err, worst[1]), name)
        else:
            worst = (worst[0], max(rel_err, worst[1]), worst[2])
        bad = int(np.count_nonzero(diff > a_tol + r_tol * np.abs(b)))
        if bad:
            problems.append(
                f"output {name!r} differs from the baseline's in {bad} of {out.size} values "
                f"(max abs err {abs_err:.3g}, max rel err {rel_err:.3g}; rtol {r_tol:g}, atol {a_tol:g})"
            )
    return Comparison(
        ok=not problems,
        max_abs_err=worst[0],
        max_rel_err=worst[1],
        worst_output=worst[2],
        message="; ".join(problems),
    )

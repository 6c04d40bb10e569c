"""Model variants (and server-side batching) judged for accuracy once, before the search, so no
trial rediscovers a mismatch.

A variant's accuracy does not depend on the session options: each one runs once in a worker
(a short measurement) after the baseline has written its reference outputs, and is compared
with them over the guard's pool rows. A variant that fails is reported with its figures and
leaves the space. When every recipe of a family fails, the closest one is made again with a
small set of its nodes kept in float (found by bisecting the quantized nodes, as the float16
mixed-precision tool bisects), and that variant is judged the same way.

The verdicts are stored on the study (``variant_screen``), so a resumed study reuses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from autotune.config import Measurement, MeasureSettings, Traffic, TrialFailure, Workload
from autotune.fmt import fmt_number
from autotune.interrupt import check_stop
from autotune.variants.recipes import family_of

if TYPE_CHECKING:
    from optuna import Study

    from autotune.study._request import TuneRequest

#: A quick look: accuracy is what is judged; the timing is only indicative.
SCREEN = MeasureSettings(warmup_runs=1, warmup_s=0.0, min_runs=3, min_time_s=0.05)
#: A passing variant whose quick look ran slower than this times the original is not queued
#: first (quick looks of one model disagreed by up to 1.6x here; int8-static CNNs ran 3x slower).
QUEUE_IF_WITHIN = 1.6
#: Bisection steps when a family's every recipe fails (each makes and judges one variant).
MAX_PROBES = 8


def _figures(outcome: Any) -> dict[str, Any]:
    if isinstance(outcome, Measurement):
        return {
            "ok": True,
            "cosine": outcome.cosine,
            "max_abs_err": outcome.max_abs_err,
            "top1_agreement": outcome.top1_agreement,
            "p50_ms": outcome.latency_ms.p50,
            "message": "",
        }
    details = dict(outcome.details)
    return {
        "ok": False,
        "cosine": details.get("cosine"),
        "max_abs_err": details.get("max_abs_err"),
        "top1_agreement": details.get("top1_agreement"),
        "p50_ms": None,
        "message": f"{outcome.kind}: {' '.join(outcome.message.split())[:300]}",
    }


def _line(name: str, f: Mapping[str, Any], base_ms: float) -> str:
    shown = [f"{k} {f[k]:.4g}" for k in ("cosine", "max_abs_err") if f.get(k) is not None]
    speed = (
        f"; p50 {fmt_number(f['p50_ms'])} ms against the original's {fmt_number(base_ms)} ms, "
        "a quick look"
        if f.get("p50_ms")
        else ""
    )
    figures = ", ".join(shown) or "no figures"
    if f["ok"]:
        return f"variant {name}: passes the accuracy guard ({figures}{speed}); searched"
    return f"variant {name}: fails the accuracy guard ({figures}; {f['message']}); left out"


#: The batching screen's one window: fast, since only the batched answers are judged.
BATCHING_RATE = 2000.0


def screen_batching(
    study: Study,
    request: TuneRequest,
    measure: Callable[[Any, Workload], Any],
    say: Callable[[str], None],
) -> bool:
    """Whether server-side batching keeps the model's answers (searched only then).

    One worker serves a short window with a batch of 4 (its batched answers are compared with
    each request's own before any window): a model whose answers move when batched would fail
    every batching trial as a mismatch. Stored on the study, so a resumed study reuses it."""
    if "max_batch" not in {p.name for p in request.space.params}:
        return True
    stored = study.user_attrs.get("batching_screen")
    if stored is not None:
        return bool(stored["ok"])
    config = replace(
        request.space.baseline(), server_threads=1, max_batch=4, max_queue_delay_ms=1.0
    )
    traffic = replace(request.workload.traffic or Traffic(), rate=BATCHING_RATE, trace=())
    outcome = measure(config, replace(request.workload, traffic=traffic))
    check_stop()
    kept = not (
        isinstance(outcome, TrialFailure)
        and outcome.kind == "mismatch"
        and outcome.details.get("batching")
    )
    message = "" if kept else outcome.message
    study.set_user_attr("batching_screen", {"ok": kept, "message": message[:500]})
    if not kept:
        say(
            f"batching: not searched: {message[:300]} (with --inputs of real data a model's "
            "batched answers often agree)"
        )
    return kept


def screen_variants(
    study: Study,
    request: TuneRequest,
    measure: Callable[[Any, Mapping[str, str]], Any],
    say: Callable[[str], None],
    base_ms: float,
) -> tuple[list[str], dict[str, str], dict[str, dict[str, Any]]]:
    """Judge every variant of ``request.variant_paths``; return the names that pass (fastest
    first, by the quick look), the variant paths (with any made by keeping nodes in float) and
    each variant's verdict.

    ``measure(config, variant_paths)`` runs one config quickly against the reference;
    ``base_ms`` is the original model's p50 under the defaults, for the quick look's timing.
    """
    paths = dict(request.variant_paths)
    stored = study.user_attrs.get("variant_screen") or {}
    if stored.get("built") == paths and all(p in stored.get("paths", {}) for p in paths):
        say(f"variants: the accuracy verdicts of {len(paths)} stored with the study are reused")
        return list(stored["passed"]), dict(stored["paths"]), dict(stored["verdicts"])
    base = request.space.baseline()
    verdicts: dict[str, dict[str, Any]] = {}
    for name in paths:
        verdicts[name] = _figures(measure(replace(base, variant=name), paths))
        check_stop()  # an interrupted look is no verdict: nothing is stored
        say(_line(name, verdicts[name], base_ms))
    maker = request.variant_maker
    for family in dict.fromkeys(family_of(n) for n in paths):
        names = [n for n in paths if family_of(n) == family]
        if maker is None or any(verdicts[n]["ok"] for n in names):
            continue
        closest = max(names, key=lambda n: verdicts[n].get("cosine") or -1.0)
        kept = _keep_sensitive(closest, paths, base, measure, maker, say, base_ms)
        if kept is not None:
            name, path, figures = kept
            paths[name], verdicts[name] = path, figures
    check_stop()
    # fastest first by the quick look: the order the search measures them in
    passed = sorted(
        (n for n in paths if verdicts[n]["ok"]), key=lambda n: verdicts[n]["p50_ms"] or math.inf
    )
    study.set_user_attr(
        "variant_screen",
        {"built": dict(request.variant_paths), "paths": paths, "passed": passed,
         "verdicts": verdicts},
    )  # fmt: skip
    study.set_user_attr("variants", paths)
    if paths and not passed:
        say("variants: none passes the accuracy guard; the search runs on the original model")
    return passed, paths, verdicts


def _keep_sensitive(
    name: str,
    paths: Mapping[str, str],
    base: Any,
    measure: Callable[[Any, Mapping[str, str]], Any],
    maker: Any,
    say: Callable[[str], None],
    base_ms: float,
) -> tuple[str, str, dict[str, Any]] | None:
    """The recipe ``name`` made again with the fewest of its nodes kept in float that bisection
    finds to restore accuracy; None when keeping even all of them does not."""
    candidates = maker.candidates(name)
    if not candidates:
        return None
    say(f"variant {name}: looking for the nodes to keep in float among {len(candidates)}")

    def judge(nodes: list[str]) -> tuple[str, str, dict[str, Any]] | None:
        made = maker.make(name, nodes)
        if made is None:
            return None
        probe, path = made
        figures = _figures(measure(replace(base, variant=probe), {**paths, probe: path}))
        return (probe, path, figures) if figures["ok"] else None

    keep: list[str] = candidates
    best = None
    for _ in range(MAX_PROBES):
        if len(keep) < 2:
            break
        half = len(keep) // 2
        for part in (keep[:half], keep[half:]):
            found = judge(part)
            if found is not None:
                keep, best = part, found
                break
        else:
            break  # neither half alone is enough: the set stays as it is
    if best is None:
        say(
            f"variant {name}: keeping neither half of its {len(candidates)} quantized nodes in "
            "float restores accuracy; left out"
        )
        return None
    probe, path, figures = best
    say(
        f"variant {probe}: {len(keep)} of {len(candidates)} node(s) kept in float "
        f"({', '.join(keep[:8])}{', ...' if len(keep) > 8 else ''}) restore accuracy"
    )
    say(_line(probe, figures, base_ms))
    return probe, path, figures


def promising(
    verdicts: Mapping[str, Mapping[str, Any]], passed: list[str], base_ms: float
) -> list[str]:
    """The passing variants worth measuring early: those whose quick look was not clearly
    slower than the original model, fastest first."""
    return [
        n for n in passed
        if not base_ms or (verdicts.get(n, {}).get("p50_ms") or 0.0) <= QUEUE_IF_WITHIN * base_ms
    ]  # fmt: skip

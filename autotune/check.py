"""``autotune check``: does a deployed best.json still win, here and now?

A tuned config is true for one model, one onnxruntime build and one kind of machine at the time
it was measured. ``check`` first says what changed since (the model must not have: that is an
error), then re-measures the config against what it was compared with (ONNX Runtime's
defaults, or with ``--against`` another tuned config) with the confirmation's own paired
machinery: warm workers taking turns in short blocks, the twin, the host's noise, the recorded
workload (concurrency, shapes, rate, batching). The verdict compares the gain now with the gain
recorded:

- ``holds``: still better, within the noise of what was recorded (or better than recorded);
- ``weaker``: still better, but by clearly less than recorded;
- ``lost``: no better than the reference, or worse;
- ``too noisy``: the host's own noise is larger than the difference.

Exit codes: 0 holds, 1 weaker or lost (or below ``--min-gain``), 3 too noisy, 2 bad input.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autotune.config import (
    AccuracyCheck,
    Confirmation,
    FeedPlan,
    Measurement,
    MeasureSettings,
    ProviderSpec,
    TrialConfig,
    TunedConfig,
    WorkerJob,
)
from autotune.confirm.paired import confirm_paired, median_band
from autotune.confirm.rounds import confirm
from autotune.errors import AutotuneError, UsageError
from autotune.fmt import fmt_number
from autotune.interrupt import STOP
from autotune.machine import environment
from autotune.measure.lock import machine_lock
from autotune.measure.runner import run_trial
from autotune.measure.serving import shared_rates
from autotune.measure.session import read_tuned
from autotune.model import model_sha256
from autotune.objectives import Objective, parse_objective

EXIT_CODES = {"holds": 0, "weaker": 1, "lost": 1, "too noisy": 3}
WORKER_TIMEOUT_S = 600.0
#: The least relative drop from the recorded gain called ``weaker``, however quiet the host:
#: fresh workers on a shared VM disagree by this much for identical configs.
MIN_DROP = 0.10
#: Recorded facts a timing depends on, in the order they are listed.
FINGERPRINT = (
    ("onnxruntime_version", "onnxruntime version"),
    ("onnxruntime_package", "onnxruntime package"),
    ("cpu_model", "CPU"),
    ("isa_flags", "CPU features"),
    ("usable_cpus", "usable CPUs"),
    ("gpu", "GPU"),
    ("gpu_driver", "GPU driver"),
)


@dataclass(frozen=True)
class Change:
    what: str
    recorded: str
    now: str

    def line(self) -> str:
        return f"{self.what}: {self.recorded} -> {self.now}"


@dataclass(frozen=True)
class Contender:
    """One side of the check: a config, the model file it runs and its recorded figure."""

    label: str
    config: TrialConfig
    model_path: str
    recorded: Measurement


@dataclass(frozen=True)
class CheckResult:
    verdict: str  # holds | weaker | lost | too noisy
    objective: str
    unit: str
    reference: str  # what the config is compared with
    recorded_gain: float
    gain: float  # measured now: the paired median ratio, > 1 is better
    noise: float  # the least gain beyond the host's noise now (> 1; a capacity's ladder step)
    recorded: Mapping[str, float]  # the objective of each side as recorded
    now: Mapping[str, float]  # and as measured now
    changes: tuple[Change, ...]
    seconds: float
    method: str
    min_gain: float | None = None
    detail: str = ""  # the confirmation's own verdict line
    retuned: str = ""  # --retune-if-lost: the new best.json
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def below_min_gain(self) -> bool:
        return self.min_gain is not None and not self.gain >= self.min_gain

    @property
    def exit_code(self) -> int:
        if self.verdict == "holds" and self.below_min_gain:
            return 1
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "objective": self.objective,
            "unit": self.unit,
            "reference": self.reference,
            "recorded_gain": _finite(self.recorded_gain),
            "gain": _finite(self.gain),
            "noise": _finite(self.noise),
            "min_gain": self.min_gain,
            "below_min_gain": self.below_min_gain,
            "recorded": {k: _finite(v) for k, v in self.recorded.items()},
            "now": {k: _finite(v) for k, v in self.now.items()},
            "changes": [c.__dict__ for c in self.changes],
            "seconds": round(self.seconds, 1),
            "method": self.method,
            "detail": self.detail,
            "retuned": self.retuned,
            "notes": list(self.notes),
        }

    def lines(self) -> list[str]:
        sides = list(self.recorded)
        rows = [
            f"{side}: recorded {fmt_number(self.recorded[side])} {self.unit}, now "
            f"{fmt_number(self.now.get(side, math.nan))} {self.unit}"
            for side in sides
        ]
        head = (
            f"{self.verdict.upper()}: {self.gain:.2f}x against {self.reference} now, "
            f"{self.recorded_gain:.2f}x recorded ({self.objective}; noise now: a gain needs "
            f"{self.noise:.2f}x)"
        )
        lines = [head, *rows, self.detail]
        if self.below_min_gain:
            lines.append(f"below --min-gain {self.min_gain:g}: {self.gain:.2f}x")
        lines += [f"note: {note}" for note in self.notes]
        lines.append(f"checked in {self.seconds:.0f} s ({self.method})")
        if self.retuned:
            lines.append(f"retuned for this machine: {self.retuned}")
        return lines


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def judge(
    kind: str,
    recorded_gain: float,
    gain: float,
    noise: float,
    threshold: float = 1.0,
    bands: tuple[float, float] | None = None,
) -> str:
    """The verdict from the confirmation's ``kind`` (winner, no gain, too noisy) and the gains.

    A winner is ``weaker`` when the gain now falls short of the recorded one by at least
    ``MIN_DROP`` and by more than the noise: with ``bands`` (the rough 95 % bands of the
    recorded and the current median paired ratio), when the two bands do not overlap; without
    them (no paired ratios recorded), when the drop exceeds ``noise`` (the least gain beyond
    the host's noise now, > 1)."""
    if kind == "too noisy":
        return "too noisy"
    if kind != "winner" or not gain > max(1.0, threshold):
        return "lost"
    if recorded_gain / gain <= 1 + MIN_DROP:
        return "holds"
    if bands is not None:
        recorded_band, band = bands
        return "weaker" if recorded_gain - recorded_band > gain + band else "holds"
    return "weaker" if recorded_gain / gain > noise else "holds"


def ratio_band(objective: Objective, confirmation: Confirmation, number: int) -> float | None:
    """The rough 95 % band of a confirmation's median paired ratio of trial ``number`` against
    its baseline (block by block; None when it recorded no pairs to compute it from)."""
    try:
        figures = confirmation.figures(number)
    except KeyError:
        return None
    pairs = zip(figures.values, confirmation.baseline.values, strict=False)
    ratios = [objective.ratio(value, base) for value, base in pairs]
    ratios = [r for r in ratios if math.isfinite(r)]
    if len(ratios) < 3 or confirmation.method != "paired blocks":
        return None
    return median_band(ratios)


def read_checked(path: Path) -> TunedConfig:
    """best.json, or one line that says what is wrong with it (exit 2)."""
    try:
        return read_tuned(path)
    except AutotuneError as exc:
        raise UsageError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(
            f"{path} is not a best.json autotune can read ({type(exc).__name__}: {exc}); "
            "give the file `autotune run` wrote"
        ) from None


def _model(tuned: TunedConfig, path: Path, model: Path | None) -> tuple[str, str]:
    """The tuned config's model file here, refused when it is not the model it was tuned on."""
    file = model or Path(tuned.model_path)
    if not file.is_file():
        raise UsageError(
            f"the model {file} that {path} was tuned on is not here: pass --model PATH"
        )
    try:
        sha = model_sha256(file)
    except UsageError as exc:  # a weights file is missing
        raise UsageError(f"{file}: {exc}") from None
    if sha != tuned.model_sha256:
        raise UsageError(
            f"{file} is not the model {path} was tuned on (sha256 {sha[:12]}, recorded "
            f"{tuned.model_sha256[:12]}: its graph or weights differ); tune the new model with "
            "`autotune run` instead"
        )
    return str(file), sha


def _defaults_model(tuned: TunedConfig, path: Path, own: str, model: Path | None) -> str:
    """The original model the defaults ran (a variant's best.json names its own file)."""
    if tuned.config.variant == "original":
        return own
    if tuned.original_model is None:
        raise UsageError(
            f"{path} chose the {tuned.config.variant} variant but predates recording the "
            "original model; re-run the tuning with this autotune to check it"
        )
    file = Path(tuned.original_model[0]) if model is None else model
    if not file.is_file() or model_sha256(file) != tuned.original_model[1]:
        raise UsageError(f"the original model {file} of {path} is missing or changed")
    return str(file)


def _defaults(tuned: TunedConfig) -> TrialConfig:
    """What the baseline ran: recorded, or (older files) the providers without their knobs."""
    if tuned.defaults is not None:
        return tuned.defaults
    return TrialConfig(
        providers=tuple(ProviderSpec(p.name) for p in tuned.config.providers),
        batch_size=tuned.baseline.batch_size,
    )


def what_changed(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[Change]:
    """The recorded machine and build facts that differ here."""

    def text(value: Any) -> str:
        if isinstance(value, list | tuple):
            return " ".join(map(str, value)) or "none"
        return "none" if value in (None, "") else str(value)

    changes = []
    for key, label in FINGERPRINT:
        if key not in recorded:  # not recorded by the autotune that wrote the file
            continue
        if text(recorded.get(key)) != text(now.get(key)):
            old, new = recorded.get(key), now.get(key)
            if isinstance(old, list) and isinstance(new, list):
                gone = sorted(set(old) - set(new))
                came = sorted(set(new) - set(old))
                changes.append(
                    Change(label, "had " + (text(gone) if gone else "-"), "has " + text(came))
                )
            else:
                changes.append(Change(label, text(old), text(new)))
    return changes


def _feeds(tuned: TunedConfig, inputs: Path | None) -> FeedPlan:
    plan = tuned.inputs
    if plan is None:
        raise UsageError("this best.json records no inputs; re-run the tuning with this autotune")
    if inputs is not None:
        return replace(plan, data_path=str(inputs.resolve()))
    if plan.data_path and not Path(plan.data_path).is_file():
        raise UsageError(
            f"the input data {plan.data_path} the tuning used is not here: pass --inputs PATH"
        )
    return plan


@dataclass(frozen=True)
class Plan:
    """What one check measures: the reference, the candidate, the workload they share."""

    reference: Contender
    candidate: Contender
    reference_name: str
    objective: Objective
    recorded_gain: float
    tuned: TunedConfig  # the file checked (its workload, inputs and environment)
    feeds: FeedPlan


def plan_check(
    path: Path,
    *,
    against: Path | None = None,
    model: Path | None = None,
    inputs: Path | None = None,
) -> Plan:
    """Read and verify everything before measuring: the files, the model, the inputs."""
    tuned = read_checked(path)
    objective = parse_objective(tuned.objective)
    model_path, _ = _model(tuned, path, model)
    feeds = _feeds(tuned, inputs)
    own = Contender(f"{path.name} config", tuned.config, model_path, tuned.metrics)
    if against is None:
        base_model = _defaults_model(tuned, path, model_path, model)
        reference = Contender("ONNX Runtime defaults", _defaults(tuned), base_model, tuned.baseline)
        return Plan(
            reference, own, "ONNX Runtime's defaults", objective, tuned.speedup, tuned, feeds
        )
    other = read_checked(against)
    if (other.original_model or (other.model_path, other.model_sha256))[1] != (
        tuned.original_model or (tuned.model_path, tuned.model_sha256)
    )[1]:
        raise UsageError(f"{against} was tuned on another model than {path}: nothing to compare")
    if other.objective != tuned.objective or other.workload != tuned.workload:
        raise UsageError(
            f"{against} was tuned for another objective or workload than {path} "
            f"({other.objective} vs {tuned.objective}): their gains do not compare"
        )
    other_model, _ = _model(other, against, None)
    candidate = Contender(f"{against.name} config", other.config, other_model, other.metrics)
    # the other's gain over this one, as both were recorded against the defaults
    recorded = other.speedup / tuned.speedup if tuned.speedup > 0 else math.nan
    return Plan(own, candidate, f"{path.name}'s config", objective, recorded, tuned, feeds)


def _rates(plan: Plan) -> tuple[float, ...]:
    recorded = (plan.reference.recorded, plan.candidate.recorded)
    return shared_rates(plan.tuned.workload.traffic, recorded)


def measure(
    plan: Plan, *, rounds: int, say: Callable[[str], None], command: Sequence[str] | None = None
) -> Confirmation:
    """The reference (and its twin) against the candidate, paired in warm workers where the
    objective allows it, else in interleaved fresh rounds."""
    models = {id(plan.reference.config): plan.reference.model_path}
    models[id(plan.candidate.config)] = plan.candidate.model_path
    settings = MeasureSettings()

    def job_for(config: TrialConfig) -> WorkerJob:
        model = models.get(id(config), plan.candidate.model_path)
        return WorkerJob(model, config, plan.feeds, settings, AccuracyCheck(), plan.tuned.workload)

    reference = (0, plan.reference.config, plan.reference.recorded)
    rates = _rates(plan)
    traffic = plan.tuned.workload.traffic
    with machine_lock(wait=True, on_wait=say, stop=STOP):
        if plan.objective.pairable and (traffic is None or rates):
            return confirm_paired(
                reference,
                [(1, plan.candidate.config)],
                job_for=job_for,
                searched={1: plan.candidate.recorded},
                objective=plan.objective,
                rounds=rounds,
                timeout_s=WORKER_TIMEOUT_S,
                command=command,
                on_cycle=lambda done, cap: say(f"  cycle {done}, up to {cap}"),
                rates=rates,
            )
        return confirm(
            reference,
            [(1, plan.candidate.config, plan.candidate.recorded)],
            objective=plan.objective,
            rounds=rounds,
            measure=lambda config: run_trial(job_for(config), timeout_s=WORKER_TIMEOUT_S),
        )


def result_of(
    plan: Plan,
    confirmation: Confirmation,
    changes: Sequence[Change],
    seconds: float,
    min_gain: float | None,
) -> CheckResult:
    figures = confirmation.figures(1)
    noise = 1 + confirmation.noise.margin if confirmation.noise else confirmation.threshold
    recorded = plan.tuned.confirmation
    if (
        recorded is not None
        and recorded.noise is not None
        and plan.reference_name.startswith("ONNX")
    ):  # the recorded gain carries its own run's noise too
        noise *= 1 + max(0.0, recorded.noise.margin)
    rates = _rates(plan)
    if len(rates) > 1:  # a capacity is one rung of the ladder: a smaller change is not seen
        noise = max(noise, rates[1] / rates[0])
    gain = figures.gain
    recorded_band = (
        ratio_band(plan.objective, recorded, plan.tuned.trial_number)
        if recorded is not None and plan.reference_name.startswith("ONNX")
        else None
    )
    band_now = ratio_band(plan.objective, confirmation, 1)
    bands = (
        (recorded_band, band_now) if recorded_band is not None and band_now is not None else None
    )
    verdict = judge(
        confirmation.kind, plan.recorded_gain, gain, noise, confirmation.threshold, bands
    )
    objective = plan.objective
    return CheckResult(
        verdict=verdict,
        objective=objective.name,
        unit=objective.unit,
        reference=plan.reference_name,
        recorded_gain=plan.recorded_gain,
        gain=gain,
        noise=noise,
        recorded={
            plan.reference.label: objective.value(plan.reference.recorded),
            plan.candidate.label: objective.value(plan.candidate.recorded),
        },
        now={
            plan.reference.label: confirmation.baseline.median,
            plan.candidate.label: figures.median,
        },
        changes=tuple(changes),
        seconds=seconds,
        method=confirmation.method,
        min_gain=min_gain,
        detail=confirmation.verdict.replace("trial #1", plan.candidate.label).replace(
            "#0", plan.reference.label
        ),
        notes=confirmation.notes,
    )


def check(
    path: Path,
    *,
    against: Path | None = None,
    model: Path | None = None,
    inputs: Path | None = None,
    rounds: int = 5,
    min_gain: float | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> CheckResult:
    """Check ``path`` (best.json) on this machine; see the module's docstring."""
    if min_gain is not None and not min_gain > 0:
        raise UsageError(f"--min-gain {min_gain:g}: give the least gain to accept, e.g. 1.05")
    plan = plan_check(path, against=against, model=model, inputs=inputs)
    changes = what_changed(plan.tuned.environment, environment())
    say(
        "changed since it was tuned:"
        if changes
        else "unchanged since it was tuned: model, onnxruntime, CPU and GPU"
    )
    for change in changes:
        say(f"  {change.line()}")
    if (plan.candidate.config, plan.candidate.model_path) == (
        plan.reference.config,
        plan.reference.model_path,
    ):
        return _same_config(plan, changes)
    say(
        f"checking {plan.candidate.label} against {plan.reference_name} on {plan.objective.name}"
        f" (recorded {plan.recorded_gain:.2f}x)"
    )
    started = time.perf_counter()
    confirmation = measure(plan, rounds=rounds, say=say)
    if STOP.is_set():
        raise KeyboardInterrupt
    seconds = time.perf_counter() - started
    result = result_of(plan, confirmation, changes, seconds, min_gain)
    return replace(result, changes=(*result.changes, *_providers_changed(plan, confirmation)))


def _same_config(plan: Plan, changes: Sequence[Change]) -> CheckResult:
    """The config is its reference (a best.json that kept the defaults): nothing to measure."""
    value = plan.objective.value(plan.candidate.recorded)
    return CheckResult(
        verdict="holds",
        objective=plan.objective.name,
        unit=plan.objective.unit,
        reference=plan.reference_name,
        recorded_gain=1.0,
        gain=1.0,
        noise=1.0,
        recorded={plan.candidate.label: value},
        now={},
        changes=tuple(changes),
        seconds=0.0,
        method="not measured",
        notes=(f"the config is {plan.reference_name} itself: there is no gain to check",),
    )


def _providers_changed(plan: Plan, confirmation: Confirmation) -> list[Change]:
    """The execution providers that really loaded, against the recorded ones."""
    measured = confirmation.figures(1).measurement
    if measured is None or not plan.candidate.recorded.providers:
        return []
    old, new = plan.candidate.recorded.providers, measured.providers
    if tuple(old) == tuple(new):
        return []
    return [Change("execution providers loaded", ",".join(old), ",".join(new))]


def machine_slug(env: Mapping[str, Any]) -> str:
    """A short name for this kind of machine and build, for a study retuned here."""
    cpu = re.sub(r"\(R\)|\(TM\)|CPU|Processor|@.*", "", str(env.get("cpu_model") or "cpu"))
    words = [w for w in re.split(r"[^A-Za-z0-9]+", cpu) if w][:3]
    gpu = re.sub(r"[^A-Za-z0-9]+", "", str(env.get("gpu") or ""))[:16]
    parts = ["-".join(words).lower() or "cpu", f"{env.get('usable_cpus', '?')}cpu"]
    if gpu:
        parts.append(gpu.lower())
    parts.append(f"ort{env.get('onnxruntime_version', '')}")
    return re.sub(r"[^A-Za-z0-9_.:-]+", "_", "-".join(parts))


SPACES = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}


def _dims_of(tuned: TunedConfig) -> tuple[tuple[str, ...], str | None]:
    """--dim flags that give the tuning's shapes again: each named dim the inputs fixed, and
    a shape mix's symbol with its values and weights."""
    plan = tuned.inputs
    fixed: dict[str, int] = {}
    for spec in plan.inputs if plan else ():
        for axis, symbol in enumerate(spec.symbols):
            if symbol is not None and not (spec.batched and axis == 0):
                fixed[symbol] = spec.shape[axis]
    points = tuned.workload.shapes
    mixed = {s for p in points for s in p.dims if len({q.dims.get(s) for q in points}) > 1}
    flags = [f"{s}={v}" for s, v in fixed.items() if s not in mixed]
    flags += [f"{s}={','.join(str(p.dims[s]) for p in points)}" for s in sorted(mixed)]
    weights = ",".join(f"{p.weight:g}" for p in points) if mixed else None
    return tuple(flags), weights


def retune_options(tuned: TunedConfig, path: Path, *, trials: int) -> Any:
    """The run options that tune the same model, objective and workload again on this
    machine, into a study named for it (the old best.json is kept where it is)."""
    from autotune.options import RunOptions

    traffic = tuned.workload.traffic
    if traffic is not None and traffic.trace:
        raise UsageError(
            "--retune-if-lost cannot replay a --trace study's arrivals: run `autotune run "
            "MODEL --trace FILE` on this machine"
        )
    dims, weights = _dims_of(tuned)
    model = tuned.original_model[0] if tuned.original_model else tuned.model_path
    data = tuned.inputs.data_path if tuned.inputs else None
    return RunOptions(
        model=Path(model),
        objective=(tuned.objective,),
        space=SPACES.get(tuned.config.providers[0].name, "cpu"),
        trials=trials,
        out=path.resolve().parent.parent,
        study=f"{tuned.study_name}-{machine_slug(environment())}",
        dims=dims,
        dim_weights=weights,
        inputs=Path(data) if data else None,
        concurrency=tuned.workload.concurrency,
        rate=traffic.rate if traffic else None,
        arrivals=traffic.arrivals if traffic else "poisson",
        max_latency_ms=traffic.max_latency_ms if traffic else None,
        slo=f"latency:{traffic.quantile}" if traffic else "latency:p99",
    )

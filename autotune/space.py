"""Search spaces: declarative YAML files, validated in one pass, turned into TrialConfigs.

A space names its providers and a list of knobs. Each knob has a ``target`` (where the value
goes), a ``type`` and a range; ``when`` makes it conditional on an earlier knob, so
``inter_op_num_threads`` is only sampled with ``ORT_PARALLEL``. Machine-relative bounds
(``usable_cpus``) and the batch sizes are resolved by :meth:`SearchSpace.resolve`.

This module never imports optuna: :meth:`SearchSpace.suggest` takes any object with optuna's
``suggest_int``/``suggest_float``/``suggest_categorical`` methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml

from autotune.config import (
    EXECUTION_MODES,
    OPTIMIZATION_LEVELS,
    SESSION_OPTIONS,
    ProviderSpec,
    TrialConfig,
)
from autotune.errors import UsageError

SPACE_SCHEMA = "autotune.space/v1"


def _spaces_dir() -> Path:
    """The built-in spaces: the repository's ``search_spaces/``, installed as the package
    ``autotune.search_spaces`` (a plain folder in a wheel, mapped in an editable install)."""
    from importlib.util import find_spec

    spec = find_spec("autotune.search_spaces")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "search_spaces"  # a source tree on sys.path


SPACES_DIR = _spaces_dir()
TARGETS = (
    "session_option",
    "config_entry",
    "provider_option",
    "batch_size",
    "io_binding",
    "variant",
    "sessions",
    "global_thread_pool",
    "free_dim_overrides",
    "server_threads",
    "max_batch",
    "max_queue_delay_ms",
)
TYPES = ("int", "float", "bool", "categorical")
#: Bounds resolved per study: the CPUs this process may use, the workload's concurrent callers,
#: and the most sessions worth searching for them (one per caller, up to the usable CPUs: a
#: session beyond those has no core to run on).
MACHINE_BOUNDS = ("usable_cpus", "concurrency", "max_sessions", "max_servers", "max_delay_ms")
#: Open-loop traffic: server threads searched per usable CPU at most (a thread waiting on I/O or
#: a batch leaves its core to another).
MAX_SERVERS_PER_CPU = 2
PARAM_KEYS = {
    "target", "type", "low", "high", "step", "log", "choices", "when", "requires", "provider", "help",
    "default",
}  # fmt: skip
#: Facts about the study a knob can require; a knob whose requirement fails is not searched.
#: ``fixable_dims``: the inputs pin a named dynamic dim other than the batch to one size, so
#: free-dimension overrides can change the session.
REQUIREMENTS = ("static_shapes", "concurrent", "fixable_dims", "open_loop", "batching")
TOP_KEYS = {"schema", "description", "providers", "params"}
ENUM_CHOICES: Mapping[str, Sequence[str]] = {
    "execution_mode": EXECUTION_MODES,
    "graph_optimization_level": OPTIMIZATION_LEVELS,
}


class Suggester(Protocol):
    """The part of ``optuna.Trial`` a space needs."""

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...
    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class Param:
    name: str
    target: str
    type: str
    low: int | float | str | None = None
    high: int | float | str | None = None
    step: int | float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    when: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    provider: str | None = None
    help: str = ""
    default: Any = None  # ONNX Runtime's own value, where the range holds it (None: unstated)

    def applies(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(k) == v for k, v in self.when.items())

    def bounds(self) -> tuple[float, float]:
        if not isinstance(self.low, int | float) or not isinstance(self.high, int | float):
            raise ValueError(f"knob {self.name} has unresolved bounds; call SearchSpace.resolve")
        return self.low, self.high

    def grid_values(self) -> list[Any]:
        """Every value of this knob, for an exhaustive grid."""
        if self.type == "int":
            low, high = self.bounds()
            return list(range(int(low), int(high) + 1, int(self.step or 1)))
        if self.type == "float":
            low, high = self.bounds()
            if not self.step:
                raise UsageError(
                    f"knob {self.name} is a continuous float: give it a step to grid it"
                )
            return [float(v) for v in np.arange(low, high + self.step / 2, self.step)]
        if self.type == "bool":
            return [True, False]
        return list(self.choices)

    def suggest(self, trial: Suggester) -> Any:
        if self.type == "int":
            low, high = self.bounds()
            step = int(self.step or 1)
            return trial.suggest_int(self.name, int(low), int(high), step=step, log=self.log)
        if self.type == "float":
            low, high = self.bounds()
            return trial.suggest_float(self.name, low, high, step=self.step, log=self.log)
        if self.type == "bool":
            return trial.suggest_categorical(self.name, [True, False])
        return trial.suggest_categorical(self.name, list(self.choices))


@dataclass(frozen=True)
class SearchSpace:
    name: str
    source: str
    description: str
    providers: tuple[ProviderSpec, ...]
    params: tuple[Param, ...]
    batch_sizes: tuple[int, ...] = (1,)
    cpus: int | None = None  # the usable CPUs, once resolved: what several sessions' threads share

    def resolve(
        self,
        *,
        batch_sizes: Sequence[int],
        cpus: int,
        static_shapes: bool | None = None,
        study_dir: str | None = None,
        concurrency: int = 1,
        fixable_dims: bool = True,
        open_loop: bool = False,
        batching: bool = False,
        max_delay_ms: float = 10.0,
    ) -> SearchSpace:
        """Bind machine-relative bounds, the batch sizes and the study's facts.

        Drops the batch knob when there is one batch size, and knobs whose ``requires`` fails
        (``static_shapes``: the input shapes never change, i.e. one batch size and no shape
        mix, by default; ``concurrent``: more than one caller; ``fixable_dims``: the inputs pin
        a named non-batch dim, so free-dimension overrides change something; ``open_loop``:
        requests arrive on their own schedule and the config's server threads take them, up to
        ``max_servers``, twice the CPUs; ``batching``: the server may join them into batches,
        waiting up to ``max_delay_ms``).
        ``{study_dir}`` in provider options becomes the study's folder (TensorRT caches).
        """
        if open_loop:  # the server threads are the callers: as many as the search may pick
            concurrency = MAX_SERVERS_PER_CPU * cpus
        facts = {
            "static_shapes": len(batch_sizes) == 1 if static_shapes is None else static_shapes,
            "concurrent": concurrency > 1,
            "fixable_dims": fixable_dims,
            "open_loop": open_loop,
            "batching": open_loop and batching,
        }
        bounds = {
            "usable_cpus": cpus,
            "concurrency": concurrency,
            "max_sessions": max(1, min(concurrency, cpus)),
            "max_servers": MAX_SERVERS_PER_CPU * cpus,
            "max_delay_ms": max_delay_ms,
        }
        params = []
        for p in self.params:
            if not all(facts.get(r, False) for r in p.requires):
                continue
            if p.target == "batch_size":
                if len(batch_sizes) > 1:
                    params.append(replace(p, type="categorical", choices=tuple(batch_sizes)))
                continue
            low = bounds.get(p.low, p.low) if isinstance(p.low, str) else p.low
            high = bounds.get(p.high, p.high) if isinstance(p.high, str) else p.high
            if p.target == "sessions" and isinstance(high, int | float) and high > concurrency:
                raise UsageError(
                    f"{self.source}: params.{p.name}: up to {high} sessions for {concurrency} "
                    "concurrent callers; a session without a caller does nothing, so set "
                    "'high: concurrency' or raise --concurrency"
                )
            if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
                raise UsageError(
                    f"{self.source}: params.{p.name}: range {low}..{high} is empty on this machine "
                    f"({cpus} usable CPUs); lower 'low'"
                )
            default = bounds.get(p.default, p.default) if isinstance(p.default, str) else p.default
            if p.type in ("int", "float") and isinstance(default, int | float):
                default = min(max(default, low), high)  # type: ignore[type-var]
            params.append(replace(p, low=low, high=high, default=default))
        providers = self.providers
        if study_dir is not None:
            providers = tuple(
                replace(
                    pr,
                    options={k: v.replace("{study_dir}", study_dir) for k, v in pr.options.items()},
                )
                for pr in self.providers
            )
        return replace(
            self,
            params=tuple(params),
            batch_sizes=tuple(batch_sizes),
            providers=providers,
            cpus=cpus,
        )

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of knob values that the conditions allow (an exhaustive search)."""
        points: list[dict[str, Any]] = [{}]
        for p in self.params:
            values = p.grid_values()
            extended: list[dict[str, Any]] = []
            for point in points:
                if p.applies(point):
                    extended.extend({**point, p.name: value} for value in values)
                else:
                    extended.append(point)
            points = extended
        return points

    def suggest(self, trial: Suggester) -> TrialConfig:
        """Sample every knob whose condition holds, in file order, and build the config."""
        values: dict[str, Any] = {}
        for p in self.params:
            if p.applies(values):
                values[p.name] = p.suggest(trial)
        return self.config_from_params(values)

    def config_from_params(self, values: Mapping[str, Any]) -> TrialConfig:
        """The TrialConfig for a set of knob values (a stored trial's ``params``)."""
        session: dict[str, Any] = {}
        entries: dict[str, str] = {}
        options: dict[str, dict[str, str]] = {p.name: dict(p.options) for p in self.providers}
        batch_size = self.batch_sizes[0]
        io_binding = False
        variant = "original"
        sessions = 1
        global_pool = False
        free_dims = False
        serving: dict[str, Any] = {}  # open-loop server threads and the batcher
        for p in self.params:
            if p.name not in values:
                continue
            value = values[p.name]
            if p.target == "session_option":
                session[p.name] = value
            elif p.target == "config_entry":
                entries[p.name] = str(value)
            elif p.target == "provider_option":
                options[p.provider or self.providers[0].name][p.name] = _option_text(value)
            elif p.target == "batch_size":
                batch_size = int(value)
            elif p.target == "io_binding":
                io_binding = bool(value)
            elif p.target == "variant":
                variant = str(value)
            elif p.target == "sessions":
                sessions = int(value)
            elif p.target == "global_thread_pool":
                global_pool = bool(value)
            elif p.target == "free_dim_overrides":
                free_dims = bool(value)
            elif p.target in ("server_threads", "max_batch", "max_queue_delay_ms"):
                serving[p.target] = value
        serving = _serving(serving)
        sessions = min(sessions, serving.get("server_threads") or sessions)
        if sessions > 1 and not global_pool and self.cpus:
            session = self._threads_within_cpus(session, sessions)
        providers = tuple(ProviderSpec(p.name, options[p.name]) for p in self.providers)
        return TrialConfig(
            providers=providers,
            session_options=session,
            config_entries=entries,
            batch_size=batch_size,
            io_binding=io_binding,
            variant=variant,
            sessions=sessions,
            global_thread_pool=global_pool,
            free_dim_overrides=free_dims,
            **serving,
        )

    def _threads_within_cpus(self, session: dict[str, Any], sessions: int) -> dict[str, Any]:
        """Several sessions with a pool each: their threads together stay within the usable
        CPUs (a thread beyond them only waits for a core and steals it from the others)."""
        share = max(1, (self.cpus or 1) // sessions)
        return {
            name: min(int(value), share)
            if name in ("intra_op_num_threads", "inter_op_num_threads") and int(value) > 0
            else value
            for name, value in session.items()
        }

    def serving_presets(self, concurrency: int) -> list[dict[str, Any]]:
        """Known layouts for N concurrent callers, measured before the sampler's own proposals.

        One session per caller up to the usable CPUs, the CPUs split between them (OpenVINO's
        "streams"), and one shared session with one intra-op thread per call; spinning off in
        both, since spinning threads steal the cores other callers need. Only knobs this space
        has, within their ranges; none for one caller.
        """
        knobs = {p.name: p for p in self.params}
        if "server_threads" in knobs:
            return self._open_loop_presets(knobs)
        if concurrency <= 1 or "sessions" not in knobs:
            return []
        threads = knobs.get("intra_op_num_threads")
        cpus = int(threads.bounds()[1]) if threads is not None else 1
        sessions_low, sessions_high = knobs["sessions"].bounds()
        layouts = []
        streams = min(concurrency, cpus)
        for sessions, per_session in ((streams, cpus // streams), (1, 1)):
            sessions = int(min(max(sessions, sessions_low), sessions_high))
            params: dict[str, Any] = {"sessions": sessions}
            if "global_thread_pool" in knobs:
                params["global_thread_pool"] = False
            if threads is not None:
                low, high = threads.bounds()
                params[threads.name] = int(min(max(per_session, low), high))
            spinning = knobs.get("session.intra_op.allow_spinning")
            if spinning is not None and "0" in spinning.choices:
                params[spinning.name] = "0"
            if params not in layouts:
                layouts.append(params)
        return layouts

    def _open_loop_presets(self, knobs: Mapping[str, Param]) -> list[dict[str, Any]]:
        """Open-loop traffic: one server thread per CPU, each request on one intra-op thread,
        on one shared session and on a session each, and the first with a small batcher. One
        thread per request served 1.5x the requests of ONNX Runtime's defaults at the same p99
        on a 2-CPU machine (issue 22's measurement)."""
        cpus = self.cpus or 1

        def clamp(name: str, value: float) -> Any:
            low, high = knobs[name].bounds()
            kind = int if knobs[name].type == "int" else float
            return kind(min(max(value, low), high))

        base: dict[str, Any] = {"server_threads": clamp("server_threads", cpus)}
        if "intra_op_num_threads" in knobs:
            base["intra_op_num_threads"] = clamp("intra_op_num_threads", 1)
        spinning = knobs.get("session.intra_op.allow_spinning")
        if spinning is not None and "0" in spinning.choices:
            base[spinning.name] = "0"
        if "max_batch" in knobs:
            base["max_batch"] = 1
        layouts = [{**base, "sessions": 1} if "sessions" in knobs else base]
        if "sessions" in knobs and clamp("sessions", cpus) > 1:
            layouts.append({**base, "sessions": clamp("sessions", cpus)})
        if "max_batch" in knobs and 4 in knobs["max_batch"].choices:
            batched = {**layouts[0], "max_batch": 4}
            if "max_queue_delay_ms" in knobs:
                batched["max_queue_delay_ms"] = clamp("max_queue_delay_ms", 2.0)
            layouts.append(batched)
        # everything else at ONNX Runtime's defaults: the layout is what is being tried
        return [self.default_params(**layout) for layout in layouts]

    def default_params(self, **fixed: Any) -> dict[str, Any]:
        """The knob values closest to ONNX Runtime's own defaults (each knob's ``default``),
        with ``fixed`` knobs set as given, in file order so conditions hold; knobs without a
        stated default are left to the sampler."""
        values: dict[str, Any] = {}
        for p in self.params:
            if not p.applies(values):
                continue
            if p.name in fixed:
                values[p.name] = fixed[p.name]
            elif p.default is not None:
                values[p.name] = p.default
        return values

    def batch_preset(self) -> dict[str, Any] | None:
        """ONNX Runtime's defaults at the largest batch size, for a throughput study to measure
        first: batching is the largest throughput lever (4x to 11x on tree ensembles here), and
        a sampler's few random start-up trials can all miss it. None without a batch choice."""
        knob = next((p for p in self.params if p.target == "batch_size"), None)
        if knob is None or knob.type != "categorical" or len(knob.choices) < 2:
            return None
        return self.default_params(**{knob.name: max(knob.choices)})

    def without_batching(self) -> SearchSpace:
        """The space without the server-side batcher's knobs (a model it changes the answers of)."""
        batcher = ("max_batch", "max_queue_delay_ms")
        return replace(self, params=tuple(p for p in self.params if p.target not in batcher))

    def with_variants(self, names: Sequence[str]) -> SearchSpace:
        """The model file as the first knob: the original or one of the variants."""
        if not names:
            return self
        knob = Param(
            name="variant",
            target="variant",
            type="categorical",
            choices=("original", *names),
            help="the model file: the original or a variant",
        )
        return replace(self, params=(knob, *self.params))

    def baseline(self) -> TrialConfig:
        """ONNX Runtime's defaults with this space's providers, at the first batch size."""
        return TrialConfig(
            providers=tuple(ProviderSpec(p.name, p.options) for p in self.providers),
            batch_size=self.batch_sizes[0],
        )

    def check_providers(self, available: Sequence[str]) -> None:
        missing = [p.name for p in self.providers if p.name not in available]
        if missing:
            raise UsageError(
                f"search space {self.name!r} needs {', '.join(missing)}, which this onnxruntime "
                f"build does not offer (it has {', '.join(available)}); pick another --space"
            )


def _serving(values: Mapping[str, Any]) -> dict[str, Any]:
    """The serving knobs as TrialConfig takes them: no delay without batching (it would change
    nothing), the delay rounded to 0.1 ms (finer is below the scheduler's noise)."""
    max_batch = int(values.get("max_batch", 1))
    out: dict[str, Any] = {}
    if "server_threads" in values:
        out["server_threads"] = int(values["server_threads"])
    if max_batch > 1:
        out["max_batch"] = max_batch
        out["max_queue_delay_ms"] = round(float(values.get("max_queue_delay_ms", 0.0)), 1)
    return out


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def space_names() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str) -> SearchSpace:
    """Load and validate a space by name (``cpu``) or path. All problems reported at once."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        path = SPACES_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise UsageError(
                f"unknown search space {name_or_path!r}; use one of {', '.join(space_names())}, "
                "auto (the best provider that works here) or a path to a .yaml file"
            )
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read search space {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_space(data, source=str(path), name=path.stem)


def parse_space(data: Any, *, source: str, name: str) -> SearchSpace:
    errors: list[str] = []
    if not isinstance(data, dict):
        raise UsageError(
            f"{source}: a search space must be a mapping with 'providers' and 'params'"
        )
    for key in sorted(set(data) - TOP_KEYS):
        errors.append(
            f"unknown key {key!r} (check spelling; allowed: {', '.join(sorted(TOP_KEYS))})"
        )
    if data.get("schema") != SPACE_SCHEMA:
        errors.append(f"schema must be {SPACE_SCHEMA!r}, got {data.get('schema')!r}")
    providers = _parse_providers(data.get("providers"), errors)
    params: list[Param] = []
    raw_params = data.get("params")
    if not isinstance(raw_params, dict) or not raw_params:
        errors.append("params: must be a non-empty mapping of knob name to its definition")
        raw_params = {}
    for pname, spec in raw_params.items():
        param = _parse_param(str(pname), spec, params, providers, errors)
        if param is not None:
            params.append(param)
    if errors:
        raise UsageError(f"{source}: {len(errors)} problem(s): " + "; ".join(errors))
    return SearchSpace(
        name=name,
        source=source,
        description=str(data.get("description", "")),
        providers=providers,
        params=tuple(params),
    )


def _parse_providers(raw: Any, errors: list[str]) -> tuple[ProviderSpec, ...]:
    if not isinstance(raw, list) or not raw:
        errors.append("providers: must be a non-empty list of {name: ..., options: {...}}")
        return ()
    providers = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            errors.append(f"providers[{i}]: must be a mapping with a string 'name'")
            continue
        for key in sorted(set(item) - {"name", "options"}):
            errors.append(f"providers[{i}]: unknown key {key!r} (check spelling)")
        options = item.get("options") or {}
        if not isinstance(options, dict):
            errors.append(f"providers[{i}].options: must be a mapping")
            options = {}
        providers.append(
            ProviderSpec(item["name"], {k: _option_text(v) for k, v in options.items()})
        )
    return tuple(providers)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_param(
    name: str,
    spec: Any,
    earlier: list[Param],
    providers: tuple[ProviderSpec, ...],
    errors: list[str],
) -> Param | None:
    where = f"params.{name}"
    if not isinstance(spec, dict):
        errors.append(f"{where}: must be a mapping with at least 'target'")
        return None
    before = len(errors)
    _check_param_keys(where, spec, errors)
    target, kind, choices = _parse_kind(where, spec, errors)
    if kind in ("int", "float"):
        _check_bounds(where, kind, spec, errors)
    if target == "session_option":
        _check_session_option(where, name, kind, choices, errors)
    provider = _parse_provider(where, target, spec.get("provider"), providers, errors)
    when = _parse_when(where, name, spec.get("when") or {}, earlier, errors)
    _check_default(where, kind, choices, spec.get("default"), errors)
    requires = _parse_requires(where, spec.get("requires") or [], errors)
    if len(errors) > before:
        return None
    return Param(
        name=name,
        target=str(target),
        type=str(kind),
        low=spec.get("low"),
        high=spec.get("high"),
        step=spec.get("step"),
        log=bool(spec.get("log", False)),
        choices=tuple(choices or ()),
        when=dict(when),
        requires=tuple(requires),
        provider=provider,
        help=str(spec.get("help", "")),
        default=spec.get("default"),
    )


def _check_param_keys(where: str, spec: dict[Any, Any], errors: list[str]) -> None:
    """Report every key a knob's definition does not know."""
    for key in sorted(set(spec) - PARAM_KEYS):
        errors.append(
            f"{where}: unknown key {key!r} (check spelling; allowed: {', '.join(sorted(PARAM_KEYS))})"
        )


def _parse_kind(where: str, spec: dict[Any, Any], errors: list[str]) -> tuple[Any, Any, Any]:
    """A knob's target, its type (a batch size is categorical unless stated) and its choices
    (none when a categorical knob's are missing)."""
    target = spec.get("target")
    if target not in TARGETS:
        errors.append(f"{where}.target: must be one of {', '.join(TARGETS)}, got {target!r}")
    kind = spec.get("type", "categorical" if target == "batch_size" else None)
    if kind not in TYPES:
        errors.append(f"{where}.type: must be one of {', '.join(TYPES)}, got {kind!r}")
    choices = spec.get("choices", ())
    if (
        kind == "categorical"
        and target != "batch_size"
        and (not isinstance(choices, list) or not choices)
    ):
        errors.append(f"{where}.choices: a categorical knob needs a non-empty list")
        choices = ()
    return target, kind, choices


def _check_bounds(where: str, kind: str, spec: dict[Any, Any], errors: list[str]) -> None:
    """An int or float knob's bounds: numbers or machine bounds, integers for an int, a range
    that is not empty, and a positive low when log-scaled."""
    low: Any = spec.get("low")
    high: Any = spec.get("high")
    for key, value in (("low", low), ("high", high)):
        if not (_is_number(value) or value in MACHINE_BOUNDS):
            errors.append(
                f"{where}.{key}: must be a number or one of {', '.join(MACHINE_BOUNDS)}, got {value!r}"
            )
    if kind == "int" and any(_is_number(v) and not float(v).is_integer() for v in (low, high)):
        errors.append(f"{where}: an int knob needs integer bounds")
    if _is_number(low) and _is_number(high) and low > high:
        errors.append(f"{where}: empty range, low {low} > high {high}")
    if spec.get("log") and _is_number(low) and low <= 0:
        errors.append(f"{where}: a log-scaled knob needs low > 0")


def _check_session_option(
    where: str, name: str, kind: Any, choices: Any, errors: list[str]
) -> None:
    """A session option knob: an attribute autotune sets, of its type, with valid choices."""
    expected = SESSION_OPTIONS.get(name)
    if expected is None:
        errors.append(
            f"{where}: not a SessionOptions attribute autotune sets "
            f"(known: {', '.join(SESSION_OPTIONS)})"
        )
    elif (expected is bool) != (kind == "bool") or (
        expected is int and kind not in ("int", "categorical")
    ):
        errors.append(f"{where}.type: {name} takes a {expected.__name__}, not {kind}")
    if name in ENUM_CHOICES and isinstance(choices, list):
        bad = [c for c in choices if c not in ENUM_CHOICES[name]]
        if bad:
            errors.append(f"{where}.choices: {bad} not in {', '.join(ENUM_CHOICES[name])}")


def _parse_provider(
    where: str,
    target: Any,
    provider: Any,
    providers: tuple[ProviderSpec, ...],
    errors: list[str],
) -> Any:
    """The provider a provider option applies to: the space's first unless named."""
    if target == "provider_option":
        names = [p.name for p in providers]
        if provider is None and names:
            provider = names[0]
        if provider not in names:
            errors.append(
                f"{where}.provider: {provider!r} is not one of this space's providers {names}"
            )
    return provider


def _parse_when(
    where: str, name: str, when: Any, earlier: list[Param], errors: list[str]
) -> dict[Any, Any]:
    """The earlier knobs' values this knob applies under, each one a value that knob takes."""
    if not isinstance(when, dict):
        errors.append(f"{where}.when: must be a mapping of an earlier knob to its required value")
        when = {}
    known = {p.name: p for p in earlier}
    for other, value in when.items():
        if other not in known:
            errors.append(f"{where}.when: {other!r} is not a knob defined before {name!r}")
        elif known[other].type == "categorical" and value not in known[other].choices:
            errors.append(f"{where}.when: {value!r} is not a choice of {other!r}")
        elif known[other].type == "bool" and not isinstance(value, bool):
            errors.append(f"{where}.when: {other!r} is a bool knob, {value!r} is not true/false")
    return when


def _check_default(where: str, kind: Any, choices: Any, default: Any, errors: list[str]) -> None:
    """A stated default must be a value the knob can take."""
    if default is not None:
        allowed = (
            default in choices
            if kind == "categorical"
            else isinstance(default, bool)
            if kind == "bool"
            else _is_number(default) or default in MACHINE_BOUNDS
        )
        if not allowed:
            errors.append(f"{where}.default: {default!r} is not a value this knob can take")


def _parse_requires(where: str, requires: Any, errors: list[str]) -> list[Any]:
    """The study facts a knob requires (none when the list is not valid)."""
    if not isinstance(requires, list) or any(r not in REQUIREMENTS for r in requires):
        errors.append(f"{where}.requires: must be a list of {', '.join(REQUIREMENTS)}")
        requires = []
    return requires


def default_batch_sizes(
    *,
    objective: str,
    has_dynamic_batch: bool,
    pinned: int | None,
    requested: Sequence[int] | None,
) -> tuple[int, ...]:
    """The batch sizes a study searches (or the one it fixes).

    ``--batch-sizes`` wins; otherwise a dynamic batch is searched over powers of two for the
    throughput objective and fixed at 1 (or the size ``--shape``/``--inputs`` pinned) for others.
    """
    if requested:
        if not has_dynamic_batch:
            raise UsageError(
                "--batch-sizes needs a model with a dynamic batch dim (axis 0 of its inputs); "
                "this model's batch is fixed, drop --batch-sizes"
            )
        if any(b <= 0 for b in requested):
            raise UsageError("--batch-sizes must be positive integers, e.g. 1,2,4,8")
        return tuple(dict.fromkeys(requested))
    if pinned is not None:
        return (pinned,)
    if has_dynamic_batch and objective == "throughput":
        return (1, 2, 4, 8, 16, 32)
    return (1,)


def parse_batch_sizes(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--batch-sizes {text!r} is malformed; write e.g. 1,2,4,8") from None

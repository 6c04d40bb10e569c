"""Open-loop traffic: arrival schedules, traces, batching, and windows served by real sessions.

No assertion rests on this machine's speed: a slow "session" here holds for at least its
service time (sleep, then spin until the clock agrees), so the bounds below follow from it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from autotune.measure import openloop
from autotune.measure.openloop import (
    OpenLoopWindow,
    arrival_times,
    join_requests,
    read_trace,
    request_rows,
    serve_open_loop,
    shape_key,
    split_rows,
)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> ort.InferenceSession:
    """Y = relu(X @ W), X float32 [N, 16] with a dynamic N."""
    weight = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["H"]), helper.make_node("Relu", ["H"], ["Y"])],
        "openloop",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 8])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, [16, 8], weight.ravel())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("openloop") / "matmul.onnx"
    onnx.save(model, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runner(session: ort.InferenceSession) -> Any:
    return lambda feeds: session.run(None, feeds)


def x(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {"X": np.random.default_rng(seed).standard_normal((rows, 16)).astype(np.float32)}


def hold(seconds: float) -> None:
    """Take at least ``seconds`` by this process's clock, mostly asleep (the GIL left free)."""
    start = time.perf_counter()
    time.sleep(seconds)
    while time.perf_counter() - start < seconds:
        pass


def slow(service_s: float) -> Any:
    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        hold(service_s)
        return [feeds["X"]]

    return run


def check_counts(window: OpenLoopWindow) -> None:
    """What every window guarantees, whatever the machine's speed."""
    assert window.sent == window.completed + window.unfinished
    assert len(window.latencies_s) == window.completed
    assert sum(window.batch_sizes) == window.completed
    assert all(s >= 0 for s in window.latencies_s)
    assert window.offered_rate == pytest.approx(window.sent / window.duration_s)
    assert window.achieved_rate == pytest.approx(window.completed / window.wall_s)
    assert window.wall_s >= window.duration_s
    assert 0 <= window.queue_depth_mean <= window.queue_depth_max
    assert window.late_dispatch_s >= 0
    assert window.cpu_cores >= 0


# --- arrival schedules -----------------------------------------------------------------------


def test_poisson_arrivals_have_the_rate_and_exponential_gaps() -> None:
    times = arrival_times(1000, 10.0, seed=1)
    assert 9500 <= len(times) <= 10500  # 10000 expected, sd 100
    assert times[0] >= 0 and times[-1] < 10.0
    gaps = np.diff(times)
    assert (gaps >= 0).all()
    assert gaps.mean() == pytest.approx(1e-3, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)  # exponential: cv 1


def test_poisson_arrivals_repeat_with_their_seed() -> None:
    np.testing.assert_array_equal(arrival_times(50, 2.0, seed=7), arrival_times(50, 2.0, seed=7))
    assert not np.array_equal(arrival_times(50, 2.0, seed=7), arrival_times(50, 2.0, seed=8))


def test_uniform_arrivals_are_evenly_spaced() -> None:
    times = arrival_times(100, 1.0, kind="uniform")
    assert len(times) == 100 and times[0] == 0
    np.testing.assert_allclose(np.diff(times), 0.01)
    np.testing.assert_allclose(arrival_times(10, 0.3, kind="uniform"), [0.0, 0.1, 0.2])


@pytest.mark.parametrize(
    ("rate", "duration", "kind", "match"),
    [
        (0, 1.0, "poisson", "rate must be a positive"),
        (-5, 1.0, "uniform", "rate must be a positive"),
        (float("nan"), 1.0, "poisson", "rate must be a positive"),
        (10, 0.0, "poisson", "duration_s must be a positive"),
        (10, 1.0, "gamma", "unknown arrival kind 'gamma': use one of poisson, uniform"),
    ],
)
def test_arrival_times_refuses_bad_arguments(
    rate: float, duration: float, kind: Any, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        arrival_times(rate, duration, kind=kind)


# --- traces ----------------------------------------------------------------------------------


def test_read_trace_reads_lines_and_rebases(tmp_path: Path) -> None:
    path = tmp_path / "trace.txt"
    path.write_text("10.5\n10.75\n\n11.0\n12\n")
    np.testing.assert_allclose(read_trace(path), [0.0, 0.25, 0.5, 1.5])


def test_read_trace_reads_a_csv_with_a_header(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("timestamp,user\n3.0,a\n3.5,b\n3.5,c\n")
    np.testing.assert_allclose(read_trace(path), [0.0, 0.5, 0.5])


def test_read_trace_reads_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "flat.npy", np.array([2.0, 2.5, 4.0]))
    np.testing.assert_allclose(read_trace(tmp_path / "flat.npy"), [0.0, 0.5, 2.0])
    np.save(tmp_path / "table.npy", np.array([[1.0, 9.0], [1.2, 8.0]]))
    np.testing.assert_allclose(read_trace(tmp_path / "table.npy"), [0.0, 0.2])


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.csv", "", "holds no arrival times"),
        ("header.csv", "seconds\n", "holds no arrival times"),
        ("unsorted.csv", "0\n2\n1\n", "arrival 3 .* comes before arrival 2 .* sort the times"),
        ("negative.csv", "-1\n0\n", "arrival 1 is negative"),
        ("nan.csv", "0\nnan\n", "arrival 2 is nan; every arrival time must be a finite"),
        ("bad.csv", "t\n0\nsoon\n", "line 3: 'soon' is not a number of seconds"),
        ("binary.csv", b"\xff\xfe\x00\x81", "is not text"),
        ("garbage.npy", b"not an array at all", "is not a readable array"),
        ("empty.npy", np.array([]), "holds no arrival times"),
        ("unsorted.npy", np.array([3.0, 1.0]), "comes before"),
    ],
)
def test_read_trace_refuses_a_bad_trace(
    tmp_path: Path, name: str, content: str | bytes | np.ndarray, match: str
) -> None:
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ValueError, match=match) as caught:
        read_trace(path)
    assert name in str(caught.value) and "\n" not in str(caught.value)


def test_read_trace_refuses_an_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read the trace .*missing\.csv"):
        read_trace(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="cannot read the trace"):
        read_trace(tmp_path)  # a directory


# --- batching --------------------------------------------------------------------------------


def test_join_and_split_round_trip() -> None:
    requests: list[dict[str, np.ndarray]] = [
        {"a": np.full((rows, 2), rows, np.float32), "b": np.full((3, rows), rows, np.int64)}
        for rows in (1, 2, 3)
    ]
    axes = {"b": 1}
    joined = join_requests(requests, axes)
    assert joined["a"].shape == (6, 2) and joined["b"].shape == (3, 6)
    assert [request_rows(r, axes) for r in requests] == [1, 2, 3]
    shared = np.arange(4)  # not per row: every request gets it whole
    answers = split_rows([joined["a"], joined["b"].T, shared, list(range(6))], [1, 2, 3])
    for request, (a, b, whole, listed) in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(a, request["a"])
        np.testing.assert_array_equal(b, request["b"].T)
        assert whole is shared and len(listed) == len(request["a"])


def test_a_request_without_one_row_count_has_none() -> None:
    assert request_rows({"a": np.zeros((2, 3)), "b": np.zeros((3, 3))}) is None
    assert request_rows({"scalar": np.array(16000)}) is None
    assert shape_key(x(2)) != shape_key(x(3))
    assert shape_key(x(2)) != shape_key({"X": np.zeros((2, 16), np.float64)})


def test_batched_answers_equal_unbatched_ones(session: ort.InferenceSession) -> None:
    run = runner(session)
    requests = [x(rows, seed) for seed, rows in enumerate((1, 3, 2, 1))]
    batched = split_rows(run(join_requests(requests)), [1, 3, 2, 1])
    for request, answer in zip(requests, batched, strict=True):
        np.testing.assert_allclose(answer[0], run(request)[0], rtol=1e-5, atol=1e-6)


# --- serving ---------------------------------------------------------------------------------


def test_a_real_session_answers_every_request(session: ort.InferenceSession) -> None:
    arrivals = arrival_times(200, 0.5, seed=3)
    window = serve_open_loop(
        [runner(session)],
        [x(2, seed) for seed in range(5)],
        arrivals,
        server_threads=2,
        duration_s=0.5,
        drain_s=10.0,  # ends as soon as everything is answered
    )
    check_counts(window)
    assert window.sent == len(arrivals) and window.duration_s == 0.5
    assert window.completed == window.sent and window.unfinished == 0
    assert set(window.batch_sizes) == {1}
    assert window.samples == 2 * window.completed
    assert window.meets(max_latency_ms=10_000)


def test_batches_never_mix_shapes(session: ort.InferenceSession) -> None:
    """Requests of one shape are all ones, of the other all twos: a batch holds one value."""
    seen: list[np.ndarray] = []
    run = runner(session)

    def record(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        seen.append(feeds["X"].copy())
        hold(0.01)  # slower than the arrivals: a queue forms, so batches do
        return run(feeds)

    ones = {"X": np.ones((1, 16), np.float32)}
    twos = {"X": np.full((3, 16), 2.0, np.float32)}
    window = serve_open_loop(
        [record],
        [ones, twos],
        arrival_times(200, 0.4, kind="uniform"),
        server_threads=1,
        max_batch=4,
        max_queue_delay_s=0.005,
        duration_s=0.4,
        drain_s=10.0,
    )
    check_counts(window)
    assert window.completed == window.sent
    assert max(window.batch_sizes) > 1
    for batch in seen:
        value = batch[0, 0]
        assert (batch == value).all(), "a batch mixed shapes"
        per_request = 1 if value == 1 else 3
        assert batch.shape[0] % per_request == 0 and batch.shape[0] // per_request <= 4
    assert window.samples == sum(b.shape[0] for b in seen)


def test_a_slow_server_builds_a_queue() -> None:
    """One server of at least 20 ms a request against 100 requests/s: at most 50 answered/s."""
    service_s = 0.02
    window = serve_open_loop(
        [slow(service_s)],
        [x(1)],
        arrival_times(100, 1.0, kind="uniform"),
        server_threads=1,
        duration_s=1.0,
        drain_s=0.1,
    )
    check_counts(window)
    assert window.sent == 100
    assert window.completed <= window.wall_s / service_s
    assert window.achieved_rate <= 1 / service_s < window.offered_rate
    assert window.unfinished > 1 and not window.meets(max_latency_ms=1e9)
    # Request i (answered in order) waited for i + 1 services, arriving i * 10 ms in.
    latencies = np.asarray(window.latencies_s)
    floor = service_s + 0.01 * np.arange(window.completed)
    assert (latencies >= floor - 1e-9).all()
    assert window.quantile_ms(1.0) >= 1e3 * floor[-1] - 1e-6
    assert window.queue_depth_max > 1
    assert set(window.batch_sizes) == {1}


def test_latency_counts_from_the_schedule_in_a_burst() -> None:
    """Ten requests due at once on one server: the i-th waits for i + 1 services."""
    window = serve_open_loop(
        [slow(0.01)],
        [x(1)],
        np.zeros(10),
        server_threads=1,
        duration_s=0.05,
        drain_s=10.0,
    )
    check_counts(window)
    assert window.completed == 10
    floor = 0.01 * np.arange(1, 11)
    assert (np.asarray(window.latencies_s) >= floor - 1e-9).all()


def test_a_failing_session_ends_the_window_with_its_error() -> None:
    calls = []

    def flaky(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("session broke")
        return [feeds["X"]]

    with pytest.raises(RuntimeError, match="session broke"):
        serve_open_loop(
            [flaky], [x(1)], arrival_times(100, 0.2, kind="uniform"), server_threads=2, drain_s=30
        )


def test_a_hung_session_leaves_its_requests_unfinished(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openloop, "JOIN_S", 0.2)
    release = threading.Event()

    def hung(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        release.wait(30)
        return [feeds["X"]]

    try:
        window = serve_open_loop([hung], [x(1)], [0.0, 0.01, 0.02], server_threads=1, drain_s=0.05)
    finally:
        release.set()
    check_counts(window)
    assert (window.completed, window.unfinished) == (0, 3)
    assert window.batch_sizes == () and np.isnan(window.quantile_ms(0.99))
    assert not window.meets(max_latency_ms=1e9)


@pytest.mark.parametrize(
    ("arrivals", "options", "match"),
    [
        ([], {}, "arrivals must be a non-empty 1-D sequence"),
        ([0.0, 0.2, 0.1], {}, "arrival 3 .* comes before arrival 2"),
        ([-0.1, 0.1], {}, "arrival 1 is negative"),
        ([0.0, 0.0], {}, "pass duration_s"),
        ([0.0, 0.5], {"duration_s": 0.4}, r"at least the last arrival \(0.5 s\)"),
        ([0.0, 0.1], {"server_threads": 0}, "server_threads must be at least 1"),
        ([0.0, 0.1], {"max_batch": 0}, "max_batch must be at least 1"),
        ([0.0, 0.1], {"max_queue_delay_s": -1.0}, "max_queue_delay_s must be a number"),
        ([0.0, 0.1], {"drain_s": float("inf")}, "drain_s must be a number"),
    ],
)
def test_serve_refuses_bad_arguments(arrivals: list[float], options: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        serve_open_loop([slow(0.0)], [x(1)], arrivals, **{"server_threads": 1, **options})


def test_serve_refuses_to_batch_a_request_without_rows() -> None:
    feeds = {"X": np.zeros((1, 16), np.float32), "sr": np.array(16000)}
    with pytest.raises(ValueError, match="request 0 cannot be batched.*max_batch=1"):
        serve_open_loop([slow(0.0)], [feeds], [0.0, 0.1], server_threads=1, max_batch=2)
    with pytest.raises(ValueError, match="sessions is empty"):
        serve_open_loop([], [feeds], [0.0, 0.1], server_threads=1)


# --- the SLO ---------------------------------------------------------------------------------


def figures(latencies_ms: list[float], sent: int) -> OpenLoopWindow:
    completed = len(latencies_ms)
    return OpenLoopWindow(
        offered_rate=float(sent),
        achieved_rate=float(completed),
        latencies_s=tuple(ms / 1e3 for ms in latencies_ms),
        sent=sent,
        completed=completed,
        unfinished=sent - completed,
        duration_s=1.0,
        wall_s=1.0,
        queue_depth_max=0,
        queue_depth_mean=0.0,
        batch_sizes=(1,) * completed,
        samples=completed,
        cpu_cores=1.0,
        late_dispatch_s=0.0,
    )


def test_meets_counts_slow_and_unfinished_requests_as_misses() -> None:
    one_slow = figures([10.0] * 99 + [500.0], sent=100)
    assert one_slow.meets(50) and not one_slow.meets(50, quantile=0.999)
    assert one_slow.meets(500, quantile=1.0)
    one_lost = figures([10.0] * 99, sent=100)
    assert one_lost.completed_fraction == 0.99 and one_lost.meets(50) and not one_lost.meets(5)
    assert not one_lost.meets(50, quantile=1.0)
    assert not figures([10.0] * 98, sent=100).meets(1e9)  # answered under 99 %
    assert figures([1.0] * 990, sent=1000).meets(2)
    assert not figures([1.0] * 989, sent=1000).meets(2)
    assert not figures([1.0] * 90, sent=100).meets(2, quantile=0.5)  # min_completed holds too
    assert figures([1.0] * 90, sent=100).meets(2, quantile=0.5, min_completed=0.9)
    with pytest.raises(ValueError, match="quantile must be in"):
        one_slow.meets(50, quantile=99)


def test_quantile_ms_is_over_the_answered_requests() -> None:
    window = figures([float(ms) for ms in range(1, 101)], sent=200)
    assert window.quantile_ms(0.5) == pytest.approx(50.5)
    assert window.quantile_ms(1.0) == pytest.approx(100.0)
    assert window.completed_fraction == 0.5

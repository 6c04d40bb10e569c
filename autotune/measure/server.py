"""A long-lived server for a deployment: the tuned server threads and batcher, request by request.

:meth:`autotune.measure.session.SessionPool.submit` hands each request to :class:`Server`, which
serves it as the tuning measured it (:mod:`autotune.measure.openloop`): ``server_threads``
threads take requests off the queue and run them on session ``i % sessions``; with
``max_batch`` above 1 a free thread takes the oldest waiting request and waits until it has
been queued ``max_queue_delay_ms`` for more of the same shape, up to ``max_batch``, runs them as
one batch and answers each request's future with its own rows.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from autotune.measure.openloop import (
    WaitingRequests,
    join_requests,
    request_rows,
    shape_key,
    split_rows,
)

Run = Callable[[Mapping[str, Any]], Sequence[Any]]


class Server:
    """Server threads with Triton's dynamic batcher over a set of sessions' run functions."""

    def __init__(
        self, runs: Sequence[Run], *, server_threads: int, max_batch: int, delay_s: float
    ) -> None:
        self.max_batch, self.delay_s = max_batch, delay_s if max_batch > 1 else 0.0
        self._waiting = WaitingRequests()
        self._items: dict[int, tuple[Mapping[str, Any], Future[list[Any]]]] = {}
        self._keys: dict[Any, int] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._serve, args=(runs[i % len(runs)],), name=f"server-{i}", daemon=True
            )
            for i in range(server_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, feeds: Mapping[str, Any]) -> Future[list[Any]]:
        """Queue one request; its future holds the outputs (its own rows of a batch)."""
        future: Future[list[Any]] = Future()
        with self._lock:
            if self._waiting.closed:
                raise RuntimeError("this server is closed: load the pool again")
            index = next(self._ids)
            key = self._keys.setdefault(shape_key(feeds), len(self._keys))
            self._items[index] = (feeds, future)
        self._waiting.put(index, key)
        return future

    def _take(self, indices: Sequence[int]) -> list[tuple[Mapping[str, Any], Future[list[Any]]]]:
        with self._lock:
            return [self._items.pop(i) for i in indices]

    def _serve(self, run: Run) -> None:
        while (batch := self._waiting.take(self.max_batch, self.delay_s)) is not None:
            items = self._take(batch)
            try:
                outputs = list(run(join_requests([feeds for feeds, _ in items])))
                rows = [request_rows(feeds) or 1 for feeds, _ in items]
                answers = [outputs] if len(items) == 1 else split_rows(outputs, rows)
            except BaseException as exc:  # onnxruntime's own exception classes included
                for _, future in items:
                    future.set_exception(exc)
                continue
            for (_, future), answer in zip(items, answers, strict=True):
                future.set_result(list(answer))

    def close(self) -> None:
        """Stop taking requests; the ones still queued fail with a clear error."""
        with self._lock:
            self._waiting.close()
            left = list(self._items.values())
            self._items.clear()
        for _, future in left:
            future.set_exception(RuntimeError("the server closed before serving this request"))
        for thread in self._threads:
            thread.join(timeout=5.0)

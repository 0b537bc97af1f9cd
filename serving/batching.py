"""Dynamic batching: concurrent requests for one signature merged into one model call.

Like TF Serving's BasicBatchScheduler: a request joins the open batch; a batch thread runs it
when it holds `max_batch_size` rows or `batch_timeout_micros` passed since its first request
(timeout 0: run whatever is queued as soon as a thread is free, which batches by itself under
load; and a request that finds the queue empty and a slot free runs at once in its own thread,
so batching costs no thread hand-off at low load). Rows are concatenated on dimension 0 and the
outputs split back. If a merged batch fails
(one undecodable image), each request is retried alone so only the bad one fails.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np
from tlpipe.serving.config import BatchingOptions
from tlpipe.serving.status import unavailable

Arrays = dict[str, np.ndarray]
# Rows per model call kept for tests and the benchmark: the latest calls only, so a
# long-running server's memory does not grow by one entry per call.
RECENT_BATCHES = 1024


class _Task:
    __slots__ = ("inputs", "rows", "future", "enqueued")

    def __init__(self, inputs: Arrays):
        self.inputs = inputs
        self.rows = int(next(iter(inputs.values())).shape[0])
        self.future: Future = Future()
        self.enqueued = time.monotonic()


class BatchScheduler:
    """Merges calls to `run` (inputs with a leading batch dimension -> outputs likewise)."""

    def __init__(self, run: Callable[[Arrays], Arrays], options: BatchingOptions, name: str):
        self._run = run
        self._options = options
        self._queue: deque[_Task] = deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self._running = 0  # model calls in progress, at most num_batch_threads
        self._recent_batches: deque[int] = deque(maxlen=RECENT_BATCHES)
        self._recent_lock = threading.Lock()  # copying a deque while it is appended to fails
        self._threads = [threading.Thread(target=self._loop, name=f"batch-{name}-{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    @property
    def batch_sizes(self) -> list[int]:
        """Rows per model call, oldest first, of the latest RECENT_BATCHES calls."""
        with self._recent_lock:
            return list(self._recent_batches)

    def _record(self, rows: int) -> None:
        with self._recent_lock:
            self._recent_batches.append(rows)

    def __call__(self, inputs: Arrays) -> Arrays:
        leading = {a.shape[0] if a.ndim else None for a in inputs.values()}
        if len(leading) != 1 or None in leading:
            return self._run(inputs)  # no common batch dimension (no inputs, a scalar): alone
        task = _Task(inputs)
        if task.rows >= self._options.max_batch_size:
            return self._run(inputs)  # already a full batch: nothing to merge it with
        limit = self._options.max_batch_size * self._options.max_enqueued_batches
        with self._cond:
            if self._closed:
                raise unavailable("the model is unloading")
            if self._queued_rows + task.rows > limit:
                raise unavailable("The batch scheduling queue is full")
            inline = (self._options.batch_timeout_micros == 0 and not self._queue
                      and self._running < self._options.num_batch_threads)
            if inline:
                self._running += 1
            else:
                self._queue.append(task)
                self._queued_rows += task.rows
                self._cond.notify()
        if not inline:
            return task.future.result()
        try:
            outputs = self._run(inputs)
            self._record(task.rows)
            return outputs
        finally:
            self._finished()

    def _finished(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Runs what is queued, then stops the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _take_batch(self) -> list[_Task]:
        timeout = self._options.batch_timeout_micros / 1e6
        with self._cond:
            while not self._closed and (
                    not self._queue or self._running >= self._options.num_batch_threads):
                self._cond.wait()
            if not self._queue:
                return []
            self._running += 1
            if timeout > 0:
                deadline = self._queue[0].enqueued + timeout
                while (self._queued_rows < self._options.max_batch_size and not self._closed
                       and (left := deadline - time.monotonic()) > 0):
                    self._cond.wait(left)
            batch, rows = [], 0
            while self._queue and rows + self._queue[0].rows <= self._options.max_batch_size:
                task = self._queue.popleft()
                batch.append(task)
                rows += task.rows
            self._queued_rows -= rows
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            try:
                self._execute(batch)
            finally:
                self._finished()

    def _execute(self, batch: list[_Task]) -> None:
        if len(batch) > 1 and _mergeable(batch):
            try:
                merged = {key: np.concatenate([t.inputs[key] for t in batch])
                          for key in batch[0].inputs}
                outputs = self._run(merged)
                total = sum(t.rows for t in batch)
                batched = all(v.ndim > 0 and v.shape[0] == total for v in outputs.values())
            except Exception:  # retry one by one so a bad row fails only its own request
                batched = False
            if batched:
                self._record(total)
                start = 0
                for task in batch:
                    task.future.set_result({k: v[start:start + task.rows]
                                            for k, v in outputs.items()})
                    start += task.rows
                return
        for task in batch:
            try:
                task.future.set_result(self._run(task.inputs))
                self._record(task.rows)
            except Exception as err:
                task.future.set_exception(err)


def _mergeable(batch: list[_Task]) -> bool:
    first = batch[0].inputs
    return all(t.inputs.keys() == first.keys()
               and all(t.inputs[k].shape[1:] == first[k].shape[1:]
                       and t.inputs[k].dtype == first[k].dtype for k in first)
               for t in batch[1:])

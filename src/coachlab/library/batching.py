"""Micro-batching: the texts of concurrent requests embedded together, in worker threads.

A forward pass over 16 queries costs less than 16 passes over one (the matrix products run at a
better rate and numpy's per-call overhead is paid once), and 64 concurrent requests each sending
its own query to a thread pool would run 64 passes that fight for the same cores. `MicroBatcher`
keeps a queue instead: a worker takes every request waiting (up to `max_texts` texts), runs one
call of `fn` over their texts (each distinct text once), and hands each request its rows. With
one request at a time nothing waits: a free worker takes it at once. Workers are started on
demand, at most `workers`, and stop after `idle_s` seconds without work.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

__all__ = ["MicroBatcher"]


@dataclass
class _Job:
    texts: list[str]
    future: Future[NDArray[np.float32]] = field(default_factory=lambda: Future[NDArray[np.float32]]())


class MicroBatcher:
    """Runs `fn` over the texts of the requests waiting together, in up to `workers` threads.

    Args:
        fn: Texts to vectors, one row per text, in order (e.g. `BertEmbedder.embed`).
        workers: Threads at most (one per core suits a CPU-bound `fn` that releases the GIL).
        max_texts: Texts per call of `fn`, at most (a request with more is still run whole).
        idle_s: A worker with nothing to do for this long stops (a new request starts one again).
        name: The worker threads' name prefix.
    """

    def __init__(
        self,
        fn: Callable[[Sequence[str]], NDArray[np.float32]],
        *,
        workers: int,
        max_texts: int,
        idle_s: float = 30.0,
        name: str = "coachlab-batch",
    ) -> None:
        if workers < 1 or max_texts < 1:
            raise ValueError("MicroBatcher needs at least one worker and one text per call")
        self.fn = fn
        self.workers = workers
        self.max_texts = max_texts
        self.idle_s = idle_s
        self.name = name
        self.calls = 0
        """Calls of `fn` so far (requests served together count once)."""
        self._jobs: deque[_Job] = deque()
        self._lock = threading.Condition()
        self._running = 0
        self._waiting = 0  # workers blocked in wait()

    def submit(self, texts: Sequence[str]) -> Future[NDArray[np.float32]]:
        """Queue `texts`; the future gets their rows of `fn`'s output (or its exception)."""
        job = _Job(list(texts))
        with self._lock:
            self._jobs.append(job)
            if self._waiting:
                self._lock.notify()
            elif self._running < self.workers:
                self._running += 1
                threading.Thread(target=self._work, name=f"{self.name}-{self._running}", daemon=True).start()
        return job.future

    async def run(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """`submit`, awaited without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(texts))

    def _take(self) -> list[_Job] | None:
        """The jobs for one call (None: idle too long, the worker stops)."""
        with self._lock:
            while not self._jobs:
                self._waiting += 1
                woken = self._lock.wait(timeout=self.idle_s)
                self._waiting -= 1
                if not woken and not self._jobs:
                    self._running -= 1
                    return None
            jobs = [self._jobs.popleft()]
            count = len(jobs[0].texts)
            while self._jobs and count + len(self._jobs[0].texts) <= self.max_texts:
                jobs.append(self._jobs.popleft())
                count += len(jobs[-1].texts)
            return jobs

    def _work(self) -> None:
        while (jobs := self._take()) is not None:
            jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            unique = list(dict.fromkeys(text for job in jobs for text in job.texts))
            try:
                vectors = self.fn(unique)
            except Exception as exc:  # each caller gets the error of its call
                for job in jobs:
                    job.future.set_exception(exc)
                continue
            self.calls += 1
            row = {text: i for i, text in enumerate(unique)}
            for job in jobs:
                job.future.set_result(vectors[[row[text] for text in job.texts]])

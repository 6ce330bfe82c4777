"""Micro-batching: concurrent requests share one call of the embedding function, and each gets its own rows."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from coachlab.library.batching import MicroBatcher


class Gate:
    """An embedding function that holds its first call until released, and records every call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls.append(list(texts))
        self.entered.set()
        assert self.release.wait(5), "the test never released the first call"
        if "boom" in texts:
            raise ValueError("the model failed")
        return np.array([[float(len(t)), float(ord(t[0]))] for t in texts], dtype=np.float32)


def test_requests_waiting_while_a_pass_runs_share_the_next_pass_and_get_their_own_rows() -> None:
    gate = Gate()
    batcher = MicroBatcher(gate, workers=1, max_texts=8)
    first = batcher.submit(["a"])
    assert gate.entered.wait(5)
    waiting = [batcher.submit([t]) for t in ("bb", "ccc", "bb")] + [batcher.submit(["dddd", "a"])]
    gate.release.set()
    assert first.result(5).tolist() == [[1.0, 97.0]]
    assert [f.result(5).tolist() for f in waiting] == [
        [[2.0, 98.0]],
        [[3.0, 99.0]],
        [[2.0, 98.0]],
        [[4.0, 100.0], [1.0, 97.0]],
    ]
    assert gate.calls == [["a"], ["bb", "ccc", "dddd", "a"]], "one pass for all that waited, each text once"
    assert batcher.calls == 2


def test_a_pass_takes_at_most_max_texts_but_never_splits_a_request() -> None:
    gate = Gate()
    batcher = MicroBatcher(gate, workers=1, max_texts=3)
    batcher.submit(["a"])
    assert gate.entered.wait(5)
    futures = [batcher.submit(["bb", "cc"]), batcher.submit(["dd"]), batcher.submit(["ee", "ff", "gg", "hh"])]
    gate.release.set()
    for future in futures:
        future.result(5)
    assert gate.calls[1:] == [["bb", "cc", "dd"], ["ee", "ff", "gg", "hh"]]


def test_an_error_reaches_every_request_of_the_pass_and_the_worker_goes_on() -> None:
    gate = Gate()
    batcher = MicroBatcher(gate, workers=1, max_texts=8)
    batcher.submit(["a"])
    assert gate.entered.wait(5)
    failed = [batcher.submit(["boom"]), batcher.submit(["x"])]
    gate.release.set()
    for future in failed:
        with pytest.raises(ValueError, match="the model failed"):
            future.result(5)
    assert batcher.submit(["ok"]).result(5).shape == (1, 2)


def test_a_cancelled_request_is_not_computed() -> None:
    gate = Gate()
    batcher = MicroBatcher(gate, workers=1, max_texts=8)
    batcher.submit(["a"])
    assert gate.entered.wait(5)
    dropped, kept = batcher.submit(["dropped"]), batcher.submit(["kept"])
    assert dropped.cancel()
    gate.release.set()
    assert kept.result(5).shape == (1, 2)
    assert ["dropped"] not in gate.calls and all("dropped" not in call for call in gate.calls)


def test_concurrent_awaits_run_on_up_to_workers_threads_that_stop_when_idle() -> None:
    active, most = 0, 0
    lock = threading.Lock()

    def slow(texts: Sequence[str]) -> NDArray[np.float32]:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return np.ones((len(texts), 1), dtype=np.float32)

    batcher = MicroBatcher(slow, workers=2, max_texts=1, idle_s=0.2, name="test-batch")

    async def main() -> list[NDArray[np.float32]]:
        return await asyncio.gather(*(batcher.run([str(i)]) for i in range(6)))

    assert [r.tolist() for r in asyncio.run(main())] == [[[1.0]]] * 6
    assert most == 2, "one thread per worker, never more"
    deadline = time.monotonic() + 5
    while any(t.name.startswith("test-batch") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name.startswith("test-batch") for t in threading.enumerate()), "idle workers stop"
    assert batcher.submit(["again"]).result(5).tolist() == [[1.0]], "a new request starts a worker again"


def test_a_batcher_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        MicroBatcher(lambda texts: np.zeros((len(texts), 1), dtype=np.float32), workers=0, max_texts=4)

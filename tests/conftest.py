"""Test fixtures: no test may reach a real network model."""

from __future__ import annotations

import gc
import socket
from collections.abc import Iterator
from typing import Any

import pytest

_LOOPBACK = ("127.", "::1", "localhost")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly on any connection that leaves this machine (loopback stub servers are fine)."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else str(address)
        if isinstance(host, str) and (host.startswith(_LOOPBACK) or self.family == socket.AF_UNIX):
            return real_connect(self, address)
        raise RuntimeError(f"test tried to reach the network ({address!r}); use a scripted model client")

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test, so an unclosed socket or file fails the test that leaked it, not a later one."""
    yield
    gc.collect()


@pytest.fixture(autouse=True)
def _no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain CLI output, so tests can read it."""
    monkeypatch.setenv("NO_COLOR", "1")


def require_embedded(name: str) -> None:
    """Skip when the embedded model is not fetched, unless CI demands it (COACHLAB_REQUIRE_EMBEDDED=1)."""
    import os

    from coachlab.llm.weights import is_fetched

    if not is_fetched(name):
        if os.environ.get("COACHLAB_REQUIRE_EMBEDDED") == "1":
            pytest.fail(f"embedded model {name} is required here: run `coachlab models fetch {name}`")
        pytest.skip(f"run `coachlab models fetch {name}` to run the embedded tests")

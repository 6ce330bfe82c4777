"""The per-call timeout follows the backend unless the model entry sets one."""

from __future__ import annotations

from pathlib import Path

import pytest

from coachlab.experiments.config import load_experiment
from coachlab.experiments.simulate import build_backends
from coachlab.llm import ModelEntry, RetryPolicy
from coachlab.llm.components import (
    LOCAL_SERVER_TIMEOUT_S,
    OPENAI_TIMEOUT_S,
    build_chat_client,
    default_timeout,
    is_local_url,
)
from coachlab.retry import DEFAULT_TIMEOUT_S
from coachlab.testing import dry_run_clients

ROOT = Path(__file__).resolve().parents[2]
MODEL_INFO = {
    "vision": False,
    "function_calling": False,
    "json_output": True,
    "structured_output": True,
    "family": "unknown",
}


def openai(base_url: str | None = None, **entry: object) -> ModelEntry:
    config: dict[str, object] = {"model": "m", "api_key": "not-needed", "model_info": MODEL_INFO}
    if base_url is not None:
        config["base_url"] = base_url
    return ModelEntry.model_validate({"provider": "openai", "config": config, **entry})


def test_the_default_timeout_follows_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    embedded = ModelEntry(provider="embedded", config={"model": "qwen2.5-coder-0.5b"})
    assert default_timeout(embedded) is None  # an in-process call cannot be cut short
    assert default_timeout(openai("http://127.0.0.1:8080/v1")) == LOCAL_SERVER_TIMEOUT_S
    assert default_timeout(openai("http://localhost:11434/v1")) == LOCAL_SERVER_TIMEOUT_S
    assert default_timeout(openai("http://[::1]:8000/v1")) == LOCAL_SERVER_TIMEOUT_S
    assert default_timeout(openai()) == OPENAI_TIMEOUT_S
    assert default_timeout(openai("https://api.openai.com/v1")) == OPENAI_TIMEOUT_S
    assert default_timeout(openai("https://vllm.example.org/v1")) == DEFAULT_TIMEOUT_S
    assert LOCAL_SERVER_TIMEOUT_S > OPENAI_TIMEOUT_S > DEFAULT_TIMEOUT_S

    server = openai("${SERVER_URL:-http://127.0.0.1:8000/v1}")  # as experiments/local-server.yaml writes it
    monkeypatch.delenv("SERVER_URL", raising=False)
    assert default_timeout(server) == LOCAL_SERVER_TIMEOUT_S
    monkeypatch.setenv("SERVER_URL", "https://gpu-box.example.org/v1")
    assert default_timeout(server) == DEFAULT_TIMEOUT_S


def test_is_local_url() -> None:
    assert (
        is_local_url("http://127.0.0.2:1/v1")
        and is_local_url("http://0.0.0.0:8000")
        and is_local_url("http://a.localhost")
    )
    assert not is_local_url("https://api.openai.com/v1") and not is_local_url("not a url") and not is_local_url("")


def test_a_timeout_set_in_the_entry_wins_even_when_it_is_null() -> None:
    local = "http://127.0.0.1:8080/v1"
    assert openai(local, retry={"timeout_s": 30}).call_timeout_s == 30
    assert openai(local, retry={"timeout_s": None}).call_timeout_s is None
    assert openai(local, retry={"max_retries": 1}).call_timeout_s == LOCAL_SERVER_TIMEOUT_S  # other retry fields only
    entry = ModelEntry(provider="embedded", config={"model": "qwen2.5-coder-0.5b"}, retry=RetryPolicy(timeout_s=5))
    assert entry.call_timeout_s == 5


def test_backends_and_the_openai_sdk_get_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVER_URL", raising=False)
    quickstart = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    names = ["student", "judge"]
    assert {b.retry.timeout_s for b in build_backends(quickstart, names, clients=dry_run_clients(names)).values()} == {
        None
    }
    server = load_experiment(ROOT / "experiments" / "local-server.yaml")
    backends = build_backends(server, ["student", "customer", "judge"])
    assert {b.retry.timeout_s for b in backends.values()} == {LOCAL_SERVER_TIMEOUT_S}
    # The openai SDK's own timeout (600 s by default) must not cut a queued call short either.
    sdk = build_chat_client(openai("http://127.0.0.1:8080/v1"), where="t").dump_component().config
    assert sdk["timeout"] == LOCAL_SERVER_TIMEOUT_S and sdk["max_retries"] == 0
    assert build_chat_client(openai(), where="t").dump_component().config["timeout"] == OPENAI_TIMEOUT_S
    entry = openai("http://127.0.0.1:8080/v1")
    pinned = entry.model_copy(update={"config": {**entry.config, "timeout": 7}})  # the entry's SDK setting wins
    assert build_chat_client(pinned, where="t").dump_component().config["timeout"] == 7

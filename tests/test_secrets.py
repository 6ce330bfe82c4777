"""Secrets: an API key read from the environment never reaches results, cache, logs, output or errors.

The runs below use real code paths: `coachlab simulate`, `train` and `evaluate` (typer's runner),
OpenAI model entries (`api_key: "${COACHLAB_TEST_SENTINEL_KEY}"`) at the loopback OpenAI stub, logging
captured at DEBUG. Then every file under the run folder (episodes, transcripts, tree, library,
results, the SQLite cache and its WAL), stdout, stderr, every log record and every exception is
searched for the sentinel key and for its distinctive pieces (its last 8 characters, its random
middle). Two of the runs use a backend that fails the way real ones do: a 401 whose body repeats
the key, and a 500 whose body echoes the Authorization header.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from autogen_core.models import LLMMessage, UserMessage

from coachlab.cli import main
from coachlab.errors import ConfigError
from coachlab.llm import Backend, BackendError, ModelEntry, RoleClient, build_chat_client
from coachlab.llm.cache import ResponseCache
from coachlab.redact import (
    MASK,
    RedactingFilter,
    install_log_filter,
    known_secrets,
    redact,
    referenced_secrets,
    register_secret,
)
from coachlab.testing import ScriptedChatCompletionClient
from coachlab.testing.openai_stub import (
    STUB_MODEL_INFO,
    HttpError,
    OpenAIStub,
    StubRequest,
    default_reply,
    request_text,
)

ROOT = Path(__file__).resolve().parents[1]
ENV = "COACHLAB_TEST_SENTINEL_KEY"
SENTINEL = "sk-SENTINEL-7f3c9a1e5b2d4c6e8a0b-QZXW4471"
PIECES = (SENTINEL, SENTINEL[-8:], SENTINEL[12:32], SENTINEL[20:28])
"""The key and distinctive substrings of it: none may appear anywhere."""


@pytest.fixture
def sentinel(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ENV, SENTINEL)
    return SENTINEL


@pytest.fixture(autouse=True)
def _no_leftover_filters() -> Iterator[None]:
    """Tests that install the redacting filter take it off again (the root logger is shared)."""
    yield
    root = logging.getLogger()
    for holder in [root, *root.handlers]:
        for f in [f for f in holder.filters if isinstance(f, RedactingFilter)]:
            holder.removeFilter(f)


def leaks(text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return [piece for piece in PIECES if piece.encode() in data]


def leaks_in_tree(root: Path) -> dict[str, list[str]]:
    """Every file under `root` (any format: JSON lines, markdown, SQLite pages) that holds a piece of the key."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            hit = leaks(path.read_bytes())
            if hit:
                found[str(path.relative_to(root))] = hit
    return found


def coachlab_log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every log record coachlab and its libraries wrote (not the stub server's own log), with tracebacks."""
    parts: list[str] = []
    for record in caplog.records:
        if record.name.startswith("coachlab.testing"):
            continue  # the test server's log of the fault it was told to inject
        parts.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            parts.append("".join(traceback.format_exception(record.exc_info[1])))
    return "\n".join(parts)


def write_experiment(tmp_path: Path, stub: OpenAIStub, *, retries: int = 4) -> Path:
    def entry(name: str) -> dict[str, Any]:
        return {
            "provider": "openai",
            "config": {
                "model": name,
                "base_url": stub.url,
                "api_key": "${" + ENV + "}",
                "model_info": dict(STUB_MODEL_INFO),
                "temperature": 0.5,
            },
            "retry": {"max_retries": retries, "initial_backoff_s": 0, "max_backoff_s": 0},
        }

    experiment = {
        "name": "secrets",
        "personas": [str(ROOT / "personas")],
        "scenarios": [str(ROOT / "scenarios" / "retail.yaml"), str(ROOT / "scenarios" / "travel.yaml")],
        "models": {name: entry(name) for name in ("student", "teacher", "customer", "judge")},
        "environment": {"max_turns": 2},
        "simulate": {"agents": ["student"], "scenarios": ["retail-late-delivery"], "trials": 2},
        "cache": {"path": str(tmp_path / "cache" / "cache.sqlite")},
        "train": {
            "scenarios": ["retail-late-delivery"],
            "trials": 2,
            "strategies_per_failure": 1,
            "children_per_failure": 1,
            "verify": {"trials": 2, "refine_rounds": 0},
            "max_nodes": 2,
            "max_depth": 1,
            "max_iterations": 1,
        },
        "evaluate": {"scenarios": ["travel-cancelled-flight"], "trials": 1},
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    return path


DRIVER = """
import logging, sys, traceback
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
from coachlab.cli import main
for command in sys.argv[1:]:
    sys.argv = ["coachlab", *command.split("|")]
    try:
        main()
    except SystemExit as stop:
        print(f"=== exit {stop.code}", flush=True)
    except BaseException:
        traceback.print_exc()  # what Python prints for an uncaught exception
        print("=== exit crash", flush=True)
"""


@dataclass(frozen=True)
class Run:
    """What the user saw: the exit of each command, stdout, stderr (logs at DEBUG included)."""

    exits: list[str]
    stdout: str
    stderr: str


def coachlab(*commands: list[str], env: dict[str, str] | None = None) -> Run:
    """Run coachlab commands in one fresh process, with the real entry point and logging at DEBUG.

    A separate process, so that the root logger's DEBUG handler and the CLI's redacting filter are
    exactly what a user gets, and nothing of them stays behind in this one.
    """
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, *("|".join(c) for c in commands)],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})},
        timeout=300,
        check=False,
    )
    exits = [line.removeprefix("=== exit ") for line in done.stdout.splitlines() if line.startswith("=== exit ")]
    return Run(exits=exits, stdout=done.stdout, stderr=done.stderr)


def run_all(experiment: Path) -> Run:
    return coachlab(["simulate", str(experiment)], ["train", str(experiment)], ["evaluate", str(experiment)])


def assert_nothing_leaked(tmp_path: Path, run: Run, caplog: pytest.LogCaptureFixture) -> None:
    assert leaks_in_tree(tmp_path) == {}
    assert leaks(run.stdout) == [] and leaks(run.stderr) == []
    assert leaks(coachlab_log_text(caplog)) == []


def test_simulate_train_and_evaluate_keep_the_key_out_of_every_output(
    tmp_path: Path, sentinel: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with OpenAIStub() as stub:  # the default reply answers judge and teacher schemas too
        experiment = write_experiment(tmp_path, stub)
        run = run_all(experiment)
        assert run.exits == ["0", "0", "0"], run.stderr[-3000:]
        assert "DEBUG" in run.stderr and "Finished in" in run.stdout
        assert {r.headers.get("authorization") for r in stub.requests} == {f"Bearer {sentinel}"}
        folder = tmp_path / "run"
        written = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert {"episodes.jsonl", "summary.json", "tree.json", "evaluation/results.json", "experiment.yaml"} <= written
        assert any(p.startswith("library/") for p in written) and any(p.startswith("transcripts/") for p in written)
        assert (tmp_path / "cache" / "cache.sqlite").exists()
        assert_nothing_leaked(tmp_path, run, caplog)
        assert "${" + ENV + "}" in (folder / "experiment.yaml").read_text()  # the reference is kept, not the value

        # Cache keys do not hold the key: with another key every answer comes from the cache.
        calls = stub.request_count
        again = coachlab(["simulate", str(experiment), "--out", str(tmp_path / "run2")], env={ENV: "sk-other-key-0000"})
        assert again.exits == ["0"], again.stderr[-3000:]
        assert stub.request_count == calls
    cache = ResponseCache(tmp_path / "cache" / "cache.sqlite")
    try:
        assert len(cache) > 0
    finally:
        cache.close()


def test_a_backend_that_repeats_the_key_in_its_401_leaks_it_nowhere(
    tmp_path: Path, sentinel: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def reject(request: StubRequest) -> HttpError:
        return HttpError(status=401, message=f"Incorrect API key provided: {os.environ[ENV]}. Find your key at ...")

    with OpenAIStub(behaviour=reject) as stub:
        run = run_all(write_experiment(tmp_path, stub))
    assert stub.request_count > 0
    assert {r.headers.get("authorization") for r in stub.requests if r.index >= 0} == {f"Bearer {sentinel}"}
    text = (tmp_path / "run" / "episodes.jsonl").read_text()
    assert "infrastructure_error" in text and "Incorrect API key provided: ***" in text, text[:2000]
    assert "Incorrect API key provided: ***" in run.stderr  # the warning the user sees, masked
    assert_nothing_leaked(tmp_path, run, caplog)


def test_a_backend_that_echoes_the_authorization_header_in_a_500_leaks_it_nowhere(
    tmp_path: Path, sentinel: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stub = OpenAIStub()

    def reply(request: dict[str, Any]) -> str:
        """The teacher always fails, the judge on the held-out flight scenario: both echo the header."""
        model = request.get("model")
        if model == "teacher" or (model == "judge" and "flight from Chicago" in request_text(request)):
            header = stub.requests[-1].headers.get("authorization")
            raise RuntimeError(f"upstream refused credentials {header}")
        return default_reply(request)

    stub.reply = reply
    with stub:
        run = run_all(write_experiment(tmp_path, stub, retries=1))
    assert stub.errors and all(sentinel in e for e in stub.errors)  # the body really carried the key
    evaluated = (tmp_path / "run" / "evaluation" / "episodes.jsonl").read_text()
    assert "judge backend failed: judge: InternalServerError" in evaluated  # a judge error, recorded
    assert "teacher: InternalServerError" in evaluated and "credentials Bearer ***" in evaluated
    assert run.exits == ["0", "0", "0"], run.stderr[-3000:]  # train goes on past the teacher's failure
    assert_nothing_leaked(tmp_path, run, caplog)


def test_a_key_written_into_the_experiment_is_refused_naming_file_line_and_the_reference_to_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with OpenAIStub() as stub:
        experiment = write_experiment(tmp_path, stub)
        data = yaml.safe_load(experiment.read_text())
        data["models"]["judge"]["config"]["api_key"] = SENTINEL  # pasted in instead of ${...}
        experiment.write_text(yaml.safe_dump(data, sort_keys=False))
        line = next(i for i, text in enumerate(experiment.read_text().splitlines(), 1) if SENTINEL in text)
        run = coachlab(["validate", str(experiment)], ["simulate", str(experiment)], ["distill", str(experiment)])
        assert stub.request_count == 0  # refused before any model was built
    assert run.exits == ["1", "2", "2"], run.stderr[-2000:]
    refusal = f"{experiment}:{line}: models.judge.config.api_key: a key is written in the file"
    assert run.stderr.count(refusal) == 3 and 'api_key: "${OPENAI_API_KEY}"' in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "run").exists()  # nothing was copied anywhere
    assert leaks(run.stdout) == [] and leaks(run.stderr) == []


def test_the_resolved_config_holds_references_and_identities_never_keys(
    tmp_path: Path, sentinel: str, caplog: pytest.LogCaptureFixture
) -> None:
    with OpenAIStub() as stub:
        experiment = write_experiment(tmp_path, stub)
        run = coachlab(["simulate", str(experiment)])
    assert run.exits == ["0"], run.stderr[-2000:]
    text = (tmp_path / "run" / "resolved.json").read_text()
    assert leaks(text) == [] and "${" + ENV + "}" in text
    record = json.loads(text)["simulate"]
    assert record["models"]["judge"]["identity"]["base_url"] == stub.url  # the endpoint, expanded
    assert "api_key" not in record["models"]["judge"]["identity"]["settings"]


# ----------------------------------------------------------------------------------------------
# The pieces


def test_redact_masks_the_key_and_its_fragments_and_nothing_else() -> None:
    secrets = [SENTINEL]
    assert redact(f"key={SENTINEL}; done", secrets) == f"key={MASK}; done"
    assert redact(f"Incorrect API key provided: sk-SENTI{'*' * 20}{SENTINEL[-8:]}", secrets) == (
        f"Incorrect API key provided: {MASK}{'*' * 20}{MASK}"
    )
    assert redact(f"{SENTINEL}{SENTINEL}", secrets) == MASK
    assert redact("nothing secret here, sk-other", secrets) == "nothing secret here, sk-other"
    assert redact("a short value like abc stays", ["abc"]) == "a short value like abc stays"
    for piece in PIECES:
        assert leaks(redact(f"x {piece} y", secrets)) == []


def test_referenced_secrets_are_the_values_behind_secret_fields_or_secret_variables() -> None:
    env = {"MY_LLM": "value-of-my-llm", "HF_TOKEN": "hf_abcdefgh123", "MODEL": "llama-3.1-8b-instruct"}
    config = {
        "model": "${MODEL}",
        "api_key": "${MY_LLM}",
        "default_headers": {"X-Other": "${HF_TOKEN}", "Authorization": "Bearer ${MY_LLM}"},
        "base_url": "${UNSET_URL:-http://localhost:8000/v1}",
    }
    assert referenced_secrets(config, env) == {"value-of-my-llm", "hf_abcdefgh123"}
    assert referenced_secrets({"api_key": "${NOT_SET}"}, env) == set()


def test_building_a_client_registers_its_key_even_under_an_unremarkable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-registered-when-built-9182736455"
    monkeypatch.setenv("COACHLAB_TEST_LLM", key)  # the name does not look secret; the field does
    assert key not in known_secrets()
    entry = ModelEntry(
        provider="openai",
        config={"model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1", "api_key": "${COACHLAB_TEST_LLM}"},
    )
    build_chat_client(entry, where="test: models.m")
    assert key in known_secrets()
    assert redact(f"error: {key}") == f"error: {MASK}"


def test_backend_errors_are_redacted_even_in_a_printed_traceback(sentinel: str) -> None:
    """A model call that fails with the key in its error: the BackendError, and its traceback, hold `***`."""
    register_secret(sentinel)

    def rejects(messages: Sequence[LLMMessage]) -> str:
        raise PermissionError(f"401 Incorrect API key provided: {sentinel}")

    backend = Backend.from_client("student", ScriptedChatCompletionClient(rejects), entry=ModelEntry(provider="x.Y"))
    with pytest.raises(BackendError) as info:
        asyncio.run(RoleClient(backend, role="agent").create([UserMessage(content="hi", source="u")]))
    error = info.value
    assert str(error) == f"student: PermissionError: 401 Incorrect API key provided: {MASK} (after 1 attempt(s))"
    assert leaks("".join(traceback.format_exception(error))) == []  # what an uncaught error would print
    assert isinstance(error.cause, PermissionError)  # kept for code that reads status codes


def test_the_log_filter_masks_messages_arguments_and_tracebacks(sentinel: str) -> None:
    logger = logging.getLogger("coachlab.test_secrets.filter")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        install_log_filter(logger)
        logger.warning("calling with key %s", sentinel)
        logger.warning(f"headers: {{'Authorization': 'Bearer {sentinel}'}}")
        try:
            raise ValueError(f"bad key {sentinel}")
        except ValueError:
            logger.exception("request failed")
        logger.warning("nothing to hide, %d calls", 3)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = stream.getvalue()
    assert leaks(text) == []
    assert "calling with key ***" in text and "Bearer ***" in text and "ValueError: bad key ***" in text
    assert "nothing to hide, 3 calls" in text


def test_a_key_in_an_entry_built_in_python_is_masked_from_then_on() -> None:
    literal = "sk-literal-in-python-5b2d4c6e8a0b7f3c"
    entry = ModelEntry(
        provider="openai", config={"model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1", "api_key": literal}
    )
    build_chat_client(entry, where="notebook: models.student")
    assert redact(f"401: bad key {literal}") == f"401: bad key {MASK}"


def test_missing_key_variable_is_named_without_any_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    entry = ModelEntry(provider="openai", config={"model": "m", "api_key": "${" + ENV + "}"})
    with pytest.raises(ConfigError, match=rf"environment variable {ENV} is not set"):
        build_chat_client(entry, where="e.yaml: models.student")


def test_the_cli_masks_keys_in_third_party_log_lines(
    sentinel: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.argv", ["coachlab", "validate", str(ROOT / "personas" / "furious-frank.yaml")])
    with pytest.raises(SystemExit):
        main()
    logging.getLogger("some.sdk").warning("sending Authorization: Bearer %s", sentinel)
    assert leaks(caplog.text) == [] and leaks(capsys.readouterr().err) == []

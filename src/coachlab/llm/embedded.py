"""`EmbeddedChatCompletionClient`: an AutoGen chat client over an in-process llama.cpp model.

The offline backend: a GGUF file (a catalog name from `coachlab.llm.weights` or a path) run
by `llama_cpp.Llama` in this process, no server. It fixes what AutoGen's own
`LlamaCppChatCompletionClient` gets wrong for role-play (see the embedded-model notes):

- sampling settings live on the client and apply to every `create`, since `AssistantAgent`
  never passes `extra_create_args`;
- `n_ctx`, `n_threads` and `n_threads_batch` are set, the model is always opened from a local
  file (never the Hugging Face hub), and `model_info` claims no function calling;
- `json_output=SomeModel` becomes a JSON-schema grammar, so a judge's output parses;
- each client owns one llama.cpp context (its KV cache), opened on first use, and serialises calls
  to it (a `Llama` is not thread-safe) while the event loop keeps running. One client per role keeps
  each role's KV-cache prefix warm, and `engine_context(name)` gives a role that shares a client
  (the checklist grader on the judge's model entry) a context of its own;
- every client on one model file shares one loaded llama.cpp model (`_ModelFiles`): the weights,
  and the copy of them llama.cpp repacks for the CPU (about 600 MB for the 1.5B), are in memory
  once, and a further context costs its KV cache and compute buffers (about 130 MB at n_ctx 4096);
- each call reports the prompt tokens llama.cpp actually processed (the prompt minus the KV prefix
  it kept from the previous call) to `coachlab.llm.metering`;
- a one-choice answer (a schema of one string property with a few allowed values, such as the
  checklist grader's `{"answer": "yes"}`) has its JSON written by the client around the one value the
  model picks: the model decodes the value only (one token for yes or no) instead of the seven
  tokens of the whole object, each a full decode step on a CPU (see `one_choice`).

In YAML::

    models:
      student: {provider: embedded, config: {model: qwen2.5-coder-1.5b, temperature: 0.7}}
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self, cast

from autogen_core import EVENT_LOGGER_NAME, CancellationToken, Component, Image
from autogen_core.logging import LLMCallEvent
from autogen_core.models import (
    AssistantMessage,
    CreateResult,
    FinishReasons,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel, ConfigDict, Field, field_validator
from typing_extensions import override

from coachlab.errors import UsageError
from coachlab.llm._base import WholeReplyClient
from coachlab.llm.metering import report_prompt_processed
from coachlab.llm.weights import catalog, is_model_reference, resolve_model_file

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

__all__ = [
    "CREATE_ARG_KEYS",
    "EMBEDDED_MODEL_INFO",
    "EmbeddedChatCompletionClient",
    "EmbeddedChatCompletionClientConfig",
    "llama_create_args",
    "one_choice",
    "to_llama_messages",
]

logger = logging.getLogger(__name__)
_event_logger = logging.getLogger(EVENT_LOGGER_NAME)

EMBEDDED_MODEL_INFO = ModelInfo(
    vision=False,
    function_calling=False,
    json_output=True,
    structured_output=True,
    family=ModelFamily.UNKNOWN,
)
"""What an embedded model can do: text in, text or schema-constrained JSON out; no tools."""

CREATE_ARG_KEYS = frozenset(
    {"temperature", "top_p", "top_k", "repeat_penalty", "max_tokens", "stop", "seed", "response_format"}
)
"""The `extra_create_args` keys `EmbeddedChatCompletionClient.create` accepts."""

_INSTALL_HINT = (
    "The embedded model needs llama-cpp-python: pip install 'coachlab[embedded]' "
    '(it compiles llama.cpp for this CPU, about 4 minutes; CMAKE_ARGS="-DLLAVA_BUILD=OFF" skips what '
    "coachlab does not use, and adding -DGGML_NATIVE=OFF makes a portable build)."
)
_MESSAGE_OVERHEAD_TOKENS = 4  # role markers per message when the GGUF has no chat template

# With verbose=False, llama-cpp-python silences a model load by pointing the process's stdout and
# stderr at /dev/null and back. Two loads overlapping in different threads could restore them in
# the wrong order and leave the process mute, so loads take turns. The lock also guards the shared
# models (`_ModelFiles`); it is re-entrant because a `Llama` that fails half-built releases its model.
_LOAD_LOCK = threading.RLock()


class _SharedModel:
    """One loaded llama.cpp model (llama-cpp-python's `LlamaModel`) and the contexts that use it."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.users = 0


class _ModelHandle:
    """What one `Llama` holds as its model: the shared model, released (freed with its last user) on close."""

    def __init__(self, files: _ModelFiles, key: str, shared: _SharedModel) -> None:
        self._files = files
        self._key = key
        self._shared: _SharedModel | None = shared
        shared.users += 1

    def __getattr__(self, name: str) -> Any:
        shared = self.__dict__.get("_shared")  # not self._shared: that would come back here before __init__ ran
        if shared is None:
            raise AttributeError(f"{name}: the model was released")
        return getattr(shared.model, name)

    def close(self) -> None:
        """Release the shared model; the last user frees it."""
        shared, self._shared = self._shared, None
        if shared is not None:
            self._files.release(self._key, shared)


class _ModelFiles:
    """The llama.cpp models open in this process, one per model file, each shared by every context opened on it.

    `Llama` loads its own model (weights, and the CPU's repacked copy of them) for every instance.
    `open` builds a `Llama` whose model is the one already loaded from the same file, so roles that
    run the same file (customer, teacher, judge, checklist grader) hold one copy of the weights and a
    context each. The file alone names the model: coachlab opens every file with llama.cpp's default
    model parameters. Contexts on one model take turns (`lock`): llama.cpp does not promise that two
    contexts may decode on one model at once, and on a CPU they would only share its cores.
    """

    def __init__(self) -> None:
        self._open: dict[str, _SharedModel] = {}
        self._locks: dict[str, threading.Lock] = {}

    def lock(self, path: Path) -> threading.Lock:
        """The lock that calls to any context on the model file `path` hold."""
        with _LOAD_LOCK:
            return self._locks.setdefault(str(path.resolve()), threading.Lock())

    def open(self, llama_cpp: Any, path: Path, **kwargs: Any) -> Llama:
        """A `Llama` over `path` (keyword arguments as `Llama` takes them) sharing the model loaded from that file.

        Without llama-cpp-python's model class where this version keeps it (`llama_cpp._internals.LlamaModel`),
        every `Llama` loads its own model, as `Llama` itself does.
        """
        internals = getattr(llama_cpp, "_internals", None)
        load_model = getattr(internals, "LlamaModel", None)
        with _LOAD_LOCK:
            if load_model is None:
                return cast("Llama", llama_cpp.Llama(model_path=str(path), **kwargs))
            key = str(path.resolve())

            def shared_model(*, path_model: str, params: Any, verbose: bool = True) -> _ModelHandle:
                shared = self._open.get(key)
                if shared is None:
                    shared = self._open[key] = _SharedModel(
                        load_model(path_model=path_model, params=params, verbose=verbose)
                    )
                return _ModelHandle(self, key, shared)

            internals.LlamaModel = shared_model  # pyright: ignore[reportOptionalMemberAccess]
            try:
                return cast("Llama", llama_cpp.Llama(model_path=str(path), **kwargs))
            finally:
                internals.LlamaModel = load_model  # pyright: ignore[reportOptionalMemberAccess]

    def release(self, key: str, shared: _SharedModel) -> None:
        """One context closed: free the model when it was the last on it."""
        with _LOAD_LOCK:
            shared.users -= 1
            if shared.users > 0:
                return
            if self._open.get(key) is shared:
                del self._open[key]
        shared.model.close()


_MODEL_FILES = _ModelFiles()


class EmbeddedChatCompletionClientConfig(BaseModel):
    """The config of `EmbeddedChatCompletionClient` (what YAML writes under `config:`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="A catalog name (coachlab models list) or the path of a .gguf file.")
    n_ctx: int = Field(default=4096, ge=256, description="Context window in tokens (prompt + reply).")
    n_threads: int | None = Field(default=None, ge=1, description="CPU threads for prompt and decode; null: all cores.")
    temperature: float = Field(default=0.8, ge=0.0, description="Sampling temperature (0: greedy).")
    top_p: float = Field(default=0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(default=40, ge=0, description="Sample among the k likeliest tokens (0: all).")
    repeat_penalty: float = Field(default=1.1, gt=0.0, description="Penalty on repeated tokens (1: none).")
    max_tokens: int = Field(default=256, ge=1, description="Longest reply in tokens.")
    stop: list[str] = Field(default_factory=list[str], description="Strings that end a reply.")
    seed: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Seed sent with every call (a call's `seed` create arg overrides it). null: each call takes "
            "the next seed of llama's generator, which starts from a fixed value, so a fresh client "
            "repeats its first answers."
        ),
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if is_model_reference(value):
            return value
        raise ValueError(f"{value!r} is neither an embedded model ({', '.join(catalog())}) nor a path to a .gguf file")


def to_llama_messages(messages: Sequence[LLMMessage]) -> list[dict[str, str]]:
    """AutoGen messages as llama.cpp chat messages (`role` / `content` dicts).

    Raises:
        ValueError: A message carries an image, a tool call or a tool result: the embedded
            model handles text only.
    """
    out: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        if isinstance(message, SystemMessage):
            out.append({"role": "system", "content": message.content})
        elif isinstance(message, UserMessage):
            if isinstance(message.content, str):
                text = message.content
            else:
                if any(isinstance(part, Image) for part in message.content):
                    raise ValueError(
                        f"Message {index} (from {message.source!r}) contains an image; the embedded "
                        "model reads text only."
                    )
                text = "\n".join(part for part in message.content if isinstance(part, str))
            out.append({"role": "user", "content": text})
        elif isinstance(message, AssistantMessage):
            if not isinstance(message.content, str):
                raise ValueError(
                    f"Message {index} (from {message.source!r}) is a tool call; the embedded model "
                    "has no function calling."
                )
            out.append({"role": "assistant", "content": message.content})
        else:
            raise ValueError(f"Message {index} is a tool result; the embedded model has no function calling.")
    return out


def llama_create_args(
    config: EmbeddedChatCompletionClientConfig,
    *,
    json_output: bool | type[BaseModel] | None = None,
    extra_create_args: Mapping[str, Any] = {},
) -> dict[str, Any]:
    """The keyword arguments of `Llama.create_chat_completion` for one request.

    The config's sampling settings, then the JSON response format `json_output` asks for (a
    pydantic class becomes `{"type": "json_object", "schema": ...}`, which llama.cpp turns
    into a grammar), then `extra_create_args`, which win.

    Raises:
        ValueError: `extra_create_args` has a key outside `CREATE_ARG_KEYS`.
    """
    unknown = set(extra_create_args) - CREATE_ARG_KEYS
    if unknown:
        raise ValueError(
            f"EmbeddedChatCompletionClient does not accept create args {sorted(unknown)}; "
            f"allowed: {sorted(CREATE_ARG_KEYS)}."
        )
    args: dict[str, Any] = {
        "temperature": config.temperature,
        "top_p": config.top_p,
        "top_k": config.top_k,
        "repeat_penalty": config.repeat_penalty,
        "max_tokens": config.max_tokens,
        "stop": list(config.stop),
    }
    if config.seed is not None:
        args["seed"] = config.seed
    if isinstance(json_output, type):
        args["response_format"] = {"type": "json_object", "schema": json_output.model_json_schema()}
    elif json_output:
        args["response_format"] = {"type": "json_object"}
    args.update(extra_create_args)
    return args


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_VALUE = re.compile(r"[ -!#-\[\]-~]+")  # printable ASCII but " and \


def one_choice(response_format: object) -> tuple[str, tuple[str, ...]] | None:
    """The property and its allowed values when `response_format` asks for a one-choice answer.

    A one-choice answer is a JSON object with exactly one required property whose value is one of a
    few strings (pydantic's schema of a model with one `Literal["yes", "no"]` field): a plain ASCII
    name, printable ASCII values without quotes or backslashes, none the start of another (the
    client stops at the first value written). None for any other format: those go through
    llama.cpp's JSON-schema grammar whole.
    """
    if not isinstance(response_format, dict):
        return None
    schema = cast(dict[str, Any], response_format).get("schema")
    if not isinstance(schema, dict):
        return None
    schema = cast(dict[str, Any], schema)
    properties = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(properties, dict) or len(properties) != 1:  # pyright: ignore[reportUnknownArgumentType]
        return None
    ((name, spec),) = cast(dict[str, Any], properties).items()
    if schema.get("required") != [name] or not isinstance(spec, dict) or not _PLAIN_NAME.fullmatch(name):
        return None
    values = cast(dict[str, Any], spec).get("enum")
    if not isinstance(values, list) or not values:
        return None
    choices = cast(list[object], values)
    if not all(isinstance(value, str) and _PLAIN_VALUE.fullmatch(value) for value in choices):
        return None
    strings = tuple(cast(list[str], choices))
    if any(a != b and b.startswith(a) for a in strings for b in strings):
        return None
    return name, strings


@functools.lru_cache(maxsize=8)
def _chat_formatter(template: str, eos_token: str, bos_token: str) -> Jinja2ChatFormatter:
    """The chat formatter of a GGUF's template, compiled once (about 8 ms of Jinja per compile)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(template=template, eos_token=eos_token, bos_token=bos_token)


def _chat_prompt(llama: Llama, messages: list[dict[str, str]]) -> str:
    """The prompt the GGUF's chat template makes of `messages` (the model must have one), as llama-cpp-python writes it.

    Raises:
        jinja2.TemplateError: The template refuses these messages.
    """

    def spelled(token: int) -> str:  # as llama-cpp-python's own formatter does: "" for a model without it
        return "" if token == -1 else llama.detokenize([token], special=True).decode("utf-8", "replace")

    template = str(llama.metadata["tokenizer.chat_template"])
    formatter = _chat_formatter(template, spelled(llama.token_eos()), spelled(llama.token_bos()))
    return formatter(messages=messages).prompt  # pyright: ignore[reportArgumentType]


def _finish_reason(raw: object) -> FinishReasons:
    if raw == "stop":
        return "stop"
    if raw == "length":
        return "length"
    return "unknown"


class _Cancelled(Exception):
    """The call was cancelled before it reached the model."""


class EmbeddedChatCompletionClient(WholeReplyClient, Component[EmbeddedChatCompletionClientConfig]):
    """A chat model run in-process by llama.cpp, with sampling defaults applied to every call.

    Building a client is cheap: the model file is opened on the first `create` (or
    `count_tokens`). Calls run in a worker thread, one at a time per model file.

    Args:
        model: A catalog name (`coachlab models list`) or the path of a .gguf file.
        n_ctx: Context window in tokens.
        n_threads: CPU threads; `None` uses every core.
        temperature: Sampling temperature.
        top_p: Nucleus sampling mass.
        top_k: Top-k sampling (0: off).
        repeat_penalty: Penalty on repeated tokens.
        max_tokens: Longest reply in tokens.
        stop: Strings that end a reply.
        seed: Seed sent with every call; `None` lets llama.cpp draw one per call (reproducibly).

    Example:
        >>> client = EmbeddedChatCompletionClient("qwen2.5-coder-1.5b", temperature=0.7)  # doctest: +SKIP
        >>> result = await client.create([UserMessage(content="Hi", source="user")])  # doctest: +SKIP
    """

    component_type = "model"
    component_config_schema = EmbeddedChatCompletionClientConfig
    component_provider_override = "coachlab.llm.embedded.EmbeddedChatCompletionClient"

    def __init__(
        self,
        model: str,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        temperature: float = 0.8,
        top_p: float = 0.95,
        top_k: int = 40,
        repeat_penalty: float = 1.1,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> None:
        self._config = EmbeddedChatCompletionClientConfig(
            model=model,
            n_ctx=n_ctx,
            n_threads=n_threads,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repeat_penalty=repeat_penalty,
            max_tokens=max_tokens,
            stop=list(stop),
            seed=seed,
        )
        self._llama: Llama | None = None
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()  # the model file's lock once it is open (`_ModelFiles.lock`)
        self._contexts: dict[str, EmbeddedChatCompletionClient] = {}
        self._evaluated: list[int] = []
        self._actual_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._total_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self.load_seconds: float | None = None
        """How long opening the model took (None until it is loaded)."""

    @property
    def config(self) -> EmbeddedChatCompletionClientConfig:
        """The client's settings (a copy)."""
        return self._config.model_copy(deep=True)

    @property
    def n_threads(self) -> int:
        """The CPU threads the model uses."""
        return self._config.n_threads or os.cpu_count() or 1

    # -- the model ------------------------------------------------------------------------------

    def _load_locked(self) -> Llama:
        """Open the model; the caller holds `self._lock`."""
        if self._llama is not None:
            return self._llama
        path = resolve_model_file(self._config.model)
        try:
            import llama_cpp
        except ImportError:
            raise UsageError(_INSTALL_HINT) from None
        started = time.perf_counter()
        threads = self.n_threads
        seed = self._config.seed if self._config.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
        try:
            llama = _MODEL_FILES.open(
                llama_cpp,
                path,
                n_ctx=self._config.n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                seed=seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise UsageError(f"llama.cpp could not open {path}: {exc}") from None
        self._count_evaluations(llama)
        self._model_lock = _MODEL_FILES.lock(path)
        self._llama = llama
        self.load_seconds = time.perf_counter() - started
        logger.info("Loaded %s in %.2f s (%d threads)", path, self.load_seconds, threads)
        return llama

    def _count_evaluations(self, llama: Llama) -> None:
        """Record how many tokens each `llama.eval` of a call evaluates.

        `Llama.generate` evaluates the prompt minus the KV prefix it kept (always at least one token
        unless the whole prompt is cached), then each new token singly; so the first evaluation of a
        call is the prompt it processed. (llama.cpp's own perf counters were checked and are not
        reliable for this: they count a one-token prompt remainder as decoding, and undercount the
        first call.)
        """
        evaluate = llama.eval
        evaluated = self._evaluated

        def counted(tokens: Sequence[int]) -> None:
            evaluated.append(len(tokens))
            evaluate(tokens)

        llama.eval = counted  # pyright: ignore[reportAttributeAccessIssue]

    def _loaded(self) -> Llama:
        """The model, opened now if needed (blocking)."""
        if self._llama is not None:
            return self._llama
        with self._lock:
            return self._load_locked()

    async def load(self) -> None:
        """Open the model now instead of on the first call (in a worker thread)."""
        await asyncio.to_thread(self._loaded)

    # -- requests -------------------------------------------------------------------------------

    def _complete(
        self, messages: list[dict[str, str]], args: dict[str, Any], token: CancellationToken | None
    ) -> dict[str, Any]:
        """Run one completion in the calling (worker) thread."""
        with self._lock:
            if token is not None and token.is_cancelled():
                raise _Cancelled
            llama = self._load_locked()
            self._evaluated.clear()
            choice = one_choice(args.get("response_format"))
            if choice is not None and llama.chat_format != "chat_template.default":
                choice = None  # its prompt is written with the GGUF's chat template, as create_chat_completion does
            try:
                with self._model_lock:  # contexts on one model take turns (see _ModelFiles)
                    if choice is not None:
                        response = self._choose(llama, messages, args, *choice)
                    else:
                        response = llama.create_chat_completion(messages=messages, stream=False, **args)  # pyright: ignore[reportArgumentType]
            except ValueError as exc:
                if "context window" in str(exc):
                    raise ValueError(
                        f"{exc}. Shorten the conversation or raise n_ctx (now {self._config.n_ctx})."
                    ) from None
                raise
            report_prompt_processed(self._evaluated[0] if self._evaluated else None)
            return cast(dict[str, Any], response)

    def _choose(
        self, llama: Llama, messages: list[dict[str, str]], args: dict[str, Any], name: str, values: tuple[str, ...]
    ) -> dict[str, Any]:
        """Answer a one-choice request: the model writes the value only, the client the JSON around it.

        The prompt is the chat prompt `create_chat_completion` would build, followed by the object's
        opening up to the value's quote (`{"answer": "`); a grammar lets the model write one of the
        values, with the call's sampling settings and the seed `create_chat_completion` would use.
        Decoding stops at the token that completes a value: that token is never evaluated, so a
        one-token value costs the prompt alone.
        """
        import llama_cpp

        opening = '{"' + name + '": "'
        prompt = _chat_prompt(llama, messages)
        # Tokenized apart, so the prompt's tokens are those create_chat_completion uses (its KV prefix holds).
        tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True) + llama.tokenize(
            opening.encode("utf-8"), add_bos=False, special=False
        )
        if len(tokens) >= self._config.n_ctx:
            raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {self._config.n_ctx}")
        grammar = llama_cpp.LlamaGrammar.from_string(
            "root ::= " + " | ".join(f'"{value}"' for value in values), verbose=False
        )
        seed = args.get("seed")
        llama.set_seed(seed if seed is not None else random.Random(llama._seed).randint(0, 2**32))  # pyright: ignore[reportPrivateUsage]
        picked: list[int] = []
        written = ""
        for token in llama.generate(
            tokens,
            temp=args["temperature"],
            top_p=args["top_p"],
            top_k=args["top_k"],
            repeat_penalty=args["repeat_penalty"],
            grammar=grammar,
        ):
            if token == llama.token_eos():
                break
            picked.append(token)
            written = llama.detokenize(picked).decode("utf-8", "replace")
            # The grammar keeps `written` a prefix of a value (ASCII): at most one token per character.
            if written in values or len(picked) >= max(map(len, values)):
                break
        done = written in values
        content = json.dumps({name: written}) if done else opening + written
        return {
            "choices": [
                {"message": {"role": "assistant", "content": content}, "finish_reason": "stop" if done else "length"}
            ],
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": len(picked)},
        }

    @override
    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """Answer one request with the client's sampling settings.

        Args:
            messages: System, user and assistant messages with text content.
            tools: Must be empty: the embedded model has no function calling.
            tool_choice: Ignored without tools.
            json_output: `True` for JSON mode, a pydantic class for JSON that follows its schema
                (enforced by a grammar).
            extra_create_args: Per-call overrides of `temperature`, `top_p`, `top_k`,
                `repeat_penalty`, `max_tokens`, `stop`, `seed`, `response_format`.
            cancellation_token: Cancels the wait. A call not yet started never reaches the model;
                one already generating finishes in the background (at most `max_tokens`) before
                the next call on this client starts.

        Raises:
            ValueError: Tools, images, tool messages or unknown create args.
            UsageError: The model is not fetched, or llama-cpp-python is not installed.
            asyncio.CancelledError: The token was cancelled.
        """
        if tools:
            raise ValueError("The embedded model has no function calling; build this agent without tools.")
        llama_messages = to_llama_messages(messages)
        args = llama_create_args(self._config, json_output=json_output, extra_create_args=extra_create_args)
        if cancellation_token is not None and cancellation_token.is_cancelled():
            raise asyncio.CancelledError
        future = asyncio.ensure_future(asyncio.to_thread(self._complete, llama_messages, args, cancellation_token))
        if cancellation_token is not None:
            cancellation_token.link_future(future)
        try:
            response = await future
        except _Cancelled:
            raise asyncio.CancelledError from None

        choice = response["choices"][0]
        content = choice["message"].get("content") or ""
        usage = RequestUsage(
            prompt_tokens=int(response["usage"]["prompt_tokens"]),
            completion_tokens=int(response["usage"]["completion_tokens"]),
        )
        self._actual_usage = usage
        self._total_usage = RequestUsage(
            prompt_tokens=self._total_usage.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._total_usage.completion_tokens + usage.completion_tokens,
        )
        result = CreateResult(
            finish_reason=_finish_reason(choice.get("finish_reason")),
            content=content,
            usage=usage,
            cached=False,
        )
        _event_logger.info(
            LLMCallEvent(
                messages=cast(list[dict[str, Any]], llama_messages),
                response=result.model_dump(),
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            )
        )
        return result

    def engine_context(self, name: str) -> EmbeddedChatCompletionClient:
        """A client with these settings and a llama.cpp context of its own, made once per `name`.

        A role that shares this client's model entry but not its prompts (the checklist grader beside
        the satisfaction judge) keeps its KV-cache prefix there instead of evicting this one's. The
        context shares the loaded model with this client; `close` closes it too.
        """
        context = self._contexts.get(name)
        if context is None:
            context = self._contexts[name] = type(self)(**self._config.model_dump())
        return context

    @override
    async def close(self) -> None:
        """Free the context and its model's share (after any call still running), and those of `engine_context`.

        The client reopens it if used again.
        """

        def release() -> None:
            with self._lock:
                if self._llama is not None:
                    with self._model_lock:
                        self._llama.close()
                    self._llama = None

        await asyncio.to_thread(release)
        for context in self._contexts.values():
            await context.close()

    # -- accounting -----------------------------------------------------------------------------

    @override
    def actual_usage(self) -> RequestUsage:
        """Tokens of the last call."""
        return self._actual_usage

    @override
    def total_usage(self) -> RequestUsage:
        """Tokens of every call so far."""
        return self._total_usage

    @override
    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Prompt tokens the messages take, rendered with the model's chat template.

        Opens the model if it is not open yet (blocking). Without a chat template in the GGUF
        file the count is the content tokens plus a few per message.
        """
        llama = self._loaded()
        chat = to_llama_messages(messages)
        if llama.metadata.get("tokenizer.chat_template"):
            import jinja2

            try:
                prompt = _chat_prompt(llama, chat)
            except jinja2.TemplateError:  # a template that refuses this message order: estimate
                logger.debug("Chat template refused the messages; estimating the token count")
            else:
                return len(llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
        return sum(
            len(llama.tokenize(m["content"].encode("utf-8"), add_bos=False)) + _MESSAGE_OVERHEAD_TOKENS for m in chat
        )

    @override
    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Tokens left in the context window after these messages."""
        return max(0, self._config.n_ctx - self.count_tokens(messages))

    @property
    @override
    def model_info(self) -> ModelInfo:
        """Text only, JSON and schema output, no function calling."""
        return EMBEDDED_MODEL_INFO

    # -- component ------------------------------------------------------------------------------

    @override
    def _to_config(self) -> EmbeddedChatCompletionClientConfig:
        return self.config

    @override
    @classmethod
    def _from_config(cls, config: EmbeddedChatCompletionClientConfig) -> Self:
        return cls(**config.model_dump())

"""What `OpenAIStub` can do wrong, and the rules that pick which requests it does it to.

Fault kinds, one class each (a `Fault` is any of them):

- `HttpError`: an error status with an OpenAI-style body: 500s, 503s, a 429 with `Retry-After`.
- `Hang`: the response is held back (past the client's timeout), then sent if anyone still listens.
- `Drop`: the connection is closed before any byte of the response, or in the middle of it (the
  headers and part of the body; for a streamed request, a few chunks of the stream).
- `BadJson`: a 200 whose message content is broken JSON (truncated, malformed, or valid JSON with
  the wrong fields), for requests that ask for structured output (the judge's verdict).

A `FaultPlan` is a list of `FaultRule`s, each matching requests by role (the request's `model`:
every role's entry names its own model), by a pattern in the messages, or by whether JSON is asked
for, and firing with a probability, at most `count` times (None: every time, a persistent fault),
after letting `skip` matching requests through. It counts what it injected.

Example::

    plan = FaultPlan(
        FaultRule(rate_limited(retry_after=0.2), model="customer", count=1),  # transient
        FaultRule(BadJson("truncated"), model="judge", probability=0.5, seed=1),
        FaultRule(server_error(), pattern=r"flight from Chicago"),  # persistent for that scenario
    )
    with OpenAIStub(behaviour=plan) as stub:
        ...
    plan.injected  # Counter({"http_429": 1, "bad_json_truncated": 3, "http_500": 5})
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from coachlab.testing.stub_replies import request_text, response_schema

__all__ = [
    "BadJson",
    "Behaviour",
    "Drop",
    "Fault",
    "FaultPlan",
    "FaultRule",
    "Hang",
    "HttpError",
    "StubRequest",
    "break_json",
    "fault_kind",
    "fault_script",
    "rate_limited",
    "server_error",
]


@dataclass(frozen=True)
class HttpError:
    """Answer the request with an HTTP error status and an OpenAI-style error body.

    Args:
        status: The HTTP status (500, 503, 429...).
        message: The error message in the body.
        retry_after: Seconds sent as the `Retry-After` header, or None for no header.
    """

    status: int = 500
    message: str = "injected fault"
    retry_after: float | None = None


@dataclass(frozen=True)
class Hang:
    """Hold the response back `seconds` (past the client's timeout), then answer if the client still listens.

    The stub's other connections are served meanwhile; stopping the stub ends the wait.
    """

    seconds: float = 60.0


@dataclass(frozen=True)
class Drop:
    """Close the connection without a whole response.

    Args:
        where: "before_response": no byte of the response is sent. "mid_body": the status line,
            the headers (with the full `Content-Length`) and half of the body are sent; a streamed
            request gets its first chunks and no end of stream.
    """

    where: Literal["before_response", "mid_body"] = "mid_body"


@dataclass(frozen=True)
class BadJson:
    """A 200 whose message content is broken JSON (requests that ask for plain text are answered normally).

    Args:
        kind: "truncated": the reply cut in the middle (as a server that stops early sends it).
            "malformed": prose around the object and single quotes (not JSON). "wrong_fields":
            valid JSON that fits no schema coachlab asks for.
    """

    kind: Literal["truncated", "malformed", "wrong_fields"] = "truncated"


Fault: TypeAlias = HttpError | Hang | Drop | BadJson
"""What can go wrong with one request."""


def fault_kind(fault: Fault) -> str:
    """A short label for counting: "http_500", "http_429", "hang", "drop_mid_body", "bad_json_truncated"..."""
    if isinstance(fault, HttpError):
        return f"http_{fault.status}"
    if isinstance(fault, Hang):
        return "hang"
    if isinstance(fault, Drop):
        return f"drop_{fault.where}"
    return f"bad_json_{fault.kind}"


def server_error(message: str = "injected server error") -> HttpError:
    """A 500 Internal Server Error."""
    return HttpError(status=500, message=message)


def rate_limited(retry_after: float | None = 0.0, message: str = "injected rate limit") -> HttpError:
    """A 429 Too Many Requests, with `Retry-After: <retry_after>` unless it is None."""
    return HttpError(status=429, message=message, retry_after=retry_after)


def break_json(text: str, kind: Literal["truncated", "malformed", "wrong_fields"]) -> str:
    """`text` (the JSON the stub would have sent) broken the way `kind` says; never valid for any schema."""
    if kind == "truncated":
        return text[: max(1, len(text) // 2)]
    if kind == "malformed":
        return "Here is my answer: " + text.replace('"', "'") + " Hope that helps!"
    return '{"score": "ten out of ten", "comment": null}'


@dataclass(frozen=True)
class StubRequest:
    """One request the stub received (kept for assertions; what a `Behaviour` decides on)."""

    index: int
    """0-based order among chat-completions requests (-1 for other paths)."""
    method: str
    path: str
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: dict[str, Any] | None
    """The parsed JSON body, or None when there was none or it was not JSON."""
    fault: Fault | None = None
    """The fault injected into this request, if any."""
    at: float = 0.0
    """When the request arrived (`time.monotonic()`): gaps between retries show the waits."""

    @property
    def model(self) -> str | None:
        """The `model` the request names (the role, when each role's entry names its own model)."""
        value = self.body.get("model") if self.body is not None else None
        return value if isinstance(value, str) else None

    @property
    def wants_json(self) -> bool:
        """True when the request asks for structured (JSON) output."""
        return self.body is not None and response_schema(self.body) is not None


Behaviour = Callable[[StubRequest], Fault | None]
"""Given a chat-completions request, the fault to inject, or None to answer it."""


def fault_script(*faults: Fault | None) -> Behaviour:
    """A behaviour that injects `faults[i]` into request `i` (None answers normally), then answers all."""
    script: tuple[Fault | None, ...] = faults

    def behaviour(request: StubRequest) -> Fault | None:
        return script[request.index] if 0 <= request.index < len(script) else None

    return behaviour


def _text(body: Mapping[str, Any] | None) -> str:
    return request_text(body) if body is not None else ""


@dataclass
class FaultRule:
    """Which requests get a fault, how often, and how many times.

    Args:
        fault: What to inject.
        model: Only requests for this model (a role's entry in the tests names the role).
        pattern: Only requests whose message text matches this regular expression.
        json_only: Only requests that ask for structured output (True), or only those that do not (False).
        probability: Chance that a matching request gets the fault.
        count: How many times the fault fires; None fires on every matching request (a persistent fault).
        skip: Matching requests let through before the rule starts firing.
        seed: Seeds the rule's own random draws (deterministic for one order of requests).
    """

    fault: Fault
    model: str | None = None
    pattern: str | None = None
    json_only: bool | None = None
    probability: float = 1.0
    count: int | None = None
    skip: int = 0
    seed: int = 0
    matched: int = field(default=0, init=False)
    """Matching requests seen so far."""
    fired: int = field(default=0, init=False)
    """Faults injected so far."""
    _rng: random.Random = field(init=False, repr=False)
    _regex: re.Pattern[str] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0 or None")
        self._rng = random.Random(self.seed)
        self._regex = re.compile(self.pattern) if self.pattern is not None else None

    def matches(self, request: StubRequest) -> bool:
        """True when the request passes the rule's filters (role, pattern, JSON)."""
        if self.model is not None and request.model != self.model:
            return False
        if self.json_only is not None and request.wants_json != self.json_only:
            return False
        return self._regex is None or self._regex.search(_text(request.body)) is not None

    def decide(self, request: StubRequest) -> Fault | None:
        """The fault for this request, or None (counts what it sees; not thread-safe: `FaultPlan` locks)."""
        if not self.matches(request):
            return None
        self.matched += 1
        if self.matched <= self.skip or (self.count is not None and self.fired >= self.count):
            return None
        if self.probability < 1.0 and self._rng.random() >= self.probability:
            return None
        self.fired += 1
        return self.fault


class FaultPlan:
    """A behaviour for `OpenAIStub`: the first rule that fires on a request decides its fault.

    Args:
        rules: The rules, in priority order.
    """

    def __init__(self, *rules: FaultRule) -> None:
        self.rules = list(rules)
        self.injected: Counter[str] = Counter()
        """Faults injected so far, by `fault_kind`."""
        self._lock = threading.Lock()

    def __call__(self, request: StubRequest) -> Fault | None:
        """The fault for `request` (the first rule that fires), or None."""
        with self._lock:
            for rule in self.rules:
                fault = rule.decide(request)
                if fault is not None:
                    self.injected[fault_kind(fault)] += 1
                    return fault
        return None

    @property
    def total(self) -> int:
        """All faults injected so far."""
        return sum(self.injected.values())

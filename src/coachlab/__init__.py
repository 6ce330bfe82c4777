"""coachlab: a strong LLM coaches a small self-hosted LLM to be a better customer-service agent.

The public API uses a trained strategy library in production:

- `load_library(run_dir)` loads a library version (approved strategies only), with the retriever
  settings the run trained and evaluated with; `CoachingLibrary.retrieve(messages)` finds the
  strategies that fit a conversation of OpenAI-style messages, and `add_coaching(messages, shown)`
  (or `coaching_block(shown)`) puts them in the system prompt, as simulation did;
- `CoachingMemory(run_dir)` does the same for an AutoGen `AssistantAgent` (`memory=[...]`);
- `coachlab serve` does it for any application, as an OpenAI-compatible proxy.

The simulation core lives in the subpackages: personas and scenarios (`coachlab.schema`), the
models layer (`coachlab.llm`), the agents (`coachlab.agents`), the episode environment
(`coachlab.environments`), the library (`coachlab.library`) and the runners (`coachlab.experiments`).
Names are imported on first use, so `import coachlab` stays light.

The map of the packages is docs/architecture.md.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coachlab.agents.memory import CoachingMemory
    from coachlab.library.coaching import (
        CoachingLibrary,
        LiveLibrary,
        add_coaching,
        coaching_block,
        load_library,
        situation_from_messages,
    )
    from coachlab.library.retrieval import RetrievalConfig
    from coachlab.schema import Guidance, Strategy

try:
    __version__ = version("coachlab")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "CoachingLibrary",
    "CoachingMemory",
    "Guidance",
    "LiveLibrary",
    "RetrievalConfig",
    "Strategy",
    "__version__",
    "add_coaching",
    "coaching_block",
    "load_library",
    "situation_from_messages",
]

_LAZY = {
    "CoachingMemory": "coachlab.agents.memory",
    "CoachingLibrary": "coachlab.library.coaching",
    "LiveLibrary": "coachlab.library.coaching",
    "add_coaching": "coachlab.library.coaching",
    "coaching_block": "coachlab.library.coaching",
    "load_library": "coachlab.library.coaching",
    "situation_from_messages": "coachlab.library.coaching",
    "RetrievalConfig": "coachlab.library.retrieval",
    "Guidance": "coachlab.schema",
    "Strategy": "coachlab.schema",
}


def __getattr__(name: str) -> Any:
    """The public names, imported on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

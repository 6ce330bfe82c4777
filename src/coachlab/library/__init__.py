"""The strategy library: a versioned store with an audit trail, and retrieval at deployment.

The embedding retrievers need numpy (and the offline model the `tokenizers` package); they are
imported on first use, so `import coachlab.library` works without them.

The map of the packages is docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from coachlab.library.openai_embedder import EmbeddingEndpointError, OpenAIEmbedder, OpenAIEmbedderConfig
from coachlab.library.retrieval import (
    AsyncRetriever,
    LexicalRetriever,
    RetrievalConfig,
    Retriever,
    RetrieverKind,
    make_retriever,
    resolve_retriever_kind,
    retrieval_guidance,
    situation_text,
)
from coachlab.library.store import LibraryDiff, LibraryStore, LibraryVersion

if TYPE_CHECKING:
    from coachlab.library.dense import Embedder, EmbeddingRetriever
    from coachlab.library.embedding import BertEmbedder, load_embedder

__all__ = [
    "AsyncRetriever",
    "BertEmbedder",
    "Embedder",
    "EmbeddingEndpointError",
    "EmbeddingRetriever",
    "LexicalRetriever",
    "LibraryDiff",
    "LibraryStore",
    "LibraryVersion",
    "OpenAIEmbedder",
    "OpenAIEmbedderConfig",
    "RetrievalConfig",
    "Retriever",
    "RetrieverKind",
    "load_embedder",
    "make_retriever",
    "resolve_retriever_kind",
    "retrieval_guidance",
    "situation_text",
]

_LAZY = {
    "BertEmbedder": "coachlab.library.embedding",
    "load_embedder": "coachlab.library.embedding",
    "Embedder": "coachlab.library.dense",
    "EmbeddingRetriever": "coachlab.library.dense",
}


def __getattr__(name: str) -> Any:
    """The numpy-backed names, imported on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

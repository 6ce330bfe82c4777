"""The strategy library: a versioned store with an audit trail, and retrieval at deployment."""

from coachlab.library.retrieval import LexicalRetriever, Retriever, retrieval_guidance, situation_text
from coachlab.library.store import LibraryDiff, LibraryStore, LibraryVersion

__all__ = [
    "LexicalRetriever",
    "LibraryDiff",
    "LibraryStore",
    "LibraryVersion",
    "Retriever",
    "retrieval_guidance",
    "situation_text",
]

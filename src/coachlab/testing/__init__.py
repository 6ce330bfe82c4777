"""Helpers for testing with coachlab: deterministic scripted models (shipped for users' tests too)."""

from coachlab.testing.dryrun import dry_run_client, dry_run_clients
from coachlab.testing.scripted import ScriptedChatCompletionClient, ScriptFn, message_text, word_count

__all__ = [
    "ScriptFn",
    "ScriptedChatCompletionClient",
    "dry_run_client",
    "dry_run_clients",
    "message_text",
    "word_count",
]

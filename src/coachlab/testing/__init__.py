"""Helpers for testing with coachlab (shipped for users' tests too): scripted models, dry runs, stub server.

The scripted clients live in the models layer (`coachlab.llm`); they are re-exported here.

The map of the packages is docs/architecture.md.
"""

from coachlab.llm.dryrun import dry_run_client, dry_run_clients
from coachlab.llm.scripted import ScriptedChatCompletionClient, ScriptFn, message_text, word_count

__all__ = [
    "ScriptFn",
    "ScriptedChatCompletionClient",
    "dry_run_client",
    "dry_run_clients",
    "message_text",
    "word_count",
]

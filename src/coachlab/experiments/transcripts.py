"""Observers that write what happens: a readable Markdown transcript per episode, written live."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from coachlab.schema import Episode, Event

__all__ = ["TranscriptWriter", "transcript_name"]


def transcript_name(episode_id: str) -> str:
    """The file name of an episode's transcript."""
    return episode_id.replace("/", "__") + ".md"


class TranscriptWriter:
    """Writes `<folder>/<episode>.md` line by line as the dialogue happens (so `tail -f` works)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._open: dict[str, TextIO] = {}

    def _file(self, episode_id: str) -> TextIO:
        fh = self._open.get(episode_id)
        if fh is None:
            fh = (self.folder / transcript_name(episode_id)).open("w", encoding="utf-8")
            fh.write(f"# {episode_id}\n\n")
            self._open[episode_id] = fh
        return fh

    def on_event(self, episode_id: str, event: Event) -> None:
        """Append the event as a line of the transcript."""
        fh = self._file(episode_id)
        match event.type:
            case "customer_message":
                note = "" if event.origin == "model" else f" _({event.origin})_"
                fh.write(f"**Customer:** {event.text}{note}\n\n")
            case "agent_message":
                note = "" if event.origin == "model" else " _(prefix)_"
                fh.write(f"**Agent [{event.turn}]:** {event.text}{note}\n\n")
            case "role_slip":
                fh.write(f"> _customer reply rejected ({event.rule}), re-asked:_ {event.text}\n\n")
            case "strategy_shown":
                fh.write(f"> _strategies shown: {', '.join(event.strategy_ids)}_\n\n")
            case "tool_call":
                fh.write(f"> _tool call {event.name}({event.arguments})_\n\n")
            case "tool_result":
                fh.write(f"> _tool {event.name} returned: {event.result}_\n\n")
            case "episode_ended":
                detail = f" ({event.detail})" if event.detail else ""
                fh.write(f"---\n\n**Ended:** {event.reason.value}{detail}\n\n")
        fh.flush()  # readable while the episode runs

    def on_episode(self, episode: Episode) -> None:
        """Add the verdict and close the file."""
        fh = self._file(episode.id)
        v = episode.verdict
        if v is not None:
            fh.write(
                f"**Verdict:** satisfaction {v.satisfaction}/10, resolved {v.resolved}, "
                f"policy followed {v.policy_followed}, failure turn {v.failure_turn}, "
                f"customer in role {v.customer_in_role}\n\n> {v.rationale}\n"
            )
        else:
            fh.write(f"**No verdict:** {episode.judge_error}\n")
        fh.close()
        del self._open[episode.id]

    def close(self) -> None:
        """Close files of episodes that never finished."""
        for fh in self._open.values():
            fh.close()
        self._open.clear()

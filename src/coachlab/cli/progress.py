"""A live progress display (rich) for long runs: an observer on the event bus."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from coachlab.schema import AgentMessage, CustomerMessage, Episode, Event

__all__ = ["ProgressDisplay"]


class ProgressDisplay:
    """Shows episodes finished, turns spoken and the latest endings while a run goes on."""

    def __init__(self, total: int | None, *, console: Console | None = None, label: str = "episodes") -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(label, total=total, status="")
        self.turns = 0
        self.failed = 0
        self.scores: list[int] = []

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _status(self) -> str:
        mean = f"mean sat {sum(self.scores) / len(self.scores):.1f}" if self.scores else ""
        failed = f" [red]{self.failed} infra errors[/red]" if self.failed else ""
        return f"{self.turns} turns {mean}{failed}"

    def on_event(self, episode_id: str, event: Event) -> None:
        """Count spoken lines."""
        if isinstance(event, CustomerMessage | AgentMessage) and event.origin == "model":
            self.turns += 1
            self.progress.update(self.task, status=self._status())

    def on_episode(self, episode: Episode) -> None:
        """Advance the bar."""
        if episode.verdict is not None:
            self.scores.append(episode.verdict.satisfaction)
        if episode.termination.value == "infrastructure_error":
            self.failed += 1
        self.progress.update(self.task, advance=1, status=self._status())

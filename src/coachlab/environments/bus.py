"""The event bus: every event of every episode goes to every observer, in order.

Observers (transcript writer, progress display, metrics) plug in without touching the episode
loop. They are called synchronously, in the event loop's thread, so they must be quick; an
observer that raises stops the episode (a broken transcript writer should be noticed, not
hidden).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from coachlab.schema import Episode, Event

__all__ = ["EventBus", "Observer"]


class Observer(Protocol):
    """Something that wants to hear about episodes as they happen."""

    def on_event(self, episode_id: str, event: Event) -> None:
        """Called for each event, in order, as it happens."""
        ...

    def on_episode(self, episode: Episode) -> None:
        """Called once the episode is finished and judged."""
        ...


class EventBus:
    """Fans events out to observers."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self._observers: list[Observer] = list(observers)

    def subscribe(self, observer: Observer) -> None:
        """Add an observer; it hears about events from now on."""
        self._observers.append(observer)

    def emit(self, episode_id: str, event: Event) -> None:
        """Deliver one event to every observer."""
        for observer in self._observers:
            observer.on_event(episode_id, event)

    def finish(self, episode: Episode) -> None:
        """Deliver a finished episode to every observer."""
        for observer in self._observers:
            observer.on_episode(episode)

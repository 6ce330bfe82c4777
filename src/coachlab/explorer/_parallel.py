"""`in_order`: run independent calls a few at a time, and see their results as a loop would.

The train loop runs a node's rollouts and a verification's paired trials at once, yet the tree,
the library and the episodes file must be those of a run made one call after another. So results
are taken in the calls' order, never in the order they finished, and the first call (in order)
that raises is the one whose exception is seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

__all__ = ["in_order"]

T = TypeVar("T")


def _nothing(result: object) -> None:
    pass


async def in_order(
    calls: Sequence[Callable[[], Awaitable[T]]],
    *,
    limit: int,
    each: Callable[[T], None] = _nothing,
) -> list[T]:
    """Await every call, at most `limit` at once (started in order), and return their results in order.

    `each` is called with each result in the calls' order, as soon as it and every result before it
    are in. When a call raises, its exception is raised once every call before it has finished (and
    `each` has seen their results); the calls after it are cancelled. So the outcome is that of
    awaiting the calls one by one, whichever finished first; with `limit` 1 that is exactly what is done.
    """
    results: list[T] = []
    if limit <= 1 or len(calls) <= 1:
        for call in calls:
            result = await call()
            each(result)
            results.append(result)
        return results
    gate = asyncio.Semaphore(limit)

    async def gated(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    tasks = [asyncio.create_task(gated(call)) for call in calls]
    try:
        for task in tasks:
            result = await task
            each(result)
            results.append(result)
    finally:
        for task in tasks:
            task.cancel()  # nothing to a finished one; the rest are not needed once one failed
        await asyncio.gather(*tasks, return_exceptions=True)  # let them end, and read their exceptions
    return results

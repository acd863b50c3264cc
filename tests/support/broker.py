"""A broker played in-process for code that publishes inbox ids in batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def taking(published: list[int], *, up: bool = True) -> Callable[[Sequence[int]], list[int]]:
    """A batch publisher that records what it takes; `up=False` plays a broker that takes nothing."""

    def publish(inbox_ids: Sequence[int]) -> list[int]:
        if not up:
            return []
        published.extend(inbox_ids)
        return list(inbox_ids)

    return publish

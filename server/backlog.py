"""The frames of one connection waiting for analysis: a bounded queue the reader fills and the
analysis loop drains. A full backlog stops the reader, so TCP pushes back on the client."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from vibescope.server.protocol import MediaFrame


@dataclass
class Pending:
    seq: int
    frame: MediaFrame | None  # None: handled without analysis (skipped or refused), only acked
    arrived: float  # the connection's clock
    skipped: bool = False  # a video frame skipped under load (VideoShedding)
    catch_up: bool = False  # sent to catch up after a reconnect (hello.catch_up_until_t)
    bye: bool = False
    skip_to_t: float | None = None  # a skip message: the media clock goes on at this time


class Backlog:
    def __init__(self, items: int) -> None:
        self._queue: asyncio.Queue[Pending] = asyncio.Queue(items)
        self._live_arrivals: deque[float] = deque()  # arrival times of the queued live frames, oldest first

    async def put(self, item: Pending) -> None:
        await self._queue.put(item)
        if not item.catch_up:
            self._live_arrivals.append(item.arrived)

    def oldest_live(self) -> float | None:
        """Arrival time of the oldest live frame not yet taken by analysis."""
        return self._live_arrivals[0] if self._live_arrivals else None

    async def take(self, most: int) -> list[Pending]:
        """Wait for a frame, then take every frame waiting, up to ``most`` (a bye ends the batch)."""
        items = [await self._queue.get()]
        while len(items) < most and not self._queue.empty() and not items[-1].bye:
            items.append(self._queue.get_nowait())
        for item in items:
            if not item.catch_up:
                self._live_arrivals.popleft()
        return items

    def full(self) -> bool:
        return self._queue.full()

"""The sessions live on this process, by id: one connection each (a resume takes over)."""

from __future__ import annotations

from vibescope.server.metrics import Metrics
from vibescope.server.outbox import Outbox
from vibescope.server.protocol import CloseCode, ErrorCode


class ConnectionRegistry:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._live: dict[str, Outbox] = {}

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._live

    def outboxes(self) -> list[Outbox]:
        return list(self._live.values())

    def register(self, session_id: str, outbox: Outbox) -> None:
        self._live[session_id] = outbox
        self.metrics.sessions_active = len(self._live)

    def unregister(self, session_id: str, outbox: Outbox) -> None:
        if self._live.get(session_id) is outbox:
            del self._live[session_id]
            self.metrics.state_bytes.pop(session_id, None)
        self.metrics.sessions_active = len(self._live)

    async def take_over(self, session_id: str) -> None:
        """A resume wins: close this process's older connection of the same session."""
        old = self._live.get(session_id)
        if old is not None:
            await old.fail(ErrorCode.SESSION_BUSY, "session resumed on a newer connection", CloseCode.SESSION_BUSY)

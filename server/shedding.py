"""Which video frames a session skips because analysis is behind (audio is never skipped).

- Every other frame, from an answer that came later than ``thin_lag_s`` after the oldest frame
  of its batch arrived (queue, analysis round and state write) until answers are back under
  ``unthin_lag_s`` (the gap keeps it from flapping at one threshold). A skipped frame costs
  nothing but its ack; the face detector runs at 5 Hz either way and the expression of the last
  analysed frame is held, so this halves the cost of the face path (docs/architecture.md).
- Every frame while the oldest frame still waiting in the queue has waited longer than
  ``shed_delay_s``.

Both judge the *live* backlog. Frames a client sends to catch up after a reconnect (its resends
and the media that came due while it was away: ``hello.catch_up_until_t``) are analysed like the
originals, never skipped, and the time frames wait behind them does not count as lateness.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]  # seconds, monotonic


@dataclass(frozen=True)
class SheddingLimits:
    thin_lag_s: float = 0.12
    unthin_lag_s: float = 0.08
    shed_delay_s: float = 0.25


class VideoShedding:
    """One session's shedding state; ``clock`` stamps arrivals and answers (injectable for tests)."""

    def __init__(self, limits: SheddingLimits | None = None, clock: Clock = time.perf_counter) -> None:
        self.limits = limits or SheddingLimits()
        self.clock = clock
        self.thinning = False
        self._skipped = False  # the last frame was skipped by thinning
        self._catching_up = 0  # catch-up frames received and not yet answered
        self._caught_up_at: float | None = None  # when the last of them was answered

    # --- catch-up -----------------------------------------------------------------------------
    def received(self, catch_up: bool) -> None:
        """A frame arrived; ``catch_up``: it belongs to a reconnect's catch-up."""
        if catch_up:
            self._catching_up += 1

    @property
    def catching_up(self) -> bool:
        return self._catching_up > 0

    def live_since(self, arrived: float) -> float:
        """When a live frame that arrived at ``arrived`` started to count as waiting: not before
        the catch-up ahead of it was answered."""
        return arrived if self._caught_up_at is None else max(arrived, self._caught_up_at)

    # --- the two rules ------------------------------------------------------------------------
    def answered(self, oldest_live_arrival: float | None, caught_up: int = 0) -> None:
        """A batch was answered: ``caught_up`` catch-up frames in it, and the oldest live frame in
        it arrived at ``oldest_live_arrival`` (None: no live frame)."""
        now = self.clock()
        if caught_up:
            self._catching_up = max(0, self._catching_up - caught_up)
            if not self._catching_up:
                self._caught_up_at = now
            return  # a batch that carried catch-up says nothing about the live backlog
        if oldest_live_arrival is not None:
            lag = now - self.live_since(oldest_live_arrival)
            self.thinning = lag > (self.limits.unthin_lag_s if self.thinning else self.limits.thin_lag_s)

    def skip(self, oldest_waiting_live: float | None) -> bool:
        """Whether to skip the live video frame that just arrived; ``oldest_waiting_live``: the
        arrival time of the oldest live frame waiting for analysis (None: none waits)."""
        if self.catching_up:
            return False
        if (
            oldest_waiting_live is not None
            and self.clock() - self.live_since(oldest_waiting_live) > self.limits.shed_delay_s
        ):
            return True
        self._skipped = self.thinning and not self._skipped
        return self._skipped

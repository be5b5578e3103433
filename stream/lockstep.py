"""Feeding several sessions at once, stage by stage (what a server process does every round).

Every stage sees the ticks of all sessions together: a stage class with ``push_batch`` runs its
models once per round (each session's j-th tick) for all of them, and every model's weights stay in
the CPU caches while it runs, where one session after the other would make the stages evict each
other.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vibescope.stream.events import FeedResult
from vibescope.stream.media import Chunk, MediaError
from vibescope.stream.stage import Stage, Tick, apply_each


class Feedable(Protocol):
    """What :func:`feed_many` needs of a session (:class:`vibescope.stream.session.Session`)."""

    stages: list[Stage]

    def cut(self, chunk: Chunk) -> list[Tick]: ...

    def collect(self, ticks: list[Tick], started: float) -> FeedResult: ...


def push_batch(stages: Sequence[Stage], ticks: Sequence[Tick]) -> list[list[Tick] | Exception]:
    """One tick into each of several stages of the same class (one per session), batched when the
    class has a ``push_batch`` of its own (its models then run once for all of them); otherwise
    one ``push`` after the other. An exception lands in the slot of the stage that raised it."""
    batched = getattr(type(stages[0]), "push_batch", None)
    if batched is not None:
        return batched(stages, ticks)
    return apply_each(lambda stage, tick: stage.push(tick), stages, ticks)


@dataclass
class _Request:
    """One session's part of a round: its chunks, the ticks they cut, what each chunk gets back."""

    session: Feedable
    chunks: Sequence[Chunk]
    results: list[FeedResult | Exception | None]
    ticks: list[tuple[Tick, int]] = field(default_factory=list)  # (tick, index of the chunk it comes from)
    failed_at: int | None = None  # index of the chunk whose analysis raised a bug

    def fail(self, k: int, exc: Exception) -> None:
        self.results[k], self.failed_at = exc, k

    @property
    def live(self) -> bool:
        return self.failed_at is None


def feed_many(requests: Sequence[tuple[Feedable, Sequence[Chunk]]]) -> list[list[FeedResult | Exception]]:
    """Feed chunks to several sessions (all distinct) in lock-step, stage by stage.

    ``requests``: (session, its chunks in order). Returns, per request, one result per chunk: the
    :class:`FeedResult` that ``session.feed(chunk)`` would have returned (the events the chunk made
    final), or the exception it raised. Floats may differ from feeding alone in the last bits:
    batched matrix products sum in another order.

    A :class:`MediaError` leaves its session's state untouched and the next chunks are fed. Any
    other exception (a bug) stops its session: the chunk that caused it gets the exception (as
    do the chunks after it, never fed), the chunks before it empty results, and the session's
    state is undefined, like after a failed ``feed``: restore it from its last saved state.
    """
    if len({id(session) for session, _ in requests}) != len(requests):
        raise ValueError("feed_many takes one request per session")
    started = time.perf_counter()
    work = [_Request(session, chunks, [None] * len(chunks)) for session, chunks in requests]
    for req in work:
        for k, chunk in enumerate(req.chunks):
            try:
                req.ticks += [(tick, k) for tick in req.session.cut(chunk)]
            except MediaError as exc:
                req.results[k] = exc
            except Exception as exc:
                req.fail(k, exc)
                break
    groups: dict[tuple[type, ...], list[_Request]] = {}
    for req in work:
        groups.setdefault(tuple(type(stage) for stage in req.session.stages), []).append(req)
    for kinds, members in groups.items():
        for pos in range(len(kinds)):
            _advance_stage(pos, [req for req in members if req.live])
    for req in work:
        for k in range(len(req.chunks)):
            if not req.live and k >= req.failed_at:
                req.results[k] = req.results[req.failed_at]
            elif req.results[k] is None:
                released = [tick for tick, cause in req.ticks if cause == k] if req.live else []
                req.results[k] = req.session.collect(released, started)
    return [req.results for req in work]  # type: ignore[misc]


def _advance_stage(pos: int, live: list[_Request]) -> None:
    """Push every live request's ticks through stage ``pos``, one round per tick index; what the
    stage releases on a tick is attributed to that tick's chunk (the chunk that made it final)."""
    outs: dict[int, list[tuple[Tick, int]]] = {id(req): [] for req in live}
    for j in range(max((len(req.ticks) for req in live), default=0)):  # round j: each session's j-th tick
        batch = [req for req in live if len(req.ticks) > j and req.live]
        if not batch:
            continue
        pushed = push_batch([req.session.stages[pos] for req in batch], [req.ticks[j][0] for req in batch])
        for req, out in zip(batch, pushed, strict=False):
            cause = req.ticks[j][1]
            if isinstance(out, Exception):
                req.fail(cause, out)
            else:
                outs[id(req)] += [(tick, cause) for tick in out]
    for req in live:
        if req.live:
            req.ticks = outs[id(req)]

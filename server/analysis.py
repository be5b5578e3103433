"""A connection's analysis loop: it takes what the backlog holds, feeds the engine as a job of
the process's analysis pool (server/pool.py, together with the other sessions'), writes state and
events to the store in one atomic write, and only then sends the events and the ``ack``.

A bug in the analysis of one frame must not end the session: the engine is restored from the
last stored state and the batch replayed without that frame, which is answered with an
``internal`` error (and acknowledged, so it is not resent forever). The engine is deterministic,
so the replay gives the same results.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from vibescope.server.backlog import Backlog, Pending
from vibescope.server.context import ConnectionContext
from vibescope.server.handshake import OpenSession
from vibescope.server.outbox import Outbox
from vibescope.server.pool import Job
from vibescope.server.protocol import KIND_NAMES, CloseCode, ErrorCode, Kind, encode_frame
from vibescope.server.shedding import VideoShedding
from vibescope.server.store import OwnershipLost
from vibescope.stream.events import FeedResult
from vibescope.stream.media import Chunk, MediaError, float_to_pcm16
from vibescope.stream.session import Session
from vibescope.stream.timebase import TICK_SECONDS

log = logging.getLogger("vibescope.analysis")

BATCH_ITEMS = 32  # frames analysed per state write at most


class _ItemFailed(Exception):
    def __init__(self, seq: int, cause: BaseException) -> None:
        super().__init__(seq)
        self.seq, self.cause = seq, cause


class AnalysisLoop:
    def __init__(
        self,
        ctx: ConnectionContext,
        outbox: Outbox,
        session: OpenSession,
        backlog: Backlog,
        shedding: VideoShedding,
        acked: asyncio.Event,
    ) -> None:
        self.ctx, self.outbox, self.session = ctx, outbox, session
        self.backlog, self.shedding = backlog, shedding
        self.metrics = ctx.metrics
        self._ost_seq = 0
        self.acked = acked

    async def run(self) -> None:
        s = self.session
        while True:
            items = await self.backlog.take(BATCH_ITEMS)
            try:
                results, errors, state = await self.ctx.pool.run(self._process(items))
            except Exception:  # a bug in analysis: the stored state is still the last good one
                log.exception("analysis failed in session %s", s.session_id)
                await self.outbox.fail(
                    ErrorCode.INTERNAL, "internal analysis error; resume to continue", CloseCode.INTERNAL
                )
                return
            events = [json.dumps(ev) for r in results for ev in r[1]]
            last_seq = max(it.seq for it in items)
            try:
                size = await self.ctx.store.save(s.session_id, s.owner, state, last_seq, events)
            except OwnershipLost:
                await self.outbox.fail(
                    ErrorCode.SESSION_BUSY, "session taken over by a newer connection", CloseCode.SESSION_BUSY
                )
                return
            except Exception as exc:  # store down: nothing acknowledged, the client resumes later
                log.error("state store write failed for %s: %s", s.session_id, exc)
                await self.outbox.fail(ErrorCode.INTERNAL, "state store unavailable; resume later", CloseCode.TRY_AGAIN)
                return
            s.last_state, s.acked_seq = state, last_seq
            self.metrics.state_size.observe(size)
            self.metrics.state_bytes[s.session_id] = size
            sent = self.ctx.clock()
            live = [it.arrived for it in items if not it.catch_up]
            self.shedding.answered(min(live, default=None), caught_up=sum(it.catch_up for it in items))
            for item, evs, stems in results:
                self.metrics.latency.observe(sent - item.arrived)
                if stems is not None:
                    self._send_ost(stems, evs)
            for event in events:
                self.outbox.send_json(event)
            self.metrics.events_total += len(events)
            for seq, code, message in errors:
                self.outbox.send_error(code, message, seq)
            self.outbox.send_json({"type": "ack", "seq": s.acked_seq})
            self.acked.set()
            if items[-1].bye:
                self.outbox.send_json({"type": "bye", "acked_seq": s.acked_seq})
                await self.outbox.close(CloseCode.NORMAL, "bye")
                return

    def _process(self, items: list[Pending]) -> Job:
        """An analysis job (server/pool.py): feed every item, then serialise the engine state once.

        Returns ``(results, errors, state bytes)``; see the module docstring for the replay."""
        failed: dict[int, str] = {}
        while True:
            try:
                return (yield from self._feed_items(items, failed))
            except _ItemFailed as f:
                log.error("analysis of seq %d in session %s failed: %r", f.seq, self.session.session_id, f.cause)
                failed[f.seq] = f"internal error analysing this frame ({type(f.cause).__name__}); it was skipped"
                self.session.engine = Session.from_bytes(self.session.last_state)

    def _feed_items(self, items: list[Pending], failed: dict[int, str]) -> Job:
        engine = self.session.engine
        results: list[tuple[Pending, list[dict], Any]] = []
        errors: list[tuple[int, str, str]] = []

        def media(item: Pending) -> bool:  # a frame to analyse
            return item.frame is not None and not item.bye and item.seq not in failed

        i = 0
        while i < len(items):
            if media(items[i]):
                run = []  # consecutive frames: one request, fed with other sessions' (AnalysisPool)
                while i < len(items) and media(items[i]):
                    run.append(items[i])
                    i += 1
                outs = yield (
                    engine,
                    [Chunk(KIND_NAMES[it.frame.kind], it.frame.payload, it.frame.timestamp) for it in run],
                )
                for item, out in zip(run, outs, strict=False):
                    if isinstance(out, MediaError):
                        errors.append((item.seq, getattr(out, "code", ErrorCode.BAD_MEDIA), str(out)))
                    elif isinstance(out, Exception):
                        raise _ItemFailed(item.seq, out) from out
                    else:
                        self._collect(results, item, out)
                continue
            item = items[i]
            i += 1
            if item.bye:
                if not engine.flushed:
                    self._collect(results, item, engine.flush())
            elif item.skip_to_t is not None:
                self._collect(results, item, engine.skip_to(item.skip_to_t))
            elif item.seq in failed:
                errors.append((item.seq, ErrorCode.INTERNAL, failed[item.seq]))
            elif item.skipped:
                engine.note_dropped_video()
        return results, errors, engine.to_bytes()

    def _collect(self, results: list, item: Pending, out: FeedResult) -> None:
        evs = [ev.to_dict() for ev in out.events]
        done = self.ctx.clock()
        for ev in evs:
            ev["latency_ms"] = round((done - item.arrived) * 1000.0, 2)
        results.append((item, evs, out.stems.get("ost") if self.session.want_ost else None))

    def _send_ost(self, ost: Any, events: list[dict]) -> None:
        if not events:
            return
        start = events[0]["t"] - TICK_SECONDS
        self._ost_seq += 1
        self.outbox.post(encode_frame(Kind.AUDIO, self._ost_seq, int(round(start * 1e6)), float_to_pcm16(ost)))

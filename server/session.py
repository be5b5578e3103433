"""One WebSocket connection speaking docs/protocol.md: hello/welcome, frames -> engine, acks.

Reading and analysis are decoupled by a bounded queue: the reader validates frames and enqueues
them; one analysis task per connection takes what is queued, feeds the engine (as a job of the
server's analysis pool, together with the other sessions': server/analysis.py), writes state +
events to the store, and only then sends events and the ``ack``.
When analysis falls behind, video frames are dropped first (counted, reported in events): every
other one, then all of them (``VideoShedding``). Audio is never dropped: a full queue stops the
reader, and TCP pushes back on the client.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from server.analysis import Job, call
from server.protocol import (
    PROTOCOL_VERSION, CloseCode, ErrorCode, Hello, Kind, MediaFrame, ProtocolError, decode_frame,
    encode_frame, error_message, parse_control,
)
from server.store import OwnershipLost
from stream.engine import Chunk, FeedResult, Session, SessionConfig
from stream.media import MediaError, float_to_pcm16
from stream.pipeline import TICK_SECONDS

if TYPE_CHECKING:
    from server.app import StreamServer

log = logging.getLogger("vibescope.session")

QUEUE_ITEMS = 64  # frames waiting for analysis, per connection
VIDEO_SHED_DELAY_S = 0.25  # drop all video while the oldest waiting frame has waited longer than this
VIDEO_THIN_LAG_S = 0.12  # drop every other video frame from an answer later than this ...
VIDEO_UNTHIN_LAG_S = 0.08  # ... until the answers are back under this (VideoShedding)
BATCH_ITEMS = 32  # frames analysed per state write at most
HELLO_TIMEOUT_S = 10.0
OUTBOX_ITEMS = 2048  # messages waiting to be written to one client
CLOSE_TIMEOUT_S = 5.0
FLOOD_SECONDS = 5  # close after this many seconds' worth of frames beyond the rate limit
_KIND_NAMES = {Kind.AUDIO: "audio", Kind.VIDEO: "video", Kind.CONTAINER: "container"}


@dataclass
class _Item:
    seq: int
    frame: MediaFrame | None  # None: handled without analysis (dropped/refused), only acked
    arrived: float
    note: str | None = None  # "dropped" for a video frame skipped under load
    bye: bool = False


class VideoShedding:
    """Which video frames a session skips because analysis is behind (audio is never skipped).

    - Every other frame, from an answer that came later than ``VIDEO_THIN_LAG_S`` after the oldest
      frame of its batch arrived (queue, analysis round and state write) until answers are back
      under ``VIDEO_UNTHIN_LAG_S``. This sheds about 15 % of a face session's work (decoding and
      expressions of half the frames; the face detector runs at 5 Hz either way, and the
      expression of the last analysed frame is held): at 1.75 times its capacity a process
      answered with a third less p95 latency (README, Performance).
    - Every frame while the oldest frame still waiting in the queue has waited longer than
      ``VIDEO_SHED_DELAY_S``.
    """

    def __init__(self) -> None:
        self.thinning = False
        self._skipped = False  # the last frame was skipped by thinning

    def answered(self, lag: float) -> None:
        """An answer went out ``lag`` seconds after the oldest frame of its batch arrived."""
        self.thinning = lag > (VIDEO_UNTHIN_LAG_S if self.thinning else VIDEO_THIN_LAG_S)

    def skip(self, queue_delay: float) -> bool:
        """Whether to skip the video frame that just arrived; ``queue_delay``: how long the oldest
        frame waiting for analysis has waited, seconds."""
        if queue_delay > VIDEO_SHED_DELAY_S:
            return True
        self._skipped = self.thinning and not self._skipped
        return self._skipped


class _ItemFailed(Exception):
    def __init__(self, seq: int, cause: BaseException) -> None:
        super().__init__(seq)
        self.seq, self.cause = seq, cause


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class StreamConnection:
    def __init__(self, server: "StreamServer", ws: web.WebSocketResponse, transport: Any = None) -> None:
        self.server = server
        self.ws = ws
        self.transport = transport
        self.outbox: asyncio.Queue[str | bytes | tuple[int, str]] = asyncio.Queue(OUTBOX_ITEMS)
        self._writer: asyncio.Task | None = None
        self._close_posted = False
        self.limits = server.config.limits
        self.metrics = server.metrics
        self.session_id: str | None = None
        self.owner = uuid.uuid4().hex
        self.engine: Session | None = None
        self.want_ost = False
        self.acked_seq = 0
        self.last_received = 0
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(QUEUE_ITEMS)
        self._waiting: deque[float] = deque()  # arrival times of the queued items, oldest first
        self.shedding = VideoShedding()
        self._last_state = b""
        self._ost_seq = 0
        self._bucket = float(self.limits.max_video_fps * 10)  # burst allowance for resends
        self._bucket_at = time.monotonic()
        self._flood = 0.0  # rate-limited frames, decaying by max_video_fps per second
        self._last_video_ts: int | None = None
        self._closing = False

    # --- sending ---------------------------------------------------------------------------
    # Every outgoing message goes through a bounded outbox drained by one writer task, so a
    # client that stops reading can never block the reader or the analysis (it gets closed).

    def _post(self, item: str | bytes | tuple[int, str]) -> None:
        if self._close_posted:
            return
        try:
            self.outbox.put_nowait(item)
        except asyncio.QueueFull:
            self._close_posted = True
            self._abort("client is not reading its messages")

    async def _write(self) -> None:
        ws = self.ws
        try:
            while True:
                item = await self.outbox.get()
                if isinstance(item, tuple):  # (close code, reason): the last message
                    await ws.close(code=item[0], message=item[1][:120].encode())
                    return
                if isinstance(item, bytes):
                    await ws.send_bytes(item)
                else:
                    await ws.send_str(item)
        except (ConnectionError, RuntimeError):
            pass  # the client went away; the reader notices

    def _abort(self, why: str) -> None:
        log.warning("aborting connection of session %s: %s", self.session_id, why)
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    async def send_json(self, obj: dict[str, Any] | str) -> None:
        self._post(obj if isinstance(obj, str) else json.dumps(obj))

    async def send_error(self, code: str, message: str, seq: int | None = None) -> None:
        self.metrics.errors_total[code] += 1
        await self.send_json(error_message(code, message, seq))

    async def close(self, code: int, message: str) -> None:
        """Close after what is already in the outbox; abort if the client does not take it."""
        self._closing = True
        if not self._close_posted:
            self._post((code, message))
            self._close_posted = True
        if self._writer is not None and not self._writer.done():
            done, _ = await asyncio.wait([self._writer], timeout=CLOSE_TIMEOUT_S)
            if not done:
                self._writer.cancel()
                self._abort("close timed out")

    async def fail(self, code: str, message: str, close_code: int) -> None:
        await self.send_error(code, message)
        await self.close(close_code, message)

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        self._writer = asyncio.create_task(self._write())
        try:
            hello = await self._receive_hello()
            if hello is None:
                return
            try:
                opened = await self._open_session(hello)
            except Exception as exc:  # the store is unreachable, or the stored state unusable
                log.error("cannot open session: %r", exc)
                await self.fail(ErrorCode.INTERNAL, "cannot open the session now (state store unavailable); "
                                "try again later", CloseCode.TRY_AGAIN)
                return
            if not opened:
                return
            self.server.register(self)
            worker = asyncio.create_task(self._analyse(), name=f"analyse-{self.session_id}")
            try:
                await self._read()
            except Exception:
                log.exception("connection of session %s failed", self.session_id)
                await self.fail(ErrorCode.INTERNAL, "internal server error; resume to continue", CloseCode.INTERNAL)
            finally:
                if not worker.done():
                    if self._closing and not self.ws.closed:  # e.g. after bye: let it finish
                        await asyncio.wait([worker], timeout=CLOSE_TIMEOUT_S)
                    worker.cancel()
                self.server.unregister(self)
        finally:
            if not self._close_posted and not self.ws.closed:
                await self.close(CloseCode.NORMAL, "")
            if not self._writer.done():
                self._writer.cancel()

    async def _receive_hello(self) -> Hello | None:
        try:
            msg = await self.ws.receive(timeout=HELLO_TIMEOUT_S)
        except asyncio.TimeoutError:
            await self.fail(ErrorCode.HELLO_REQUIRED, f"no hello within {HELLO_TIMEOUT_S:.0f} s", CloseCode.POLICY)
            return None
        if msg.type == WSMsgType.BINARY:
            await self.fail(ErrorCode.HELLO_REQUIRED, "the first message must be a hello text frame", CloseCode.HELLO_REQUIRED)
            return None
        if msg.type != WSMsgType.TEXT:
            return None  # closed or errored before saying anything
        try:
            data = parse_control(msg.data)
            if data["type"] != "hello":
                raise ProtocolError(ErrorCode.HELLO_REQUIRED, f"expected hello, got {data['type']!r}")
            hello = Hello.from_dict(data)
        except ProtocolError as exc:
            close = {ErrorCode.UNSUPPORTED_VERSION: CloseCode.UNSUPPORTED_VERSION,
                     ErrorCode.HELLO_REQUIRED: CloseCode.HELLO_REQUIRED}.get(exc.code, CloseCode.POLICY)
            await self.fail(exc.code, exc.message, close)
            return None
        token = self.server.config.token
        if token and not (hello.token and hmac.compare_digest(hello.token.encode(), token.encode())):
            await self.fail(ErrorCode.UNAUTHORIZED, "missing or wrong token", CloseCode.UNAUTHORIZED)
            return None
        return hello

    async def _open_session(self, hello: Hello) -> bool:
        store = self.server.store
        if hello.session_id:
            stored = await store.load(hello.session_id)
            if stored is None or not hello.resume_token or not hmac.compare_digest(
                    stored.meta.get("resume_token_sha256", ""), _hash_token(hello.resume_token)):
                await self.fail(ErrorCode.UNKNOWN_SESSION, "unknown or expired session, or wrong resume token",
                                CloseCode.UNKNOWN_SESSION)
                return False
            await self.server.take_over(hello.session_id)
            if not await store.claim(hello.session_id, self.owner):
                await self.fail(ErrorCode.UNKNOWN_SESSION, "session expired while resuming", CloseCode.UNKNOWN_SESSION)
                return False
            stored = await store.load(hello.session_id)
            self.session_id, resume_token = hello.session_id, hello.resume_token
            try:
                self.engine = await self.server.analysis.run(call(Session.from_bytes, stored.state))
            except ValueError as exc:  # e.g. state written by an incompatible server version
                await self.fail(ErrorCode.UNKNOWN_SESSION, f"the stored session cannot be continued: {exc}",
                                CloseCode.UNKNOWN_SESSION)
                return False
            self.acked_seq = self.last_received = stored.acked_seq
            self._last_state = stored.state
            self.want_ost = "ost_audio" in stored.meta.get("want", [])
            self.metrics.sessions_total["resumed"] += 1
            resumed = True
        else:
            config = self._session_config(hello)
            self.session_id = uuid.uuid4().hex
            resume_token = secrets.token_urlsafe(24)
            self.engine = Session(config)
            self._last_state = await self.server.analysis.run(call(self.engine.to_bytes))
            meta = {"resume_token_sha256": _hash_token(resume_token), "want": hello.want,
                    "client": hello.client, "created": time.time()}
            await store.create(self.session_id, self._last_state, meta, self.owner)
            self.want_ost = "ost_audio" in hello.want
            self.metrics.sessions_total["new"] += 1
            resumed = False
        await self.send_json({
            "type": "welcome", "protocol": PROTOCOL_VERSION, "session_id": self.session_id,
            "resume_token": resume_token, "resumed": resumed, "acked_seq": self.acked_seq,
            "limits": self.limits.__dict__, "models": self.server.models,
            "server": f"vibescope/{self.server.version}",
        })
        if resumed:
            for event in await store.events_after(self.session_id, hello.last_event_t):
                await self.send_json(event)
        return True

    def _session_config(self, hello: Hello) -> SessionConfig:
        audio = hello.audio
        return SessionConfig(
            audio_encoding=None if hello.container or audio is None else audio.encoding,
            audio_rate=16000 if audio is None else audio.sample_rate,
            audio_channels=1 if audio is None else audio.channels,
            video=hello.video is not None or hello.container is not None,
            container=hello.container,
            max_video_width=self.limits.max_video_width,
            max_video_height=self.limits.max_video_height,
            max_audio_seconds_per_chunk=self.limits.max_audio_seconds_per_frame,
            stages=self.server.config.pipeline,
            stems=("ost",) if "ost_audio" in hello.want else (),  # the only stem the protocol sends
        )

    # --- reading ---------------------------------------------------------------------------

    async def _read(self) -> None:
        while not self.ws.closed and not self._closing:
            try:
                msg = await self.ws.receive(timeout=self.limits.idle_timeout_s)
            except asyncio.TimeoutError:
                await self.fail(ErrorCode.RATE_LIMITED, f"idle for {self.limits.idle_timeout_s:.0f} s", CloseCode.POLICY)
                return
            if msg.type == WSMsgType.TEXT:
                await self._on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await self._on_binary(msg.data)
            elif msg.type == WSMsgType.ERROR:
                exc = self.ws.exception()
                self.metrics.errors_total[ErrorCode.TOO_BIG if "size" in str(exc) else ErrorCode.BAD_HEADER] += 1
                return
            else:  # CLOSE / CLOSING / CLOSED
                return

    async def _on_text(self, text: str) -> None:
        try:
            msg = parse_control(text)
        except ProtocolError as exc:
            await self.send_error(exc.code, exc.message)
            return
        kind = msg["type"]
        if kind == "bye":
            await self._enqueue(_Item(self.last_received, None, time.perf_counter(), bye=True))
            self._closing = True
        elif kind == "hello":
            await self.send_error(ErrorCode.HELLO_TWICE, "hello was already received on this connection")
        else:
            await self.send_error(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}")

    async def _on_binary(self, data: bytes) -> None:
        arrived = time.perf_counter()
        try:
            frame = decode_frame(data)
        except ProtocolError as exc:
            await self.send_error(exc.code, exc.message, exc.seq)
            return
        if frame.seq <= self.last_received:
            self.metrics.duplicates_total += 1
            await self.send_json({"type": "ack", "seq": self.acked_seq})
            return
        if frame.seq != self.last_received + 1:
            await self.send_error(ErrorCode.BAD_SEQ, f"expected seq {self.last_received + 1}, got {frame.seq}: "
                                  f"resend from acked_seq + 1 in order", frame.seq)
            return
        self.last_received = frame.seq
        name = _KIND_NAMES[frame.kind]
        refusal = self._refuse(frame)
        if refusal is not None:
            code, message = refusal
            await self.send_error(code, message, frame.seq)
            await self._enqueue(_Item(frame.seq, None, arrived))
            if code == ErrorCode.RATE_LIMITED and self._flood > self.limits.max_video_fps * FLOOD_SECONDS:
                await self.close(CloseCode.POLICY, "video frame flood beyond the announced rate")
            return
        self.metrics.frames_total[name] += 1
        self.metrics.bytes_total[name] += len(frame.payload)
        if frame.kind == Kind.VIDEO and self.shedding.skip(self._queue_delay(arrived)):
            self.metrics.dropped_video_total += 1
            await self._enqueue(_Item(frame.seq, None, arrived, note="dropped"))
            return
        await self._enqueue(_Item(frame.seq, frame, arrived))  # blocks when full: backpressure

    async def _enqueue(self, item: _Item) -> None:
        await self.queue.put(item)
        self._waiting.append(item.arrived)

    def _queue_delay(self, now: float) -> float:
        """How long the oldest frame not yet taken by analysis has waited, seconds."""
        return now - self._waiting[0] if self._waiting else 0.0

    def _refuse(self, frame: MediaFrame) -> tuple[str, str] | None:
        """Why a well-formed frame is refused before analysis, or None."""
        if frame.kind != Kind.VIDEO:
            return None
        now = time.monotonic()
        fps = self.limits.max_video_fps
        elapsed = now - self._bucket_at
        self._bucket = min(fps * 10, self._bucket + elapsed * fps)
        self._flood = max(0.0, self._flood - elapsed * fps)
        self._bucket_at = now
        too_dense = self._last_video_ts is not None and frame.timestamp_us - self._last_video_ts < 0.5e6 / fps
        if self._bucket < 1.0 or too_dense:
            self._flood += 1.0
            return ErrorCode.RATE_LIMITED, f"video above {fps:g} frames/s: frame skipped"
        self._bucket -= 1.0
        self._last_video_ts = frame.timestamp_us
        return None

    # --- analysis --------------------------------------------------------------------------

    async def _analyse(self) -> None:
        while True:
            items = [await self.queue.get()]
            while len(items) < BATCH_ITEMS and not self.queue.empty() and not items[-1].bye:
                items.append(self.queue.get_nowait())
            for _ in items:
                self._waiting.popleft()
            try:
                results, errors, state = await self.server.analysis.run(self._process(items))
            except Exception:  # a bug in analysis: the stored state is still the last good one
                log.exception("analysis failed in session %s", self.session_id)
                await self.fail(ErrorCode.INTERNAL, "internal analysis error; resume to continue", CloseCode.INTERNAL)
                return
            events = [json.dumps(ev) for r in results for ev in r[1]]
            last_seq = max(it.seq for it in items)
            try:
                size = await self.server.store.save(self.session_id, self.owner, state, last_seq, events)
            except OwnershipLost:
                await self.fail(ErrorCode.SESSION_BUSY, "session taken over by a newer connection", CloseCode.SESSION_BUSY)
                return
            except Exception as exc:  # store down: nothing acknowledged, the client resumes later
                log.error("state store write failed for %s: %s", self.session_id, exc)
                await self.fail(ErrorCode.INTERNAL, "state store unavailable; resume later", CloseCode.TRY_AGAIN)
                return
            self._last_state = state
            self.acked_seq = last_seq
            self.metrics.state_size.observe(size)
            self.metrics.state_bytes[self.session_id] = size
            sent = time.perf_counter()
            self.shedding.answered(sent - items[0].arrived)
            for item, evs, stems in results:
                self.metrics.latency.observe(sent - item.arrived)
                if stems is not None:
                    await self._send_ost(stems, evs)
            for event in events:
                await self.send_json(event)
            self.metrics.events_total += len(events)
            for seq, code, message in errors:
                await self.send_error(code, message, seq)
            await self.send_json({"type": "ack", "seq": self.acked_seq})
            if items[-1].bye:
                await self.send_json({"type": "bye", "acked_seq": self.acked_seq})
                await self.close(CloseCode.NORMAL, "bye")
                return

    def _process(self, items: list[_Item]) -> Job:
        """An analysis job (server/analysis.py): feed every item, then serialise the engine state once.

        Returns ``(results, errors, state bytes)``. An unexpected exception (a bug, not bad media)
        on one item must not kill the session: the engine is restored from the last stored state
        and the batch replayed without that item, which is answered with an ``internal`` error
        (and acknowledged, so it is not resent forever). The engine is deterministic, so the
        replay gives the same results."""
        failed: dict[int, str] = {}
        while True:
            try:
                return (yield from self._feed_items(items, failed))
            except _ItemFailed as f:
                log.error("analysis of seq %d in session %s failed: %r", f.seq, self.session_id, f.cause)
                failed[f.seq] = f"internal error analysing this frame ({type(f.cause).__name__}); it was skipped"
                self.engine = Session.from_bytes(self._last_state)

    def _feed_items(self, items: list[_Item], failed: dict[int, str]) -> Job:
        engine = self.engine
        results: list[tuple[_Item, list[dict], Any]] = []
        errors: list[tuple[int, str, str]] = []

        def media(item: _Item) -> bool:  # a frame to analyse
            return item.frame is not None and not item.bye and item.seq not in failed

        i = 0
        while i < len(items):
            if media(items[i]):
                run = []  # consecutive frames: one request, fed with other sessions' (AnalysisPool)
                while i < len(items) and media(items[i]):
                    run.append(items[i])
                    i += 1
                outs = yield engine, [Chunk(_KIND_NAMES[it.frame.kind], it.frame.payload, it.frame.timestamp) for it in run]
                for item, out in zip(run, outs):
                    if isinstance(out, MediaError):
                        errors.append((item.seq, ErrorCode.BAD_MEDIA, str(out)))
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
            elif item.seq in failed:
                errors.append((item.seq, ErrorCode.INTERNAL, failed[item.seq]))
            elif item.note == "dropped":
                engine.note_dropped_video()
        return results, errors, engine.to_bytes()

    def _collect(self, results: list, item: _Item, out: FeedResult) -> None:
        evs = [ev.to_dict() for ev in out.events]
        done = time.perf_counter()
        for ev in evs:
            ev["latency_ms"] = round((done - item.arrived) * 1000.0, 2)
        results.append((item, evs, out.stems.get("ost") if self.want_ost else None))

    async def _send_ost(self, ost: Any, events: list[dict]) -> None:
        if not events:
            return
        start = events[0]["t"] - TICK_SECONDS
        self._ost_seq += 1
        self._post(encode_frame(Kind.AUDIO, self._ost_seq, int(round(start * 1e6)), float_to_pcm16(ost)))

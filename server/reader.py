"""Reading a connection: control messages, media frames in seq order, the video rate limit, and
which video frames to skip; accepted frames go to the backlog for analysis."""

from __future__ import annotations

import asyncio
import time

from aiohttp import WSMsgType, web

from vibescope.server.backlog import Backlog, Pending
from vibescope.server.context import ConnectionContext
from vibescope.server.handshake import OpenSession
from vibescope.server.outbox import Outbox
from vibescope.server.protocol import (
    KIND_NAMES,
    CloseCode,
    ErrorCode,
    Kind,
    Limits,
    ProtocolError,
    Skip,
    decode_frame,
    parse_control,
)
from vibescope.server.shedding import VideoShedding

FLOOD_SECONDS = 5  # close after this many seconds' worth of frames beyond the rate limit


class VideoRateLimit:
    """A token bucket of ``fps`` frames per second (a burst of ``10 · fps`` for resends) plus a
    minimum gap in media time; refused frames feed a flood counter that decays at ``fps``."""

    def __init__(self, fps: float, clock=time.monotonic) -> None:
        self.fps = fps
        self.clock = clock
        self._bucket = fps * 10
        self._at = clock()
        self._last_ts: int | None = None
        self.flood = 0.0

    def admit(self, timestamp_us: int) -> bool:
        now = self.clock()
        elapsed = now - self._at
        self._bucket = min(self.fps * 10, self._bucket + elapsed * self.fps)
        self.flood = max(0.0, self.flood - elapsed * self.fps)
        self._at = now
        # closer than half a frame interval to the last admitted frame, either way: a frame stamped
        # far ahead and then refused by the session (bad_timestamp) must not make every later
        # frame "too dense" until media time catches up with it
        too_dense = self._last_ts is not None and abs(timestamp_us - self._last_ts) < 0.5e6 / self.fps
        if self._bucket < 1.0 or too_dense:
            self.flood += 1.0
            return False
        self._bucket -= 1.0
        self._last_ts = timestamp_us
        return True

    @property
    def flooding(self) -> bool:
        return self.flood > self.fps * FLOOD_SECONDS


class MediaBudget:
    """What one session may send: ``speed`` media seconds per second of audio (a burst of
    ``burst_s``) and ``bytes_per_s`` payload bytes of every kind (a burst of two seconds' worth).
    Over budget the reader waits, so TCP pushes back on the client; nothing is dropped."""

    def __init__(self, limits: Limits, clock=time.monotonic) -> None:
        self.clock = clock
        self.speed, self.burst_s = limits.max_media_speed, limits.max_media_burst_s
        self.bytes_per_s = limits.max_bytes_per_s
        self._media = self.burst_s
        self._bytes = 2.0 * self.bytes_per_s
        self._at = clock()

    def _refill(self) -> None:
        now = self.clock()
        elapsed, self._at = now - self._at, now
        self._media = min(self.burst_s, self._media + elapsed * self.speed)
        self._bytes = min(2.0 * self.bytes_per_s, self._bytes + elapsed * self.bytes_per_s)

    def wait_s(self, media_s: float, nbytes: int) -> float:
        """Seconds to wait before a frame of ``media_s`` seconds and ``nbytes`` bytes is affordable
        (0: now); takes them when it is. A frame larger than a whole burst costs the whole burst
        (it could never be afforded otherwise, and the reader would wait for ever; analysis
        refuses such a frame anyway)."""
        media_s, nbytes = min(media_s, self.burst_s), min(nbytes, 2.0 * self.bytes_per_s)
        self._refill()
        need = max((media_s - self._media) / self.speed, (nbytes - self._bytes) / self.bytes_per_s, 0.0)
        if need <= 0:
            self._media -= media_s
            self._bytes -= nbytes
        return need


class FrameReader:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        ctx: ConnectionContext,
        outbox: Outbox,
        session: OpenSession,
        backlog: Backlog,
        shedding: VideoShedding,
        acked: asyncio.Event,
    ) -> None:
        self.ws, self.ctx, self.outbox, self.session = ws, ctx, outbox, session
        self.backlog, self.shedding = backlog, shedding
        self.limits = ctx.config.limits
        self.metrics = ctx.metrics
        self.last_received = session.acked_seq
        self.video_rate = VideoRateLimit(self.limits.max_video_fps)
        self.budget = MediaBudget(self.limits)
        self.acked = acked  # set by the analysis loop at each ack: the window may open
        self._bytes_per_sample = None
        if session.engine.config.audio_encoding:
            width = 2 if session.engine.config.audio_encoding == "pcm16" else 4
            self._bytes_per_sample = width * session.engine.config.audio_channels * session.engine.config.audio_rate

    async def _within_limits(self, frame_kind: Kind, payload_bytes: int) -> None:
        """Wait while the session is at its window (``max_unacked_frames`` read and not yet
        acknowledged) or over its media budget: the client's frames wait in the socket."""
        while self.last_received - self.session.acked_seq >= self.limits.max_unacked_frames:
            self.acked.clear()
            await self.acked.wait()
        media_s = payload_bytes / self._bytes_per_sample if frame_kind == Kind.AUDIO and self._bytes_per_sample else 0.0
        while (wait := self.budget.wait_s(media_s, payload_bytes)) > 0:
            await asyncio.sleep(min(wait, 1.0))

    async def run(self) -> None:
        while not self.ws.closed and not self.outbox.closing:
            try:
                msg = await self.ws.receive(timeout=self.limits.idle_timeout_s)
            except TimeoutError:
                await self.outbox.fail(
                    ErrorCode.RATE_LIMITED, f"idle for {self.limits.idle_timeout_s:g} s", CloseCode.POLICY
                )
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
            self.outbox.send_error(exc.code, exc.message)
            return
        kind = msg["type"]
        if kind == "skip":
            try:
                skip = Skip.from_dict(msg)
            except ProtocolError as exc:
                self.outbox.send_error(exc.code, exc.message)
                return
            if skip.to_seq <= self.last_received:
                self.outbox.send_error(
                    ErrorCode.BAD_SEQ, f"skip.to_seq {skip.to_seq} is not past seq {self.last_received}"
                )
                return
            self.last_received = skip.to_seq - 1
            await self.backlog.put(Pending(self.last_received, None, self.ctx.clock(), skip_to_t=skip.to_t))
        elif kind == "bye":
            await self.backlog.put(Pending(self.last_received, None, self.ctx.clock(), bye=True))
            self.outbox.closing = True
        elif kind == "hello":
            self.outbox.send_error(ErrorCode.HELLO_TWICE, "hello was already received on this connection")
        else:
            self.outbox.send_error(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}")

    async def _on_binary(self, data: bytes) -> None:
        arrived = self.ctx.clock()
        try:
            frame = decode_frame(data)
        except ProtocolError as exc:
            self.outbox.send_error(exc.code, exc.message, exc.seq)
            return
        if frame.seq <= self.last_received:
            self.metrics.duplicates_total += 1
            self.outbox.send_json({"type": "ack", "seq": self.session.acked_seq})
            return
        if frame.seq != self.last_received + 1:
            self.outbox.send_error(
                ErrorCode.BAD_SEQ,
                f"expected seq {self.last_received + 1}, got {frame.seq}: resend from acked_seq + 1 in order",
                frame.seq,
            )
            return
        await self._within_limits(frame.kind, len(frame.payload))
        self.last_received = frame.seq
        catch_up = self.session.catch_up_until_t is not None and frame.timestamp < self.session.catch_up_until_t
        if frame.kind == Kind.VIDEO and not self.video_rate.admit(frame.timestamp_us):
            self.outbox.send_error(
                ErrorCode.RATE_LIMITED, f"video above {self.video_rate.fps:g} frames/s: frame skipped", frame.seq
            )
            await self._enqueue(Pending(frame.seq, None, arrived, catch_up=catch_up))
            if self.video_rate.flooding:
                await self.outbox.close(CloseCode.POLICY, "video frame flood beyond the announced rate")
            return
        name = KIND_NAMES[frame.kind]
        self.metrics.frames_total[name] += 1
        self.metrics.bytes_total[name] += len(frame.payload)
        if frame.kind == Kind.VIDEO and not catch_up and self.shedding.skip(self.backlog.oldest_live()):
            self.metrics.dropped_video_total += 1
            await self._enqueue(Pending(frame.seq, None, arrived, skipped=True))
            return
        await self._enqueue(Pending(frame.seq, frame, arrived, catch_up=catch_up))  # blocks when full: backpressure

    async def _enqueue(self, item: Pending) -> None:
        self.shedding.received(item.catch_up)
        await self.backlog.put(item)

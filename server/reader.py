"""Reading a connection: control messages, media frames in seq order, the video rate limit, and
which video frames to skip; accepted frames go to the backlog for analysis."""

from __future__ import annotations

import time

from aiohttp import WSMsgType, web

from vibescope.server.backlog import Backlog, Pending
from vibescope.server.context import ConnectionContext
from vibescope.server.handshake import OpenSession
from vibescope.server.outbox import Outbox
from vibescope.server.protocol import KIND_NAMES, CloseCode, ErrorCode, Kind, ProtocolError, decode_frame, parse_control
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
        too_dense = self._last_ts is not None and timestamp_us - self._last_ts < 0.5e6 / self.fps
        if self._bucket < 1.0 or too_dense:
            self.flood += 1.0
            return False
        self._bucket -= 1.0
        self._last_ts = timestamp_us
        return True

    @property
    def flooding(self) -> bool:
        return self.flood > self.fps * FLOOD_SECONDS


class FrameReader:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        ctx: ConnectionContext,
        outbox: Outbox,
        session: OpenSession,
        backlog: Backlog,
        shedding: VideoShedding,
    ) -> None:
        self.ws, self.ctx, self.outbox, self.session = ws, ctx, outbox, session
        self.backlog, self.shedding = backlog, shedding
        self.limits = ctx.config.limits
        self.metrics = ctx.metrics
        self.last_received = session.acked_seq
        self.video_rate = VideoRateLimit(self.limits.max_video_fps)

    async def run(self) -> None:
        while not self.ws.closed and not self.outbox.closing:
            try:
                msg = await self.ws.receive(timeout=self.limits.idle_timeout_s)
            except TimeoutError:
                await self.outbox.fail(
                    ErrorCode.RATE_LIMITED, f"idle for {self.limits.idle_timeout_s:.0f} s", CloseCode.POLICY
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
        if kind == "bye":
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

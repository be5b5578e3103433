"""The Python streaming client (`vibescope push`, benchmarks, tests): docs/protocol.md's client
side — hello/resume, seq numbering, keeping unacknowledged frames, reconnecting with backoff,
de-duplicating replayed events by media time.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from vibescope.server.protocol import PROTOCOL_VERSION, Kind, decode_frame, encode_frame
from vibescope.stream.media import Chunk
from vibescope.stream.timebase import SAMPLE_RATE

KINDS = {"audio": Kind.AUDIO, "video": Kind.VIDEO, "container": Kind.CONTAINER}
FATAL_CLOSES = {
    4000: "unsupported protocol version",
    4001: "missing or wrong token",
    4002: "protocol violation",
    4004: "unknown or expired session",
    1009: "message too big",
}


class PushError(Exception):
    """The stream cannot go on (bad token, expired session, gave up reconnecting)."""


@dataclass
class PushStats:
    sent: int = 0
    resent: int = 0
    reconnects: int = 0
    events: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


class PushClient:
    """Streams chunks to a vibescope server and yields its overlay events exactly once each.

    ``on_event(event_dict)`` is called for every new overlay event (in media-time order);
    ``on_ost(t_seconds, pcm16_bytes)`` for OST stem frames when ``want_ost``.
    """

    IN_FLIGHT = 32  # frames sent but not acknowledged, at most
    MAX_SPEED_IN_FLIGHT = 4

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        session_id: str | None = None,
        resume_token: str | None = None,
        audio: dict[str, Any] | None = None,
        video: str | None = "jpeg",
        container: str | None = None,
        want_ost: bool = False,
        realtime: bool = True,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_ost: Callable[[float, bytes], None] | None = None,
        on_error: Callable[[dict[str, Any]], None] | None = None,
        max_backoff_s: float = 8.0,
        give_up_after_s: float = 60.0,
    ) -> None:
        self.url = url
        self.token = token
        self.session_id = session_id
        self.resume_token = resume_token
        self.audio = audio if audio is not None else {"encoding": "pcm16", "sample_rate": SAMPLE_RATE, "channels": 1}
        self.video = video
        self.container = container
        self.want_ost = want_ost
        self.realtime = realtime
        self.on_event = on_event or (lambda e: None)
        self.on_ost = on_ost or (lambda t, b: None)
        self.on_error = on_error or (lambda e: None)
        self.max_backoff_s = max_backoff_s
        self.give_up_after_s = give_up_after_s
        self.unacked: OrderedDict[int, tuple[bytes, float]] = OrderedDict()  # seq -> (frame, sent at)
        self.acked = 0
        self.last_event_t: float | None = None
        self.max_unacked = 600
        self.stats = PushStats()
        self.welcome: dict[str, Any] | None = None
        self._acked_cond: asyncio.Condition | None = None
        self._done = False
        self._started: float | None = None  # perf_counter time of media time 0, at real-time pace

    async def run(self, chunks: Iterable[Chunk]) -> PushStats:
        """Send every chunk, then ``bye``; returns when the server said bye (all acknowledged)."""
        self._acked_cond = asyncio.Condition()
        source = iter(chunks)
        seq = 0
        pending: Chunk | None = None
        backoff, down_since = 0.25, None
        while not self._done:
            try:
                async with websockets.connect(
                    self._connect_url(),
                    max_size=None,
                    open_timeout=10,
                    ping_interval=20,
                    close_timeout=5,
                    compression=None,
                ) as ws:
                    await self._handshake(ws)
                    backoff, down_since = 0.25, None
                    reader = asyncio.create_task(self._read(ws))
                    try:
                        for s, (frame, _) in list(self.unacked.items()):  # resend what was not acked
                            await ws.send(frame)
                            self.unacked[s] = (frame, time.perf_counter())
                            self.stats.resent += 1
                        while True:
                            if reader.done():
                                break
                            if pending is None:
                                pending = next(source, None)
                                if pending is None:
                                    break
                            if self._started is None:
                                self._started = time.perf_counter() - pending.t
                            if self.realtime:
                                end = pending.t + (
                                    len(pending.payload) / 2 / SAMPLE_RATE if pending.kind == "audio" else 0
                                )
                                delay = self._started + end - time.perf_counter()
                                if delay > 0:
                                    await asyncio.sleep(delay)
                            await self._wait_window(reader)
                            if reader.done():
                                break
                            seq += 1
                            frame = encode_frame(KINDS[pending.kind], seq, int(round(pending.t * 1e6)), pending.payload)
                            self.unacked[seq] = (frame, time.perf_counter())
                            pending = None
                            await ws.send(frame)
                            self.stats.sent += 1
                        if not reader.done():
                            await ws.send(json.dumps({"type": "bye"}))
                        await reader  # until the server's bye / close
                    finally:
                        reader.cancel()
            except PushError:
                raise
            except (TimeoutError, OSError, ConnectionClosed, InvalidHandshake) as exc:
                if isinstance(exc, ConnectionClosed) and exc.rcvd and exc.rcvd.code in FATAL_CLOSES:
                    raise PushError(
                        f"server closed the stream: {FATAL_CLOSES[exc.rcvd.code]} ({exc.rcvd.reason})"
                    ) from None
            except InvalidURI as exc:
                raise PushError(f"bad server URL {self.url!r}: {exc}") from None
            if self._done:
                break
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since > self.give_up_after_s:
                raise PushError(f"could not reach {self.url} for {self.give_up_after_s:.0f} s; gave up")
            self.stats.reconnects += 1
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(self.max_backoff_s, backoff * 2)
        return self.stats

    def _connect_url(self) -> str:
        """The stream URL, with ``?session=<id>`` when resuming: a routing hint for a proxy in
        front of several replicas (docker/nginx.conf); the server itself ignores it."""
        if not self.session_id:
            return self.url
        return f"{self.url}{'&' if '?' in self.url else '?'}session={self.session_id}"

    async def _handshake(self, ws: Any) -> None:
        hello: dict[str, Any] = {
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "client": "vibescope-push",
            "audio": self.audio,
            "video": self.video,
            "want": ["ost_audio"] if self.want_ost else [],
        }
        if self.container:
            hello["container"] = self.container
        if self.token:
            hello["token"] = self.token
        if self.session_id:
            hello.update(session_id=self.session_id, resume_token=self.resume_token, last_event_t=self.last_event_t)
            if self.realtime and self._started is not None:
                # what came due while we were away goes out in a burst now: the server analyses it
                # like live media instead of taking the burst for a server that fell behind
                hello["catch_up_until_t"] = round(time.perf_counter() - self._started, 3)
        await ws.send(json.dumps(hello))
        raw = await asyncio.wait_for(ws.recv(), timeout=15)
        msg = json.loads(raw) if isinstance(raw, str) else {}
        if msg.get("type") == "error":
            self.on_error(msg)
            raise PushError(f"server refused the stream: {msg.get('code')}: {msg.get('message')}")
        if msg.get("type") != "welcome":
            raise PushError(f"expected welcome, got {str(raw)[:80]!r}")
        self.welcome = msg
        self.session_id, self.resume_token = msg["session_id"], msg["resume_token"]
        self.max_unacked = int(msg.get("limits", {}).get("max_unacked_frames", self.max_unacked))
        # never flood the server's queue (after a reconnect the backlog goes out in a burst);
        # at max speed, go as fast as the server keeps up
        self.max_unacked = min(self.max_unacked, self.IN_FLIGHT if self.realtime else self.MAX_SPEED_IN_FLIGHT)
        await self._on_ack(int(msg.get("acked_seq", 0)))

    async def _wait_window(self, reader: asyncio.Task) -> None:
        async with self._acked_cond:
            while len(self.unacked) >= self.max_unacked and not reader.done():
                try:
                    await asyncio.wait_for(self._acked_cond.wait(), timeout=1.0)
                except TimeoutError:
                    pass

    async def _on_ack(self, seq: int) -> None:
        for s in [s for s in self.unacked if s <= seq]:
            del self.unacked[s]
        self.acked = max(self.acked, seq)
        async with self._acked_cond:
            self._acked_cond.notify_all()

    async def _read(self, ws: Any) -> None:
        async for raw in ws:
            if isinstance(raw, bytes):
                if self.want_ost:
                    frame = decode_frame(raw)
                    self.on_ost(frame.timestamp, frame.payload)
                continue
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind == "overlay":
                if self.last_event_t is None or msg["t"] > self.last_event_t + 1e-9:
                    self.last_event_t = msg["t"]
                    self.stats.events += 1
                    self.on_event(msg)
            elif kind == "ack":
                await self._on_ack(int(msg["seq"]))
            elif kind == "error":
                self.stats.errors.append(msg)
                self.on_error(msg)
                if msg.get("code") == "bad_seq":
                    await ws.close()  # reconnect and resend in order
                    return
            elif kind == "bye":
                self._done = True
                return


def write_wav(path: str, pieces: list[tuple[float, bytes]], rate: int = SAMPLE_RATE) -> float:
    """PCM16 mono pieces (media time s, bytes) -> a WAV file placed by media time; returns seconds."""
    import wave

    if not pieces:
        audio = np.zeros(0, dtype=np.int16)
    else:
        end = max(int(round(t * rate)) + len(b) // 2 for t, b in pieces)
        audio = np.zeros(end, dtype=np.int16)
        for t, b in pieces:
            start = int(round(t * rate))
            x = np.frombuffer(b, dtype="<i2")
            audio[start : start + len(x)] = x
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(audio.astype("<i2").tobytes())
    return len(audio) / rate

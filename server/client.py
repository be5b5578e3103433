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
    1009: "message too big",
}
UNKNOWN_SESSION = 4004  # on a resume: the server no longer has the session; start a new one
TRY_AGAIN = 1013


class PushError(Exception):
    """The stream cannot go on (bad token, gave up reconnecting)."""


@dataclass
class PushStats:
    sent: int = 0
    resent: int = 0
    reconnects: int = 0
    events: int = 0
    new_sessions: int = 0  # sessions started over because the server no longer had ours
    errors: list[dict[str, Any]] = field(default_factory=list)
    lost: list[tuple[float, float]] = field(default_factory=list)  # media time ranges no server analysed


@dataclass
class _Sent:
    chunk: Chunk
    frame: bytes  # as sent, with its seq
    sent_at: float


class PushClient:
    """Streams chunks to a vibescope server and yields its overlay events exactly once each.

    ``on_event(event_dict)`` is called for every new overlay event (in media-time order);
    ``on_ost(t_seconds, pcm16_bytes)`` for OST stem frames when ``want_ost``; ``on_lost(from_t,
    to_t)`` when a media time range will never be analysed (the server lost it and this client no
    longer held it).

    What survives a failure:
    - a dropped connection: reconnect with backoff, resume, resend what was not acknowledged;
    - a store that lost acknowledged writes (welcome says ``lost``): resend those frames from the
      last ``RETAIN_S`` seconds of acknowledged media kept for that, or tell the server to
      ``skip`` past them and report the range;
    - a server that no longer has the session (4004 on a resume: expired, or written by another
      version): start a new session at the media time where this client is, and report the range.
    """

    IN_FLIGHT = 32  # frames sent but not acknowledged, at most
    MAX_SPEED_IN_FLIGHT = 4
    RETAIN_S = 5.0  # acknowledged media kept to resend after a store rollback
    RETAIN_FRAMES = 200

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
        on_lost: Callable[[float, float], None] | None = None,
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
        self.on_lost = on_lost or (lambda a, b: None)
        self.max_backoff_s = max_backoff_s
        self.give_up_after_s = give_up_after_s
        self.unacked: OrderedDict[int, _Sent] = OrderedDict()  # seq -> what was sent, not yet acked
        self.retained: OrderedDict[int, _Sent] = OrderedDict()  # seq -> acked, kept for a rollback
        self.acked = 0
        self.seq = 0  # the last seq given to a frame
        self.last_event_t: float | None = None
        self.max_unacked = 600
        self.stats = PushStats()
        self.welcome: dict[str, Any] | None = None
        self._acked_cond: asyncio.Condition | None = None
        self._done = False
        self._started: float | None = None  # perf_counter time of media time 0, at real-time pace
        self._retry_after_s: float | None = None
        self._next: Chunk | None = None  # the next chunk to send, not yet numbered

    async def run(self, chunks: Iterable[Chunk]) -> PushStats:
        """Send every chunk, then ``bye``; returns when the server said bye (all acknowledged)."""
        self._acked_cond = asyncio.Condition()
        source = iter(chunks)
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
                        for sent in list(self.unacked.values()):  # resend what was not acked
                            await ws.send(sent.frame)
                            sent.sent_at = time.perf_counter()
                            self.stats.resent += 1
                        while True:
                            if reader.done():
                                break
                            if self._next is None:
                                self._next = next(source, None)
                                if self._next is None:
                                    break
                            pending = self._next
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
                            self.seq += 1
                            sent = _Sent(pending, self._encode(self.seq, pending), time.perf_counter())
                            self.unacked[self.seq] = sent
                            self._next = None
                            await ws.send(sent.frame)
                            self.stats.sent += 1
                        if not reader.done():
                            await ws.send(json.dumps({"type": "bye"}))
                        await reader  # until the server's bye / close
                    finally:
                        reader.cancel()
            except PushError:
                raise
            except (TimeoutError, OSError, ConnectionClosed, InvalidHandshake) as exc:
                code = exc.rcvd.code if isinstance(exc, ConnectionClosed) and exc.rcvd else None
                if code in FATAL_CLOSES:
                    raise PushError(f"server closed the stream: {FATAL_CLOSES[code]} ({exc.rcvd.reason})") from None
                if code == UNKNOWN_SESSION:
                    if not self.session_id:
                        raise PushError("the server refused the new session") from None
                    self._start_over()
                    continue
            except InvalidURI as exc:
                raise PushError(f"bad server URL {self.url!r}: {exc}") from None
            if self._done:
                break
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since > self.give_up_after_s:
                raise PushError(f"could not reach {self.url} for {self.give_up_after_s:.0f} s; gave up")
            self.stats.reconnects += 1
            wait = backoff * (0.5 + random.random())
            if self._retry_after_s is not None:  # the server said when it will have room
                wait, self._retry_after_s = max(wait, self._retry_after_s), None
            await asyncio.sleep(wait)
            backoff = min(self.max_backoff_s, backoff * 2)
        return self.stats

    @staticmethod
    def _encode(seq: int, chunk: Chunk) -> bytes:
        return encode_frame(KINDS[chunk.kind], seq, int(round(chunk.t * 1e6)), chunk.payload)

    def _lose(self, from_t: float, to_t: float) -> None:
        if to_t > from_t:
            self.stats.lost.append((from_t, to_t))
            self.on_lost(from_t, to_t)

    def _start_over(self) -> None:
        """The server no longer has our session: a new one takes what was not acknowledged,
        renumbered from seq 1, and the media the old one had analysed is gone from the server."""
        held = [sent.chunk for sent in self.unacked.values()]
        first_t = held[0].t if held else (self._next.t if self._next is not None else None)
        if self.retained and first_t is not None:
            self._lose(next(iter(self.retained.values())).chunk.t, first_t)
        self.session_id = self.resume_token = None
        self.unacked.clear()
        self.retained.clear()
        self.acked = self.seq = 0
        for chunk in held:
            self.seq += 1
            self.unacked[self.seq] = _Sent(chunk, self._encode(self.seq, chunk), 0.0)
        self.stats.new_sessions += 1

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
            hello.update(
                session_id=self.session_id,
                resume_token=self.resume_token,
                last_event_t=self.last_event_t,
                acked_seq=self.acked,
            )
            if self.realtime and self._started is not None:
                # what came due while we were away goes out in a burst now: the server analyses it
                # like live media instead of taking the burst for a server that fell behind
                hello["catch_up_until_t"] = round(time.perf_counter() - self._started, 3)
        await ws.send(json.dumps(hello))
        raw = await asyncio.wait_for(ws.recv(), timeout=15)
        msg = json.loads(raw) if isinstance(raw, str) else {}
        if msg.get("type") == "error":
            self.on_error(msg)
            if msg.get("code") in ("server_full", "internal"):  # 1013 follows: retry later
                self._retry_after_s = msg.get("retry_after_s")
                raise ConnectionClosed(None, None)
            if msg.get("code") == "unknown_session" and self.session_id:
                self._start_over()
                raise ConnectionClosed(None, None)
            raise PushError(f"server refused the stream: {msg.get('code')}: {msg.get('message')}")
        if msg.get("type") != "welcome":
            raise PushError(f"expected welcome, got {str(raw)[:80]!r}")
        self.welcome = msg
        self.session_id, self.resume_token = msg["session_id"], msg["resume_token"]
        self.max_unacked = int(msg.get("limits", {}).get("max_unacked_frames", self.max_unacked))
        # never flood the server's queue (after a reconnect the backlog goes out in a burst);
        # at max speed, go as fast as the server keeps up
        self.max_unacked = min(self.max_unacked, self.IN_FLIGHT if self.realtime else self.MAX_SPEED_IN_FLIGHT)
        server_acked = int(msg.get("acked_seq", 0))
        if server_acked < self.acked:
            await self._rolled_back(ws, server_acked)
        await self._on_ack(server_acked)

    async def _rolled_back(self, ws: Any, server_acked: int) -> None:
        """The server's store holds less than it acknowledged to us: resend what we still hold, or
        skip past what we do not (bounded: one message, then the stream goes on)."""
        missing = range(server_acked + 1, self.acked + 1)
        if all(s in self.retained for s in missing):
            again = OrderedDict((s, self.retained.pop(s)) for s in missing)
            again.update(self.unacked)
            self.unacked = again
        else:
            first = min(self.unacked) if self.unacked else self.seq + 1
            to_t = self.unacked[first].chunk.t if self.unacked else (self._next.t if self._next else None)
            if to_t is None:  # nothing left to send: the lost part is at the very end
                to_t = max((sent.chunk.t for sent in self.retained.values()), default=0.0)
            known = [sent.chunk.t for s, sent in self.retained.items() if s > server_acked]
            self._lose(min(known) if known else to_t, to_t)
            await ws.send(json.dumps({"type": "skip", "to_seq": first, "to_t": to_t}))
        self.retained.clear()
        self.acked = server_acked

    async def _wait_window(self, reader: asyncio.Task) -> None:
        async with self._acked_cond:
            while len(self.unacked) >= self.max_unacked and not reader.done():
                try:
                    await asyncio.wait_for(self._acked_cond.wait(), timeout=1.0)
                except TimeoutError:
                    pass

    async def _on_ack(self, seq: int) -> None:
        for s in [s for s in self.unacked if s <= seq]:
            self.retained[s] = self.unacked.pop(s)
        newest = self.unacked[next(iter(self.unacked))].chunk.t if self.unacked else None
        while self.retained and (
            len(self.retained) > self.RETAIN_FRAMES
            or (newest is not None and newest - next(iter(self.retained.values())).chunk.t > self.RETAIN_S)
        ):
            self.retained.popitem(last=False)
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
                if msg.get("retry_after_s") is not None:
                    self._retry_after_s = float(msg["retry_after_s"])
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

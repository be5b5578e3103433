"""Raw-protocol helpers for the tests that attack a server (test_security, test_error_paths,
test_rollback): connect with chosen headers, origin and source address, read with a timeout,
check that a server is still healthy, build hostile media."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import urllib.request
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from vibescope.server.protocol import Kind, encode_frame
from vibescope.stream.media import encode_jpeg

TICK_PCM = (0.1 * np.sin(2 * np.pi * 440 * np.arange(1600) / 16000) * 32767).astype("<i2").tobytes()  # 100 ms
JPEG = encode_jpeg(np.full((64, 64, 3), 120, np.uint8))
HELLO = {
    "type": "hello",
    "protocol": 1,
    "audio": {"encoding": "pcm16", "sample_rate": 16000, "channels": 1},
    "video": "jpeg",
}


def audio(seq: int, t: float | None = None, payload: bytes = TICK_PCM) -> bytes:
    """An audio frame; by default the 100 ms tick ``seq`` - 1 of a stream that starts at 0."""
    t = (seq - 1) * 0.1 if t is None else t
    return encode_frame(Kind.AUDIO, seq, int(round(t * 1e6)), payload)


async def connect(url: str, *, origin: str | None = None, headers: dict | None = None, local_addr=None):
    """A raw WebSocket; ``local_addr=("127.0.0.2", 0)`` makes it another peer on loopback."""
    kwargs: dict[str, Any] = {"local_addr": local_addr} if local_addr else {}
    return await websockets.connect(
        url,
        origin=origin,
        additional_headers=headers,
        max_size=None,
        open_timeout=10,
        close_timeout=5,
        compression=None,
        proxy=None,
        **kwargs,
    )


async def hello(url: str, *, headers=None, origin=None, local_addr=None, **fields):
    """Connect and say hello (HELLO with ``fields`` merged in); returns (ws, the first reply)."""
    ws = await connect(url, origin=origin, headers=headers, local_addr=local_addr)
    await ws.send(json.dumps({**HELLO, **fields}))
    async with asyncio.timeout(10):
        return ws, json.loads(await ws.recv())


async def recv_until(ws, pred, timeout: float = 10.0) -> list[dict]:
    """Messages up to and including the first that satisfies ``pred`` (binary frames as
    ``{"binary": bytes}``)."""
    got = []
    async with asyncio.timeout(timeout):
        while True:
            raw = await ws.recv()
            msg = json.loads(raw) if isinstance(raw, str) else {"binary": raw}
            got.append(msg)
            if pred(msg):
                return got


def is_ack(seq: int):
    return lambda m: m.get("type") == "ack" and m["seq"] >= seq


def is_error(m: dict) -> bool:
    return m.get("type") == "error"


def overlays(msgs: list[dict]) -> list[dict]:
    return [m for m in msgs if m.get("type") == "overlay"]


def errors(msgs: list[dict]) -> list[tuple[str, int | None]]:
    return [(m["code"], m.get("seq")) for m in msgs if is_error(m)]


async def closed_with(ws, timeout: float = 10.0) -> tuple[int | None, str, list[dict]]:
    """Read until the server closes: (close code, reason, the messages read on the way)."""
    got = []
    with contextlib.suppress(websockets.ConnectionClosed):
        async with asyncio.timeout(timeout):
            async for raw in ws:
                got.append(json.loads(raw) if isinstance(raw, str) else {"binary": raw})
    return ws.close_code, ws.close_reason, got


async def refused_upgrade(url: str, **connect_kwargs) -> tuple[int, dict, Any]:
    """An upgrade the server must refuse: (HTTP status, JSON body, headers)."""
    with pytest.raises(InvalidStatus) as info:
        ws = await connect(url, **connect_kwargs)
        await ws.close()
    response = info.value.response
    return response.status_code, json.loads(response.body or b"{}"), response.headers


def healthz(http: str) -> dict:
    return json.loads(urllib.request.urlopen(http + "/healthz", timeout=5).read())


def metric(srv, name: str) -> float:
    """One /metrics sample of a ServerProcess (0 when the label has not appeared yet)."""
    return srv.metrics().get(name, 0.0)


async def assert_streams(url: str, **connect) -> None:
    """A well-behaved session: three 100 ms audio frames answered with the three overlay events
    and acks, then bye and a clean close."""
    ws, welcome = await hello(url, **connect)
    assert welcome["type"] == "welcome", welcome
    for seq in (1, 2, 3):
        await ws.send(audio(seq))
    msgs = await recv_until(ws, is_ack(3))
    assert errors(msgs) == []
    assert [e["t"] for e in overlays(msgs)] == pytest.approx([0.1, 0.2, 0.3])
    await ws.send(json.dumps({"type": "bye"}))
    assert (await recv_until(ws, lambda m: m.get("type") == "bye"))[-1]["acked_seq"] == 3
    assert (await closed_with(ws))[0] == 1000


async def assert_healthy(srv, **connect) -> None:
    """A ServerProcess is alive and well: /healthz says ok and a new session streams."""
    assert srv.proc.poll() is None, srv.read_log()
    assert healthz(srv.http)["status"] == "ok"
    await assert_streams(srv.url, **connect)


# --- in-process servers -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def in_process(monkeypatch, stage, limits=None):
    """conftest.in_process_server with chosen Limits: (aiohttp TestClient, StreamServer)."""
    from aiohttp.test_utils import TestClient, TestServer

    from vibescope.server.app import StreamServer
    from vibescope.server.config import ServerConfig
    from vibescope.server.protocol import Limits
    from vibescope.stream import pipelines
    from vibescope.stream.signal import SignalStage

    monkeypatch.setitem(pipelines.PIPELINES, stage.name, lambda: [SignalStage(), stage()])
    server = StreamServer(ServerConfig(pipeline=stage.name, limits=limits or Limits()))
    async with TestClient(TestServer(server.app())) as client:
        yield client, server


async def aio_hello(client, **fields):
    ws = await client.ws_connect("/v1/stream")
    await ws.send_str(json.dumps({**HELLO, **fields}))
    return ws, await ws.receive_json(timeout=10)


async def aio_until(ws, pred, timeout: float = 10.0) -> list[dict]:
    """aiohttp flavour of :func:`recv_until` (text messages only)."""
    from aiohttp import WSMsgType

    got = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                got.append({"type": "<closed>", "code": ws.close_code})
                return got
            if msg.type == WSMsgType.TEXT:
                got.append(json.loads(msg.data))
                if pred(got[-1]):
                    return got


async def aio_closed(ws, timeout: float = 10.0) -> tuple[int | None, list[dict]]:
    msgs = await aio_until(ws, lambda m: False, timeout)
    return ws.close_code, msgs[:-1]


async def aio_assert_streams(client) -> None:
    """The in-process server serves a new, well-behaved session."""
    assert (await client.get("/healthz")).status == 200
    ws, welcome = await aio_hello(client)
    assert welcome["type"] == "welcome", welcome
    for seq in (1, 2, 3):
        await ws.send_bytes(audio(seq))
    msgs = await aio_until(ws, is_ack(3))
    assert errors(msgs) == [] and [e["t"] for e in overlays(msgs)] == pytest.approx([0.1, 0.2, 0.3])
    await ws.close()


# --- hostile and unusual media --------------------------------------------------------------------


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 64x64 JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    data = bytearray(JPEG)
    pos = 2
    while data[pos + 1] != 0xC0:  # walk the marker segments to SOF0
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    data[pos + 5 : pos + 7] = height.to_bytes(2, "big")
    data[pos + 7 : pos + 9] = width.to_bytes(2, "big")
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    """A WebP extended-format (VP8X) header claiming ``width`` x ``height``."""
    vp8x = bytes(4) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + len(vp8x).to_bytes(4, "little") + vp8x + bytes(64)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def matroska_with(codec: str, seconds: float = 1.0, rate: int = 48000) -> bytes:
    """A small Matroska file, in memory, whose only stream is audio in ``codec`` (e.g. flac)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        fmt = stream.codec_context.codec.audio_formats[0].name
        n = 1152
        tone = 0.2 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)
        for i in range(0, len(tone) - n + 1, n):
            frame = av.AudioFrame.from_ndarray(_samples(tone[i : i + n], fmt), format=fmt, layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, i, Fraction(1, rate)
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    return buf.getvalue()


def _samples(x: np.ndarray, fmt: str) -> np.ndarray:
    planar = fmt.endswith("p")
    base = fmt.rstrip("p")
    if base == "s16":
        a = (x * 32767).astype(np.int16)
    elif base == "s32":
        a = (x * 2**31 * 0.99).astype(np.int32)
    else:
        a = x.astype(np.float32)
    return a[None, :] if planar else a[None, :].reshape(1, -1)


def fragmented_mp4(seconds: float = 2.0, fps: int = 10, rate: int = 48000) -> bytes:
    """H.264 + AAC in fragmented MP4 as MediaRecorder writes it (empty moov, a moof per keyframe)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4", options={"movflags": "frag_keyframe+empty_moov+default_base_moof"}) as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
        vs.options = {"g": str(fps // 2), "bf": "0"}  # a keyframe (a fragment) every half second
        aus = out.add_stream("aac", rate=rate)
        aus.layout = "mono"
        for i in range(int(seconds * fps)):
            img = np.full((64, 64, 3), (i * 9) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for p in vs.encode(frame):
                out.mux(p)
        tone = 0.2 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate).astype(np.float32)
        for i in range(0, len(tone), 1024):
            piece = np.zeros(1024, np.float32)
            piece[: len(tone[i : i + 1024])] = tone[i : i + 1024]
            frame = av.AudioFrame.from_ndarray(piece[None, :], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, i, Fraction(1, rate)
            for p in aus.encode(frame):
                out.mux(p)
        for s in (vs, aus):
            for p in s.encode(None):
                out.mux(p)
    return buf.getvalue()


def mp4_fragments(data: bytes) -> list[bytes]:
    """Split a fragmented MP4 the way MediaRecorder hands it out: the init segment (ftyp + moov),
    then one chunk per moof + mdat."""
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        boxes.append((data[pos + 4 : pos + 8], data[pos : pos + size]))
        pos += size
    chunks: list[bytes] = [b""]
    for kind, box in boxes:
        if kind == b"moof":
            chunks.append(b"")
        chunks[-1] += box
    return chunks


async def send_all(ws, frames: list[bytes]) -> None:
    for f in frames:
        await ws.send(f)


def container(seq: int, payload: bytes) -> bytes:
    return encode_frame(Kind.CONTAINER, seq, 0, payload)


def video(seq: int, t: float, payload: bytes = JPEG) -> bytes:
    return encode_frame(Kind.VIDEO, seq, int(round(t * 1e6)), payload)

"""Attacks on a real `vibescope serve` process: who may open a stream, what a stream may send, and
that saved state is data, never code. Each test checks the refusal (HTTP status, close code,
error code, /metrics) and then that the server is still healthy and serves a well-behaved
session. In-process servers only where a test must hold analysis still or break the store."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from vibescope.server.protocol import AUDIO_RATES, STRING_CAPS, Kind, encode_frame
from vibescope.stream.stage import Tick

from attack import (
    HELLO,
    JPEG,
    TICK_PCM,
    aio_assert_streams,
    aio_closed,
    aio_hello,
    assert_healthy,
    audio,
    closed_with,
    connect,
    container,
    errors,
    fragmented_mp4,
    healthz,
    hello,
    in_process,
    is_ack,
    is_error,
    jpeg_claiming,
    matroska_with,
    metric,
    mp4_fragments,
    overlays,
    recv_until,
    refused_upgrade,
    video,
    webp_claiming,
)
from conftest import ROOT, ServerProcess, StatelessStage, free_port, start_redis

OTHER_PEER = ("127.0.0.2", 0)  # another client address on loopback (Linux routes all of 127/8 there)
NEW_SESSIONS = 'vibescope_sessions_total{outcome="new"}'


def refusals(reason: str) -> str:
    return f'vibescope_refusals_total{{reason="{reason}"}}'


def errors_total(code: str) -> str:
    return f'vibescope_errors_total{{code="{code}"}}'


def extension_id(manifest: Path = ROOT / "extension" / "manifest.json") -> str:
    """Chromium's id for an extension with a `key` (as tests/test_extension_e2e.py computes it)."""
    der = base64.b64decode(json.loads(manifest.read_text())["key"])
    return "".join(chr(ord("a") + int(c, 16)) for c in hashlib.sha256(der).hexdigest()[:32])


@pytest.fixture(scope="module")
def shared(redis_url):
    """One Redis-backed server on the cheap pipeline (an event per 100 ms tick, no model lag),
    with one extra allowed origin: (server, Redis key prefix, Redis client)."""
    prefix = f"vibescope-test:{uuid.uuid4().hex[:8]}:"
    srv = ServerProcess(
        free_port(),
        "--pipeline",
        "base",
        "--redis",
        redis_url,
        "--redis-prefix",
        prefix,
        "--allow-origin",
        "https://ok.example",
    ).start()
    r = redis.Redis.from_url(redis_url)
    yield srv, prefix, r
    srv.stop()
    for key in r.scan_iter(match=f"{prefix}*"):
        r.delete(key)
    r.close()


async def new_session(url: str, frames: int = 1) -> tuple[str, str]:
    """A session with ``frames`` acknowledged audio frames, its connection closed: (id, resume token)."""
    ws, welcome = await hello(url)
    for seq in range(1, frames + 1):
        await ws.send(audio(seq))
    await recv_until(ws, is_ack(frames))
    await ws.close()
    return welcome["session_id"], welcome["resume_token"]


# --- 1. saved state is data, never code ---------------------------------------------------------


class _Evil:
    """Unpickled, this runs a shell command (what a pickle-based loader would do)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _vsst_with_config(real: bytes, config: dict) -> bytes:
    """The real stored state, well-formed, with its config replaced by ``config``."""
    head = struct.Struct("<4sHI")
    magic, version, n = head.unpack_from(real)
    header = json.loads(real[head.size : head.size + n])
    tree = header["tree"] if set(header) == {"tree", "blobs"} else header  # either layout of stream/state.py
    assert tree["config"]["$c"] == "SessionConfig"
    tree["config"] = config
    raw = json.dumps(header, separators=(",", ":")).encode()
    return head.pack(magic, version, len(raw)) + raw + real[head.size + n :]


def crafted_state(kind: str, real: bytes, marker: Path) -> bytes:
    if kind == "pickle":
        return pickle.dumps(_Evil(f"touch {marker}"))
    if kind == "vsst-popen":
        return _vsst_with_config(real, {"$c": "Popen", "f": {"args": ["touch", str(marker)]}})
    if kind == "vsst-os-system":
        return _vsst_with_config(real, {"$c": "os.system", "f": {"command": f"touch {marker}"}})
    raise AssertionError(kind)


def test_the_pickle_payload_is_live(tmp_path):
    """The crafted pickle really runs its command when unpickled, so the test below means something."""
    marker = tmp_path / "MARKER"
    code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", code], input=pickle.dumps(_Evil(f"touch {marker}")), check=True, timeout=30)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "vsst-popen", "vsst-os-system"])
async def test_crafted_state_in_redis_runs_nothing_and_the_resume_is_refused(shared, tmp_path, kind):
    srv, prefix, r = shared
    sid, token = await new_session(srv.url, frames=2)
    key = f"{prefix}session:{sid}"
    real = r.hget(key, "state")
    assert real[:4] == b"VSST"  # the real key of the live session
    marker = tmp_path / "MARKER"
    r.hset(key, "state", crafted_state(kind, real, marker))
    before = metric(srv, errors_total("unknown_session"))

    ws, msg = await hello(srv.url, session_id=sid, resume_token=token)
    assert msg["type"] == "error" and msg["code"] == "unknown_session", msg
    assert "the stored session cannot be continued" in msg["message"]
    assert ("not a vibescope state" if kind == "pickle" else "is not allowed in a saved state") in msg["message"]
    code, _, _ = await closed_with(ws)
    assert code == 4004
    await asyncio.sleep(0.2)
    assert not marker.exists(), "the stored state ran code"
    assert metric(srv, errors_total("unknown_session")) == before + 1
    await assert_healthy(srv)


# --- 2. Origin ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "null",  # a sandboxed page or a file:// page
        "https://ok.example.evil.example",
        "chrome-extension://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",  # some other extension
        "http://127.0.0.1:1",  # another port of this host is another origin
    ],
)
async def test_a_foreign_origin_gets_403_before_any_session(shared, origin):
    srv, _, _ = shared
    sessions, refused = metric(srv, NEW_SESSIONS), metric(srv, refusals("origin"))
    live = healthz(srv.http)["sessions"]
    status, body, _ = await refused_upgrade(srv.url, origin=origin)
    assert status == 403 and body["error"] == "origin"
    assert metric(srv, NEW_SESSIONS) == sessions and healthz(srv.http)["sessions"] == live
    assert metric(srv, refusals("origin")) == refused + 1
    await assert_healthy(srv)


@pytest.mark.parametrize("which", ["none", "extension", "own page", "allowed"])
async def test_allowed_origins_are_served(shared, which):
    srv, _, _ = shared
    origin = {
        "none": None,
        "extension": f"chrome-extension://{extension_id()}",
        "own page": f"http://127.0.0.1:{srv.port}",
        "allowed": "https://ok.example",
    }[which]
    refused = metric(srv, refusals("origin"))
    await assert_healthy(srv, origin=origin)
    assert metric(srv, refusals("origin")) == refused


# --- 3. no token: only loopback peers without a proxy in between; failed tokens are throttled ----


@pytest.mark.parametrize(
    "header", [{"X-Forwarded-For": "1.2.3.4"}, {"Forwarded": "for=1.2.3.4"}, {"X-Real-IP": "1.2.3.4"}]
)
async def test_a_forwarded_request_to_a_server_without_a_token_is_unauthorized(shared, header):
    srv, _, _ = shared
    sessions, refused = metric(srv, NEW_SESSIONS), metric(srv, refusals("unauthorized"))
    ws, msg = await hello(srv.url, headers=header)
    assert msg["type"] == "error" and msg["code"] == "unauthorized", msg
    assert (await closed_with(ws))[0] == 4001
    assert metric(srv, NEW_SESSIONS) == sessions and metric(srv, refusals("unauthorized")) == refused + 1
    await assert_healthy(srv)  # the same hello without the header is served


async def test_failed_tokens_throttle_the_peer_not_everyone():
    srv = ServerProcess(free_port(), "--pipeline", "base", "--token", "T0ken").start()
    try:
        for _ in range(5):
            ws, msg = await hello(srv.url, token="wrong")
            assert msg["code"] == "unauthorized"
            assert (await closed_with(ws))[0] == 4001
        status, body, headers = await refused_upgrade(srv.url)  # even before a hello with the right token
        assert status == 429 and body["error"] == "auth_throttled" and int(headers["Retry-After"]) >= 1
        m = srv.metrics()
        assert m[refusals("unauthorized")] == 5 and m[refusals("auth_throttled")] == 1
        assert m[NEW_SESSIONS] == 0
        # another peer with the right token is served; without one it is not
        ws, msg = await hello(srv.url, local_addr=OTHER_PEER)
        assert msg["code"] == "unauthorized"
        assert (await closed_with(ws))[0] == 4001
        await assert_healthy(srv, token="T0ken", local_addr=OTHER_PEER)
    finally:
        srv.stop()


# --- 4. admission: sessions per process, connections per peer ------------------------------------


async def _until_connections(srv, n: int) -> None:
    """Wait until the server has let go of all but ``n`` stream connections."""
    async with asyncio.timeout(10):
        while healthz(srv.http)["connections"] > n:
            await asyncio.sleep(0.05)


async def test_server_full_and_peer_limit():
    srv = ServerProcess(free_port(), "--pipeline", "base", "--max-sessions", "3", "--max-per-peer", "3").start()
    try:
        opened = []
        for _ in range(3):
            ws, welcome = await hello(srv.url)
            assert welcome["type"] == "welcome"
            opened.append(ws)
        limits = welcome["limits"]
        for lim in (limits, healthz(srv.http)["limits"]):
            assert lim["max_sessions"] == 3 and lim["max_connections_per_peer"] == 3
            assert lim["max_hello_bytes"] == 64 * 1024 and lim["max_message_bytes"] == 4 * 1024 * 1024
        # the peer's fourth connection is refused at the upgrade
        status, body, headers = await refused_upgrade(srv.url)
        assert status == 429 and body["error"] == "peer_limit" and int(headers["Retry-After"]) >= 1
        # another peer: room for its connection, but not for a fourth session
        ws = await connect(srv.url, local_addr=OTHER_PEER)
        code, reason, msgs = await closed_with(ws)
        assert [(m["code"], m["retry_after_s"] > 0) for m in msgs] == [("server_full", True)]
        assert code == 1013 and "server full" in reason
        m = srv.metrics()
        assert m[refusals("peer_limit")] == 1 and m[refusals("server_full")] == 1 and m[NEW_SESSIONS] == 3
        # the three sessions still stream; once one ends there is room again
        for i, ws in enumerate(opened):
            await ws.send(audio(1))
            assert overlays(await recv_until(ws, is_ack(1)))[0]["t"] == pytest.approx(0.1), i
        await opened.pop().close()
        await _until_connections(srv, 2)
        await assert_healthy(srv, local_addr=OTHER_PEER)
        for ws in opened:
            await ws.close()
        await _until_connections(srv, 0)
        await assert_healthy(srv)
    finally:
        srv.stop()


# --- 5. message sizes ---------------------------------------------------------------------------


async def test_a_100_kib_first_message_closes_with_1009_and_makes_no_session(shared):
    srv, _, _ = shared
    sessions, refused = metric(srv, NEW_SESSIONS), metric(srv, refusals("hello_too_big"))
    ws = await connect(srv.url)
    try:
        await ws.send(json.dumps({**HELLO, "client": "x", "pad": "x" * 100 * 1024}))
    except Exception:  # noqa: BLE001 (the server may close before the send completes)
        pass
    code, _, msgs = await closed_with(ws)
    assert code == 1009 and not [m for m in msgs if m.get("type") == "welcome"]
    assert metric(srv, NEW_SESSIONS) == sessions and metric(srv, refusals("hello_too_big")) == refused + 1
    # just under the limit is a hello like any other
    ws, welcome = await hello(srv.url, pad="x" * 60 * 1024)
    assert welcome["type"] == "welcome"
    await ws.close()
    await assert_healthy(srv)


@pytest.mark.parametrize(
    "frame, message",
    [
        (video(1, 0.0, b"\xff\xd8\xff" + bytes(1024 * 1024)), "JPEG"),
        (encode_frame(Kind.AUDIO, 1, 0, bytes(1024 * 1024)), "longer than"),  # 32 s of audio in one frame
    ],
    ids=["video", "audio"],
)
async def test_after_the_hello_a_1_mib_frame_is_taken_and_answered(shared, frame, message):
    srv, _, _ = shared
    ws, _ = await hello(srv.url)
    started = time.perf_counter()
    await ws.send(frame)
    msgs = await recv_until(ws, is_ack(1))
    assert time.perf_counter() - started < 5
    assert [m["code"] for m in msgs if is_error(m)] == ["bad_media"]
    assert message in next(m for m in msgs if is_error(m))["message"]
    await ws.send(audio(2, 0.0))  # the connection is still open and the session goes on
    msgs = await recv_until(ws, is_ack(2))
    assert [e["t"] for e in overlays(msgs)] == pytest.approx([0.1])
    await ws.close()
    await assert_healthy(srv)


# --- 6. hello caps --------------------------------------------------------------------------------


@pytest.mark.parametrize("field, cap", sorted(STRING_CAPS.items()))
async def test_a_hello_string_over_its_cap_is_bad_hello(shared, field, cap):
    srv, _, _ = shared
    ws, msg = await hello(srv.url, **{field: "x" * (cap + 1)})
    assert msg["code"] == "bad_hello" and f"hello.{field} is longer than {cap}" in msg["message"]
    assert (await closed_with(ws))[0] == 1008
    await assert_healthy(srv)


async def test_a_hello_string_at_its_cap_is_fine(shared):
    srv, _, _ = shared
    ws, msg = await hello(srv.url, client="c" * STRING_CAPS["client"])
    assert msg["type"] == "welcome"
    await ws.close()


@pytest.mark.parametrize("rate", [44000, 192000, 7999, 0, -16000, 16000.0, "16000", True])
async def test_a_sample_rate_outside_the_list_is_bad_hello(shared, rate):
    srv, _, _ = shared
    assert rate not in AUDIO_RATES or not isinstance(rate, int) or isinstance(rate, bool)
    ws, msg = await hello(srv.url, audio={"encoding": "pcm16", "sample_rate": rate, "channels": 1})
    assert msg["code"] == "bad_hello" and "sample_rate" in msg["message"]
    assert (await closed_with(ws))[0] == 1008
    await assert_healthy(srv)


# --- 7. timestamps ----------------------------------------------------------------------------------


async def test_a_frame_stamped_2_62_us_is_bad_timestamp_and_the_session_is_unaffected(shared):
    srv, _, _ = shared
    ws, _ = await hello(srv.url)
    await ws.send(audio(1, 0.0))
    await ws.send(encode_frame(Kind.VIDEO, 2, 2**62, JPEG))
    await ws.send(audio(3, 0.1))
    await ws.send(video(4, 0.15))  # a video frame at the right time still gets in
    await ws.send(audio(5, 0.2))
    msgs = await recv_until(ws, is_ack(5))
    assert errors(msgs) == [("bad_timestamp", 2)]
    assert "ahead of the session's media clock" in next(m for m in msgs if is_error(m))["message"]
    events = overlays(msgs)
    assert [e["t"] for e in events] == pytest.approx([0.1, 0.2, 0.3])
    assert all("gap" not in e for e in events)
    await ws.close()
    await assert_healthy(srv)


async def test_a_video_only_session_refuses_a_jump_of_an_hour_and_goes_on(shared):
    srv, _, _ = shared
    ws, welcome = await hello(srv.url, audio=None)
    assert welcome["type"] == "welcome"
    await ws.send(video(1, 0.0))
    await ws.send(video(2, 3600.0))
    msgs = await recv_until(ws, is_ack(2))
    assert errors(msgs) == [("bad_timestamp", 2)] and overlays(msgs) == []
    started = time.perf_counter()
    await ws.send(video(3, 0.5))
    msgs = await recv_until(ws, is_ack(3))
    assert time.perf_counter() - started < 5
    assert errors(msgs) == []
    assert [e["t"] for e in overlays(msgs)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    await ws.close()
    await assert_healthy(srv)


# --- 8. images: the size is read from the header, before decoding ------------------------------------


@pytest.mark.parametrize(
    "payload, claim",
    [(jpeg_claiming(65000, 65000), "65000x65000"), (webp_claiming(16384, 16384), "16384x16384")],
    ids=["jpeg", "webp"],
)
async def test_an_image_claiming_a_huge_size_is_refused_without_decoding(shared, payload, claim):
    srv, _, _ = shared
    ws, welcome = await hello(srv.url)
    limit = f"{welcome['limits']['max_video_width']}x{welcome['limits']['max_video_height']}"
    await ws.send(audio(1, 0.0))
    await recv_until(ws, is_ack(1))
    started = time.perf_counter()
    await ws.send(video(2, 0.05, payload))
    msgs = await recv_until(ws, is_ack(2))
    assert time.perf_counter() - started < 2.0  # refused from the header: no 65000x65000 canvas
    assert errors(msgs) == [("bad_media", 2)]
    message = next(m for m in msgs if is_error(m))["message"]
    assert claim in message and limit in message and "exceeds the limit" in message
    await ws.send(audio(3, 0.1))
    assert [e["t"] for e in overlays(await recv_until(ws, is_ack(3)))] == pytest.approx([0.2])
    await ws.close()
    await assert_healthy(srv)


# --- 9. containers ------------------------------------------------------------------------------------


async def test_a_container_chunk_that_is_no_container_is_bad_media(shared):
    srv, _, _ = shared
    ws, _ = await hello(srv.url, container="video/webm")
    await ws.send(container(1, b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(4000)))
    msgs = await recv_until(ws, is_ack(1))
    assert errors(msgs) == [("bad_media", 1)]
    assert "must start with a WebM/Matroska (EBML) or MP4 (ftyp) header" in msgs[-2]["message"]
    await ws.close()
    await assert_healthy(srv)


@pytest.mark.parametrize("codec, name", [("flac", "flac"), ("libmp3lame", "mp3")])
async def test_a_container_with_a_codec_mediarecorder_does_not_write_is_bad_media(shared, codec, name):
    srv, _, _ = shared
    ws, _ = await hello(srv.url, container="video/webm")
    await ws.send(container(1, matroska_with(codec)))
    msgs = await recv_until(ws, is_ack(1))
    assert errors(msgs) == [("bad_media", 1)] and overlays(msgs) == []
    message = next(m for m in msgs if is_error(m))["message"]
    assert name in message and "is not one MediaRecorder writes" in message
    await ws.close()
    await assert_healthy(srv)


@pytest.fixture(scope="module")
def fmp4_chunks() -> list[bytes]:
    chunks = mp4_fragments(fragmented_mp4(seconds=2.0))
    assert chunks[0][4:8] == b"ftyp" and all(c[4:8] == b"moof" for c in chunks[1:]) and len(chunks) >= 4
    return chunks


async def test_fragmented_mp4_streams_and_produces_events(shared, fmp4_chunks):
    srv, _, _ = shared
    ws, _ = await hello(srv.url, container="video/mp4")
    for seq, chunk in enumerate(fmp4_chunks, 1):
        await ws.send(container(seq, chunk))
    msgs = await recv_until(ws, is_ack(len(fmp4_chunks)), timeout=20)
    await ws.send(json.dumps({"type": "bye"}))
    msgs += await recv_until(ws, lambda m: m.get("type") == "bye", timeout=20)
    assert errors(msgs) == []
    times = [e["t"] for e in overlays(msgs)]
    assert 19 <= len(times) <= 21 and times == pytest.approx([0.1 * (i + 1) for i in range(len(times))])
    assert (await closed_with(ws))[0] == 1000
    await assert_healthy(srv)


async def test_a_container_tail_that_would_grow_past_the_limit_is_refused_and_the_session_goes_on(shared, fmp4_chunks):
    srv, _, _ = shared
    ws, _ = await hello(srv.url, container="video/mp4")
    head = fmp4_chunks[:2]  # the init segment and the first half second
    for seq, chunk in enumerate(head, 1):
        await ws.send(container(seq, chunk))
    filler = bytes(3 * 1024 * 1024)  # no Cluster or moof in it: the tail only grows
    seq = len(head)
    for _ in range(3):
        seq += 1
        await ws.send(container(seq, filler))
    msgs = await recv_until(ws, is_ack(seq), timeout=30)
    assert errors(msgs) == [("bad_media", seq)]  # the third would take the tail past 8 MiB
    assert "would grow past 8 MiB" in next(m for m in msgs if is_error(m))["message"]
    await ws.send(json.dumps({"type": "bye"}))  # and the session ends cleanly with what it had
    msgs += await recv_until(ws, lambda m: m.get("type") == "bye", timeout=30)
    times = [e["t"] for e in overlays(msgs)]
    assert len(times) >= 4 and times == pytest.approx([0.1 * (i + 1) for i in range(len(times))])
    assert (await closed_with(ws))[0] == 1000
    await assert_healthy(srv)


# --- 10. lifecycle: a connection whose analysis loop ends lets go of everything -------------------


class BlockingStage(StatelessStage):
    """Holds analysis until ``gate`` opens (a pool thread waits in push)."""

    name = "blocking"
    gate = threading.Event()

    def push(self, tick: Tick) -> list[Tick]:
        assert self.gate.wait(30), "the test never opened the gate"
        return [tick]


def _connection_tasks(sid: str) -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name() in (f"read-{sid}", f"analyse-{sid}")]


@pytest.mark.parametrize(
    "failure, close_code, error_code",
    [("store down", 1013, "internal"), ("ownership lost", 4009, "session_busy")],
)
async def test_a_store_failure_with_a_full_backlog_closes_and_leaves_nothing_behind(
    monkeypatch, failure, close_code, error_code
):
    from vibescope.server import analysis, connection
    from vibescope.server.store import OwnershipLost

    BlockingStage.gate.set()  # the server's warm-up runs the stage too
    async with in_process(monkeypatch, BlockingStage) as (client, server):
        BlockingStage.gate.clear()
        try:
            ws, welcome = await aio_hello(client, video=None)
            sid = welcome["session_id"]
            for seq in range(1, 101):
                await ws.send_bytes(audio(seq))
            # a batch in analysis (1 to BATCH_ITEMS frames), a full backlog, one more read and
            # waiting for room: then the reader stops
            least = 1 + connection.BACKLOG_ITEMS + 1
            for _ in range(200):
                if server.metrics.frames_total["audio"] >= least:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            read = server.metrics.frames_total["audio"]
            await asyncio.sleep(0.3)
            assert server.metrics.frames_total["audio"] == read  # the reader is stopped
            assert least <= read <= analysis.BATCH_ITEMS + connection.BACKLOG_ITEMS + 1 < 100
            assert sorted(_connection_tasks(sid)) == [f"analyse-{sid}", f"read-{sid}"]

            save, broken = server.store.save, [True]

            async def broken_save(*args, **kwargs):
                if not broken[0]:
                    return await save(*args, **kwargs)
                raise OwnershipLost(sid) if failure == "ownership lost" else ConnectionError("store down")

            server.store.save = broken_save
        finally:
            BlockingStage.gate.set()
        code, msgs = await aio_closed(ws)
        assert code == close_code and [m["code"] for m in msgs if is_error(m)] == [error_code]
        assert not [m for m in msgs if m.get("type") == "ack"]  # nothing unwritten was acknowledged
        for _ in range(100):
            if server.streams == 0:
                break
            await asyncio.sleep(0.02)
        assert _connection_tasks(sid) == []
        assert sid not in server.registry and len(server.registry) == 0 and server.streams == 0
        broken[0] = False
        await aio_assert_streams(client)


# --- 11. max_unacked_frames, by backpressure ---------------------------------------------------------


async def test_the_server_reads_at_most_max_unacked_frames_past_its_last_ack(tmp_path):
    redis_port = free_port()
    redis_proc, workdir = start_redis(redis_port)
    srv = ServerProcess(
        free_port(), "--pipeline", "base", "--max-unacked", "4", "--redis", f"redis://127.0.0.1:{redis_port}/0"
    ).start()
    try:
        ws, welcome = await hello(srv.url)
        assert welcome["limits"]["max_unacked_frames"] == 4
        msgs: list[dict] = []

        async def read():
            msgs.extend(await recv_until(ws, is_ack(40), timeout=30))

        reader = asyncio.create_task(read())
        redis_proc.send_signal(signal.SIGSTOP)  # the store stalls: analysis cannot acknowledge
        try:
            for seq in range(1, 41):
                await ws.send(audio(seq))
            deadline = time.monotonic() + 5
            while metric(srv, 'vibescope_frames_total{kind="audio"}') < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            read_while_stalled = metric(srv, 'vibescope_frames_total{kind="audio"}')
            acks_while_stalled = [m["seq"] for m in msgs if m.get("type") == "ack"]
        finally:
            redis_proc.send_signal(signal.SIGCONT)
        assert acks_while_stalled == [] and read_while_stalled == 4  # 4 past ack 0, the other 36 wait in TCP
        await asyncio.wait_for(reader, 30)
        assert errors(msgs) == [] and max(m["seq"] for m in msgs if m.get("type") == "ack") == 40
        assert [e["t"] for e in overlays(msgs)] == pytest.approx([0.1 * (i + 1) for i in range(40)])
        await ws.close()
        await assert_healthy(srv)
    finally:
        srv.stop()
        if redis_proc.poll() is None:
            redis_proc.send_signal(signal.SIGCONT)
            redis_proc.kill()
            redis_proc.wait(5)
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


# --- 12. media budget -------------------------------------------------------------------------------


async def test_sixty_seconds_of_audio_at_full_speed_is_slowed_to_the_budget_and_nothing_is_lost(shared):
    srv, _, _ = shared
    ws, welcome = await hello(srv.url)
    limits = welcome["limits"]
    frames = 600  # 60 s
    msgs: list[dict] = []
    ack_at: dict[int, float] = {}

    async def read():
        async with asyncio.timeout(60):
            while True:
                msg = json.loads(await ws.recv())
                msgs.append(msg)
                if msg.get("type") == "ack":
                    ack_at[msg["seq"]] = time.perf_counter()
                    if msg["seq"] >= frames:
                        return

    reader = asyncio.create_task(read())
    started = time.perf_counter()
    for seq in range(1, frames + 1):
        await ws.send(encode_frame(Kind.AUDIO, seq, (seq - 1) * 100_000, TICK_PCM))
    await reader
    elapsed = ack_at[frames] - started
    least = (60 - limits["max_media_burst_s"]) / limits["max_media_speed"]  # 3.75 s
    assert elapsed >= 0.8 * least, elapsed
    assert elapsed < 30
    assert errors(msgs) == []
    assert [e["t"] for e in overlays(msgs)] == pytest.approx([0.1 * (i + 1) for i in range(frames)])
    await ws.close()
    await assert_healthy(srv)

"""The WebSocket server as clients meet it: a real `vibescope serve` process, real sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
import websockets

from vibescope.server.client import PushClient
from vibescope.server.protocol import Kind, encode_frame
from vibescope.stream.media import encode_jpeg

from conftest import ServerProcess, free_port


@pytest.fixture(scope="module")
def server():
    """The protocol's mechanics, on the cheap pipeline (an event per frame, no model lag)."""
    srv = ServerProcess(free_port(), "--pipeline", "base").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def full_server():
    srv = ServerProcess(free_port()).start()
    yield srv
    srv.stop()


TICK_PCM = (0.1 * np.sin(2 * np.pi * 440 * np.arange(1600) / 16000) * 32767).astype("<i2").tobytes()
JPEG = encode_jpeg(np.full((96, 128, 3), 120, np.uint8))
HELLO = {
    "type": "hello",
    "protocol": 1,
    "audio": {"encoding": "pcm16", "sample_rate": 16000, "channels": 1},
    "video": "jpeg",
}


async def open_session(url, **extra):
    ws = await websockets.connect(url, max_size=None)
    await ws.send(json.dumps({**HELLO, **extra}))
    welcome = json.loads(await ws.recv())
    return ws, welcome


async def recv_until(ws, pred, timeout=10.0):
    """Messages up to and including the first that satisfies pred."""
    got = []
    async with asyncio.timeout(timeout):
        while True:
            raw = await ws.recv()
            msg = json.loads(raw) if isinstance(raw, str) else {"binary": raw}
            got.append(msg)
            if pred(msg):
                return got


def is_ack(seq):
    return lambda m: m.get("type") == "ack" and m["seq"] >= seq


async def closed_with(ws):
    try:
        async with asyncio.timeout(10):
            async for _ in ws:
                pass
    except websockets.ConnectionClosed:
        pass
    return ws.close_code


async def test_welcome_states_session_limits_and_models(full_server):
    ws, welcome = await open_session(full_server.url)
    assert welcome["type"] == "welcome" and welcome["protocol"] == 1 and not welcome["resumed"]
    assert welcome["acked_seq"] == 0 and len(welcome["session_id"]) == 32 and welcome["resume_token"]
    assert welcome["limits"]["max_message_bytes"] == 4 * 1024 * 1024 and welcome["limits"]["max_video_fps"] == 30
    assert welcome["models"]["speech"]["id"] == "silero-vad-6" and "validated" in welcome["models"]["face"]
    for field in ("valence", "arousal", "music", "expression", "loudness"):
        assert {"id", "card", "validated"} <= set(welcome["models"][field])
    await ws.close()


async def test_frames_are_acked_and_produce_overlay_events(full_server):
    ws, welcome = await open_session(full_server.url)
    lag = 5  # ticks held back at most: separator 1, TAGF 4 (its hop of 2 releases them in pairs)
    for seq in range(1, 11):
        await ws.send(encode_frame(Kind.AUDIO, seq, (seq - 1) * 100_000, TICK_PCM))
    msgs = await recv_until(ws, is_ack(10))
    events = [m for m in msgs if m.get("type") == "overlay"]
    assert len(events) >= 10 - lag
    assert [e["t"] for e in events] == pytest.approx([0.1 * (i + 1) for i in range(len(events))])
    await ws.send(json.dumps({"type": "bye"}))
    msgs = await recv_until(ws, lambda m: m.get("type") == "bye")
    events += [m for m in msgs if m.get("type") == "overlay"]
    assert [e["t"] for e in events] == pytest.approx([0.1 * (i + 1) for i in range(10)])
    assert msgs[-1]["acked_seq"] == 10
    assert await closed_with(ws) == 1000
    for e in events:
        assert e["speech"]["probability"] is not None and e["music"]["probability"] is not None
        assert e["valence"] is not None and e["face"]["present"] is None  # audio only: no face claimed
        assert e["models"]["valence"] == welcome["models"]["valence"]["id"]
        assert welcome["models"]["valence"]["validated"] is False


async def test_duplicates_are_dropped_and_gaps_refused(server):
    ws, _ = await open_session(server.url)
    await ws.send(encode_frame(Kind.AUDIO, 1, 0, TICK_PCM))
    await recv_until(ws, is_ack(1))
    await ws.send(encode_frame(Kind.AUDIO, 1, 0, TICK_PCM))  # duplicate: ack again, no new event
    msgs = await recv_until(ws, is_ack(1))
    assert not [m for m in msgs if m.get("type") == "overlay"]
    await ws.send(encode_frame(Kind.AUDIO, 3, 200_000, TICK_PCM))  # gap
    msgs = await recv_until(ws, lambda m: m.get("type") == "error")
    assert msgs[-1]["code"] == "bad_seq" and msgs[-1]["seq"] == 3
    await ws.send(encode_frame(Kind.AUDIO, 2, 100_000, TICK_PCM))
    await recv_until(ws, is_ack(2))
    await ws.close()


@pytest.mark.parametrize(
    "frame, code",
    [
        (b"\x00garbage bytes that are no frame", "bad_header"),
        (b"VS\x01", "bad_header"),  # truncated header
        (b"VS\x07\x01" + bytes(12), "unsupported_version"),
        (encode_frame(Kind.VIDEO, 1, 0, b"\xff\xd8\xff" + bytes(300)), "bad_media"),  # corrupted JPEG
        (encode_frame(Kind.VIDEO, 1, 0, b"\x89PNG\r\n\x1a\n"), "bad_media"),
        (encode_frame(Kind.AUDIO, 1, 0, b"\x01\x02\x03"), "bad_media"),  # half a sample
        (encode_frame(Kind.CONTAINER, 1, 0, b"\x1a\x45\xdf\xa3"), "bad_media"),  # not announced
    ],
)
async def test_bad_frames_get_an_error_and_the_session_goes_on(server, frame, code):
    ws, _ = await open_session(server.url)
    await ws.send(frame)
    msgs = await recv_until(ws, lambda m: m.get("type") == "error")
    assert msgs[-1]["code"] == code and msgs[-1]["message"]
    acked = max([m["seq"] for m in msgs if m.get("type") == "ack"] + [0])
    if code == "bad_media":  # handled: acknowledged, so the client does not resend it
        acked = max(acked, (await recv_until(ws, is_ack(1)))[-1]["seq"])
    seq = acked + 1
    await ws.send(encode_frame(Kind.AUDIO, seq, 0, TICK_PCM))
    msgs = await recv_until(ws, is_ack(seq))
    assert any(m.get("type") == "overlay" for m in msgs)
    await ws.close()


async def test_unknown_message_types_and_second_hello_are_errors_not_crashes(server):
    ws, _ = await open_session(server.url)
    await ws.send(json.dumps({"type": "subscribe-to-everything"}))
    assert (await recv_until(ws, lambda m: m.get("type") == "error"))[-1]["code"] == "unknown_type"
    await ws.send("{not json")
    assert (await recv_until(ws, lambda m: m.get("type") == "error"))[-1]["code"] == "bad_json"
    await ws.send(json.dumps(HELLO))
    assert (await recv_until(ws, lambda m: m.get("type") == "error"))[-1]["code"] == "hello_twice"
    await ws.send(encode_frame(Kind.AUDIO, 1, 0, TICK_PCM))
    await recv_until(ws, is_ack(1))
    await ws.close()


async def test_binary_before_hello_closes_with_4002(server):
    async with websockets.connect(server.url) as ws:
        await ws.send(encode_frame(Kind.AUDIO, 1, 0, TICK_PCM))
        msg = json.loads(await ws.recv())
        assert msg["type"] == "error" and msg["code"] == "hello_required"
        assert await closed_with(ws) == 4002


async def test_wrong_protocol_version_closes_with_4000(server):
    async with websockets.connect(server.url) as ws:
        await ws.send(json.dumps({**HELLO, "protocol": 99}))
        assert json.loads(await ws.recv())["code"] == "unsupported_version"
        assert await closed_with(ws) == 4000


async def test_a_50_mb_message_closes_with_1009_and_the_server_lives(server):
    async with websockets.connect(server.url, max_size=None) as ws:
        await ws.send(json.dumps(HELLO))
        await ws.recv()
        try:
            await ws.send(encode_frame(Kind.VIDEO, 1, 0, bytes(50 * 1024 * 1024)))
        except websockets.ConnectionClosed:
            pass
        assert await closed_with(ws) == 1009
    ws, welcome = await open_session(server.url)
    assert welcome["type"] == "welcome"
    await ws.close()


async def test_a_video_flood_is_rate_limited_then_closed_with_1008(server):
    ws, _ = await open_session(server.url)
    small = encode_jpeg(np.zeros((32, 32, 3), np.uint8))
    codes = []

    async def read():
        try:
            async for raw in ws:
                if isinstance(raw, str) and json.loads(raw)["type"] == "error":
                    codes.append(json.loads(raw)["code"])
        except websockets.ConnectionClosed:
            pass

    reader = asyncio.create_task(read())
    for seq in range(1, 400):
        try:
            await ws.send(encode_frame(Kind.VIDEO, seq, seq * 1000, small))  # 1000 frames/s of media
        except websockets.ConnectionClosed:
            break
    await asyncio.wait_for(reader, 20)
    assert len(codes) > 100 and set(codes) == {"rate_limited"}, (ws.close_code, ws.close_reason, codes[:3])
    assert ws.close_code == 1008


def test_a_client_vanishing_mid_frame_harms_nobody(server):
    host, port = "127.0.0.1", server.port
    with socket.create_connection((host, port)) as s:
        s.sendall(
            b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert b"101" in s.recv(4096).split(b"\r\n")[0]
        hello = json.dumps(HELLO).encode()
        s.sendall(bytes([0x81, 0x80 | 126]) + len(hello).to_bytes(2, "big") + bytes(4) + hello)
        s.recv(65536)  # welcome
        s.sendall(bytes([0x82, 0x80 | 126]) + (5000).to_bytes(2, "big") + bytes(4) + b"VS\x01\x01")  # 4 of 5000 bytes
    health = json.loads(urllib.request.urlopen(server.http + "/healthz", timeout=5).read())
    assert health["status"] == "ok"


async def test_bad_clients_never_disturb_a_healthy_session(server, test_video):
    from vibescope.stream.source import iter_chunks

    events = []
    chunks = list(iter_chunks(test_video))
    client = PushClient(server.url, realtime=False, on_event=events.append)
    healthy = asyncio.create_task(client.run(chunks))

    async def vandal():
        for frame in (b"junk", encode_frame(Kind.VIDEO, 1, 0, b"\xff\xd8\xff" + bytes(64)), b"VS"):
            ws, _ = await open_session(server.url)
            await ws.send(frame)
            await asyncio.sleep(0.05)
            await ws.close()

    await asyncio.gather(*(vandal() for _ in range(3)))
    stats = await healthy
    assert stats.errors == [] and stats.reconnects == 0
    assert [e["t"] for e in events] == pytest.approx([0.1 * (i + 1) for i in range(30)])


async def test_resume_after_a_dropped_connection_loses_and_repeats_nothing(server):
    ws, welcome = await open_session(server.url)
    for seq in range(1, 4):
        await ws.send(encode_frame(Kind.AUDIO, seq, 0, TICK_PCM))
    msgs = await recv_until(ws, is_ack(3))
    seen = [m["t"] for m in msgs if m.get("type") == "overlay"]
    ws.transport.abort()  # the connection drops without a close handshake
    ws, again = await open_session(
        server.url, session_id=welcome["session_id"], resume_token=welcome["resume_token"], last_event_t=seen[1]
    )  # pretend the client missed the last event
    assert again["resumed"] and again["acked_seq"] == 3 and again["session_id"] == welcome["session_id"]
    replay = await recv_until(ws, lambda m: m.get("type") == "overlay")
    assert replay[-1]["t"] == pytest.approx(seen[2])
    await ws.send(encode_frame(Kind.AUDIO, 3, 0, TICK_PCM))  # a resent duplicate
    await ws.send(encode_frame(Kind.AUDIO, 4, 0, TICK_PCM))
    msgs = await recv_until(ws, is_ack(4))
    assert [m["t"] for m in msgs if m.get("type") == "overlay"] == pytest.approx([0.4])
    await ws.close()


async def test_resume_with_a_wrong_token_or_unknown_session_closes_with_4004(server):
    ws, welcome = await open_session(server.url)
    await ws.close()
    for sid, token in ((welcome["session_id"], "forged"), ("0" * 32, welcome["resume_token"])):
        async with websockets.connect(server.url) as ws2:
            await ws2.send(json.dumps({**HELLO, "session_id": sid, "resume_token": token}))
            assert json.loads(await ws2.recv())["code"] == "unknown_session"
            assert await closed_with(ws2) == 4004


async def test_a_newer_connection_takes_the_session_over(server):
    ws1, welcome = await open_session(server.url)
    ws2, again = await open_session(server.url, session_id=welcome["session_id"], resume_token=welcome["resume_token"])
    assert again["resumed"]
    assert await closed_with(ws1) == 4009
    await ws2.send(encode_frame(Kind.AUDIO, 1, 0, TICK_PCM))
    await recv_until(ws2, is_ack(1))
    await ws2.close()


async def test_metrics_expose_sessions_frames_latency_errors_and_state_size():
    """On its own server, so every number is this test's traffic: five audio frames and a corrupted JPEG."""
    srv = ServerProcess(free_port(), "--pipeline", "base", "--ttl", "900").start()
    try:
        idle = srv.metrics()
        assert idle["vibescope_sessions_active"] == 0 and idle['vibescope_frames_total{kind="audio"}'] == 0
        assert idle["vibescope_events_total"] == 0 and idle['vibescope_errors_total{code="none"}'] == 0
        assert idle["vibescope_processing_latency_seconds_count"] == 0
        assert idle["vibescope_session_state_bytes_count"] == 0
        ws, _ = await open_session(srv.url)
        for seq in range(1, 6):
            await ws.send(encode_frame(Kind.AUDIO, seq, (seq - 1) * 100_000, TICK_PCM))
        await recv_until(ws, is_ack(5))
        bad_jpeg = b"\xff\xd8\xff" + bytes(300)
        await ws.send(encode_frame(Kind.VIDEO, 6, 500_000, bad_jpeg))
        msgs = await recv_until(ws, is_ack(6))
        assert [m["code"] for m in msgs if m.get("type") == "error"] == ["bad_media"]

        text = urllib.request.urlopen(srv.http + "/metrics", timeout=5).read().decode()
        for name in ("vibescope_processing_latency_seconds", "vibescope_session_state_bytes"):
            assert f"# TYPE {name} histogram" in text
        m = srv.metrics()
        assert m["vibescope_sessions_active"] == 1 and m['vibescope_sessions_total{outcome="new"}'] == 1
        assert m['vibescope_frames_total{kind="audio"}'] == 5 and m['vibescope_frames_total{kind="video"}'] == 1
        assert m['vibescope_bytes_total{kind="audio"}'] == 5 * len(TICK_PCM)
        assert m['vibescope_bytes_total{kind="video"}'] == len(bad_jpeg)
        assert m["vibescope_events_total"] == 5  # the base pipeline: an event per 100 ms tick
        assert m['vibescope_errors_total{code="bad_media"}'] == 1 and 'vibescope_errors_total{code="none"}' not in m
        # one latency per analysed frame (the refused JPEG has none), within a generous bound
        assert m["vibescope_processing_latency_seconds_count"] == 5
        assert 0 < m["vibescope_processing_latency_seconds_sum"] < 5 * 2.5
        assert m['vibescope_processing_latency_seconds_bucket{le="+Inf"}'] == 5
        # a state size per save (one save per analysed batch, at most one per frame)
        saves = m["vibescope_session_state_bytes_count"]
        assert 1 <= saves <= 6 and m['vibescope_session_state_bytes_bucket{le="+Inf"}'] == saves
        assert m['vibescope_live_state_bytes{stat="max"}'] == m['vibescope_live_state_bytes{stat="sum"}'] > 0
        assert m['vibescope_session_ttl_seconds{store="memory"}'] == 900
        await ws.close()
        # the closed session is no longer active
        deadline = asyncio.get_running_loop().time() + 10
        while srv.metrics()["vibescope_sessions_active"] != 0:
            assert asyncio.get_running_loop().time() < deadline, "sessions_active did not drop after close"
            await asyncio.sleep(0.05)
    finally:
        srv.stop()


def test_a_token_is_required_when_configured():
    srv = ServerProcess(free_port(), "--token", "s3cret").start()
    try:

        async def check():
            async with websockets.connect(srv.url) as ws:
                await ws.send(json.dumps(HELLO))
                assert json.loads(await ws.recv())["code"] == "unauthorized"
                assert await closed_with(ws) == 4001
            ws, welcome = await open_session(srv.url, token="s3cret")
            assert welcome["type"] == "welcome"
            await ws.close()

        asyncio.run(check())
    finally:
        srv.stop()


def test_serving_beyond_loopback_without_a_token_is_refused():
    out = subprocess.run(
        [sys.executable, "-m", "vibescope", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 2 and "needs a token" in out.stderr


async def test_a_truncated_webm_stream_gives_what_it_holds_and_a_clean_end(server, test_video):
    data = test_video.read_bytes()
    ws, _ = await open_session(server.url, container="video/webm")
    cut = data[: len(data) // 2] + b"\x1f\x43\xb6\x75\x01\xff"  # half the file, then a broken element
    seq = 0
    for i in range(0, len(cut), 4000):
        seq += 1
        await ws.send(encode_frame(Kind.CONTAINER, seq, 0, cut[i : i + 4000]))
    await ws.send(json.dumps({"type": "bye"}))
    msgs = await recv_until(ws, lambda m: m.get("type") == "bye", timeout=30)
    events = [m for m in msgs if m.get("type") == "overlay"]
    assert 8 <= len(events) <= 20  # about half of the 3 s clip
    assert msgs[-1]["acked_seq"] == seq
    assert await closed_with(ws) == 1000
    health = json.loads(urllib.request.urlopen(server.http + "/healthz", timeout=5).read())
    assert health["status"] == "ok"


async def test_garbage_in_a_container_session_is_a_bad_media_error(server):
    ws, _ = await open_session(server.url, container="video/webm")
    await ws.send(encode_frame(Kind.CONTAINER, 1, 0, b"\x00" * 70000))
    msgs = await recv_until(ws, lambda m: m.get("type") == "error")
    assert msgs[-1]["code"] == "bad_media" and msgs[-1]["seq"] == 1
    await ws.close()


async def test_when_redis_goes_away_nothing_unwritten_is_acknowledged_and_health_says_so():
    import shutil

    from conftest import start_redis

    redis_port = free_port()
    redis_proc, workdir = start_redis(redis_port)
    srv = ServerProcess(free_port(), "--pipeline", "base", "--redis", f"redis://127.0.0.1:{redis_port}/0").start()
    try:
        ws, _ = await open_session(srv.url)
        await ws.send(encode_frame(Kind.AUDIO, 1, 0, TICK_PCM))
        await recv_until(ws, is_ack(1))
        redis_proc.kill()
        redis_proc.wait(5)
        await ws.send(encode_frame(Kind.AUDIO, 2, 100_000, TICK_PCM))
        msgs = await recv_until(ws, lambda m: m.get("type") == "error", timeout=20)
        assert msgs[-1]["code"] == "internal" and "resume later" in msgs[-1]["message"]
        assert not any(m.get("type") == "ack" and m["seq"] >= 2 for m in msgs)
        assert await closed_with(ws) == 1013  # try again later: the client resumes
        try:
            urllib.request.urlopen(srv.http + "/healthz", timeout=10)
            raise AssertionError("healthz answered 200 without its store")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503 and json.loads(exc.read())["store_ok"] is False
        async with websockets.connect(srv.url) as ws2:  # a new session cannot be stored either
            await ws2.send(json.dumps(HELLO))
            msg = json.loads(await ws2.recv())
            assert msg["type"] == "error" and msg["code"] == "internal" and "try again" in msg["message"]
            assert await closed_with(ws2) == 1013
    finally:
        srv.stop()
        if redis_proc.poll() is None:
            redis_proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)

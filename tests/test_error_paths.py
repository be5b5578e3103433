"""The server's error paths, each driven to its end: what the client is told (error code, close
code), what the store keeps, and that the server serves a well-behaved session afterwards. A real
`vibescope serve` process unless a test must shorten a timeout or break a stage or the store."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import numpy as np
import pytest
import redis

from vibescope.server.protocol import Limits
from vibescope.stream.stage import Tick

from attack import (
    TICK_PCM,
    aio_assert_streams,
    aio_closed,
    aio_hello,
    aio_until,
    assert_healthy,
    audio,
    closed_with,
    connect,
    container,
    errors,
    hello,
    in_process,
    is_ack,
    is_error,
    metric,
    overlays,
    recv_until,
    video,
)
from conftest import ServerProcess, StatelessStage, free_port


@pytest.fixture(scope="module")
def paths(redis_url):
    """A Redis-backed server on the cheap pipeline: (server, key prefix, Redis client)."""
    prefix = f"vibescope-test:{uuid.uuid4().hex[:8]}:"
    srv = ServerProcess(free_port(), "--pipeline", "base", "--redis", redis_url, "--redis-prefix", prefix).start()
    r = redis.Redis.from_url(redis_url)
    yield srv, prefix, r
    srv.stop()
    for key in r.scan_iter(match=f"{prefix}*"):
        r.delete(key)
    r.close()


class PassStage(StatelessStage):
    name = "pass"

    def push(self, tick: Tick) -> list[Tick]:
        return [tick]


async def resume_fields(url: str, frames: int = 2) -> dict:
    """A new session with ``frames`` acknowledged frames, its connection closed: the hello fields
    that resume it."""
    ws, welcome = await hello(url)
    for seq in range(1, frames + 1):
        await ws.send(audio(seq))
    await recv_until(ws, is_ack(frames))
    await ws.close()
    return {"session_id": welcome["session_id"], "resume_token": welcome["resume_token"]}


# --- before and around the hello ---------------------------------------------------------------


@pytest.mark.slow
async def test_no_hello_within_ten_seconds_is_hello_required_and_1008(paths):
    srv, _, _ = paths
    ws = await connect(srv.url)
    started = time.perf_counter()
    code, reason, msgs = await closed_with(ws, timeout=20)
    assert 9.0 < time.perf_counter() - started < 15
    assert [(m["code"], m["message"]) for m in msgs] == [("hello_required", "no hello within 10 s")]
    assert code == 1008
    await assert_healthy(srv)


async def test_no_hello_within_the_timeout_in_process(monkeypatch):
    from vibescope.server import handshake

    monkeypatch.setattr(handshake, "HELLO_TIMEOUT_S", 0.5)
    async with in_process(monkeypatch, PassStage) as (client, server):
        ws = await client.ws_connect("/v1/stream")
        code, msgs = await aio_closed(ws)
        assert code == 1008 and [m["code"] for m in msgs] == ["hello_required"]
        await asyncio.sleep(0.1)
        assert server.streams == 0 and len(server.registry) == 0
        await aio_assert_streams(client)


async def test_an_idle_connection_is_closed_with_1008_and_rate_limited(monkeypatch):
    async with in_process(monkeypatch, PassStage, Limits(idle_timeout_s=1.0)) as (client, server):
        ws, welcome = await aio_hello(client)
        await ws.send_bytes(audio(1))
        await aio_until(ws, is_ack(1))
        started = time.perf_counter()
        code, msgs = await aio_closed(ws)
        assert 0.8 < time.perf_counter() - started < 5
        assert code == 1008 and [(m["code"], m["message"]) for m in msgs] == [("rate_limited", "idle for 1 s")]
        await asyncio.sleep(0.1)
        assert welcome["session_id"] not in server.registry and server.streams == 0
        await aio_assert_streams(client)


# --- resuming ----------------------------------------------------------------------------------


async def test_a_claim_that_fails_during_resume_is_unknown_session(monkeypatch):
    async with in_process(monkeypatch, PassStage) as (client, server):
        ws, welcome = await aio_hello(client)
        await ws.send_bytes(audio(1))
        await aio_until(ws, is_ack(1))
        await ws.close()
        fields = {"session_id": welcome["session_id"], "resume_token": welcome["resume_token"]}
        claim, lost = server.store.claim, [True]

        async def claim_once_lost(session_id, owner):
            if lost[0]:
                return False  # the session expired between the load and the claim
            return await claim(session_id, owner)

        server.store.claim = claim_once_lost
        ws, msg = await aio_hello(client, **fields)
        assert msg["code"] == "unknown_session" and "expired while resuming" in msg["message"]
        assert (await aio_closed(ws))[0] == 4004
        lost[0] = False
        ws, again = await aio_hello(client, **fields)  # nothing else was touched: it resumes
        assert again["type"] == "welcome" and again["resumed"] and again["acked_seq"] == 1
        await ws.close()
        await aio_assert_streams(client)


def _garbled(kind: str, real: bytes) -> bytes:
    if kind == "garbage":
        return b"\x00\x01garbage, not a state" * 50
    if kind == "empty":
        return b""
    if kind == "truncated":
        return real[: len(real) // 2]
    if kind == "other format version":
        return real[:4] + (99).to_bytes(2, "little") + real[6:]
    if kind == "broken header":
        return real[:10] + b"}{" + real[12:]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated", "other format version", "broken header"])
async def test_stored_state_that_cannot_be_loaded_is_unknown_session_with_a_clear_message(paths, kind):
    srv, prefix, r = paths
    fields = await resume_fields(srv.url)
    key = f"{prefix}session:{fields['session_id']}"
    r.hset(key, "state", _garbled(kind, r.hget(key, "state")))
    ws, msg = await hello(srv.url, **fields)
    assert msg["type"] == "error" and msg["code"] == "unknown_session", msg
    assert msg["message"].startswith("the stored session cannot be continued: ")
    assert len(msg["message"]) < 300
    assert (await closed_with(ws))[0] == 4004
    await assert_healthy(srv)


@pytest.mark.parametrize(
    "field, value", [("acked", b"many"), ("meta", b"{not json"), ("meta", b"[1, 2]"), ("state", None)]
)
async def test_a_malformed_stored_record_is_unknown_session_not_try_again(paths, field, value):
    """A record the server cannot read is not a store outage: the client must not retry it for
    ever (1013) but start a new session (4004)."""
    srv, prefix, r = paths
    fields = await resume_fields(srv.url)
    key = f"{prefix}session:{fields['session_id']}"
    if value is None:
        r.hdel(key, field)
    else:
        r.hset(key, field, value)
    ws, msg = await hello(srv.url, **fields)
    assert msg["type"] == "error" and msg["code"] == "unknown_session", msg
    assert "cannot be continued" in msg["message"]
    assert (await closed_with(ws))[0] == 4004
    await assert_healthy(srv)


# --- analysis failures -------------------------------------------------------------------------------


class ExplodingStage(StatelessStage):
    """Raises on the tick whose audio is the constant 0.25 (the poisoned frame), like a bug would."""

    name = "exploding"

    def push(self, tick: Tick) -> list[Tick]:
        if tick.audio is not None and np.allclose(tick.audio, 0.25):
            raise ZeroDivisionError("a bug")
        return [tick]


POISON = np.full(1600, 8192, "<i2").tobytes()


async def test_a_failing_frame_is_answered_internal_and_the_session_goes_on(monkeypatch):
    async with in_process(monkeypatch, ExplodingStage) as (client, server):
        ws, _ = await aio_hello(client, video=None)
        for seq in range(1, 7):
            await ws.send_bytes(audio(seq, payload=POISON if seq == 3 else TICK_PCM))
        msgs = await aio_until(ws, is_ack(6))
        assert errors(msgs) == [("internal", 3)]
        assert "it was skipped" in next(m for m in msgs if is_error(m))["message"]
        # the batch was replayed without it: every other frame made its tick
        assert [e["t"] for e in overlays(msgs)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
        assert server.metrics.errors_total["internal"] == 1
        await ws.send_bytes(audio(7))
        assert [e["t"] for e in overlays(await aio_until(ws, is_ack(7)))] == pytest.approx([0.6])
        await ws.close()
        await aio_assert_streams(client)


async def test_a_whole_analysis_job_failing_closes_with_1011_and_keeps_the_acknowledged_state(monkeypatch):
    from vibescope.stream.session import Session

    async with in_process(monkeypatch, PassStage) as (client, server):
        ws, welcome = await aio_hello(client, video=None)
        await ws.send_bytes(audio(1))
        await ws.send_bytes(audio(2))
        msgs = await aio_until(ws, is_ack(2))
        seen = [e["t"] for e in overlays(msgs)]
        to_bytes, broken = Session.to_bytes, [True]

        def failing_to_bytes(self):
            if broken[0]:
                raise RuntimeError("a bug outside any one frame")
            return to_bytes(self)

        monkeypatch.setattr(Session, "to_bytes", failing_to_bytes)
        await ws.send_bytes(audio(3))
        code, msgs = await aio_closed(ws)
        assert code == 1011
        assert [(m["code"], m["message"]) for m in msgs if is_error(m)] == [
            ("internal", "internal analysis error; resume to continue")
        ]
        assert not [m for m in msgs if m.get("type") in ("ack", "overlay")]
        await asyncio.sleep(0.1)
        assert server.streams == 0 and len(server.registry) == 0
        broken[0] = False
        # the state stays as last acknowledged: a resume continues from seq 2
        ws, again = await aio_hello(
            client,
            video=None,
            session_id=welcome["session_id"],
            resume_token=welcome["resume_token"],
            last_event_t=seen[-1],
        )
        assert again["type"] == "welcome" and again["acked_seq"] == 2
        await ws.send_bytes(audio(3))
        assert [e["t"] for e in overlays(await aio_until(ws, is_ack(3)))] == pytest.approx([0.3])
        await ws.close()
        await aio_assert_streams(client)


# --- two processes, one Redis: the stale connection may not write ------------------------------------


async def test_a_stale_connection_on_another_process_loses_ownership_with_4009(paths, redis_url):
    a, prefix, r = paths
    b = ServerProcess(free_port(), "--pipeline", "base", "--redis", redis_url, "--redis-prefix", prefix).start()
    try:
        old, welcome = await hello(a.url)
        await old.send(audio(1))
        await old.send(audio(2))
        await recv_until(old, is_ack(2))
        sid = welcome["session_id"]
        new, again = await hello(
            b.url, session_id=sid, resume_token=welcome["resume_token"], last_event_t=0.2
        )  # process A does not know: its connection stays open
        assert again["type"] == "welcome" and again["resumed"] and again["acked_seq"] == 2
        await old.send(audio(3, payload=np.zeros(1600, "<i2").tobytes()))  # A analyses it, then may not write it
        code, _, msgs = await closed_with(old)
        assert code == 4009 and [m["code"] for m in msgs if is_error(m)] == ["session_busy"]
        assert not [m for m in msgs if m.get("type") == "ack" and m["seq"] >= 3]
        key = f"{prefix}session:{sid}"
        assert int(r.hget(key, "acked")) == 2 and r.llen(f"{prefix}events:{sid}") == 2  # A wrote nothing
        await new.send(audio(3))
        msgs = await recv_until(new, is_ack(3))
        assert [e["t"] for e in overlays(msgs)] == pytest.approx([0.3])
        assert int(r.hget(key, "acked")) == 3 and r.llen(f"{prefix}events:{sid}") == 3
        assert json.loads(r.lindex(f"{prefix}events:{sid}", -1))["loudness"]["dbfs"] > -60  # B's frame, not A's
        await new.close()
        await assert_healthy(a)
        await assert_healthy(b)
    finally:
        b.stop()


# --- the video token bucket -------------------------------------------------------------------------


async def test_a_burst_of_video_beyond_ten_seconds_of_frames_is_rate_limited(paths):
    srv, _, _ = paths
    fps, burst = 30, 300  # Limits.max_video_fps and its burst of 10 s of frames
    total = 420  # the excess stays under the flood limit (5 s of frames): no close
    ws, welcome = await hello(srv.url, audio=None)
    assert welcome["limits"]["max_video_fps"] == fps
    admitted = metric(srv, 'vibescope_frames_total{kind="video"}')
    msgs: list[dict] = []

    async def read():
        msgs.extend(await recv_until(ws, is_ack(total), timeout=60))

    reader = asyncio.create_task(read())
    started = time.perf_counter()
    for seq in range(1, total + 1):
        await ws.send(video(seq, (seq - 1) / fps))  # correctly spaced in media time
    await reader
    took = time.perf_counter() - started
    refused = [seq for code, seq in errors(msgs) if code == "rate_limited"]
    assert {code for code, _ in errors(msgs)} <= {"rate_limited"}
    print(f"{total} frames in {took:.2f} s: {len(refused)} rate_limited")
    assert min(refused, default=burst + 1) > burst  # the burst got through whole...
    assert len(refused) >= total - burst - fps * took - 1  # ...the rest only at the rate
    assert metric(srv, 'vibescope_frames_total{kind="video"}') - admitted == total - len(refused)
    await asyncio.sleep(1.0)  # the bucket refills: the session goes on
    await ws.send(video(total + 1, total / fps))
    msgs = await recv_until(ws, is_ack(total + 1))
    assert errors(msgs) == [] and overlays(msgs)
    await ws.close()
    await assert_healthy(srv)


# --- containers ---------------------------------------------------------------------------------------


async def test_a_container_that_cannot_be_opened_is_bad_media_after_a_mebibyte(paths):
    srv, _, _ = paths
    ws, _ = await hello(srv.url, container="video/webm")
    filler = bytes(600 * 1024)
    await ws.send(container(1, b"\x1a\x45\xdf\xa3" + filler))  # EBML magic, then nothing that opens
    msgs = await recv_until(ws, is_ack(1))
    assert errors(msgs) == []  # a header may come in pieces: the server waits up to 1 MiB
    await ws.send(container(2, filler))
    msgs = await recv_until(ws, is_ack(2))
    assert errors(msgs) == [("bad_media", 2)]
    assert "cannot open container" in next(m for m in msgs if is_error(m))["message"]
    await ws.close()
    await assert_healthy(srv)


# --- shutdown ---------------------------------------------------------------------------------------


@pytest.mark.slow  # two server starts
async def test_sigterm_closes_streams_with_1013_and_they_resume_on_the_next_process(redis_url, redis_prefix):
    port = free_port()
    args = ("--pipeline", "base", "--redis", redis_url, "--redis-prefix", redis_prefix)
    srv = ServerProcess(port, *args).start()
    try:
        ws, welcome = await hello(srv.url)
        events, acked = [], 0

        async def stream():
            nonlocal acked
            seq = 0
            while True:
                seq += 1
                await ws.send(audio(seq))
                for msg in await recv_until(ws, is_ack(seq)):
                    events.extend([msg] if msg.get("type") == "overlay" else [])
                acked = seq
                await asyncio.sleep(0.03)

        streaming = asyncio.create_task(stream())
        while acked < 10:
            await asyncio.sleep(0.02)
        srv.proc.terminate()  # SIGTERM, as a service manager stops it
        code, reason, _ = await closed_with(ws)
        streaming.cancel()
        await asyncio.gather(streaming, return_exceptions=True)
        assert code == 1013 and reason == "server shutting down: resume"
        assert await asyncio.to_thread(srv.proc.wait, 15) == 0
    finally:
        srv.stop()
    srv = ServerProcess(port, *args).start()
    try:
        ws, again = await hello(
            srv.url,
            session_id=welcome["session_id"],
            resume_token=welcome["resume_token"],
            last_event_t=events[-1]["t"],
            acked_seq=acked,
        )
        assert again["resumed"] and again["acked_seq"] >= acked and "lost" not in again
        seq = again["acked_seq"] + 1
        await ws.send(audio(seq))
        msgs = await recv_until(ws, is_ack(seq))
        events += overlays(msgs)
        assert [e["t"] for e in events] == pytest.approx([0.1 * (i + 1) for i in range(seq)])
        await ws.close()
        await assert_healthy(srv)
    finally:
        srv.stop()


# --- expiry -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_ttl(redis_url):
    prefix = f"vibescope-test:{uuid.uuid4().hex[:8]}:"
    srv = ServerProcess(
        free_port(), "--pipeline", "base", "--redis", redis_url, "--redis-prefix", prefix, "--ttl", "3"
    ).start()
    r = redis.Redis.from_url(redis_url)
    yield srv, prefix, r
    srv.stop()
    for key in r.scan_iter(match=f"{prefix}*"):
        r.delete(key)
    r.close()


async def test_every_save_pushes_the_ttl_back(short_ttl):
    srv, prefix, r = short_ttl
    ws, welcome = await hello(srv.url)
    sid = welcome["session_id"]
    keys = (f"{prefix}session:{sid}", f"{prefix}events:{sid}")
    for seq in (1, 2, 3):
        await ws.send(audio(seq))
        await recv_until(ws, is_ack(seq))
        for key in keys:
            assert 2400 < r.pttl(key) <= 3000, (seq, key)  # ~ --ttl right after a save
        await asyncio.sleep(1.2)
        for key in keys:
            assert 0 < r.pttl(key) < 2000  # counting down between saves
    await ws.close()
    await assert_healthy(srv)


async def test_an_idle_session_expires_from_redis_and_cannot_be_resumed(short_ttl):
    srv, prefix, r = short_ttl
    fields = await resume_fields(srv.url)
    assert r.exists(f"{prefix}session:{fields['session_id']}")
    await asyncio.sleep(3.5)
    assert not r.exists(f"{prefix}session:{fields['session_id']}", f"{prefix}events:{fields['session_id']}")
    ws, msg = await hello(srv.url, **fields)
    assert msg["code"] == "unknown_session" and "expired" in msg["message"]
    assert (await closed_with(ws))[0] == 4004
    await assert_healthy(srv)


async def test_the_memory_store_pushes_its_ttl_back_and_expires_idle_sessions(monkeypatch):
    from vibescope.server import store as store_module
    from vibescope.server.store import MemoryStateStore, OwnershipLost

    now = [1000.0]
    monkeypatch.setattr(store_module.time, "monotonic", lambda: now[0])
    store = MemoryStateStore(ttl=10)
    await store.create("s1", b"state0", {"want": []}, "owner")
    now[0] += 9
    assert (await store.load("s1")).state == b"state0"
    await store.save("s1", "owner", b"state1", 1, ['{"t": 0.1}'])
    now[0] += 9  # 18 s after creation, 9 after the save
    stored = await store.load("s1")
    assert stored.state == b"state1" and stored.acked_seq == 1
    assert await store.claim("s1", "owner")  # a claim is no write: it does not push the TTL back
    now[0] += 1.5  # 10.5 s after the save
    assert await store.load("s1") is None
    assert not await store.claim("s1", "owner")
    assert await store.events_after("s1", None) == []
    with pytest.raises(OwnershipLost):
        await store.save("s1", "owner", b"state2", 2, [])
    await store.create("s2", b"x", {}, "o")  # creating sweeps what expired
    assert "s1" not in store._data and "s2" in store._data

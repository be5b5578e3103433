"""A bug in one analysis step must not end the session (in-process server with a faulty stage)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vibescope.server.protocol import Kind, encode_frame
from vibescope.stream.stage import Tick

from conftest import StatelessStage, in_process_server

TICK_PCM = (0.1 * np.sin(2 * np.pi * 440 * np.arange(1600) / 16000) * 32767).astype("<i2").tobytes()


class ExplodingStage(StatelessStage):
    """Raises on one particular (constant) tick, the way a bug would."""

    name = "exploding"

    def push(self, tick: Tick) -> list[Tick]:
        if tick.audio is not None and np.allclose(tick.audio, 0.25):  # the poisoned frame
            raise ZeroDivisionError("a bug")
        tick.fields["checked"] = True
        return [tick]


@pytest.fixture
async def client(monkeypatch):
    async with in_process_server(monkeypatch, ExplodingStage) as (c, _):
        yield c


async def test_a_failing_frame_gets_an_internal_error_and_the_session_goes_on(client):
    ws = await client.ws_connect("/v1/stream")
    await ws.send_str(json.dumps({"type": "hello", "protocol": 1, "video": None}))
    assert (await ws.receive_json())["type"] == "welcome"
    for seq in range(1, 6):
        await ws.send_bytes(
            encode_frame(Kind.AUDIO, seq, 0, np.full(1600, 8192, "<i2").tobytes() if seq == 3 else TICK_PCM)
        )
    events, errors, acked = [], [], 0
    while acked < 5:
        msg = await ws.receive_json(timeout=10)
        if msg["type"] == "overlay":
            events.append(msg)
        elif msg["type"] == "error":
            errors.append(msg)
        elif msg["type"] == "ack":
            acked = msg["seq"]
    assert [(e["code"], e["seq"]) for e in errors] == [("internal", 3)]
    # the frames before and after the failing one were analysed; the failing one was skipped
    assert [e["t"] for e in events] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert all(e["checked"] for e in events)
    await ws.close()


class ChattyStage(StatelessStage):
    """Makes every overlay event ~50 kB, so a client that stops reading backs the server up fast."""

    name = "chatty"

    def push(self, tick: Tick) -> list[Tick]:
        tick.fields["blob"] = "x" * 50_000
        return [tick]


@pytest.fixture
async def chatty(monkeypatch):
    from vibescope.server import connection

    monkeypatch.setattr(connection, "OUTBOX_ITEMS", 64)  # the same path as 2048, reached sooner
    async with in_process_server(monkeypatch, ChattyStage) as (c, server):
        yield c, server


async def _acked(ws, seq: int) -> int:
    while True:
        msg = await ws.receive_json(timeout=20)
        if msg["type"] == "ack" and msg["seq"] >= seq:
            return msg["seq"]


async def test_a_client_that_stops_reading_is_cut_off_and_nothing_else_suffers(chatty):
    import asyncio
    import time

    client, server = chatty
    hello = json.dumps({"type": "hello", "protocol": 1, "video": None})
    second = TICK_PCM * 10  # 1 s of audio: 10 events of ~50 kB each
    stalled = await client.ws_connect("/v1/stream")
    await stalled.send_str(hello)
    welcome = await stalled.receive_json()
    sid, token = welcome["session_id"], welcome["resume_token"]
    await stalled.send_bytes(encode_frame(Kind.AUDIO, 1, 0, second))
    assert await _acked(stalled, 1) == 1  # it read this far, then stops reading for good
    healthy = await client.ws_connect("/v1/stream")
    await healthy.send_str(hello)
    assert (await healthy.receive_json())["type"] == "welcome"

    deadline = time.monotonic() + 60
    seq = 1
    while sid in server.registry and time.monotonic() < deadline:
        seq += 1
        try:
            await stalled.send_bytes(encode_frame(Kind.AUDIO, seq, int((seq - 1) * 1e6), second))
        except (ConnectionError, RuntimeError):
            break
        await asyncio.sleep(0.01)
    for _ in range(500):  # the server lets go of it (its outbox overflowed), not the other way round
        if sid not in server.registry:
            break
        await asyncio.sleep(0.05)
    assert sid not in server.registry, "the stalled client was never cut off"
    assert seq > 2

    # the other session streams on, and the server is healthy
    for s in (1, 2, 3):
        await healthy.send_bytes(encode_frame(Kind.AUDIO, s, int((s - 1) * 1e5), TICK_PCM))
    assert await _acked(healthy, 3) == 3
    assert (await client.get("/healthz")).status == 200

    # what was acknowledged to the stalled client is kept: it can resume where its acks ended
    # (saying it holds every event, so the replay of stored events does not flood this small outbox)
    back = await client.ws_connect("/v1/stream")
    await back.send_str(
        json.dumps(
            {
                "type": "hello",
                "protocol": 1,
                "video": None,
                "session_id": sid,
                "resume_token": token,
                "last_event_t": 1e9,
            }
        )
    )
    resumed = await back.receive_json()
    assert resumed["type"] == "welcome", resumed
    assert resumed["resumed"] is True and resumed["acked_seq"] >= 1
    nxt = resumed["acked_seq"] + 1
    await back.send_bytes(encode_frame(Kind.AUDIO, nxt, int((nxt - 1) * 1e6), TICK_PCM))
    assert await _acked(back, nxt) == nxt
    for ws in (stalled, healthy, back):
        await ws.close()

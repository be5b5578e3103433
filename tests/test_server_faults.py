"""A bug in one analysis step must not end the session (in-process server with a faulty stage)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from server.app import ServerConfig, StreamServer
from server.protocol import Kind, encode_frame
from stream import engine
from stream.pipeline import Tick

TICK_PCM = (0.1 * np.sin(2 * np.pi * 440 * np.arange(1600) / 16000) * 32767).astype("<i2").tobytes()


class ExplodingStage:
    """Raises on one particular (constant) tick, the way a bug would."""

    name = "exploding"
    lag_ticks = 0

    def push(self, tick: Tick) -> list[Tick]:
        if tick.audio is not None and np.allclose(tick.audio, 0.25):  # the poisoned frame
            raise ZeroDivisionError("a bug")
        tick.fields["checked"] = True
        return [tick]

    def flush(self) -> list[Tick]:
        return []

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@pytest.fixture
async def client(monkeypatch):
    monkeypatch.setitem(engine.PIPELINES, "faulty", lambda: [engine.BaseStage(), ExplodingStage()])
    server = StreamServer(ServerConfig(pipeline="faulty"))
    async with TestClient(TestServer(server.app())) as c:
        yield c


async def test_a_failing_frame_gets_an_internal_error_and_the_session_goes_on(client):
    ws = await client.ws_connect("/v1/stream")
    await ws.send_str(json.dumps({"type": "hello", "protocol": 1, "video": None}))
    assert (await ws.receive_json())["type"] == "welcome"
    for seq in range(1, 6):
        await ws.send_bytes(encode_frame(Kind.AUDIO, seq, 0, np.full(1600, 8192, "<i2").tobytes() if seq == 3 else TICK_PCM))
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

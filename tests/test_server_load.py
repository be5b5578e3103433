"""A server past its capacity thins, then sheds, video and never drops audio (server/session.py,
``VideoShedding``); the policy alone, then an in-process server whose analysis is slow."""
from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from conftest import StatelessStage, in_process_server
from server.protocol import Kind, encode_frame
from server.session import VIDEO_SHED_DELAY_S, VIDEO_THIN_LAG_S, VIDEO_UNTHIN_LAG_S, VideoShedding
from stream.media import encode_jpeg
from stream.pipeline import Tick

TICK_PCM = (0.1 * np.sin(2 * np.pi * 440 * np.arange(1600) / 16000) * 32767).astype("<i2").tobytes()
JPEG = encode_jpeg(np.full((96, 128, 3), 120, np.uint8))


def test_no_frame_is_skipped_while_answers_are_in_time():
    s = VideoShedding()
    assert not any(s.skip(0.0) for _ in range(5))
    s.answered(VIDEO_THIN_LAG_S * 0.9)
    assert not any(s.skip(VIDEO_SHED_DELAY_S * 0.9) for _ in range(5))


def test_from_a_late_answer_every_other_frame_is_skipped_until_answers_are_back_in_time():
    s = VideoShedding()
    s.answered(VIDEO_THIN_LAG_S + 0.01)
    assert [s.skip(0.0) for _ in range(6)] == [True, False] * 3
    # better, but not under the release level yet: still thinning (no flapping at the threshold)
    s.answered((VIDEO_THIN_LAG_S + VIDEO_UNTHIN_LAG_S) / 2)
    assert [s.skip(0.0) for _ in range(4)] == [True, False] * 2
    s.answered(VIDEO_UNTHIN_LAG_S - 0.01)
    assert not any(s.skip(0.0) for _ in range(4))


def test_every_frame_is_skipped_while_the_queue_has_waited_too_long():
    s = VideoShedding()
    assert all(s.skip(VIDEO_SHED_DELAY_S + 0.01) for _ in range(5))
    assert not s.skip(0.0)


class SlowFrameStage(StatelessStage):
    """Costs ``SECONDS`` of analysis for every tick that carries a video frame, as decoding and
    expressions do on a host too slow for its load; ticks without one cost nothing."""

    name = "slow"
    SECONDS = 0.15

    def push(self, tick: Tick) -> list[Tick]:
        if tick.frame is not None:
            time.sleep(self.SECONDS)
        return [tick]


@pytest.fixture
async def slow(monkeypatch):
    async with in_process_server(monkeypatch, SlowFrameStage) as (c, _):
        yield c


async def test_a_session_whose_frames_answer_late_gets_every_other_frame_analysed_and_all_its_audio(slow):
    """150 ms per frame at 10 frames/s cannot keep up, and answers come 150 ms or more after
    their audio: above ``VIDEO_THIN_LAG_S``, so every other frame is skipped, which fits in real
    time; the queue never waits long enough for whole runs of frames to be shed."""
    ws = await slow.ws_connect("/v1/stream")
    await ws.send_str(json.dumps({"type": "hello", "protocol": 1, "video": "jpeg",
                                  "audio": {"encoding": "pcm16", "sample_rate": 16000, "channels": 1}}))
    assert (await ws.receive_json())["type"] == "welcome"
    ticks, events = 40, []

    async def read() -> None:
        while True:
            msg = await ws.receive_json(timeout=20)
            if msg["type"] == "overlay":
                events.append(msg)
            elif msg["type"] == "ack" and msg["seq"] == 2 * ticks:
                return

    reader = asyncio.ensure_future(read())
    start = time.perf_counter()
    for k in range(ticks):  # at real-time pace: the frame at k/10 s, then the audio that ends at (k+1)/10 s
        await ws.send_bytes(encode_frame(Kind.VIDEO, 2 * k + 1, k * 100_000, JPEG))
        await asyncio.sleep(max(0.0, start + (k + 1) * 0.1 - time.perf_counter()))
        await ws.send_bytes(encode_frame(Kind.AUDIO, 2 * k + 2, k * 100_000, TICK_PCM))
    await reader
    await ws.close()

    assert [e["t"] for e in events] == pytest.approx([0.1 * (k + 1) for k in range(ticks)])  # all the audio
    analysed = [e["face"]["present"] is not None for e in events]  # None: the tick's frame was skipped
    skipped = analysed.count(False)
    assert events[-1]["dropped"]["video_frames"] == skipped
    assert ticks // 4 <= skipped <= ticks // 2 + 1, analysed
    assert not any(not a and not b for a, b in zip(analysed, analysed[1:])), f"a run of frames was shed: {analysed}"

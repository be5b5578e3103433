"""A server past its capacity thins, then sheds, video and never drops audio (server/shedding.py);
the policy alone, then an in-process server whose analysis is slow on an injected clock. Frames a
client sends to catch up after a reconnect are never skipped, and waiting behind them is not
lateness."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vibescope.server.protocol import Kind, encode_frame
from vibescope.server.shedding import SheddingLimits, VideoShedding
from vibescope.stream.media import encode_jpeg
from vibescope.stream.stage import Tick

from conftest import FakeClock, StatelessStage, in_process_server

LIMITS = SheddingLimits()
TICK_PCM = (0.1 * np.sin(2 * np.pi * 440 * np.arange(1600) / 16000) * 32767).astype("<i2").tobytes()
JPEG = encode_jpeg(np.full((96, 128, 3), 120, np.uint8))


def answer_after(s: VideoShedding, clock: FakeClock, lag: float) -> None:
    """A live frame arrives now and is answered ``lag`` seconds later."""
    arrived = clock()
    clock.advance(lag)
    s.answered(arrived)


def test_no_frame_is_skipped_while_answers_are_in_time():
    clock = FakeClock()
    s = VideoShedding(LIMITS, clock)
    assert not any(s.skip(None) for _ in range(5))
    answer_after(s, clock, LIMITS.thin_lag_s * 0.9)
    waiting = clock()
    clock.advance(LIMITS.shed_delay_s * 0.9)
    assert not any(s.skip(waiting) for _ in range(5))


def test_from_a_late_answer_every_other_frame_is_skipped_until_answers_are_back_in_time():
    clock = FakeClock()
    s = VideoShedding(LIMITS, clock)
    answer_after(s, clock, LIMITS.thin_lag_s + 0.01)
    assert [s.skip(None) for _ in range(6)] == [True, False] * 3
    # better, but not under the release level yet: still thinning (no flapping at the threshold)
    answer_after(s, clock, (LIMITS.thin_lag_s + LIMITS.unthin_lag_s) / 2)
    assert [s.skip(None) for _ in range(4)] == [True, False] * 2
    answer_after(s, clock, LIMITS.unthin_lag_s - 0.01)
    assert not any(s.skip(None) for _ in range(4))


def test_every_frame_is_skipped_while_the_queue_has_waited_too_long():
    clock = FakeClock()
    s = VideoShedding(LIMITS, clock)
    waiting = clock()
    clock.advance(LIMITS.shed_delay_s + 0.01)
    assert all(s.skip(waiting) for _ in range(5))
    assert not s.skip(None)


def test_no_live_frame_is_skipped_while_a_catch_up_is_outstanding():
    clock = FakeClock()
    s = VideoShedding(LIMITS, clock)
    for _ in range(30):
        s.received(catch_up=True)
    waiting = clock()
    clock.advance(10 * LIMITS.shed_delay_s)  # a burst of three seconds queued behind
    assert not any(s.skip(waiting) for _ in range(5))


def test_a_batch_of_catch_up_frames_does_not_count_as_a_late_answer():
    clock = FakeClock()
    s = VideoShedding(LIMITS, clock)
    for _ in range(3):
        s.received(catch_up=True)
    first = clock()
    clock.advance(1.0)
    s.answered(first, caught_up=3)  # one second after they arrived
    assert not s.thinning and not s.catching_up


def test_time_a_live_frame_waited_behind_the_catch_up_is_not_lateness():
    clock = FakeClock()
    s = VideoShedding(LIMITS, clock)
    s.received(catch_up=True)
    live_arrived = clock()  # arrives while the catch-up frame is being analysed
    clock.advance(0.5)
    s.answered(None, caught_up=1)
    clock.advance(0.01)
    s.answered(live_arrived)  # 0.51 s after it arrived, 0.01 s after the catch-up ended
    assert not s.thinning
    assert not s.skip(live_arrived)
    # from then on, a live answer as late as before counts again
    answer_after(s, clock, LIMITS.thin_lag_s + 0.01)
    assert s.thinning


class SlowFrameStage(StatelessStage):
    """Costs ``SECONDS`` of analysis time on the server's clock for every tick that carries a
    video frame, as decoding and expressions do on a host too slow for its load; ticks without
    one cost nothing."""

    name = "slow"
    SECONDS = 0.15
    clock: FakeClock

    def push(self, tick: Tick) -> list[Tick]:
        if tick.frame is not None:
            self.clock.advance(self.SECONDS)
        return [tick]


@pytest.fixture
async def slow(monkeypatch):
    SlowFrameStage.clock = FakeClock()
    async with in_process_server(monkeypatch, SlowFrameStage, clock=SlowFrameStage.clock) as (c, _):
        yield c


async def test_a_session_whose_frames_answer_late_gets_every_other_frame_analysed_and_all_its_audio(slow):
    """150 ms per frame at 10 frames/s cannot keep up: each analysed frame's answer comes 150 ms
    after it arrived, above ``thin_lag_s``, so the next frame is skipped, whose answer is in time,
    so the one after is analysed: every other frame, which fits in real time. Media time passes
    on the server's clock as the client sends (100 ms per tick), and the client waits for each
    tick's ack, so the run is the same on any host."""
    clock = SlowFrameStage.clock
    ws = await slow.ws_connect("/v1/stream")
    await ws.send_str(
        json.dumps(
            {
                "type": "hello",
                "protocol": 1,
                "video": "jpeg",
                "audio": {"encoding": "pcm16", "sample_rate": 16000, "channels": 1},
            }
        )
    )
    assert (await ws.receive_json())["type"] == "welcome"
    ticks, events = 40, []
    for k in range(ticks):  # the frame at k/10 s, then the audio that ends at (k+1)/10 s
        clock.advance(0.1)
        await ws.send_bytes(encode_frame(Kind.VIDEO, 2 * k + 1, k * 100_000, JPEG))
        await ws.send_bytes(encode_frame(Kind.AUDIO, 2 * k + 2, k * 100_000, TICK_PCM))
        while True:
            msg = await ws.receive_json(timeout=20)
            if msg["type"] == "overlay":
                events.append(msg)
            elif msg["type"] == "ack" and msg["seq"] == 2 * k + 2:
                break
    await ws.close()

    assert [e["t"] for e in events] == pytest.approx([0.1 * (k + 1) for k in range(ticks)])  # all the audio
    analysed = [e["face"]["present"] is not None for e in events]  # None: the tick's frame was skipped
    assert analysed == [True, False] * (ticks // 2)
    assert events[-1]["dropped"]["video_frames"] == ticks // 2


async def test_a_burst_marked_as_catch_up_is_analysed_whole(slow):
    """The same slow server, but the client resumes behind and says so (``catch_up_until_t``): the
    whole burst of frames that came due while it was away is analysed, none skipped."""
    clock = SlowFrameStage.clock
    ws = await slow.ws_connect("/v1/stream")
    await ws.send_str(json.dumps({"type": "hello", "protocol": 1, "video": "jpeg"}))
    welcome = await ws.receive_json()
    await ws.close()
    back = await slow.ws_connect("/v1/stream")
    await back.send_str(
        json.dumps(
            {
                "type": "hello",
                "protocol": 1,
                "video": "jpeg",
                "session_id": welcome["session_id"],
                "resume_token": welcome["resume_token"],
                "catch_up_until_t": 2.0,
            }
        )
    )
    assert (await back.receive_json())["type"] == "welcome"
    ticks, events = 20, []
    for k in range(ticks):  # two seconds of media in one burst
        await back.send_bytes(encode_frame(Kind.VIDEO, 2 * k + 1, k * 100_000, JPEG))
        await back.send_bytes(encode_frame(Kind.AUDIO, 2 * k + 2, k * 100_000, TICK_PCM))
    clock.advance(0.1)
    while True:
        msg = await back.receive_json(timeout=20)
        if msg["type"] == "overlay":
            events.append(msg)
        elif msg["type"] == "ack" and msg["seq"] == 2 * ticks:
            break
    await back.close()
    assert len(events) == ticks
    assert all(e["face"]["present"] is not None for e in events)
    assert events[-1]["dropped"]["video_frames"] == 0

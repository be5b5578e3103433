"""A Redis that loses acknowledged writes under a live session (AOF everysec losing its last
second, a replica promoted from behind): the real `vibescope serve` on Redis, the real push
client streaming in real time. The session's hash and event list are snapshotted at some
acknowledged seq, the stream goes on, the server is killed with SIGKILL, the snapshot is written
back and a new process starts on the same port and Redis. The client must recover by itself in
bounded time: resend what it still holds (no event lost or repeated), or, when the rollback is
longer than what it keeps, skip past it, report the lost media range and go on."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import redis

from vibescope.server.client import PushClient, PushStats
from vibescope.stream.media import Chunk
from vibescope.stream.session import Session, SessionConfig

from conftest import ServerProcess, free_port

pytestmark = pytest.mark.slow

SECONDS = 5.0
AUDIO = {"encoding": "pcm16", "sample_rate": 16000, "channels": 1}


def tone_chunks(seconds: float = SECONDS) -> list[Chunk]:
    """100 ms PCM16 chunks of a tone whose level changes every chunk (each tick's loudness tells
    which chunk it analysed)."""
    out = []
    for i in range(int(round(seconds * 10))):
        level = 0.02 + 0.02 * (i % 17)
        x = level * np.sin(2 * np.pi * 440 * (np.arange(1600) + 1600 * i) / 16000)
        out.append(Chunk("audio", (x * 32767).astype("<i2").tobytes(), round(i * 0.1, 6)))
    return out


def reference_events(chunks: list[Chunk]) -> list[dict]:
    """What an uninterrupted session gives for ``chunks`` (the server's config for this hello)."""
    session = Session(SessionConfig(video=False, stages="base", stems=()))
    events = [ev for c in chunks for ev in session.feed(c).events] + session.flush().events
    return [_plain(ev.to_dict()) for ev in events]


def _plain(ev: dict) -> dict:
    return {k: v for k, v in ev.items() if k != "latency_ms"}


class Push:
    """A PushClient streaming in real time on its own thread and event loop (the test's own
    thread blocks while it kills and starts servers)."""

    def __init__(self, url: str, chunks: list[Chunk]) -> None:
        self.events: list[dict] = []
        self.lost: list[tuple[float, float]] = []
        self.client = PushClient(
            url,
            audio=AUDIO,
            video=None,
            realtime=True,
            on_event=self.events.append,
            on_lost=lambda a, b: self.lost.append((a, b)),
            give_up_after_s=60,
        )
        self.stats: PushStats | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(chunks,), daemon=True)
        self._thread.start()

    def _run(self, chunks: list[Chunk]) -> None:
        try:
            self.stats = asyncio.run(self.client.run(chunks))
        except BaseException as exc:  # noqa: BLE001 (reported by finish)
            self.error = exc

    def finish(self, timeout: float) -> PushStats:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the push did not finish: the client did not recover"
        if self.error is not None:
            raise self.error
        return self.stats


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def roll_back_under_a_live_session(redis_url: str, prefix: str, push_first, more_acked: int = 15):
    """Start server A, stream, snapshot the session at an acknowledged seq, stream ``more_acked``
    frames further, SIGKILL A, write the snapshot back, start B on the same port: returns
    (B, the push, the snapshot's acked seq, the seq A had stored when it died)."""
    port = free_port()
    args = ("--pipeline", "base", "--redis", redis_url, "--redis-prefix", prefix)
    a = ServerProcess(port, *args).start()
    r = redis.Redis.from_url(redis_url)
    try:
        push = push_first(a.url)
        sid = _wait(lambda: push.client.session_id, 20, "the welcome")
        keys = (f"{prefix}session:{sid}", f"{prefix}events:{sid}")

        def stored_acked() -> int:
            return int(r.hget(keys[0], "acked") or 0)

        _wait(lambda: stored_acked() >= 10, 20, "ten acknowledged frames")
        with r.pipeline(transaction=True) as pipe:  # one consistent snapshot
            pipe.hget(keys[0], "acked")
            for key in keys:
                pipe.dump(key)
                pipe.pttl(key)
            acked, *dumped = pipe.execute()
        snap_acked = int(acked)
        _wait(lambda: stored_acked() >= snap_acked + more_acked, 20, "the stream to go on")
        a.kill()
        died_at = stored_acked()
        with r.pipeline(transaction=True) as pipe:  # Redis comes back with the older data
            for key, blob, ttl in zip(keys, dumped[0::2], dumped[1::2], strict=True):
                pipe.restore(key, max(int(ttl), 0), blob, replace=True)
            pipe.execute()
        assert stored_acked() == snap_acked
        b = ServerProcess(port, *args).start()
        return b, push, snap_acked, died_at
    finally:
        a.kill()
        r.close()


def test_a_rollback_the_client_still_holds_is_resent_and_no_event_is_lost_or_repeated(redis_url, redis_prefix):
    chunks = tone_chunks()
    b, push, snap_acked, died_at = roll_back_under_a_live_session(
        redis_url, redis_prefix, lambda url: Push(url, chunks)
    )
    try:
        assert died_at - snap_acked >= 15  # a second and a half of acknowledged media rolled back
        stats = push.finish(timeout=60)
        metrics = b.metrics()
    finally:
        b.stop()
    assert metrics["vibescope_store_rollbacks_total"] == 1
    assert sum(e.get("code") == "bad_seq" for e in stats.errors) <= 1
    assert stats.errors == [] or {e["code"] for e in stats.errors} == {"bad_seq"}
    assert stats.lost == [] and push.lost == [] and stats.new_sessions == 0
    assert stats.reconnects >= 1 and stats.resent >= died_at - snap_acked - 1
    times = [e["t"] for e in push.events]
    assert times == pytest.approx([0.1 * (i + 1) for i in range(len(chunks))])  # every tick, once
    assert [_plain(e) for e in push.events] == reference_events(chunks)  # and as an uninterrupted run


def test_a_rollback_longer_than_the_clients_retention_is_reported_and_the_session_goes_on(
    redis_url, redis_prefix, monkeypatch
):
    monkeypatch.setattr(PushClient, "RETAIN_S", 0.3)
    monkeypatch.setattr(PushClient, "RETAIN_FRAMES", 3)
    chunks = tone_chunks()
    b, push, snap_acked, died_at = roll_back_under_a_live_session(
        redis_url, redis_prefix, lambda url: Push(url, chunks)
    )
    try:
        assert died_at - snap_acked >= 15
        stats = push.finish(timeout=60)
        metrics = b.metrics()
    finally:
        b.stop()
    assert metrics["vibescope_store_rollbacks_total"] == 1
    assert sum(e.get("code") == "bad_seq" for e in stats.errors) <= 1
    assert stats.new_sessions == 0 and stats.reconnects >= 1
    # the client says what no server analysis covers: from the rollback point to where it resumed
    assert len(stats.lost) == 1 and push.lost == stats.lost
    from_t, to_t = stats.lost[0]
    snap_t = snap_acked * 0.1
    assert snap_t - 1e-6 <= from_t < to_t and to_t - snap_t >= 1.0
    # the events go on after the range, every tick once, the restart marked with a gap
    times = [e["t"] for e in push.events]
    assert times == pytest.approx([0.1 * (i + 1) for i in range(len(chunks))])
    gaps = [e for e in push.events if "gap" in e]
    assert len(gaps) == 1
    assert gaps[0]["t"] == pytest.approx(to_t + 0.1)
    assert gaps[0]["gap"]["from_t"] == pytest.approx(snap_t) and gaps[0]["gap"]["to_t"] == pytest.approx(to_t)

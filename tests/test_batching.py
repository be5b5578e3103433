"""Lock-step analysis of many sessions (vibescope.stream.lockstep.feed_many, server/analysis.py): every model
runs once per round for all sessions, and each session gets what it would get alone."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import numpy as np
import pytest

from vibescope.server.pool import AnalysisPool, call
from vibescope.stream.lockstep import feed_many
from vibescope.stream.media import Chunk, MediaError
from vibescope.stream.session import Session, SessionConfig
from vibescope.stream.source import iter_chunks

from assets import pyfeat_file

DEFAULT = SessionConfig()
BASE = SessionConfig(stages="base")


def _silence(n: int) -> Chunk:
    return Chunk("audio", np.zeros(n, "<i2").tobytes(), 0.0)


def _rechunk_audio(chunks: list[Chunk], size: int) -> list[Chunk]:
    """The same media with its audio cut into ``size``-sample frames (video frames in between)."""
    pcm = b"".join(c.payload for c in chunks if c.kind == "audio")
    video = [c for c in chunks if c.kind == "video"]
    out, pos = [], 0
    while pos < len(pcm):
        out.append(Chunk("audio", pcm[pos : pos + 2 * size], pos / 2 / 16000))
        pos += 2 * size
        while video and video[0].t <= pos / 2 / 16000:
            out.append(video.pop(0))
    return out + video


@pytest.fixture(scope="module")
def streams():
    """Four streams whose ticks, VAD windows, separator frames and TAGF hops fall in different rounds."""
    face = list(iter_chunks(pyfeat_file("single_face.mp4")))
    noface = list(iter_chunks(pyfeat_file("no_face.mp4")))
    return [
        (DEFAULT, face),
        (DEFAULT, [_silence(700)] + face),
        (DEFAULT, _rechunk_audio(noface, 1000)),
        (BASE, _rechunk_audio(face, 2500)),
    ]


def _events(result) -> list[dict]:
    out = [e.to_dict() for e in result.events]
    for e in out:
        e.pop("latency_ms")
    return out


def _solo(config, chunks):
    session = Session(config)
    events, ost = [], []
    for c in chunks:
        r = session.feed(c)
        events += _events(r)
        ost += [r.stems["ost"]] if "ost" in r.stems else []
    r = session.flush()
    ost += [r.stems["ost"]] if "ost" in r.stems else []
    return events + _events(r), np.concatenate(ost) if ost else None


def _assert_same(a, b, path="event"):
    """Equal, floats up to the last rounded digit (batched products sum in another order)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, abs=2e-3), path
    else:
        assert a == b, path


def test_sessions_fed_together_get_what_each_gets_alone(streams):
    sessions = [Session(config) for config, _ in streams]
    events: list[list[dict]] = [[] for _ in streams]
    ost: list[list[np.ndarray]] = [[] for _ in streams]
    for r in range(max(len(chunks) for _, chunks in streams)):
        live = [i for i, (_, chunks) in enumerate(streams) if r < len(chunks)]
        for i, (result,) in zip(live, feed_many([(sessions[i], [streams[i][1][r]]) for i in live]), strict=False):
            assert not isinstance(result, Exception), result
            events[i] += _events(result)
            ost[i] += [result.stems["ost"]] if "ost" in result.stems else []
    for i, (config, chunks) in enumerate(streams):
        last = sessions[i].flush()
        events[i] += _events(last)
        ost[i] += [last.stems["ost"]] if "ost" in last.stems else []
        alone, alone_ost = _solo(config, chunks)
        assert len(events[i]) == len(alone) > 20
        for got, want in zip(events[i], alone, strict=False):
            _assert_same(got, want)
        if config.stages == "default":
            together = np.concatenate(ost[i])
            assert np.linalg.norm(together - alone_ost) <= 1e-5 * np.linalg.norm(alone_ost)
    # the default sessions really had values to compare: V/A and music where there is audio
    assert any(e["valence"] is not None for e in events[0]) and any(
        e["music"]["probability"] is not None for e in events[0]
    )


def test_a_bad_frame_or_a_failing_stage_stays_in_its_own_session(streams):
    (_, face), solos = streams[0], [_solo(DEFAULT, streams[0][1])[0]]
    good, bad_media, broken = Session(DEFAULT), Session(DEFAULT), Session(DEFAULT)

    def boom(*_):
        raise RuntimeError("injected bug")

    broken.stages[0]._track_face = boom  # the face detector of this one session fails
    got, errors = [], {"bad_media": [], "broken": []}
    for c in face:
        junk = Chunk("video", b"\xff\xd8\xff" + bytes(50), c.t) if c.kind == "video" else c
        results = [r[0] for r in feed_many([(good, [c]), (bad_media, [junk]), (broken, [c])])]
        assert not isinstance(results[0], Exception)
        got += _events(results[0])
        if isinstance(results[1], Exception):
            errors["bad_media"].append(results[1])
        if isinstance(results[2], Exception):
            errors["broken"].append(results[2])
            broken = Session(DEFAULT)  # a failed session is restored (here: started again)
            broken.stages[0]._track_face = boom
    got += _events(good.flush())
    assert errors["bad_media"] and all(isinstance(e, MediaError) for e in errors["bad_media"])
    assert errors["broken"] and all(str(e) == "injected bug" for e in errors["broken"])
    for a, b in zip(got, solos[0], strict=False):
        _assert_same(a, b)
    assert len(got) == len(solos[0])
    with pytest.raises(ValueError):
        feed_many([(good, [face[0]]), (good, [face[1]])])  # one request per session per round


def test_the_pool_analyses_waiting_sessions_in_shared_rounds(streams):
    pool = AnalysisPool(1)
    try:
        gate = threading.Event()
        blocker = pool.submit(call(gate.wait, 30))  # holds the only thread while the jobs queue up

        def job(session, chunks):
            events = []
            for c in chunks:
                (out,) = yield session, [c]
                events += ["refused"] if isinstance(out, MediaError) else _events(out)
            return events + _events(session.flush())

        defaults = [(c, ch) for c, ch in streams if c.stages == "default"]
        bad = [Chunk("video", b"garbage", 0.0)] + defaults[0][1]
        jobs = [(Session(config), chunks) for config, chunks in defaults] + [(Session(DEFAULT), bad)]
        futures = [pool.submit(job(s, chunks)) for s, chunks in jobs]
        gate.set()
        assert blocker.result(timeout=30) is True
        results = [f.result(timeout=120) for f in futures]
        # one round per chunk of the longest job, every job's chunk in it while it has one
        assert pool.rounds == max(len(chunks) for _, chunks in jobs)
        assert pool.requests == sum(len(chunks) for _, chunks in jobs)
        for (config, chunks), events in zip(defaults, results, strict=False):
            alone, _ = _solo(config, chunks)
            assert len(events) == len(alone)
            for a, b in zip(events, alone, strict=False):
                _assert_same(a, b)
        assert results[-1][0] == "refused" and len(results[-1]) == len(results[0]) + 1
    finally:
        pool.shutdown()


def test_a_job_that_raises_fails_alone_and_queued_jobs_are_cancelled_at_shutdown():
    pool = AnalysisPool(1)
    gate = threading.Event()
    pool.submit(call(gate.wait, 30))

    def broken():
        yield Session(BASE), [_silence(1600)]
        raise KeyError("bug after a round")

    def fine():
        (out,) = yield Session(BASE), [_silence(1600)]
        return len(out.events)

    a, b = pool.submit(broken()), pool.submit(fine())
    gate.set()
    with pytest.raises(KeyError):
        a.result(timeout=30)
    assert b.result(timeout=30) == 1
    gate.clear()
    holding = threading.Event()

    def hold():
        holding.set()
        return gate.wait(30)

    pool.submit(call(hold))
    assert holding.wait(30)  # the thread is busy: the next job waits in the queue
    queued = pool.submit(fine())
    pool.shutdown()
    gate.set()
    with pytest.raises(CancelledError):
        queued.result(timeout=30)
    assert queued.cancelled()


def test_jobs_awaited_from_a_loop_are_handed_back_once_per_round():
    """`AnalysisPool.run` from an event loop: each job's value, or its exception, reaches the task
    that awaits it; the jobs that finish in one round wake the loop once, not once each; and a job
    whose task was cancelled while it waited in the queue is not run."""
    import asyncio

    pool = AnalysisPool(1)
    gate = threading.Event()
    ran = []

    def fine(k):
        (out,) = yield Session(BASE), [_silence(1600)]
        ran.append(k)
        return k, len(out.events)

    def broken():
        yield Session(BASE), [_silence(1600)]
        raise KeyError("bug")

    async def main():
        loop = asyncio.get_running_loop()
        wakes = []
        real = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda fn, *a: (wakes.append(fn), real(fn, *a))[1]
        blocker = pool.submit(call(gate.wait, 30))  # holds the thread while the jobs queue up
        tasks = [asyncio.ensure_future(pool.run(fine(k))) for k in range(6)]
        failing = asyncio.ensure_future(pool.run(broken()))
        dropped = asyncio.ensure_future(pool.run(fine(99)))
        await asyncio.sleep(0.05)
        dropped.cancel()
        await asyncio.sleep(0.05)
        gate.set()
        assert await asyncio.wrap_future(blocker) is True
        assert await asyncio.gather(*tasks) == [(k, 1) for k in range(6)]
        with pytest.raises(KeyError):
            await failing
        with pytest.raises(asyncio.CancelledError):
            await dropped
        return [w.__name__ for w in wakes]

    try:
        wakes = asyncio.run(main())
    finally:
        pool.shutdown()
    assert 99 not in ran and sorted(ran) == list(range(6))
    # the seven jobs ran in one round and came back in one wake-up (wrap_future's own for the blocker)
    assert wakes.count("_settle") == 1


def test_batched_components_equal_one_stream_at_a_time():
    from vibescope.stream.audio import SpeechDetector
    from vibescope.stream.separator.streamer import SeparatorStreamer
    from vibescope.stream.tagf.features import AUDIO_DIM, VISUAL_DIM, AudioFrontEnd
    from vibescope.stream.tagf.model import load_shared
    from vibescope.stream.tagf.streamer import TagfStreamer

    rng = np.random.default_rng(0)
    signals = [
        (rng.standard_normal(16000) * 0.1 * np.sin(np.linspace(0, f, 16000)) ** 2).astype(np.float32)
        for f in (3, 7, 11)
    ]
    sizes = [(1600,), (700, 2100), (1000,)]  # streams whose windows/frames fall at different calls

    def pieces(x, cycle):
        out, pos, i = [], 0, 0
        while pos < len(x):
            out.append(x[pos : pos + cycle[i % len(cycle)]])
            pos += cycle[i % len(cycle)]
            i += 1
        return out

    chunks = [pieces(x, s) for x, s in zip(signals, sizes, strict=False)]
    rounds = max(len(c) for c in chunks)

    def lockstep(make, feed_many, feed):
        together, alone = [make() for _ in chunks], [make() for _ in chunks]
        got, want = [[] for _ in chunks], [[] for _ in chunks]
        for r in range(rounds):
            live = [i for i, c in enumerate(chunks) if r < len(c)]
            for i, y in zip(live, feed_many([together[i] for i in live], [chunks[i][r] for i in live]), strict=False):
                got[i].append(np.asarray(y, np.float64).reshape(-1))
            for i in live:
                want[i].append(np.asarray(feed(alone[i], chunks[i][r]), np.float64).reshape(-1))
        for g, w in zip(got, want, strict=False):
            g, w = np.concatenate(g), np.concatenate(w)
            assert g.shape == w.shape and len(w) > 0
            assert np.linalg.norm(g - w) <= 1e-5 * np.linalg.norm(w)

    lockstep(SpeechDetector, SpeechDetector.feed_many, SpeechDetector.feed)
    lockstep(SeparatorStreamer, SeparatorStreamer.feed_many, SeparatorStreamer.feed)
    # the audio front-end takes whole ticks
    ticks = [[x[i : i + 1600] for i in range(0, 16000, 1600)] for x in signals]
    fields = {"speech": {"probability": 0.5}, "loudness": {"dbfs": -20.0}}
    fes, solo = [AudioFrontEnd() for _ in ticks], [AudioFrontEnd() for _ in ticks]
    for r in range(10):
        batch = AudioFrontEnd.tick_vectors(fes, [t[r] for t in ticks], [fields] * len(ticks))
        for fe, t, b in zip(solo, ticks, batch, strict=False):
            assert np.allclose(b, fe.tick_vector(t[r], fields), atol=1e-5)
    # TAGF: streams fed different numbers of frames per call reach their hops at different calls
    model = load_shared()
    frames = [
        (rng.normal(size=(60, VISUAL_DIM)).astype(np.float32), rng.normal(size=(60, AUDIO_DIM)).astype(np.float32))
        for _ in range(3)
    ]
    steps = [1, 2, 3]
    together, alone = [TagfStreamer(model) for _ in frames], [TagfStreamer(model) for _ in frames]
    got, want = [[] for _ in frames], [[] for _ in frames]
    for r in range(60):
        live = [i for i in range(3) if r * steps[i] < 60]
        sl = [slice(r * steps[i], (r + 1) * steps[i]) for i in live]
        ys = TagfStreamer.feed_many(
            [together[i] for i in live],
            [frames[i][0][s] for i, s in zip(live, sl, strict=False)],
            [frames[i][1][s] for i, s in zip(live, sl, strict=False)],
        )
        for i, s, y in zip(live, sl, ys, strict=False):
            got[i].append(y)
            want[i].append(alone[i].feed(frames[i][0][s], frames[i][1][s]))
    for i in range(3):
        g, w = np.concatenate(got[i] + [together[i].flush()]), np.concatenate(want[i] + [alone[i].flush()])
        assert g.shape == w.shape == (60, 2)
        assert np.linalg.norm(g - w) <= 1e-5 * np.linalg.norm(w)


def test_several_chunks_per_request_give_each_chunk_its_own_events_and_blame_the_right_one(streams):
    (config, chunks), (_, other_chunks) = streams[1], streams[2]
    alone = Session(config)
    per_chunk = [_events(alone.feed(c)) for c in chunks]
    together, other = Session(config), Session(config)
    got = []
    for start in range(0, len(chunks), 7):  # what a connection with 7 frames waiting sends in one round
        mine, theirs = feed_many([(together, chunks[start : start + 7]), (other, other_chunks[start : start + 5])])
        assert len(mine) == len(chunks[start : start + 7]) and len(theirs) == len(other_chunks[start : start + 5])
        got += [_events(r) for r in mine]
    assert [len(e) for e in got] == [len(e) for e in per_chunk]
    for a, b in zip(got, per_chunk, strict=False):
        for x, y in zip(a, b, strict=False):
            _assert_same(x, y)

    def boom(*_):
        raise RuntimeError("injected bug")

    sequential = Session(config)
    sequential.stages[0]._track_face = boom
    culprit = None
    for k, c in enumerate(chunks):
        try:
            sequential.feed(c)
        except RuntimeError:
            culprit = k
            break
    assert culprit is not None and culprit > 0
    broken = Session(config)
    broken.stages[0]._track_face = boom
    (results,) = feed_many([(broken, chunks)])
    assert not any(isinstance(r, Exception) for r in results[:culprit])
    assert all(str(r) == "injected bug" for r in results[culprit:])

"""The resume promise, for real: `vibescope push` through server process A on Redis, A is killed
with SIGKILL mid-stream, process B starts on the same port and Redis; the push finishes by itself
and its events equal an uninterrupted run's."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from assets import make_test_video
from conftest import ROOT, ServerProcess, free_port

pytestmark = pytest.mark.slow


def push(url: str, source, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vibescope", "push", str(source), "--url", url, "--jsonl", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def events_of(stdout: str) -> list[dict]:
    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    for e in events:
        e.pop("latency_ms")
    return events


def test_kill_9_mid_stream_then_a_new_process_continues_without_loss(tmp_path, redis_url, redis_prefix):
    video = make_test_video(tmp_path / "six.webm", seconds=6.0)
    port = free_port()
    redis_args = ("--redis", redis_url, "--redis-prefix", redis_prefix)

    reference_server = ServerProcess(free_port()).start()
    try:
        ref = push(reference_server.url, video, "--speed", "max")
        out, err = ref.communicate(timeout=120)
        assert ref.returncode == 0, err
        reference = events_of(out)
    finally:
        reference_server.stop()
    assert len(reference) == 60

    a = ServerProcess(port, *redis_args).start()
    b = ServerProcess(port, *redis_args)
    client = push(a.url, video, "--speed", "realtime")
    try:
        deadline = time.time() + 60
        while a.metrics()['vibescope_frames_total{kind="audio"}'] < 15:  # 1.5 s of the 6 s are in A
            assert time.time() < deadline and client.poll() is None
            time.sleep(0.1)
        frames_in_a = a.metrics()['vibescope_frames_total{kind="audio"}']
        a.kill()
        b.start()
        out, err = client.communicate(timeout=120)
        assert client.returncode == 0, err
        resumed = b.metrics()
    finally:  # nothing outlives the test, whatever failed
        if client.poll() is None:
            client.kill()
        a.kill()
        b.stop()
    assert 15 <= frames_in_a < 60  # A had a part of the stream, not all of it
    assert resumed['vibescope_sessions_total{outcome="resumed"}'] == 1
    assert "reconnects" in err and " 0 reconnects" not in err
    assert events_of(out) == reference

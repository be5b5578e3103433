"""The `vibescope` command line as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from assets import pyfeat_file
from conftest import ROOT, free_port


def vibescope(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vibescope", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["push"], ["analyze"], ["selfcheck"], ["data"], ["train"], ["eval"]]
)
def test_every_command_has_help(command):
    out = vibescope(*command, "--help")
    assert out.returncode == 0 and "usage: vibescope" in out.stdout


@pytest.mark.parametrize("command", ["push", "analyze"])
def test_missing_and_non_media_files_exit_3_with_a_clear_message(command, tmp_path):
    out = vibescope(command, str(tmp_path / "nope.mp4"))
    assert out.returncode == 3 and "no such file" in out.stderr and "Traceback" not in out.stderr
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    out = vibescope(command, str(junk))
    assert out.returncode == 3 and "Traceback" not in out.stderr


def test_push_to_an_unreachable_server_gives_up_with_exit_4():
    out = vibescope(
        "push",
        str(pyfeat_file("single_face.mp4")),
        "--url",
        f"ws://127.0.0.1:{free_port()}/v1/stream",
        "--give-up-after",
        "1.5",
    )
    assert out.returncode == 4 and "gave up" in out.stderr


def test_unknown_option_is_a_usage_error():
    out = vibescope("serve", "--bogus")
    assert out.returncode == 2 and "unrecognized arguments" in out.stderr


def test_push_and_analyze_print_the_same_events(server):
    clip = str(pyfeat_file("single_face.mp4"))
    pushed = vibescope("push", clip, "--url", server.url, "--jsonl", "--speed", "max")
    offline = vibescope("analyze", clip, "--jsonl")
    assert pushed.returncode == 0 and offline.returncode == 0, pushed.stderr + offline.stderr

    def events(text):
        evs = [json.loads(line) for line in text.splitlines()]
        for e in evs:
            e.pop("latency_ms")
        return evs

    assert events(pushed.stdout) == events(offline.stdout)
    assert len(events(offline.stdout)) == 25


def test_analyze_human_output_has_a_line_per_event():
    out = vibescope("analyze", str(pyfeat_file("single_face.mp4")))
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 25
    assert lines[0].startswith("t=   0.10s") and "face yes" in lines[5]


def test_selfcheck_reports_every_streamer_within_the_delta_bound():
    out = vibescope("selfcheck", "--json", timeout=600)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 0, out.stderr
    assert {r["name"] for r in rows} == {"separator", "tagf"}
    for r in rows:
        assert set(r) == {"name", "lag_ms", "stride_ms", "rtf", "delta"}
        assert r["delta"] <= 1e-5 and r["rtf"] > 0
    assert next(r for r in rows if r["name"] == "separator")["lag_ms"] <= 64
    assert next(r for r in rows if r["name"] == "tagf")["lag_ms"] <= 500


def test_push_save_ost_gets_the_stem_analyze_writes(server, tmp_path):
    """`push --save-ost` (the server streams the OST back because hello wants "ost_audio") writes
    the same OST samples as `analyze --stems`, whose two stems add up to the audio the engine was fed."""
    from vibescope.stream.separator.wavio import read_wav
    from vibescope.stream.source import iter_chunks

    clip = str(pyfeat_file("single_face.mp4"))
    stems = tmp_path / "stems"
    offline = vibescope("analyze", clip, "--jsonl", "--stems", str(stems))
    pushed = vibescope(
        "push", clip, "--url", server.url, "--jsonl", "--speed", "max", "--save-ost", str(tmp_path / "ost.wav")
    )
    assert offline.returncode == 0 and pushed.returncode == 0, offline.stderr + pushed.stderr
    (ost, sr), (music, _), (sent, _) = (
        read_wav(stems / "ost.wav"),
        read_wav(stems / "music.wav"),
        read_wav(tmp_path / "ost.wav"),
    )
    audio = np.concatenate([np.frombuffer(c.payload, "<i2") for c in iter_chunks(clip) if c.kind == "audio"]) / 32768
    assert sr == 16000 and len(ost) == len(music) == len(sent) and abs(len(ost) - len(audio)) < 1600
    np.testing.assert_array_equal(sent, ost)
    n = min(len(ost), len(audio))
    assert np.abs(ost[:n] + music[:n] - audio[:n]).max() < 3 / 32768  # PCM16 rounding of each stem
    assert np.abs(ost).max() > 10 / 32768  # a stem of something, not of silence

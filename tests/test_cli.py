"""The `vibescope` command line as a user runs it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from assets import pyfeat_file
from conftest import ROOT, free_port


def vibescope(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("command", [[], ["serve"], ["push"], ["analyze"], ["selfcheck"], ["data"], ["train"], ["eval"]])
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
    out = vibescope("push", str(pyfeat_file("single_face.mp4")), "--url", f"ws://127.0.0.1:{free_port()}/v1/stream",
                    "--give-up-after", "1.5")
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

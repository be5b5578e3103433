"""A short, seeded run of benchmarks/fuzz.py: mutated frames and control messages against a real
server, with a clean session beside them (the full run's numbers are in docs/operations.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_a_fuzzed_server_does_not_crash_and_the_clean_session_beside_it_is_unchanged():
    out = subprocess.run(
        [sys.executable, "benchmarks/fuzz.py", "--messages", "500", "--clients", "3", "--seed", "11"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["messages"] >= 300 and result["messages_while_clean_session_ran"] > 0
    assert result["crashes"] == 0 and result["server_alive"] and result["healthz_ok"]
    assert result["internal_errors"] == 0
    assert result["clean_session_events"] == 40 and result["clean_session_identical"]
    assert sum(result["errors_by_code"].values()) > 100  # the server saw the mutations and refused them
    assert out.returncode == 0, out.stderr[-2000:]

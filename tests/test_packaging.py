"""The distribution as users get it: one wheel whose only top-level package is `vibescope`, and a
non-editable install that serves the demo page and analyses a file."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the files git tracks (or would track), as a fresh clone has them: no
    build leftovers of the checkout can slip in."""
    tree, out = tmp_path_factory.mktemp("tree"), tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, tree / rel)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(tree)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("vibescope-*.whl")
    return found


def test_the_wheel_installs_one_top_level_package_and_everything_it_needs_to_run(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"vibescope"}
    needed = [
        "vibescope/__main__.py",
        "vibescope/server/app.py",
        "vibescope/stream/session.py",
        "vibescope/server/static/index.html",
        "vibescope/server/static/demo.js",
        "vibescope/models/separator.pt",
        "vibescope/models/tagf.pt",
        "vibescope/models/separator.md",
        "vibescope/models/tagf.md",
    ]
    # the extension modules the demo page imports
    demo = (ROOT / "server" / "static" / "demo.js").read_text()
    needed += [
        f"vibescope/extension/lib/{m}" for m in ("protocol.js", "capture.js", "overlay.js") if f"/lib/{m}" in demo
    ]
    needed += [f"vibescope/models/{p.name}" for p in (ROOT / "models").glob("*.md")]  # every card
    assert not [n for n in needed if n not in names]
    assert not [n for n in names if "/tests/" in n or n.startswith("tests/") or "/tools/" in n]


def test_a_non_editable_install_serves_the_demo_page_and_analyses_a_file(wheel, tmp_path, test_video):
    """A fresh venv holding only the wheel (its dependencies come from this environment's
    site-packages, added as a plain path, so none of the checkout's editable hooks apply), run
    from a directory outside the checkout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, str(wheel)], check=True
    )
    where = subprocess.run(
        [py, "-c", "import vibescope.server.app as a; print(a.__file__)"], cwd=tmp_path, capture_output=True, text=True
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(site)  # the installed copy, not the checkout

    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen(
        [py, "-m", "vibescope", "serve", "--port", str(port)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.time() + 90
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
                break
            except OSError:
                assert time.time() < deadline, "the installed server did not answer"
                time.sleep(0.5)
        assert "vibescope" in page and "demo.js" in page
        lib = urllib.request.urlopen(f"http://127.0.0.1:{port}/lib/protocol.js", timeout=5).read().decode()
        assert "export class Transport" in lib
        push = subprocess.run(
            [py, "-m", "vibescope", "push", str(test_video), "--url", f"ws://127.0.0.1:{port}/v1/stream", "--jsonl"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert push.returncode == 0, push.stderr
        import json

        events = [json.loads(line) for line in push.stdout.splitlines() if line.strip()]
        assert len(events) == 30  # 3 s of media, one event per 100 ms
        assert events[-1]["models"]["music"] == "vibescope-sep-v15"  # the shipped weights, from the wheel
        assert all(e["loudness"]["dbfs"] is not None for e in events)
    finally:
        server.terminate()
        server.wait(20)
        log.close()

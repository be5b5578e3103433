"""End to end: the unpacked extension in Debian's Chromium, streaming a real page to a real server.

A local page plays a WebM (VP8 + Opus: a face and a chord progression); the extension's own
start path (the function the toolbar action calls) captures the tab through chrome.tabCapture and
the offscreen document, streams PCM16 and JPEG frames to `vibescope serve` (Redis-backed), and the
overlay in the page shows the events that come back. The server is then killed with SIGKILL and
restarted on the same port: the extension must reconnect and resume the same session.

Chromium's `--allowlisted-extension-id` switch stands in for the user's click on the action (a
test cannot make a user gesture); everything after getMediaStreamId is the real capture path.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socketserver
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
# the unpacked extension under test; point it at an unzipped dist/vibescope-extension.zip to test the package
EXTENSION = Path(os.environ.get("VIBESCOPE_EXTENSION_DIR", ROOT / "extension")).resolve()
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("VIBESCOPE_ARTIFACTS", ROOT / "artifacts"))

pytestmark = pytest.mark.browser


def extension_id(manifest: Path = EXTENSION / "manifest.json") -> str:
    """Chromium's id for an extension with a `key`: sha256 of the public key, hex mapped to a–p."""
    import base64
    import hashlib

    der = base64.b64decode(json.loads(manifest.read_text())["key"])
    return "".join(chr(ord("a") + int(c, 16)) for c in hashlib.sha256(der).hexdigest()[:32])


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium. Missing, the browser tests fail (a run that silently skipped them would
    look green); VIBESCOPE_SKIP_BROWSER=1 skips them instead, and -rs prints why."""
    if os.environ.get("VIBESCOPE_SKIP_BROWSER", "") == "1":
        pytest.skip("VIBESCOPE_SKIP_BROWSER=1: the Chromium tests were turned off for this run")
    if Path(CHROMIUM).exists():
        return CHROMIUM
    pytest.fail(
        f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install -y chromium); "
        "set VIBESCOPE_SKIP_BROWSER=1 to skip the browser tests on purpose"
    )


def _face_image(width: int, height: int) -> np.ndarray:
    """A real photograph of a face (matplotlib's grace_hopper.jpg) when available, else a drawn one."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", (width, height), (40, 44, 60))
    try:
        import matplotlib

        face = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
        face = face.resize((int(face.width * height / face.height), height))
        canvas.paste(face, ((width - face.width) // 2, 0))
    except (ImportError, OSError):
        d = ImageDraw.Draw(canvas)
        cx, cy, r = width // 2, height // 2, height // 3
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(224, 182, 150))
        for ex in (cx - r // 2.5, cx + r // 2.5):
            d.ellipse((ex - 12, cy - r // 3 - 8, ex + 12, cy - r // 3 + 8), fill=(40, 30, 30))
        d.arc((cx - r // 2, cy, cx + r // 2, cy + r // 1.6), 20, 160, fill=(120, 40, 40), width=6)
    return np.asarray(canvas)


def make_clip(path: Path, seconds: float = 6.0, fps: int = 15, rate: int = 48000) -> Path:
    """640×360 VP8 video of a face drifting slowly, Opus audio of a chord progression."""
    base = _face_image(640, 360)
    with av.open(str(path), "w", format="webm") as out:
        vs = out.add_stream("libvpx", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 640, 360, "yuv420p"
        vs.bit_rate = 800_000
        aus = out.add_stream("libopus", rate=rate)
        aus.layout = "stereo"
        for i in range(int(seconds * fps)):
            img = np.roll(base, int(8 * np.sin(i / fps * 2)), axis=1)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        n = int(seconds * rate)
        t = np.arange(n) / rate
        chords = [(261.6, 329.6, 392.0), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6), (196.0, 246.9, 293.7)]
        audio = np.zeros(n)
        for k, chord in enumerate(chords * int(np.ceil(seconds / 4))):
            seg = (t >= k * 1.0) & (t < (k + 1) * 1.0)
            env = np.exp(-3 * (t[seg] - k))
            for f in chord:
                audio[seg] += env * (np.sin(2 * np.pi * f * t[seg]) + 0.3 * np.sin(4 * np.pi * f * t[seg]))
        audio = (0.12 * audio / np.abs(audio).max() * 2).astype(np.float32)
        stereo = np.stack([audio, audio])
        for k in range(0, n, 960):
            chunk = np.ascontiguousarray(stereo[:, k : k + 960])
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            af.sample_rate = rate
            af.pts = k
            af.time_base = Fraction(1, rate)
            for p in aus.encode(af):
                out.mux(p)
        for p in aus.encode():
            out.mux(p)
    return path


PAGE = """<!doctype html><meta charset="utf-8"><title>vibescope e2e page</title>
<link rel="stylesheet" href="page.css">
<div class="wrap"><video id="clip" src="clip.webm" autoplay loop playsinline controls
 width="640" height="360"></video></div>
"""
PAGE_CSS = """body{margin:0;background:#111;color:#ddd;font:14px sans-serif} .wrap{padding:24px}
/* hostile page CSS: the overlay's shadow root must not be affected */
div{font-size:40px !important;color:red !important} span,button{display:none !important}
"""
# As strict as big video sites: no inline style or script, connections to the page's origin only.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; media-src 'self' blob:; "
    "worker-src 'self'; require-trusted-types-for 'script'; trusted-types default"
)


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    make_clip(root / "clip.webm")
    (root / "index.html").write_text(PAGE)
    (root / "page.css").write_text(PAGE_CSS)
    return root


@pytest.fixture(scope="module")
def site(site_dir):
    root = site_dir

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def end_headers(self):
            self.send_header("Content-Security-Policy", PAGE_CSP)
            super().end_headers()

        def log_message(self, *a):
            pass

    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Quiet)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
    httpd.shutdown()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll until `predicate()` is truthy; the timeout only bounds a hang, it asserts nothing."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


def counter(metrics: dict[str, float], name: str, **labels: str) -> float:
    key = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    return metrics.get(key, 0.0)


def launch(pw, chromium: str, profile: Path, allowlist: bool = True):
    """Chromium with the unpacked extension, headless new mode (shared/BROWSER.md recipe)."""
    args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--disable-extensions-except={EXTENSION}",
        f"--load-extension={EXTENSION}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    if allowlist:
        args.append(f"--allowlisted-extension-id={extension_id()}")
    return pw.chromium.launch_persistent_context(
        str(profile), executable_path=chromium, headless=False, viewport={"width": 1000, "height": 520}, args=args
    )


class ContentWorld:
    """JavaScript evaluated in the extension's content-script world of a page, over CDP.

    The overlay's shadow root is closed: the page's scripts (and Playwright's locators) cannot
    reach into it. The content script keeps it in its own isolated world
    (``globalThis.__vibescopeOverlay``), which Chromium names after the extension and gives the
    extension's origin; the tests evaluate there. After a navigation the new document's world is a
    new execution context: the newest one of the top frame is used."""

    def __init__(self, ctx, page, ext_id: str) -> None:
        self.page = page
        self.origin = f"chrome-extension://{ext_id}"
        self.cdp = ctx.new_cdp_session(page)
        self.contexts: dict[int, str] = {}  # execution context id -> frame id
        self.cdp.on("Runtime.executionContextCreated", self._created)
        self.cdp.on("Runtime.executionContextDestroyed", lambda e: self.contexts.pop(e["executionContextId"], None))
        self.cdp.on("Runtime.executionContextsCleared", lambda e: self.contexts.clear())
        self.cdp.send("Runtime.enable")

    def _created(self, event: dict) -> None:
        c = event["context"]
        aux = c.get("auxData") or {}
        if aux.get("type") == "isolated" and c.get("origin") == self.origin:
            self.contexts[c["id"]] = aux.get("frameId", "")

    def _context(self) -> int | None:
        top = self.cdp.send("Page.getFrameTree")["frameTree"]["frame"]["id"]
        ids = [cid for cid, frame in self.contexts.items() if frame == top]
        return max(ids) if ids else None

    def evaluate(self, expression: str):
        """The value of ``expression`` (awaited) in the content script's world; raises on an exception."""
        for attempt in range(3):
            cid = self._context()
            if cid is None:
                if attempt == 2:
                    raise AssertionError("no content-script world in the page")
                time.sleep(0.3)
                continue
            r = self.cdp.send(
                "Runtime.evaluate",
                {"expression": expression, "contextId": cid, "returnByValue": True, "awaitPromise": True},
            )
            if "exceptionDetails" in r:
                text = r["exceptionDetails"].get("exception", {}).get("description") or r["exceptionDetails"]
                if "Cannot find context" in str(text) or "context was destroyed" in str(text):
                    self.contexts.pop(cid, None)
                    continue
                raise AssertionError(f"content-script world: {text}")
            return r["result"].get("value")
        raise AssertionError("the content-script world went away")


class OverlayView:
    """Reads the overlay through the reference to its closed shadow root that `root_expr` gives in
    the world `evaluate` runs in (the content script's, or the page's for the demo page and the
    overlay module alone)."""

    def __init__(self, page, evaluate, root_expr: str) -> None:
        self.page = page
        self.evaluate = evaluate
        self.root_expr = root_expr

    def js(self, body: str):
        return self.evaluate(
            f"(async () => {{ const root = ({self.root_expr}) ?? null; "
            "const $ = (id) => (root ? root.getElementById(id) : null); "
            f"{body} }})()"
        )

    def mounted(self) -> bool:
        return bool(self.js("return Boolean(root && root.host && root.host.isConnected);"))

    def text(self, id_: str) -> str | None:
        return self.js(f"const e = $({json.dumps(id_)}); return e ? e.innerText : null;")

    def attr(self, id_: str, name: str) -> str | None:
        return self.js(f"const e = $({json.dumps(id_)}); return e ? e.getAttribute({json.dumps(name)}) : null;")

    def events(self) -> int:
        return int(self.attr("vs-time", "data-events") or 0)

    def visible(self, id_: str) -> bool:
        return bool(self.js(f"const e = $({json.dumps(id_)}); return Boolean(e && e.checkVisibility());"))

    def style(self, id_: str, prop: str) -> str | None:
        return self.js(f"const e = $({json.dumps(id_)}); return e ? getComputedStyle(e)[{json.dumps(prop)}] : null;")

    def box(self, id_: str) -> dict | None:
        return self.js(
            f"const e = $({json.dumps(id_)}); if (!e) return null; const r = e.getBoundingClientRect(); "
            "return {x: r.x, y: r.y, width: r.width, height: r.height};"
        )

    def wait(self, id_: str, timeout: float = 10) -> None:
        wait_for(lambda: self.js(f"return Boolean($({json.dumps(id_)}));"), timeout, f"#{id_} in the overlay")

    def wait_gone(self, timeout: float = 5) -> None:
        wait_for(
            lambda: not self.page.evaluate("Boolean(document.getElementById('vibescope-overlay-host'))"),
            timeout,
            "the overlay to go",
        )

    def click(self, id_: str) -> None:
        """A real mouse click on the element's centre (what a user does; no script reaches in)."""
        b = self.box(id_)
        assert b and b["width"] > 0, f"#{id_} has no box: {b}"
        self.page.mouse.click(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)

    def drag_head(self, dx: float, dy: float, grab_x: float = 40) -> None:
        b = self.box("vs-head")
        self.page.mouse.move(b["x"] + grab_x, b["y"] + b["height"] / 2)
        self.page.mouse.down()
        self.page.mouse.move(b["x"] + grab_x + dx, b["y"] + b["height"] / 2 + dy, steps=5)
        self.page.mouse.up()


def content_overlay(ctx, page) -> OverlayView:
    world = ContentWorld(ctx, page, extension_id())
    return OverlayView(page, world.evaluate, "globalThis.__vibescopeOverlay?.root")


def page_overlay(page, root_expr: str) -> OverlayView:
    return OverlayView(page, page.evaluate, root_expr)


def provenance_lines(models: dict) -> list[str]:
    """The overlay's model list for the default pipeline's events (overlay-model.js provenance()):
    a heading, then one line per model in the order valence/arousal (one TAGF model), music,
    speech, face, then the other fields; each answers from the welcome's card data."""
    answer = {True: "yes", False: "no", None: "unknown"}
    assert models["valence"]["id"] == models["arousal"]["id"], models
    lines = ["model — validated on human ratings?"]
    lines.append(f"valence + arousal: {models['valence']['id']} — {answer[models['valence']['validated']]}")
    for field in ("music", "speech", "face", "loudness", "expression"):
        lines.append(f"{field}: {models[field]['id']} — {answer[models[field]['validated']]}")
    return lines


def check_provenance(ov: OverlayView, models: dict, worker=None) -> None:
    """The model list names the models of the last event: always TAGF, the separator, silero-vad and
    the loudness meter; RetinaFace and FER only for a tick whose frame was analysed (5 Hz), which
    the clip's face soon gives. Nothing else, nothing out of order, every answer from the cards."""
    full = provenance_lines(models)
    always = [line for line in full if not line.startswith(("face:", "expression:"))]
    deadline = time.time() + 15
    while True:
        shown = (ov.text("vs-models") or "").splitlines()
        assert [line for line in full if line in shown] == shown and set(always) <= set(shown), shown
        if shown == full:
            return
        if time.time() > deadline:
            status = worker.evaluate("() => vibescope.status()")["offscreen"] if worker else {}
            last = (status.get("transport") or {}).get("lastEvent")
            raise AssertionError(
                f"the face's models were not named within 15 s; shown: {shown}; last event: {last}; "
                f"capture: {status.get('capture')}"
            )
        time.sleep(0.2)


def only_tab(ctx, page, worker) -> int:
    """The id of `page`'s tab. Without the "tabs" permission the extension cannot match tabs by URL,
    so every other page is closed first."""
    for other in ctx.pages:
        if other is not page:
            other.close()
    tab_ids = worker.evaluate("async () => (await chrome.tabs.query({})).map((t) => t.id)")
    assert len(tab_ids) == 1, tab_ids
    return tab_ids[0]


def service_worker(ctx):
    return ctx.service_workers[0] if ctx.service_workers else ctx.wait_for_event("serviceworker", timeout=15000)


def test_extension_streams_a_tab_shows_the_overlay_and_resumes_after_a_server_crash(
    chromium, site, redis_url, redis_prefix, tmp_path
):
    from playwright.sync_api import sync_playwright

    ext_id = extension_id()
    port = free_port()
    token = "e2e-" + os.urandom(8).hex()
    server_args = ("--host", "127.0.0.1", "--redis", redis_url, "--redis-prefix", redis_prefix, "--token", token)
    srv = ServerProcess(port, *server_args).start()
    profile = tmp_path / "profile"
    try:
        with sync_playwright() as pw:
            ctx = launch(pw, chromium, profile)
            try:
                worker = service_worker(ctx)
                assert worker.url == f"chrome-extension://{ext_id}/background.js", (
                    "the manifest key fixes the extension id"
                )

                # --- options page: point the extension at the server, test the connection ---------
                options = ctx.new_page()
                options.goto(f"chrome-extension://{ext_id}/options/options.html")
                options.fill("#server", srv.http)
                options.fill("#token", token)
                options.fill("#fps", "10")
                options.click("#save")
                options.locator("#result.ok").wait_for(timeout=5000)
                options.click("#test")
                result = options.locator("#result")
                wait_for(
                    lambda: "Connected" in result.inner_text() or "Could not" in result.inner_text(),
                    15,
                    "test connection",
                )
                assert f"Connected to ws://127.0.0.1:{port}/v1/stream" in result.inner_text(), result.inner_text()
                options.close()

                # --- the video page -----------------------------------------------------------------
                page = ctx.new_page()
                page.goto(site)
                wait_for(
                    lambda: page.evaluate("document.getElementById('clip').currentTime > 0.3"),
                    15,
                    "the page's video to play",
                )
                tab_id = only_tab(ctx, page, worker)
                ov = content_overlay(ctx, page)

                # --- start, as the toolbar action does ----------------------------------------------
                started = worker.evaluate("(id) => vibescope.toggle(id)", tab_id)
                assert started == {"ok": True, "mode": "tab"}, started

                # frames and audio reach the server (its own counters)
                m = wait_for(
                    lambda: (
                        lambda m: (
                            m
                            if counter(m, "vibescope_frames_total", kind="audio") >= 20
                            and counter(m, "vibescope_frames_total", kind="video") >= 10
                            and counter(m, "vibescope_events_total") >= 10
                            else None
                        )
                    )(srv.metrics()),
                    30,
                    "audio, video and events counted by the server",
                )
                assert counter(m, "vibescope_sessions_active") == 1

                # overlay events come back and the overlay's DOM shows them
                ov.wait("vs-panel", 10)
                wait_for(lambda: int(ov.attr("vs-time", "data-events") or 0) >= 10, 20, "overlay updates")
                assert ov.attr("vs-conn", "data-state") == "live"
                assert re.search(r"media t = \d+\.\d s", ov.text("vs-time"))
                # the connection authenticated with the token (the server has one), yet the content
                # script's world cannot read it: not in chrome.storage.local, and chrome.storage.session
                # (where the service worker keeps its state) is closed to content scripts
                seen = ov.evaluate(
                    """(async () => {
                        const local = JSON.stringify(await chrome.storage.local.get(null));
                        let session;
                        try { session = JSON.stringify(await chrome.storage.session.get(null)); }
                        catch (e) { session = 'denied: ' + e.message; }
                        const dbs = (await indexedDB.databases()).map((d) => d.name);
                        return { local, session, dbs, origin: location.origin };
                    })()"""
                )
                assert token not in seen["local"], seen["local"]
                assert seen["session"].startswith("denied"), seen["session"]
                assert "vibescope-secrets" not in seen["dbs"], seen  # the page origin's IndexedDB, not ours
                assert counter(srv.metrics(), "vibescope_refusals_total", reason="unauthorized") == 0
                status = worker.evaluate("() => vibescope.status()")
                assert status["active"]["mode"] == "tab", status["active"]
                welcome_models = status["active"]["models"]
                # every model behind the values shown is named, with its card's answer on validation
                check_provenance(ov, welcome_models, worker)
                # the default pipeline sends valence/arousal with every event (TAGF on the clip's face
                # and sound): the point is drawn, with its numbers, its capped confidence and words
                assert ov.attr("vs-va-point", "visibility") == "visible"
                assert re.fullmatch(r"V [+−]\d\.\d\d", ov.text("vs-valence"))
                assert re.fullmatch(r"A [+−]\d\.\d\d", ov.text("vs-arousal"))
                confidence = re.fullmatch(r"confidence (\d+)%", ov.text("vs-confidence"))
                assert confidence and 0 < int(confidence[1]) <= 60  # the simulated-teacher cap (models/tagf.md)
                words = ov.text("vs-va-words")
                assert re.fullmatch(
                    r"(leans (pleasant|unpleasant|excited|calm)(, (excited|calm))?|near neutral)"
                    r" · learned from simulated cues, not human ratings",
                    words,
                ), words
                # the clip's sound is a chord progression from its first second on, looped: once a
                # second of music has come back, the overlay says BGM, with the separator's numbers
                wait_for(
                    lambda: ov.text("vs-music-state") == "BGM detected",
                    15,
                    "BGM detected in the clip's chords",
                )
                assert ov.attr("vs-music-state", "data-on") == "true"
                assert re.fullmatch(r"\d+%", ov.text("vs-music-prob"))
                assert re.fullmatch(r"-?\d+ dB", ov.text("vs-music-level"))
                # styled despite the page's CSP (no inline styles), and page CSS does not reach into
                # the shadow root (the page hides all spans and buttons)
                assert ov.style("vs-panel", "position") == "fixed"
                assert ov.visible("vs-collapse")
                assert ov.style("vs-conn", "display") != "none"
                # the shadow root is closed: the page's own scripts cannot reach into the overlay
                assert page.evaluate(
                    "(() => { const h = document.getElementById('vibescope-overlay-host'); "
                    "return Boolean(h) && h.shadowRoot === null; })()"
                ), "a page script reached the overlay's shadow root"
                assert page.evaluate("typeof globalThis.__vibescopeOverlay") == "undefined"

                # the tab stays audible: offscreen audio is routed to the speakers and carries sound,
                # and the page's own video keeps playing
                cap = status["offscreen"]["capture"]
                assert cap["routedToDestination"] is True
                assert cap["audioContextState"] == "running"
                wait_for(
                    lambda: (
                        (worker.evaluate("() => vibescope.status()")["offscreen"]["capture"]["playbackRms"] or 0)
                        > 0.005
                    ),
                    10,
                    "tab audio on the playback path",
                )
                t0 = page.evaluate("document.getElementById('clip').currentTime")
                wait_for(
                    lambda: page.evaluate("document.getElementById('clip').currentTime") != t0,
                    5,
                    "video time advancing",
                )
                assert page.evaluate(
                    "(() => { const v = document.getElementById('clip'); return !v.paused && !v.muted; })()"
                )
                assert cap["audioFrames"] > 0 and cap["inputRms"] > 0.005, cap

                # what the server analysed is the page's content: the music's level, the face in the video
                def last():
                    return worker.evaluate("() => vibescope.status()")["offscreen"]["transport"]["lastEvent"]

                wait_for(
                    lambda: ((last().get("loudness") or {}).get("dbfs") or -200) > -40,
                    10,
                    "the clip's level in the server's events",
                )
                wait_for(
                    lambda: (last().get("face") or {}).get("present") is True,
                    15,
                    "the face in the video found by the server",
                )
                wait_for(lambda: ov.text("vs-face") == "face in view", 5, "the overlay showing the face")

                # video frames are cropped to the page's video (640×360 in a 1000×520 tab), short side 360
                wait_for(
                    lambda: (
                        worker.evaluate("() => vibescope.status()")["offscreen"]["capture"]["videoSize"]
                        == {"width": 640, "height": 360}
                    ),
                    10,
                    "frames cropped to the video element",
                )

                # the overlay follows the video and leaves the page's controls clickable
                assert ov.attr("vs-panel", "data-anchor") == "video"
                hit = page.evaluate("""() => { const r = document.getElementById('clip').getBoundingClientRect();
                    return document.elementFromPoint(r.left + r.width / 2, r.bottom - 12).id; }""")
                assert hit == "clip", f"the video's control bar is covered by {hit!r}"

                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "overlay.png"))

                # dragging moves the panel and the place is remembered
                box = ov.box("vs-head")
                page.mouse.move(box["x"] + 40, box["y"] + box["height"] / 2)
                page.mouse.down()
                page.mouse.move(box["x"] + 240, box["y"] + 120, steps=5)
                page.mouse.up()
                moved = ov.box("vs-head")
                assert moved["x"] > box["x"] + 100  # (vertical room inside the 360 px video is small)

                def saved_position():
                    key = "overlayPos:" + site.split("/")[2]
                    return worker.evaluate("async (k) => (await chrome.storage.local.get(k))[k]", key)

                saved = wait_for(saved_position, 5, "saved position")
                assert saved["fx"] > 0.2
                # there the panel covers the face, and the tab is captured with its overlay: drag it
                # back to the video's left edge, so the server can see the face after the navigation
                box = ov.box("vs-head")
                page.mouse.move(box["x"] + 40, box["y"] + box["height"] / 2)
                page.mouse.down()
                page.mouse.move(box["x"] - 400, box["y"] + box["height"] / 2, steps=5)
                page.mouse.up()
                wait_for(lambda: saved_position()["fx"] < 0.05, 5, "the panel's place back at the left edge")

                # --- crash the server, restart it on the same port: reconnect and resume -------------
                before = worker.evaluate("() => vibescope.status()")["offscreen"]["transport"]
                session_id = before["sessionId"]
                assert session_id and before["ackedSeq"] > 0
                srv.kill()
                wait_for(
                    lambda: ov.attr("vs-conn", "data-state") == "reconnecting",
                    10,
                    "overlay showing reconnecting",
                )
                events_before = int(ov.attr("vs-time", "data-events"))
                srv = ServerProcess(port, *server_args).start()
                after = wait_for(
                    lambda: (lambda s: s if s["state"] == "live" and s["stats"]["resumed"] >= 1 else None)(
                        worker.evaluate("() => vibescope.status()")["offscreen"]["transport"]
                    ),
                    45,
                    "the extension to resume",
                )
                assert after["sessionId"] == session_id, "resumed the same session"
                m2 = wait_for(
                    lambda: (
                        lambda m: (
                            m
                            if counter(m, "vibescope_frames_total", kind="audio") >= 5
                            and counter(m, "vibescope_events_total") >= 3
                            else None
                        )
                    )(srv.metrics()),
                    30,
                    "frames counted by the restarted server",
                )
                assert counter(m2, "vibescope_errors_total", code="bad_seq") == 0
                assert counter(m2, "vibescope_sessions_total", outcome="new") == 0, "no new session was started"
                wait_for(
                    lambda: int(ov.attr("vs-time", "data-events")) > events_before + 5,
                    20,
                    "overlay updates after resume",
                )
                assert ov.attr("vs-conn", "data-state") == "live"

                # --- a navigation in the captured tab: the capture goes on, the overlay comes back -----
                page.reload()
                wait_for(
                    lambda: page.evaluate("document.getElementById('clip').currentTime > 0.2"),
                    15,
                    "the reloaded video to play",
                )
                ov.wait("vs-panel", 10)
                wait_for(
                    lambda: int(ov.attr("vs-time", "data-events") or 0) >= 3,
                    20,
                    "overlay updates after navigation",
                )
                wait_for(
                    lambda: (last().get("face") or {}).get("present") is True,
                    20,
                    "the face found by the server again after navigation",
                )
                assert worker.evaluate("() => vibescope.status()")["offscreen"]["transport"]["sessionId"] == session_id
                check_provenance(ov, welcome_models, worker)  # model provenance restored after navigation

                # --- stop from the action: the overlay goes away --------------------------------------
                stopped = worker.evaluate("(id) => vibescope.toggle(id)", tab_id)
                assert stopped == {"ok": True}
                ov.wait_gone()
            finally:
                ctx.close()
    finally:
        srv.stop()
        shutil.rmtree(profile, ignore_errors=True)


def test_where_tab_capture_is_refused_the_page_video_element_is_streamed_and_the_overlay_says_so(
    chromium, site, server, tmp_path
):
    """Without the allowlist switch (and without a user gesture) Chromium refuses tab capture: the
    content script falls back to the page's <video>.captureStream() and states it in the overlay."""
    from playwright.sync_api import sync_playwright

    before = server.metrics()
    with sync_playwright() as pw:
        ctx = launch(pw, chromium, tmp_path / "profile", allowlist=False)
        try:
            worker = service_worker(ctx)
            worker.evaluate("(s) => chrome.storage.local.set({settings: {server: s, fps: 10}})", server.http)
            page = ctx.new_page()
            page.goto(site)
            wait_for(
                lambda: page.evaluate("document.getElementById('clip').currentTime > 0.3"),
                15,
                "the page's video to play",
            )
            tab_id = only_tab(ctx, page, worker)
            ov = content_overlay(ctx, page)
            started = worker.evaluate("(id) => vibescope.toggle(id)", tab_id)
            assert started["ok"] is True and started["mode"] == "video", started
            assert started["refusal"], "the reason tab capture was refused is kept"
            wait_for(lambda: ov.text("vs-notice"), 10, "the overlay's notice")
            notice = ov.text("vs-notice")
            assert "Tab capture refused" in notice and "<video>" in notice, notice
            assert ov.attr("vs-notice", "title") == started["refusal"]
            assert worker.evaluate("() => vibescope.status()")["active"]["mode"] == "video"
            wait_for(lambda: int(ov.attr("vs-time", "data-events") or 0) >= 5, 30, "overlay updates")
            m = wait_for(
                lambda: (
                    lambda m: (
                        m
                        if counter(m, "vibescope_frames_total", kind="audio")
                        - counter(before, "vibescope_frames_total", kind="audio")
                        >= 10
                        and counter(m, "vibescope_frames_total", kind="video")
                        > counter(before, "vibescope_frames_total", kind="video")
                        else None
                    )
                )(server.metrics()),
                20,
                "frames from the <video> element counted by the server",
            )
            # the page never opened the socket: the server (no --allow-origin) refused no Origin while
            # the frames streamed, so every connection came from the extension's offscreen document
            assert counter(m, "vibescope_refusals_total", reason="origin") == counter(
                before, "vibescope_refusals_total", reason="origin"
            ), "a socket was opened with the page's Origin"
            relay = worker.evaluate("() => vibescope.status()")["offscreen"]
            assert relay["mode"] == "relay" and relay["relay"]["connected"], relay
            assert relay["relay"]["audio"] >= 10 and relay["relay"]["video"] >= 1, relay["relay"]
            assert relay["transport"]["state"] == "live", relay["transport"]
            # a content script (a page may have compromised its renderer) cannot pass for the
            # offscreen document or the service worker: forged messages are ignored
            forged = ov.evaluate(
                f"""(async () => {{
                    const a = await chrome.runtime.sendMessage(
                        {{ type: 'vibescope:offscreen', tabId: {tab_id}, kind: 'ended', payload: {{}} }});
                    const b = await chrome.runtime.sendMessage({{ target: 'offscreen', type: 'stop' }});
                    return [a ?? null, b ?? null];
                }})()"""
            )
            assert forged == [None, None], forged
            time.sleep(0.5)
            still = worker.evaluate("() => vibescope.status()")
            assert still["active"] and still["active"]["mode"] == "video", still["active"]
            assert still["offscreen"]["transport"]["state"] == "live", still["offscreen"]
            assert page.evaluate(
                "(() => { const v = document.getElementById('clip'); return !v.paused && !v.muted; })()"
            )

            # a Shorts/TikTok-style swipe: a new <video> takes the screen, the old one is hidden;
            # the overlay moves onto the new one
            page.evaluate("""() => { const v = document.createElement('video');
                v.id = 'next'; v.src = 'clip.webm'; v.muted = true; v.loop = true; v.autoplay = true;
                v.style.cssText = 'position:fixed;left:330px;top:120px;width:640px;height:360px';
                document.body.append(v); document.getElementById('clip').style.display = 'none'; }""")

            def panel_on_next():
                p = ov.box("vs-panel")
                v = page.evaluate(
                    "(() => { const r = document.getElementById('next').getBoundingClientRect(); "
                    "return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; })()"
                )
                # on the new video horizontally and overlapping it vertically: a panel taller than
                # the room below the video's top is kept inside the viewport, so it may start higher
                return (
                    p["x"] >= v["left"]
                    and p["x"] + p["width"] <= v["right"]
                    and p["y"] < v["bottom"]
                    and p["y"] + p["height"] > v["top"]
                )

            wait_for(panel_on_next, 10, "the overlay to follow the new video element")

            assert worker.evaluate("(id) => vibescope.toggle(id)", tab_id) == {"ok": True}
            ov.wait_gone()
        finally:
            ctx.close()


def test_demo_page_streams_a_chosen_file_like_the_extension(chromium, site_dir, server, tmp_path):
    """The server's demo page (/) with a local file: same modules from /lib/, same frames."""
    from playwright.sync_api import sync_playwright

    before = server.metrics()
    with sync_playwright() as pw:
        ctx = launch(pw, chromium, tmp_path / "profile", allowlist=False)
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.goto(server.http + "/")
            page.set_input_files("#file", str(site_dir / "clip.webm"))
            page.click("#start")
            ov = page_overlay(page, "window.vibescopeDemo?.overlay?.root")
            wait_for(
                lambda: int(ov.attr("vs-time", "data-events") or 0) >= 5,
                30,
                "overlay updates on the demo page",
            )
            assert ov.attr("vs-conn", "data-state") == "live"
            m = server.metrics()
            assert (
                counter(m, "vibescope_frames_total", kind="audio")
                - counter(before, "vibescope_frames_total", kind="audio")
                >= 5
            )
            assert counter(m, "vibescope_frames_total", kind="video") > counter(
                before, "vibescope_frames_total", kind="video"
            )
            enc = page.evaluate("window.vibescopeDemo.capture.stats()")
            assert enc["videoEncoder"] == "worker" and enc["videoSize"]["height"] == 360, enc
            page.click("#stop")
            ov.wait_gone()
        finally:
            ctx.close()


def test_overlay_draws_valence_arousal_with_confidence_trail_and_bgm_state(chromium, site_dir, server, tmp_path):
    """The overlay module in Chromium fed with made-up events whose values are known in advance (a
    path round the circumplex, music that starts at 2 s, a confidence that changes): the point sits
    where the values say, its opacity follows the confidence, the trail fades, "BGM detected"
    appears only after a second of music, and every value names its model and validation."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        ctx = launch(pw, chromium, tmp_path / "profile", allowlist=False)
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.goto(server.http + "/static/demo.css")  # any same-origin page with /lib/ beside it
            page.set_content(
                '<div style="padding:20px"><video width="640" height="360" style="background:#223"></video></div>'
            )
            page.evaluate("""async () => {
                const { createOverlay } = await import('/lib/overlay.js');
                const ov = createOverlay(document);
                window.ov = ov;
                ov.setConnection('live');
                ov.setModels({ tagf: { id: 'tagf-demo', card: 'models/tagf.md', validated: false },
                               speech: { id: 'silero-vad-6', card: '', validated: true } });
                for (let i = 1; i <= 40; i += 1) {
                  const t = i / 10;
                  ov.update({ type: 'overlay', t, valence: 0.6 * Math.cos(t), arousal: 0.5 * Math.sin(t),
                    confidence: 0.9,
                    music: { probability: t >= 2 ? 0.9 : 0.1, level_db: -18 }, speech: { probability: 0.7 },
                    face: { present: true }, latency_ms: 11,
                    models: { valence: 'tagf-demo', arousal: 'tagf-demo', speech: 'silero-vad-6' } }, { e2eMs: 240 });
                  if (t === 2.5) window.bgmAt25 = ov.root.getElementById('vs-music-state').textContent;
                }
              }""")
            # createOverlay returns the closed shadow root to its caller only
            assert page.evaluate("document.getElementById('vibescope-overlay-host').shadowRoot === null")
            ov = page_overlay(page, "window.ov?.root")
            point = ov.js(
                "const p = $('vs-va-point'); "
                "return [p.getAttribute('visibility'), +p.getAttribute('cx'), +p.getAttribute('cy'), "
                "+p.dataset.opacity];"
            )
            vis, cx, cy, opacity = point
            v, a = 0.6 * np.cos(4.0), 0.5 * np.sin(4.0)  # t = 4.0: valence < 0, arousal < 0
            assert vis == "visible"
            assert abs(cx - (6 + (v + 1) / 2 * 100)) < 0.01 and abs(cy - (6 + (1 - a) / 2 * 100)) < 0.01
            assert opacity > 0.9
            trail = ov.js(
                "return Array.from(root.querySelectorAll('#vs-trail circle'))"
                ".map((c) => +c.getAttribute('fill-opacity'));"
            )
            assert len(trail) > 20 and trail[0] < trail[-1]
            assert page.evaluate("window.bgmAt25") == "no BGM detected"  # music for 0.5 s only
            assert ov.text("vs-music-state") == "BGM detected"
            models_text = ov.text("vs-models")
            assert "validated on human ratings?" in models_text
            assert "valence + arousal: tagf-demo — no" in models_text and "speech: silero-vad-6 — yes" in models_text
            assert ov.text("vs-va-words") == "leans unpleasant, calm"
            # collapsing hides everything but the header; expanding brings it back
            ov.click("vs-collapse")
            assert not ov.visible("vs-circumplex")
            ov.click("vs-collapse")
            assert ov.visible("vs-circumplex")
            # low confidence dims the point
            page.evaluate(
                "window.ov.update({type: 'overlay', t: 4.1, valence: 0.1, arousal: 0.1, confidence: 0.1, models: {}})"
            )
            assert float(ov.attr("vs-va-point", "data-opacity")) < 0.4
            page.evaluate(
                "window.ov.update({type: 'overlay', t: 4.2, valence: 0.55, arousal: 0.4, confidence: 0.8, "
                "music: {probability: 0.9, level_db: -18}, speech: {probability: 0.7}, face: {present: true}, "
                "latency_ms: 11, models: {valence: 'tagf-demo', arousal: 'tagf-demo', speech: 'silero-vad-6'}}, "
                "{e2eMs: 240})"
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(
                path=str(ARTIFACTS / "overlay-synthetic.png"), clip={"x": 0, "y": 0, "width": 700, "height": 420}
            )
        finally:
            ctx.close()

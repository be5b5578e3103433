"""Shared fixtures: a real redis-server, real `vibescope serve` processes, real media files."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from assets import make_test_video, write_small_mp4, write_va_annotation  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_ok(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real redis-server: the machine's on 127.0.0.1:6379, or one started on a free port."""
    if _redis_ok("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    port = free_port()
    proc, workdir = start_redis(port)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(5)
    shutil.rmtree(workdir, ignore_errors=True)


def start_redis(port: int) -> tuple[subprocess.Popen, str]:
    """A throwaway redis-server on ``port`` (no persistence); returns the process and its dir."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("no redis-server installed (make test installs it)")
    workdir = tempfile.mkdtemp(prefix="vibescope-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while not _redis_ok("127.0.0.1", port):
        if time.time() > deadline:
            proc.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.05)
    return proc, workdir


@pytest.fixture
def redis_prefix() -> str:
    return f"vibescope-test:{uuid.uuid4().hex[:8]}:"


class ServerProcess:
    """`vibescope serve` in a child process (the real thing, as users start it)."""

    def __init__(self, port: int, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.args = [sys.executable, "-m", "vibescope", "serve", "--port", str(port), *extra]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="vibescope-serve-", suffix=".log", delete=False)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.read_log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if time.time() > deadline:
                    self.kill()
                    raise RuntimeError(f"server did not listen within {timeout} s: {self.read_log()}") from None
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs (the crash the resume promise is about)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def read_log(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def metrics(self) -> dict[str, float]:
        import urllib.request

        from vibescope.server.metrics import parse

        return parse(urllib.request.urlopen(self.http + "/metrics", timeout=5).read().decode())


@pytest.fixture(scope="module")
def server() -> ServerProcess:
    """One memory-backed server shared by a test module."""
    srv = ServerProcess(free_port()).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def one_torch_thread():
    """The product runs the models single-threaded (many sessions per core); so do model tests."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def untrained_separator(seed: int, lookahead: int = 0):
    """A separator with fixed random weights and plausible feature statistics: exercises every
    code path of the streamer and the stage as trained weights would, without a checkpoint.
    With ``lookahead``, its look-ahead term is random too (not the zero it starts training at)."""
    import torch

    from vibescope.stream.separator.model import CausalMaskSeparator, SeparatorConfig

    torch.set_num_threads(1)  # one session = one thread, as in the server
    torch.manual_seed(seed)
    m = CausalMaskSeparator(SeparatorConfig(lookahead=lookahead)).eval()
    with torch.no_grad():
        m.feat_mean.fill_(-12.0)
        m.feat_std.fill_(4.0)
        if lookahead:
            torch.nn.init.normal_(m.lookahead_head.weight, std=0.05)
            torch.nn.init.normal_(m.lookahead_head.bias, std=0.5)
    return m


@pytest.fixture(scope="session")
def test_video(tmp_path_factory) -> Path:
    """A 3 s WebM (VP8 + Opus 48 kHz): moving gradient and a 440 Hz tone with amplitude steps."""
    return make_test_video(tmp_path_factory.mktemp("media") / "tone.webm", seconds=3.0)


class StatelessStage:
    """A pipeline stage with no lag and no state, for tests that add one after ``SignalStage``;
    subclasses define ``name`` and ``push``."""

    lag_ticks = 0

    def flush(self) -> list:
        return []

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class FakeClock:
    """A clock that moves only when told (``advance``): what an in-process server measures its
    answers' lateness with in tests whose timing must not depend on the host."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.asynccontextmanager
async def in_process_server(monkeypatch, stage: type[StatelessStage], clock=None):
    """An aiohttp test client of an in-process server whose pipeline is ``SignalStage`` + a new
    ``stage`` (registered under the stage's name), its connections timed by ``clock`` when given;
    yields (client, server)."""
    from aiohttp.test_utils import TestClient, TestServer

    from vibescope.server.app import StreamServer
    from vibescope.server.config import ServerConfig
    from vibescope.stream import pipelines
    from vibescope.stream.signal import SignalStage

    monkeypatch.setitem(pipelines.PIPELINES, stage.name, lambda: [SignalStage(), stage()])
    server = StreamServer(ServerConfig(pipeline=stage.name))
    if clock is not None:
        server.context.clock = clock
    async with TestClient(TestServer(server.app())) as client:
        yield client, server


@pytest.fixture
def affwild2_root(tmp_path: Path) -> Path:
    """A small tree in Aff-Wild2's exact layout: annotation files and the videos they name."""
    root = tmp_path / "Aff-Wild2"
    ann = root / "Third ABAW Annotations" / "VA_Estimation_Challenge"
    # 60 frames at 30 fps: frames 0-14 unlabelled (-5), then a ramp
    rows = [(-5.0, -5.0)] * 15 + [(round(-0.5 + i / 45, 4), 0.25) for i in range(45)]
    write_va_annotation(ann / "Train_Set" / "12-24-1920x1080.txt", rows)
    write_va_annotation(ann / "Validation_Set" / "video9_left.txt", [(0.1, -0.2)] * 60)
    write_va_annotation(ann / "Validation_Set" / "missing_video.txt", [(0.1, -0.2)] * 10)
    write_small_mp4(root / "batch1" / "12-24-1920x1080.mp4")
    write_small_mp4(root / "batch2" / "video9.mp4")
    return root

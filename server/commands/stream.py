"""`vibescope serve`, `vibescope push`, `vibescope analyze`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from vibescope.server.protocol import Limits

EXIT_USAGE = 2
EXIT_MEDIA = 3
EXIT_STREAM = 4


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get(f"VIBESCOPE_{name}", default)


def _fmt(v: float | None, spec: str = "+.2f") -> str:
    return "—" if v is None else format(v, spec)


def format_event(ev: dict[str, Any]) -> str:
    """One human-readable line per overlay event."""
    music = ev.get("music") or {}
    speech = (ev.get("speech") or {}).get("probability")
    face = (ev.get("face") or {}).get("present")
    loud = (ev.get("loudness") or {}).get("dbfs")
    return (
        f"t={ev['t']:7.2f}s  valence {_fmt(ev.get('valence'))}  arousal {_fmt(ev.get('arousal'))}  "
        f"conf {_fmt(ev.get('confidence'), '.2f')}  music p={_fmt(music.get('probability'), '.2f')} "
        f"{_fmt(music.get('level_db'), '.1f')} dB  speech {_fmt(speech, '.2f')}  "
        f"face {'—' if face is None else ('yes' if face else 'no')}  level {_fmt(loud, '.1f')} dBFS"
    )


def _print_event(ev: dict[str, Any], jsonl: bool) -> None:
    print(json.dumps(ev) if jsonl else format_event(ev), flush=True)


# --- serve ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from vibescope.server.app import run
    from vibescope.server.config import ServerConfig

    limits = Limits(
        session_ttl_s=args.ttl,
        max_sessions=args.max_sessions,
        max_connections_per_peer=args.max_per_peer,
        max_unacked_frames=args.max_unacked,
    )
    config = ServerConfig(
        host=args.host,
        port=args.port,
        token=args.token or None,
        redis_url=args.redis or None,
        redis_prefix=args.redis_prefix,
        limits=limits,
        workers=args.workers,
        pipeline=args.pipeline,
        allow_origins=tuple(args.allow_origin),
        trust_forwarded=args.trust_forwarded,
    )
    try:
        config.check()
    except ValueError as exc:
        print(f"vibescope serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    run(config)
    return 0


# --- push ----------------------------------------------------------------------------------


def cmd_push(args: argparse.Namespace) -> int:
    from vibescope.server.client import PushClient, PushError, write_wav
    from vibescope.stream.media import MediaError
    from vibescope.stream.source import iter_chunks, probe

    try:
        kinds = probe(args.source)
    except MediaError as exc:
        print(f"vibescope push: {exc}", file=sys.stderr)
        return EXIT_MEDIA
    ost: list[tuple[float, bytes]] = []

    def on_error(msg: dict[str, Any]) -> None:
        print(
            f"vibescope push: server error {msg.get('code')}: {msg.get('message')} (seq {msg.get('seq')})",
            file=sys.stderr,
        )

    client = PushClient(
        args.url,
        token=args.token,
        session_id=args.session,
        resume_token=args.resume_token,
        audio={"encoding": "pcm16", "sample_rate": 16000, "channels": 1} if kinds["audio"] else None,
        video="jpeg" if kinds["video"] else None,
        want_ost=bool(args.save_ost),
        realtime=args.speed == "realtime",
        on_event=lambda ev: _print_event(ev, args.jsonl),
        on_ost=lambda t, b: ost.append((t, b)),
        on_error=on_error,
        on_lost=lambda a, b: print(
            f"vibescope push: media {a:.2f}–{b:.2f} s was lost by the server and is not analysed", file=sys.stderr
        ),
        give_up_after_s=args.give_up_after,
    )
    try:
        stats = asyncio.run(client.run(iter_chunks(args.source, fps=args.fps)))
    except MediaError as exc:
        print(f"vibescope push: {exc}", file=sys.stderr)
        return EXIT_MEDIA
    except PushError as exc:
        print(f"vibescope push: {exc}", file=sys.stderr)
        return EXIT_STREAM
    if args.save_ost:
        seconds = write_wav(args.save_ost, ost)
        print(f"vibescope push: wrote {seconds:.1f} s of OST audio to {args.save_ost}", file=sys.stderr)
    print(
        f"vibescope push: session {client.session_id}: {stats.sent} frames sent, {stats.resent} resent, "
        f"{stats.reconnects} reconnects, {stats.events} events"
        + (f", {stats.new_sessions} new sessions" if stats.new_sessions else ""),
        file=sys.stderr,
    )
    return 0


# --- analyze -------------------------------------------------------------------------------


def cmd_analyze(args: argparse.Namespace) -> int:
    import numpy as np

    from vibescope.stream.media import MediaError
    from vibescope.stream.session import Session, SessionConfig
    from vibescope.stream.source import iter_chunks, probe

    try:
        kinds = probe(args.source)
    except MediaError as exc:
        print(f"vibescope analyze: {exc}", file=sys.stderr)
        return EXIT_MEDIA
    session = Session(
        SessionConfig(
            audio_encoding="pcm16" if kinds["audio"] else None,
            video=kinds["video"],
            stems=("ost", "music") if args.stems else (),
        )
    )
    events: list[dict[str, Any]] = []
    stems: dict[str, list[np.ndarray]] = {}

    def take(result: Any) -> None:
        for ev in result.events:
            d = ev.to_dict()
            events.append(d)
            _print_event(d, args.jsonl)
        for name, x in result.stems.items():
            stems.setdefault(name, []).append(x)

    try:
        for chunk in iter_chunks(args.source, fps=args.fps):
            take(session.feed(chunk))
        take(session.flush())
    except MediaError as exc:
        print(f"vibescope analyze: {exc}", file=sys.stderr)
        return EXIT_MEDIA
    if args.stems:
        from vibescope.server.client import write_wav
        from vibescope.stream.media import float_to_pcm16

        out = Path(args.stems)
        out.mkdir(parents=True, exist_ok=True)
        if not stems:
            print("vibescope analyze: this pipeline produces no audio stems", file=sys.stderr)
            return EXIT_USAGE
        for name, parts in stems.items():
            write_wav(str(out / f"{name}.wav"), [(0.0, float_to_pcm16(np.concatenate(parts)))])
        print(f"vibescope analyze: wrote {', '.join(sorted(stems))} stems to {out}", file=sys.stderr)
    if args.plot:
        from vibescope.stream.tagf.plot import plot_timeline

        plot_timeline(events, args.plot)
        print(f"vibescope analyze: wrote {args.plot}", file=sys.stderr)
    return 0


def register(groups: dict[str, Any]) -> None:
    root = groups["root"]
    p = root.add_parser(
        "serve",
        help="run the WebSocket server",
        description="Run the vibescope server (WebSocket /v1/stream, /healthz, /metrics, demo page at /).",
    )
    p.add_argument(
        "--host", default=_env("HOST", "127.0.0.1"), help="listen address (env VIBESCOPE_HOST; default 127.0.0.1)"
    )
    p.add_argument("--port", type=int, default=int(_env("PORT", 8765)), help="port (env VIBESCOPE_PORT; default 8765)")
    p.add_argument(
        "--redis",
        default=_env("REDIS_URL"),
        metavar="URL",
        help="keep session state in Redis, e.g. redis://127.0.0.1:6379/0 (env VIBESCOPE_REDIS_URL; default: in-memory)",
    )
    p.add_argument(
        "--redis-prefix",
        default=_env("REDIS_PREFIX", "vibescope:"),
        help="Redis key prefix (env VIBESCOPE_REDIS_PREFIX)",
    )
    p.add_argument(
        "--token",
        default=_env("TOKEN"),
        help="token clients must send in hello (env VIBESCOPE_TOKEN); without one, a loopback-only server "
        "serves only clients on its own host with no proxy in between",
    )
    p.add_argument(
        "--ttl", type=int, default=int(_env("SESSION_TTL", 3600)), help="seconds a session is kept after its last write"
    )
    p.add_argument("--workers", type=int, default=int(_env("WORKERS", os.cpu_count() or 2)), help="analysis threads")
    p.add_argument(
        "--pipeline",
        choices=("default", "base"),
        default=_env("PIPELINE", "default"),
        help="default: every model (speech, face, expression, music/OST, valence/arousal); "
        "base: the signal measures only (speech, loudness, face), far cheaper (env VIBESCOPE_PIPELINE)",
    )
    defaults = Limits()
    p.add_argument(
        "--max-sessions",
        type=int,
        default=int(_env("MAX_SESSIONS", defaults.max_sessions)),
        help=f"live sessions per server process; more are told to retry (env VIBESCOPE_MAX_SESSIONS; "
        f"default {defaults.max_sessions}, docs/performance.md; 0: no limit)",
    )
    p.add_argument(
        "--max-per-peer",
        type=int,
        default=int(_env("MAX_PER_PEER", defaults.max_connections_per_peer)),
        help=f"open connections per client address (default {defaults.max_connections_per_peer}; 0: no limit)",
    )
    p.add_argument(
        "--max-unacked",
        type=int,
        default=defaults.max_unacked_frames,
        help=f"frames the server reads past its last ack per session (default {defaults.max_unacked_frames})",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[o for o in (_env("ALLOW_ORIGIN") or "").split(",") if o],
        metavar="ORIGIN",
        help="a web origin that may open streams besides the extension and this server's own pages, "
        "e.g. https://example.org (repeatable; env VIBESCOPE_ALLOW_ORIGIN, comma-separated)",
    )
    p.add_argument(
        "--trust-forwarded",
        action="store_true",
        default=bool(_env("TRUST_FORWARDED")),
        help="behind a reverse proxy: a client's address is the last X-Forwarded-For entry (per-peer limits)",
    )
    p.set_defaults(func=cmd_serve)

    p = root.add_parser(
        "push",
        help="stream a media file to a server",
        description="Decode a media file and stream "
        "it like the extension does (PCM16 16 kHz audio, JPEG frames); print overlay events.",
    )
    p.add_argument("source", help="any media file PyAV reads")
    p.add_argument(
        "--url", default=_env("URL", "ws://127.0.0.1:8765/v1/stream"), help="server WebSocket URL (env VIBESCOPE_URL)"
    )
    p.add_argument("--token", default=_env("TOKEN"), help="server token (env VIBESCOPE_TOKEN)")
    p.add_argument("--session", help="resume this session id (needs --resume-token)")
    p.add_argument("--resume-token", help="resume token from the session's welcome")
    p.add_argument("--fps", type=float, default=10.0, help="video frames per second to send (default 10)")
    p.add_argument(
        "--speed", choices=("realtime", "max"), default="realtime", help="pace of sending (default realtime)"
    )
    p.add_argument("--jsonl", action="store_true", help="print one JSON object per event")
    p.add_argument("--save-ost", metavar="WAV", help="ask for the OST stem (music removed) and write it here")
    p.add_argument("--give-up-after", type=float, default=60.0, help="seconds without a connection before giving up")
    p.set_defaults(func=cmd_push)

    p = root.add_parser(
        "analyze",
        help="analyse a media file offline",
        description="Run the same engine with no server and print the same overlay events.",
    )
    p.add_argument("source", help="any media file PyAV reads")
    p.add_argument("--fps", type=float, default=10.0, help="video frames per second to analyse (default 10)")
    p.add_argument("--jsonl", action="store_true", help="print one JSON object per event")
    p.add_argument("--stems", metavar="DIR", help="write the separated audio stems (ost.wav, music.wav) here")
    p.add_argument("--plot", metavar="PNG", help="draw valence/arousal over time with the music level beneath")
    p.set_defaults(func=cmd_analyze)

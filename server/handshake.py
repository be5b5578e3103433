"""The start of a connection: ``hello``, authentication, and opening a new or resumed session."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

from aiohttp import WSMsgType

from vibescope.server.context import ConnectionContext
from vibescope.server.outbox import Outbox
from vibescope.server.pool import call
from vibescope.server.protocol import PROTOCOL_VERSION, CloseCode, ErrorCode, Hello, ProtocolError, parse_control
from vibescope.server.socket import StreamSocket
from vibescope.server.store import CorruptSession
from vibescope.stream.session import Session, SessionConfig
from vibescope.stream.timebase import SAMPLE_RATE

log = logging.getLogger("vibescope.handshake")

HELLO_TIMEOUT_S = 10.0


@dataclass
class OpenSession:
    """A session this connection now owns; the analysis loop advances it."""

    session_id: str
    owner: str  # the fencing token of this connection's writes (StateStore.claim)
    engine: Session
    last_state: bytes  # what the store holds: the state a failed batch is replayed from
    acked_seq: int
    want_ost: bool
    catch_up_until_t: float | None = None  # media before this time is a reconnect's catch-up


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def receive_hello(
    ws: StreamSocket, ctx: ConnectionContext, outbox: Outbox, local: bool, auth_failed: Callable[[], None]
) -> Hello | None:
    """The client's hello, authenticated; None when the connection must end (already answered).

    ``local``: the request may skip the token (server/admission.py); ``auth_failed`` counts a wrong
    token against the peer. Until the hello is accepted
    the socket takes messages of ``max_hello_bytes`` at most; then ``max_message_bytes``."""
    try:
        msg = await ws.receive(timeout=HELLO_TIMEOUT_S)
    except TimeoutError:
        await outbox.fail(ErrorCode.HELLO_REQUIRED, f"no hello within {HELLO_TIMEOUT_S:.0f} s", CloseCode.POLICY)
        return None
    if msg.type == WSMsgType.BINARY:
        await outbox.fail(
            ErrorCode.HELLO_REQUIRED, "the first message must be a hello text frame", CloseCode.HELLO_REQUIRED
        )
        return None
    if msg.type == WSMsgType.ERROR:
        if "size" in str(ws.exception()):
            ctx.metrics.refusals_total["hello_too_big"] += 1
        return None  # aiohttp already closed it (1009 for a message over the limit)
    if msg.type != WSMsgType.TEXT:
        return None  # closed before saying anything
    try:
        data = parse_control(msg.data)
        if data["type"] != "hello":
            raise ProtocolError(ErrorCode.HELLO_REQUIRED, f"expected hello, got {data['type']!r}")
        hello = Hello.from_dict(data)
    except ProtocolError as exc:
        close = {
            ErrorCode.UNSUPPORTED_VERSION: CloseCode.UNSUPPORTED_VERSION,
            ErrorCode.HELLO_REQUIRED: CloseCode.HELLO_REQUIRED,
        }.get(exc.code, CloseCode.POLICY)
        await outbox.fail(exc.code, exc.message, close)
        return None
    token = ctx.config.token
    if token:
        if not (hello.token and hmac.compare_digest(hello.token.encode(), token.encode())):
            auth_failed()
            await outbox.fail(ErrorCode.UNAUTHORIZED, "missing or wrong token", CloseCode.UNAUTHORIZED)
            return None
    elif not local:
        ctx.metrics.refusals_total["unauthorized"] += 1
        await outbox.fail(
            ErrorCode.UNAUTHORIZED,
            "this server has no token and serves only clients on its own host, without a proxy in between",
            CloseCode.UNAUTHORIZED,
        )
        return None
    ws.raise_message_limit(ctx.config.limits.max_message_bytes)
    return hello


def session_config(ctx: ConnectionContext, hello: Hello) -> SessionConfig:
    audio, limits = hello.audio, ctx.config.limits
    return SessionConfig(
        audio_encoding=None if hello.container or audio is None else audio.encoding,
        audio_rate=SAMPLE_RATE if audio is None else audio.sample_rate,
        audio_channels=1 if audio is None else audio.channels,
        video=hello.video is not None or hello.container is not None,
        container=hello.container,
        max_video_width=limits.max_video_width,
        max_video_height=limits.max_video_height,
        max_audio_seconds_per_chunk=limits.max_audio_seconds_per_frame,
        stages=ctx.config.pipeline,
        stems=("ost",) if "ost_audio" in hello.want else (),  # the only stem the protocol sends
        max_lead_s=limits.max_lead_s,
    )


async def open_session(ctx: ConnectionContext, hello: Hello, outbox: Outbox) -> OpenSession | None:
    """Create or resume the session ``hello`` asks for, send ``welcome`` (and, on a resume, the
    stored events the client missed); None when refused (already answered). Raises when the
    store is unreachable."""
    store, owner = ctx.store, uuid.uuid4().hex
    lost = None
    if hello.session_id:
        try:
            stored = await store.load(hello.session_id)
        except CorruptSession as exc:
            await outbox.fail(
                ErrorCode.UNKNOWN_SESSION, f"the stored session cannot be continued: {exc}", CloseCode.UNKNOWN_SESSION
            )
            return None
        if (
            stored is None
            or not hello.resume_token
            or not hmac.compare_digest(stored.meta.get("resume_token_sha256", ""), hash_token(hello.resume_token))
        ):
            await outbox.fail(
                ErrorCode.UNKNOWN_SESSION,
                "unknown or expired session, or wrong resume token",
                CloseCode.UNKNOWN_SESSION,
            )
            return None
        await ctx.registry.take_over(hello.session_id)
        if not await store.claim(hello.session_id, owner):
            await outbox.fail(ErrorCode.UNKNOWN_SESSION, "session expired while resuming", CloseCode.UNKNOWN_SESSION)
            return None
        try:
            stored = await store.load(hello.session_id)
            engine = await ctx.pool.run(call(Session.from_bytes, stored.state))
        except ValueError as exc:  # e.g. state written by an incompatible server version (or CorruptSession)
            await outbox.fail(
                ErrorCode.UNKNOWN_SESSION, f"the stored session cannot be continued: {exc}", CloseCode.UNKNOWN_SESSION
            )
            return None
        opened = OpenSession(
            hello.session_id,
            owner,
            engine,
            stored.state,
            stored.acked_seq,
            "ost_audio" in stored.meta.get("want", []),
            hello.catch_up_until_t,
        )
        if hello.acked_seq is not None and hello.acked_seq > stored.acked_seq:
            # the store lost writes it had acknowledged (e.g. Redis restarted from an older snapshot)
            lost = {"from_seq": stored.acked_seq + 1, "to_seq": hello.acked_seq}
            ctx.metrics.rollbacks_total += 1
            log.warning(
                "session %s: the store holds seq %d, the client saw %d acknowledged",
                hello.session_id,
                stored.acked_seq,
                hello.acked_seq,
            )
        resume_token = hello.resume_token
        ctx.metrics.sessions_total["resumed"] += 1
    else:
        engine = Session(session_config(ctx, hello))
        state = await ctx.pool.run(call(engine.to_bytes))
        session_id, resume_token = uuid.uuid4().hex, secrets.token_urlsafe(24)
        meta = {
            "resume_token_sha256": hash_token(resume_token),
            "want": hello.want,
            "client": hello.client,
            "created": time.time(),
        }
        await store.create(session_id, state, meta, owner)
        opened = OpenSession(session_id, owner, engine, state, 0, "ost_audio" in hello.want)
        ctx.metrics.sessions_total["new"] += 1
    welcome = {
        "type": "welcome",
        "protocol": PROTOCOL_VERSION,
        "session_id": opened.session_id,
        "resume_token": resume_token,
        "resumed": bool(hello.session_id),
        "acked_seq": opened.acked_seq,
        "limits": asdict(ctx.config.limits),
        "models": ctx.models,
        "server": f"vibescope/{ctx.version}",
    }
    if lost is not None:
        welcome["lost"] = lost
    outbox.send_json(welcome)
    if hello.session_id:
        for event in await store.events_after(opened.session_id, hello.last_event_t):
            outbox.send_json(event)
    return opened

"""One WebSocket connection speaking docs/protocol.md, from hello to close.

Reading and analysis are decoupled by a bounded backlog: the reader (server/reader.py) validates
frames and queues them; the analysis loop (server/analysis.py) takes what is queued, analyses it,
writes state and events to the store, and only then answers. When analysis falls behind, video
frames are skipped first (server/shedding.py). Audio is never dropped: a full backlog stops the
reader, and TCP pushes back on the client.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from vibescope.server.analysis import AnalysisLoop
from vibescope.server.backlog import Backlog
from vibescope.server.context import ConnectionContext
from vibescope.server.handshake import open_session, receive_hello
from vibescope.server.outbox import Outbox
from vibescope.server.protocol import CloseCode, ErrorCode
from vibescope.server.reader import FrameReader
from vibescope.server.shedding import VideoShedding

log = logging.getLogger("vibescope.connection")

BACKLOG_ITEMS = 64  # frames waiting for analysis, per connection
OUTBOX_ITEMS = 2048  # messages waiting to be written to one client
CLOSE_TIMEOUT_S = 5.0


class Connection:
    def __init__(self, ctx: ConnectionContext, ws: web.WebSocketResponse, transport: Any = None) -> None:
        self.ctx = ctx
        self.ws = ws
        self.outbox = Outbox(ws, transport, ctx.metrics, OUTBOX_ITEMS, CLOSE_TIMEOUT_S)

    async def close(self, code: int, message: str) -> None:
        await self.outbox.close(code, message)

    async def run(self) -> None:
        outbox = self.outbox
        outbox.start()
        try:
            hello = await receive_hello(self.ws, self.ctx, outbox)
            if hello is None:
                return
            try:
                session = await open_session(self.ctx, hello, outbox)
            except Exception as exc:  # the store is unreachable, or the stored state unusable
                log.error("cannot open session: %r", exc)
                await outbox.fail(
                    ErrorCode.INTERNAL,
                    "cannot open the session now (state store unavailable); try again later",
                    CloseCode.TRY_AGAIN,
                )
                return
            if session is None:
                return
            outbox.label = session.session_id
            await self._serve(session)
        finally:
            if not outbox.close_posted and not self.ws.closed:
                await outbox.close(CloseCode.NORMAL, "")
            outbox.stop()

    async def _serve(self, session) -> None:
        backlog = Backlog(BACKLOG_ITEMS)
        shedding = VideoShedding(self.ctx.shedding, self.ctx.clock)
        reader = FrameReader(self.ws, self.ctx, self.outbox, session, backlog, shedding)
        analysis = AnalysisLoop(self.ctx, self.outbox, session, backlog, shedding)
        registry = self.ctx.registry
        registry.register(session.session_id, self.outbox)
        worker = asyncio.create_task(analysis.run(), name=f"analyse-{session.session_id}")
        try:
            await reader.run()
        except Exception:
            log.exception("connection of session %s failed", session.session_id)
            await self.outbox.fail(ErrorCode.INTERNAL, "internal server error; resume to continue", CloseCode.INTERNAL)
        finally:
            if not worker.done():
                if self.outbox.closing and not self.ws.closed:  # e.g. after bye: let it finish
                    await asyncio.wait([worker], timeout=CLOSE_TIMEOUT_S)
                worker.cancel()
            registry.unregister(session.session_id, self.outbox)

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
from collections.abc import Callable
from typing import Any

from vibescope.server.analysis import AnalysisLoop
from vibescope.server.backlog import Backlog
from vibescope.server.context import ConnectionContext
from vibescope.server.handshake import OpenSession, open_session, receive_hello
from vibescope.server.outbox import Outbox
from vibescope.server.protocol import CloseCode, ErrorCode
from vibescope.server.reader import FrameReader
from vibescope.server.shedding import VideoShedding
from vibescope.server.socket import StreamSocket

log = logging.getLogger("vibescope.connection")

BACKLOG_ITEMS = 64  # frames waiting for analysis, per connection
OUTBOX_ITEMS = 2048  # messages waiting to be written to one client
CLOSE_TIMEOUT_S = 5.0


class Connection:
    def __init__(
        self,
        ctx: ConnectionContext,
        ws: StreamSocket,
        transport: Any = None,
        local: bool = False,
        auth_failed: Callable[[], None] = lambda: None,
    ) -> None:
        """``local``: the peer may skip the token (server/admission.py); ``auth_failed`` is called
        for a wrong token."""
        self.ctx = ctx
        self.ws = ws
        self.local = local
        self.auth_failed = auth_failed
        self.outbox = Outbox(ws, transport, ctx.metrics, OUTBOX_ITEMS, CLOSE_TIMEOUT_S)
        self.tasks: list[asyncio.Task] = []  # the reader and the analysis loop, while they run

    async def close(self, code: int, message: str) -> None:
        await self.outbox.close(code, message)

    async def run(self) -> None:
        outbox = self.outbox
        outbox.start()
        try:
            hello = await receive_hello(self.ws, self.ctx, outbox, self.local, self.auth_failed)
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

    async def _serve(self, session: OpenSession) -> None:
        """Read and analyse until either side ends; then end the other and let go of everything.

        The analysis loop ends on its own when the store fails or ownership is lost (it has told
        the client why); the reader may then be waiting on a full backlog or a quiet socket, so it
        is cancelled, not awaited. The reader ends when the client says bye or goes away; the
        analysis loop then gets ``CLOSE_TIMEOUT_S`` to answer what was queued."""
        backlog = Backlog(BACKLOG_ITEMS)
        shedding = VideoShedding(self.ctx.shedding, self.ctx.clock)
        acked = asyncio.Event()
        reader = FrameReader(self.ws, self.ctx, self.outbox, session, backlog, shedding, acked)
        analysis = AnalysisLoop(self.ctx, self.outbox, session, backlog, shedding, acked)
        registry = self.ctx.registry
        registry.register(session.session_id, self.outbox)
        reading = asyncio.create_task(reader.run(), name=f"read-{session.session_id}")
        analysing = asyncio.create_task(analysis.run(), name=f"analyse-{session.session_id}")
        self.tasks = [reading, analysing]
        try:
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
            if reading.done() and not analysing.done() and self.outbox.closing and not self.ws.closed:
                await asyncio.wait([analysing], timeout=CLOSE_TIMEOUT_S)  # e.g. after bye: let it finish
            if reading.done() and reading.exception() is not None:
                log.error("connection of session %s failed", session.session_id, exc_info=reading.exception())
                await self.outbox.fail(
                    ErrorCode.INTERNAL, "internal server error; resume to continue", CloseCode.INTERNAL
                )
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            self.tasks = []
            registry.unregister(session.session_id, self.outbox)

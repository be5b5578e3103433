"""Everything a connection sends goes through its outbox: a bounded queue drained by one writer
task, so a client that stops reading can never block the reader or the analysis (it is closed)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from vibescope.server.metrics import Metrics
from vibescope.server.protocol import error_message

log = logging.getLogger("vibescope.connection")

Message = str | bytes | tuple[int, str]  # text, binary, or (close code, reason): the last message


class Outbox:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: Any,
        metrics: Metrics,
        items: int = 2048,
        close_timeout_s: float = 5.0,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.metrics = metrics
        self.close_timeout_s = close_timeout_s
        self._queue: asyncio.Queue[Message] = asyncio.Queue(items)
        self._writer: asyncio.Task | None = None
        self._close_posted = False
        self.closing = False  # the connection is ending: the reader stops reading
        self.label = "?"  # for log lines: the session id once known

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write())

    def post(self, item: Message) -> None:
        if self._close_posted:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._close_posted = True
            self.abort("client is not reading its messages")

    async def _write(self) -> None:
        ws = self.ws
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, tuple):
                    await ws.close(code=item[0], message=item[1][:120].encode())
                    return
                if isinstance(item, bytes):
                    await ws.send_bytes(item)
                else:
                    await ws.send_str(item)
        except (ConnectionError, RuntimeError):
            pass  # the client went away; the reader notices

    def abort(self, why: str) -> None:
        log.warning("aborting connection of session %s: %s", self.label, why)
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def send_json(self, obj: dict[str, Any] | str) -> None:
        self.post(obj if isinstance(obj, str) else json.dumps(obj))

    def send_error(self, code: str, message: str, seq: int | None = None) -> None:
        self.metrics.errors_total[code] += 1
        self.post(error_message(code, message, seq))

    async def close(self, code: int, message: str) -> None:
        """Close after what is already queued; abort if the client does not take it in time."""
        self.closing = True
        if not self._close_posted:
            self.post((int(code), message))
            self._close_posted = True
        if self._writer is not None and not self._writer.done():
            done, _ = await asyncio.wait([self._writer], timeout=self.close_timeout_s)
            if not done:
                self._writer.cancel()
                self.abort("close timed out")

    async def fail(self, code: str, message: str, close_code: int) -> None:
        self.send_error(code, message)
        await self.close(close_code, message)

    @property
    def close_posted(self) -> bool:
        return self._close_posted

    def stop(self) -> None:
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()

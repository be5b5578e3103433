"""The stream's WebSocket: a small message limit until the client's hello is accepted.

aiohttp fixes a WebSocket's message limit when the connection opens, and its compiled frame reader
keeps the limit where Python cannot change it. The stream socket therefore reads frames with
aiohttp's pure-Python reader, whose limit is a plain attribute: ``max_hello_bytes`` (64 KiB) for an
unauthenticated client, raised to ``max_message_bytes`` once its hello is accepted. The frames are
parsed by the same state machine either way; only the limit moves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aiohttp import web, web_ws
from aiohttp._websocket import reader_py


@contextlib.contextmanager
def _python_frame_reader() -> Iterator[None]:
    saved = web_ws.WebSocketReader, web_ws.WebSocketDataQueue
    web_ws.WebSocketReader, web_ws.WebSocketDataQueue = reader_py.WebSocketReader, reader_py.WebSocketDataQueue
    try:
        yield
    finally:
        web_ws.WebSocketReader, web_ws.WebSocketDataQueue = saved


class StreamSocket(web.WebSocketResponse):
    async def prepare(self, request: web.BaseRequest):  # noqa: ANN201 (aiohttp's own signature)
        with _python_frame_reader():
            return await super().prepare(request)

    @property
    def message_limit(self) -> int:
        return self._frame_reader()._max_msg_size

    def raise_message_limit(self, limit: int) -> None:
        """Messages up to ``limit`` bytes from now on (after the hello was accepted)."""
        self._frame_reader()._max_msg_size = limit
        self._max_msg_size = limit

    def _frame_reader(self) -> reader_py.WebSocketReader:
        parser = getattr(self, "_parser", None)
        if not isinstance(parser, reader_py.WebSocketReader):
            raise RuntimeError(
                "this aiohttp version does not keep the WebSocket frame reader where vibescope expects it"
            )
        return parser

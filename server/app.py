"""The aiohttp application: /v1/stream (WebSocket), /healthz, /metrics, the demo page."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from aiohttp import web

from server.analysis import AnalysisPool
from server.metrics import Metrics
from server.protocol import CloseCode, Limits
from server.session import StreamConnection
from server.store import StateStore, make_store
from stream.engine import model_info, warm_up

log = logging.getLogger("vibescope.server")

STATIC_DIR = Path(__file__).resolve().parent / "static"
EXTENSION_LIB = Path(__file__).resolve().parents[1] / "extension" / "lib"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    redis_url: str | None = None
    redis_prefix: str = "vibescope:"
    limits: Limits = field(default_factory=Limits)
    workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    pipeline: str = "default"

    def check(self) -> None:
        """Refuse unsafe configurations before listening."""
        if not self.token and not is_loopback(self.host):
            raise ValueError(f"listening on {self.host} needs a token (--token or VIBESCOPE_TOKEN); "
                             "only a loopback-only server may run without one")


class StreamServer:
    def __init__(self, config: ServerConfig, store: StateStore | None = None) -> None:
        config.check()
        self.config = config
        self.store = store or make_store(config.redis_url, ttl=config.limits.session_ttl_s, prefix=config.redis_prefix)
        self.metrics = Metrics()
        self.metrics.session_ttl_s = config.limits.session_ttl_s
        self.analysis = AnalysisPool(config.workers)  # every session's analysis, in lock-step
        self.metrics.analysis = self.analysis
        # parallelism comes from the analysis threads; one torch thread each avoids
        # oversubscribing the cores
        torch.set_num_threads(1)
        self.models = model_info(config.pipeline)
        warm_up(config.pipeline)
        self.connections: dict[str, StreamConnection] = {}
        try:
            self.version = version("vibescope")
        except PackageNotFoundError:
            self.version = "dev"

    # --- live connections ------------------------------------------------------------------

    def register(self, conn: StreamConnection) -> None:
        self.connections[conn.session_id] = conn
        self.metrics.sessions_active = len(self.connections)

    def unregister(self, conn: StreamConnection) -> None:
        if self.connections.get(conn.session_id) is conn:
            del self.connections[conn.session_id]
            self.metrics.state_bytes.pop(conn.session_id, None)
        self.metrics.sessions_active = len(self.connections)

    async def take_over(self, session_id: str) -> None:
        """A resume wins: close this process's older connection of the same session."""
        old = self.connections.get(session_id)
        if old is not None:
            await old.fail("session_busy", "session resumed on a newer connection", CloseCode.SESSION_BUSY)

    # --- HTTP ------------------------------------------------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        # no permessage-deflate: JPEG and PCM do not compress, and it costs CPU on both ends
        ws = web.WebSocketResponse(max_msg_size=self.config.limits.max_message_bytes, heartbeat=30.0, compress=False)
        await ws.prepare(request)
        conn = StreamConnection(self, ws, request.transport)
        try:
            await conn.run()
        except Exception:
            log.exception("connection failed")
            if not ws.closed:
                await ws.close(code=CloseCode.INTERNAL, message=b"internal error")
        return ws

    async def healthz(self, request: web.Request) -> web.Response:
        store_ok = await self.store.ping()
        body = {"status": "ok" if store_ok else "degraded", "store": self.store.kind, "store_ok": store_ok,
                "sessions": len(self.connections), "version": self.version}
        return web.json_response(body, status=200 if store_ok else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(self.store.kind), content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"}, charset="utf-8")

    async def index(self, request: web.Request) -> web.StreamResponse:
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            return web.Response(text="vibescope server: the demo page is not installed", status=404)
        return web.FileResponse(page)

    async def on_shutdown(self, app: web.Application) -> None:
        await asyncio.gather(*(c.close(CloseCode.TRY_AGAIN, "server shutting down: resume")
                               for c in list(self.connections.values())), return_exceptions=True)

    async def on_cleanup(self, app: web.Application) -> None:
        await self.store.close()
        self.analysis.shutdown()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.limits.max_message_bytes)
        app.router.add_get("/v1/stream", self.stream)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_get("/", self.index)
        if STATIC_DIR.is_dir():
            app.router.add_static("/static/", STATIC_DIR)
        if EXTENSION_LIB.is_dir():  # one protocol module for the extension and the demo page
            app.router.add_static("/lib/", EXTENSION_LIB)
        app.on_shutdown.append(self.on_shutdown)
        app.on_cleanup.append(self.on_cleanup)
        return app


def run(config: ServerConfig) -> None:
    server = StreamServer(config)
    print(f"vibescope serving on http://{config.host}:{config.port}/ "
          f"(demo page), ws://{config.host}:{config.port}/v1/stream, state: {server.store.kind}", flush=True)
    web.run_app(server.app(), host=config.host, port=config.port, print=None, handle_signals=True,
                shutdown_timeout=5.0)

"""The aiohttp application: /v1/stream (WebSocket), /healthz, /metrics, the demo page."""

from __future__ import annotations

import asyncio
import html
import logging
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from aiohttp import web

from vibescope import data_dir
from vibescope.server.admission import Admission, extension_id
from vibescope.server.config import ServerConfig
from vibescope.server.connection import Connection
from vibescope.server.context import ConnectionContext
from vibescope.server.metrics import Metrics
from vibescope.server.pool import AnalysisPool
from vibescope.server.protocol import CloseCode, ErrorCode
from vibescope.server.registry import ConnectionRegistry
from vibescope.server.socket import StreamSocket
from vibescope.server.store import StateStore, make_store
from vibescope.stream.cards import parse_front_matter
from vibescope.stream.pipelines import model_info
from vibescope.stream.session import warm_up
from vibescope.stream.weights import models_dir

log = logging.getLogger("vibescope.server")

STATIC_DIR = Path(__file__).resolve().parent / "static"
EXTENSION_MANIFEST = data_dir("extension") / "manifest.json"


class StreamServer:
    def __init__(self, config: ServerConfig, store: StateStore | None = None) -> None:
        config.check()
        self.config = config
        self.store = store or make_store(config.redis_url, ttl=config.limits.session_ttl_s, prefix=config.redis_prefix)
        self.metrics = Metrics()
        self.metrics.session_ttl_s = config.limits.session_ttl_s
        self.pool = AnalysisPool(config.workers)
        self.metrics.analysis = self.pool
        # parallelism comes from the analysis threads; one torch thread each avoids
        # oversubscribing the cores
        torch.set_num_threads(1)
        warm_up(config.pipeline)
        self.registry = ConnectionRegistry(self.metrics)
        self.admission = Admission(config, self.metrics, tuple(filter(None, [extension_id(EXTENSION_MANIFEST)])))
        self.streams = 0  # stream connections open now (before and after their hello)
        try:
            server_version = version("vibescope")
        except PackageNotFoundError:
            server_version = "dev"
        self.context = ConnectionContext(
            config, self.store, self.pool, self.metrics, self.registry, model_info(config.pipeline), server_version
        )

    @property
    def version(self) -> str:
        return self.context.version

    # --- HTTP ------------------------------------------------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        refusal = self.admission.check_upgrade(request)
        if refusal is not None:
            return refusal.response()
        self.streams += 1
        try:
            # no permessage-deflate: JPEG and PCM do not compress, and it costs CPU on both ends
            ws = StreamSocket(max_msg_size=self.config.limits.max_hello_bytes, heartbeat=30.0, compress=False)
            await ws.prepare(request)
            full = self.admission.server_full(self.streams - 1)
            if full is not None:
                await ws.send_json(
                    {
                        "type": "error",
                        "code": ErrorCode.SERVER_FULL,
                        "message": full.message,
                        "retry_after_s": full.retry_after_s,
                        "seq": None,
                    }
                )
                await ws.close(
                    code=CloseCode.TRY_AGAIN, message=f"server full; retry in {full.retry_after_s:g} s".encode()
                )
                return ws
            conn = Connection(
                self.context,
                ws,
                request.transport,
                local=self.admission.local_without_token(request),
                auth_failed=lambda: self.admission.auth_failed(request),
            )
            try:
                await conn.run()
            except Exception:
                log.exception("connection failed")
                if not ws.closed:
                    await ws.close(code=CloseCode.INTERNAL, message=b"internal error")
            return ws
        finally:
            self.streams -= 1
            self.admission.release(request)

    async def healthz(self, request: web.Request) -> web.Response:
        store_ok = await self.store.ping()
        body = {
            "status": "ok" if store_ok else "degraded",
            "store": self.store.kind,
            "store_ok": store_ok,
            "sessions": len(self.registry),
            "connections": self.streams,
            "limits": asdict(self.config.limits),
            "version": self.version,
        }
        return web.json_response(body, status=200 if store_ok else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(
            text=self.metrics.render(self.store.kind),
            content_type="text/plain",
            headers={"X-Content-Type-Options": "nosniff"},
            charset="utf-8",
        )

    def card_text(self, model_id: str) -> str | None:
        """The markdown of the card describing ``model_id``: the card whose front matter ``id`` is
        it, or the card of this server's component of that id (loaded weights may name themselves
        otherwise; the component's card summary says which card it is). None when there is none."""
        summaries = {
            m.get("card") for m in self.context.models.values() if isinstance(m, dict) and m.get("id") == model_id
        }
        seen: set[str] = set()
        for folder in dict.fromkeys((models_dir(), data_dir("models"))):  # $VIBESCOPE_MODELS first
            for path in sorted(folder.glob("*.md")):
                if path.name in seen:
                    continue
                seen.add(path.name)
                try:
                    text = path.read_text(encoding="utf-8")
                    meta = parse_front_matter(text)
                except (OSError, ValueError):
                    continue  # not a card (e.g. a history file without front matter)
                if meta.get("id") == model_id or (meta.get("summary") in summaries and meta.get("summary")):
                    return text
        return None

    async def model_card(self, request: web.Request) -> web.Response:
        """/models/<id>: the model card, as simple HTML (markdown with ?format=md or Accept: text/markdown)."""
        model_id = request.match_info["model_id"]
        text = self.card_text(model_id) if len(model_id) <= 120 else None
        headers = {"X-Content-Type-Options": "nosniff"}
        if text is None:
            return web.Response(text=f"no model card for {model_id[:120]!r}\n", status=404, headers=headers)
        accept = request.headers.get("Accept", "")
        if request.query.get("format") == "md" or ("text/markdown" in accept and "text/html" not in accept):
            return web.Response(text=text, content_type="text/markdown", charset="utf-8", headers=headers)
        page = (
            '<!doctype html><html lang="en"><meta charset="utf-8">'
            f"<title>vibescope model card: {html.escape(model_id)}</title>"
            '<pre style="white-space: pre-wrap; max-width: 50em; font: 14px/1.45 ui-monospace, monospace">'
            f"{html.escape(text)}</pre></html>\n"
        )
        headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        return web.Response(text=page, content_type="text/html", charset="utf-8", headers=headers)

    async def index(self, request: web.Request) -> web.StreamResponse:
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            return web.Response(text="vibescope server: the demo page is not installed", status=404)
        return web.FileResponse(page)

    async def on_shutdown(self, app: web.Application) -> None:
        await asyncio.gather(
            *(o.close(CloseCode.TRY_AGAIN, "server shutting down: resume") for o in self.registry.outboxes()),
            return_exceptions=True,
        )

    async def on_cleanup(self, app: web.Application) -> None:
        await self.store.close()
        self.pool.shutdown()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.limits.max_message_bytes)
        app.router.add_get("/v1/stream", self.stream)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_get("/", self.index)
        app.router.add_get("/models/{model_id}", self.model_card)
        app.router.add_static("/static/", STATIC_DIR)
        # one protocol module for the extension and the demo page
        app.router.add_static("/lib/", data_dir("extension") / "lib")
        app.on_shutdown.append(self.on_shutdown)
        app.on_cleanup.append(self.on_cleanup)
        return app


def run(config: ServerConfig) -> None:
    server = StreamServer(config)
    print(
        f"vibescope serving on http://{config.host}:{config.port}/ "
        f"(demo page), ws://{config.host}:{config.port}/v1/stream, state: {server.store.kind}",
        flush=True,
    )
    web.run_app(server.app(), host=config.host, port=config.port, print=None, handle_signals=True, shutdown_timeout=5.0)

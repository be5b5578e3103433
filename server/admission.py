"""Who may open a stream, decided before any session exists.

- **Origin**: a browser says which page opens a WebSocket (``Origin``), and any page may try
  ``ws://127.0.0.1:8765``. Allowed: requests without an Origin (the CLI, services), the extension
  (``chrome-extension://<its id>``), the server's own pages (the demo page: the Origin's host is
  the request's ``Host``), and origins added with ``--allow-origin``. Others get 403.
- **Local without a token**: a server without a token serves only local clients: it listens on
  loopback, the peer is on loopback, and the request carries no forwarding header (a reverse proxy
  on the same host adds one; it then needs the token like anyone else). A plain TCP tunnel adds
  none, so do not tunnel into a server that has no token (docs/operations.md, Security model).
- **Per peer**: at most ``max_connections_per_peer`` open connections, and after
  ``AUTH_FAILURES`` failed tokens within ``AUTH_WINDOW_S`` a peer is refused for that long (429).
- **Per process**: at most ``max_sessions`` live sessions; the next is told ``server_full`` with a
  retry hint and closed with 1013.

The peer is the socket's address, or with ``trust_forwarded`` the address the proxy in front put
last in ``X-Forwarded-For``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from vibescope.server.config import ServerConfig, is_loopback
from vibescope.server.metrics import Metrics

log = logging.getLogger("vibescope.admission")

AUTH_FAILURES = 5
AUTH_WINDOW_S = 60.0
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def extension_id(manifest: Path) -> str | None:
    """Chromium's id of an extension whose manifest has a ``key``: sha256 of the key, hex as a-p."""
    try:
        key = json.loads(manifest.read_text())["key"]
    except (OSError, ValueError, KeyError):
        return None
    digest = hashlib.sha256(base64.b64decode(key)).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in digest)


@dataclass(frozen=True)
class Refusal:
    reason: str  # the /metrics label
    status: int  # HTTP status of the refused upgrade
    message: str
    retry_after_s: float | None = None

    def response(self) -> web.Response:
        headers = {} if self.retry_after_s is None else {"Retry-After": str(int(self.retry_after_s + 0.999))}
        return web.json_response({"error": self.reason, "message": self.message}, status=self.status, headers=headers)


class Admission:
    def __init__(
        self,
        config: ServerConfig,
        metrics: Metrics,
        extension_ids: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.origins = {f"chrome-extension://{i}" for i in extension_ids} | set(config.allow_origins)
        self._open: dict[str, int] = defaultdict(int)
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    # --- who the peer is ---------------------------------------------------------------------

    def peer(self, request: web.BaseRequest) -> str:
        if self.config.trust_forwarded:
            forwarded = request.headers.get("X-Forwarded-For", "")
            if forwarded:
                return forwarded.split(",")[-1].strip()
        return request.remote or "?"

    def local_without_token(self, request: web.BaseRequest) -> bool:
        """May this request skip the token? Only on a loopback-only server, from a loopback peer
        with no proxy in between."""
        if self.config.token:
            return False
        if not is_loopback(self.config.host) or not is_loopback(request.remote or ""):
            return False
        return not any(h in request.headers for h in FORWARDING_HEADERS)

    # --- the checks, in order ----------------------------------------------------------------

    def check_upgrade(self, request: web.BaseRequest) -> Refusal | None:
        """Origin, the peer's open connections and failed tokens; None: let it in (and count it,
        until :meth:`release`)."""
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request):
            return self._refuse(Refusal("origin", 403, f"origin {origin[:100]!r} may not open a stream"))
        peer = self.peer(request)
        if self._throttled(peer):
            return self._refuse(Refusal("auth_throttled", 429, "too many failed tokens; wait", AUTH_WINDOW_S))
        limit = self.config.limits.max_connections_per_peer
        if limit and self._open[peer] >= limit:
            return self._refuse(Refusal("peer_limit", 429, f"more than {limit} open connections from {peer}", 5.0))
        self._open[peer] += 1
        return None

    def release(self, request: web.BaseRequest) -> None:
        peer = self.peer(request)
        self._open[peer] -= 1
        if self._open[peer] <= 0:
            del self._open[peer]

    def server_full(self, live_sessions: int) -> Refusal | None:
        limit = self.config.limits.max_sessions
        if limit and live_sessions >= limit:
            return self._refuse(Refusal("server_full", 503, f"this server runs {limit} sessions at most", 10.0))
        return None

    def auth_failed(self, request: web.BaseRequest) -> None:
        self.metrics.refusals_total["unauthorized"] += 1
        failures = self._failures[self.peer(request)]
        failures.append(self.clock())

    # --- internals ---------------------------------------------------------------------------

    def _refuse(self, refusal: Refusal) -> Refusal:
        self.metrics.refusals_total[refusal.reason] += 1
        log.warning("refused a stream: %s (%s)", refusal.reason, refusal.message)
        return refusal

    def _origin_allowed(self, origin: str, request: web.BaseRequest) -> bool:
        if "*" in self.origins or origin in self.origins:
            return True
        host = urlsplit(origin).netloc
        return bool(host) and host == request.host  # a page of this server (the demo page)

    def _throttled(self, peer: str) -> bool:
        failures = self._failures.get(peer)
        if not failures:
            return False
        now = self.clock()
        while failures and now - failures[0] > AUTH_WINDOW_S:
            failures.popleft()
        if not failures:
            del self._failures[peer]
            return False
        return len(failures) >= AUTH_FAILURES

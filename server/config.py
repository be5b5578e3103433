"""The server's configuration: what ``vibescope serve`` takes, checked before it listens."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from vibescope.server.protocol import Limits


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
    workers: int = field(default_factory=lambda: os.cpu_count() or 2)  # analysis threads
    pipeline: str = "default"
    allow_origins: tuple[str, ...] = ()  # origins besides the extension's and this server's own pages
    trust_forwarded: bool = False  # the peer is the last X-Forwarded-For address (behind a proxy)

    def check(self) -> None:
        """Refuse unsafe configurations before listening."""
        if not self.token and not is_loopback(self.host):
            raise ValueError(
                f"listening on {self.host} needs a token (--token or VIBESCOPE_TOKEN); "
                "only a loopback-only server may run without one"
            )

"""Session state stores: in-memory (one process) and Redis (many processes), same behaviour.

Per session the store keeps: the engine state (bytes), the highest acknowledged seq, the session
config and resume-token hash (``meta``), the owner (the connection currently allowed to write),
and a short history of overlay events (JSON strings, for resume replay and late viewers). Keys
expire ``ttl`` seconds after the last write.

Ownership is a fencing token: a connection that resumes a session claims it, and a write from a
connection that lost ownership fails with :class:`OwnershipLost`, so a stale worker (a partitioned
process, an old socket) can never overwrite what the new owner acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

HISTORY_EVENTS = 600  # 60 s of 100 ms ticks


class OwnershipLost(Exception):
    """Another connection claimed the session since this one did."""


class CorruptSession(ValueError):
    """A stored record this server cannot read (fields missing or malformed): the session cannot be
    continued, which is not the same as a store that cannot be reached."""


@dataclass
class StoredSession:
    state: bytes
    acked_seq: int
    meta: dict[str, Any]
    owner: str | None


class StateStore(ABC):
    """Async interface both stores implement (see the module docstring)."""

    kind: str

    def __init__(self, ttl: int = 3600, history: int = HISTORY_EVENTS) -> None:
        self.ttl = ttl
        self.history = history

    @abstractmethod
    async def create(self, session_id: str, state: bytes, meta: dict[str, Any], owner: str) -> None: ...

    @abstractmethod
    async def load(self, session_id: str) -> StoredSession | None: ...

    @abstractmethod
    async def claim(self, session_id: str, owner: str) -> bool:
        """Make ``owner`` the session's writer; False when the session does not exist."""

    @abstractmethod
    async def save(self, session_id: str, owner: str, state: bytes, acked_seq: int, events: list[str]) -> int:
        """Atomically store state + acked seq and append events; returns the (estimated) stored bytes.

        Raises :class:`OwnershipLost` when ``owner`` is no longer the session's writer."""

    @abstractmethod
    async def events_after(self, session_id: str, t: float | None) -> list[str]:
        """Stored overlay events (JSON) with media time > t (all when t is None), oldest first."""

    @abstractmethod
    async def delete(self, session_id: str) -> None: ...

    @abstractmethod
    async def ping(self) -> bool: ...

    async def close(self) -> None:  # noqa: B027 (optional: only stores holding connections override it)
        """Release connections; the default has none to release."""


def _stored_size(state: bytes, new_events: list[str], n_events: int) -> int:
    """Bytes a session occupies: its state plus its event history (estimated from the new events)."""
    mean_event = sum(len(e) for e in new_events) / len(new_events) if new_events else 0
    return len(state) + int(mean_event * n_events)


def _event_t(event_json: str) -> float:
    return float(json.loads(event_json)["t"])


class MemoryStateStore(StateStore):
    """The embedded store: a dict in this process (the default for `vibescope serve`)."""

    kind = "memory"

    def __init__(self, ttl: int = 3600, history: int = HISTORY_EVENTS) -> None:
        super().__init__(ttl, history)
        self._data: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()

    def _live(self, session_id: str) -> dict[str, Any] | None:
        rec = self._data.get(session_id)
        if rec is not None and rec["expires"] < time.monotonic():
            del self._data[session_id]
            return None
        return rec

    def _sweep(self) -> None:
        now = time.monotonic()
        for sid in [s for s, r in self._data.items() if r["expires"] < now]:
            del self._data[sid]

    async def create(self, session_id: str, state: bytes, meta: dict[str, Any], owner: str) -> None:
        async with self._lock:
            self._sweep()
            self._data[session_id] = {
                "state": state,
                "acked": 0,
                "meta": dict(meta),
                "owner": owner,
                "events": [],
                "expires": time.monotonic() + self.ttl,
            }

    async def load(self, session_id: str) -> StoredSession | None:
        rec = self._live(session_id)
        if rec is None:
            return None
        return StoredSession(rec["state"], rec["acked"], dict(rec["meta"]), rec["owner"])

    async def claim(self, session_id: str, owner: str) -> bool:
        async with self._lock:
            rec = self._live(session_id)
            if rec is None:
                return False
            rec["owner"] = owner
            return True

    async def save(self, session_id: str, owner: str, state: bytes, acked_seq: int, events: list[str]) -> int:
        async with self._lock:
            rec = self._live(session_id)
            if rec is None or rec["owner"] != owner:
                raise OwnershipLost(session_id)
            rec["state"], rec["acked"] = state, acked_seq
            rec["events"] = (rec["events"] + events)[-self.history :]
            rec["expires"] = time.monotonic() + self.ttl
            return _stored_size(state, events, len(rec["events"]))

    async def events_after(self, session_id: str, t: float | None) -> list[str]:
        rec = self._live(session_id)
        if rec is None:
            return []
        return [e for e in rec["events"] if t is None or _event_t(e) > t + 1e-9]

    async def delete(self, session_id: str) -> None:
        async with self._lock:
            self._data.pop(session_id, None)

    async def ping(self) -> bool:
        return True


# KEYS: state hash, events list. ARGV: owner, state, acked, ttl, history, events...
_SAVE_LUA = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return -1
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'acked', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if #ARGV > 5 then
  redis.call('RPUSH', KEYS[2], unpack(ARGV, 6))
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
end
redis.call('EXPIRE', KEYS[2], ARGV[4])
return redis.call('LLEN', KEYS[2])
"""

_CLAIM_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
return 1
"""


class RedisStateStore(StateStore):
    """State in Redis (``--redis URL``): any server process can resume any session.

    Keys: ``{prefix}session:{id}`` (hash: state, acked, meta, owner) and
    ``{prefix}events:{id}`` (list of event JSON). Both expire ``ttl`` s after the last write.
    """

    kind = "redis"

    def __init__(self, url: str, ttl: int = 3600, history: int = HISTORY_EVENTS, prefix: str = "vibescope:") -> None:
        super().__init__(ttl, history)
        self.url = url
        self.prefix = prefix
        self._redis = aioredis.from_url(url, decode_responses=False, socket_timeout=5, socket_connect_timeout=5)
        self._save = self._redis.register_script(_SAVE_LUA)
        self._claim = self._redis.register_script(_CLAIM_LUA)

    def _keys(self, session_id: str) -> tuple[str, str]:
        return f"{self.prefix}session:{session_id}", f"{self.prefix}events:{session_id}"

    async def create(self, session_id: str, state: bytes, meta: dict[str, Any], owner: str) -> None:
        hkey, ekey = self._keys(session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(hkey, ekey)
            pipe.hset(hkey, mapping={"state": state, "acked": 0, "meta": json.dumps(meta), "owner": owner})
            pipe.expire(hkey, self.ttl)
            await pipe.execute()

    async def load(self, session_id: str) -> StoredSession | None:
        hkey, _ = self._keys(session_id)
        rec = await self._redis.hgetall(hkey)
        if not rec:
            return None
        owner = rec.get(b"owner")
        try:
            meta = json.loads(rec[b"meta"])
            if not isinstance(meta, dict):
                raise ValueError("meta is not an object")
            return StoredSession(rec[b"state"], int(rec[b"acked"]), meta, owner.decode() if owner else None)
        except (KeyError, ValueError) as exc:
            raise CorruptSession(f"its stored record is malformed ({type(exc).__name__}: {str(exc)[:60]})") from None

    async def claim(self, session_id: str, owner: str) -> bool:
        hkey, _ = self._keys(session_id)
        return bool(await self._claim(keys=[hkey], args=[owner]))

    async def save(self, session_id: str, owner: str, state: bytes, acked_seq: int, events: list[str]) -> int:
        hkey, ekey = self._keys(session_id)
        n_events = await self._save(keys=[hkey, ekey], args=[owner, state, acked_seq, self.ttl, self.history, *events])
        if n_events == -1:
            raise OwnershipLost(session_id)
        return _stored_size(state, events, int(n_events))

    async def events_after(self, session_id: str, t: float | None) -> list[str]:
        _, ekey = self._keys(session_id)
        events = [e.decode() for e in await self._redis.lrange(ekey, 0, -1)]
        return [e for e in events if t is None or _event_t(e) > t + 1e-9]

    async def delete(self, session_id: str) -> None:
        await self._redis.delete(*self._keys(session_id))

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (aioredis.RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()


def make_store(redis_url: str | None, ttl: int = 3600, prefix: str = "vibescope:") -> StateStore:
    return RedisStateStore(redis_url, ttl=ttl, prefix=prefix) if redis_url else MemoryStateStore(ttl=ttl)

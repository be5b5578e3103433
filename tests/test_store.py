"""Both state stores, same behaviour: the Redis one against a real redis-server."""

from __future__ import annotations

import asyncio
import json

import pytest

from vibescope.server.store import MemoryStateStore, OwnershipLost, RedisStateStore


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis_url, redis_prefix):
    if request.param == "memory":
        s = MemoryStateStore(ttl=60, history=5)
    else:
        s = RedisStateStore(redis_url, ttl=60, history=5, prefix=redis_prefix)
    yield s
    await s.close()


def ev(t: float) -> str:
    return json.dumps({"type": "overlay", "t": t})


async def test_a_created_session_loads_back(store):
    await store.create("s1", b"state0", {"want": ["ost_audio"]}, owner="a")
    got = await store.load("s1")
    assert (got.state, got.acked_seq, got.meta, got.owner) == (b"state0", 0, {"want": ["ost_audio"]}, "a")
    assert await store.load("nope") is None


async def test_save_stores_state_acked_seq_and_events_atomically(store):
    await store.create("s1", b"s0", {}, owner="a")
    size = await store.save("s1", "a", b"s1-state", 7, [ev(0.1), ev(0.2)])
    got = await store.load("s1")
    assert (got.state, got.acked_seq) == (b"s1-state", 7)
    assert [json.loads(e)["t"] for e in await store.events_after("s1", None)] == [0.1, 0.2]
    # the bytes the session occupies: its state plus the two events of its history
    assert size == len(b"s1-state") + len(ev(0.1)) + len(ev(0.2))
    # the next save counts the whole history, not only the events it appends
    assert await store.save("s1", "a", b"s2", 8, [ev(0.3)]) == len(b"s2") + 3 * len(ev(0.3))


async def test_event_history_is_bounded_and_replays_after_a_media_time(store):
    await store.create("s1", b"", {}, owner="a")
    sizes = []
    for i in range(8):
        sizes.append(await store.save("s1", "a", b"x", i + 1, [ev(round(0.1 * (i + 1), 1))]))
    # what is stored grows with the history until it is full, then stays at state + 5 events
    assert sizes == [1 + n * len(ev(0.1)) for n in (1, 2, 3, 4, 5, 5, 5, 5)]
    events = [json.loads(e)["t"] for e in await store.events_after("s1", None)]
    assert events == [0.4, 0.5, 0.6, 0.7, 0.8]  # history = 5
    assert [json.loads(e)["t"] for e in await store.events_after("s1", 0.6)] == [0.7, 0.8]


async def test_a_writer_that_lost_ownership_cannot_overwrite(store):
    await store.create("s1", b"old", {}, owner="a")
    assert await store.claim("s1", "b")
    with pytest.raises(OwnershipLost):
        await store.save("s1", "a", b"stale", 99, [ev(9.9)])
    got = await store.load("s1")
    assert (got.state, got.acked_seq, got.owner) == (b"old", 0, "b")
    assert await store.events_after("s1", None) == []
    await store.save("s1", "b", b"new", 3, [])
    assert (await store.load("s1")).state == b"new"


async def test_claiming_an_unknown_session_fails(store):
    assert not await store.claim("ghost", "a")
    with pytest.raises(OwnershipLost):
        await store.save("ghost", "a", b"x", 1, [])


async def test_sessions_expire_after_their_ttl(store):
    store.ttl = 1
    await store.create("s1", b"x", {}, owner="a")
    await store.save("s1", "a", b"y", 1, [ev(0.1)])
    await asyncio.sleep(2.2)
    assert await store.load("s1") is None
    assert await store.events_after("s1", None) == []


async def test_delete_and_ping(store):
    await store.create("s1", b"x", {}, owner="a")
    await store.delete("s1")
    assert await store.load("s1") is None
    assert await store.ping()


async def test_redis_keys_carry_the_prefix_and_a_ttl(redis_url, redis_prefix):
    import redis.asyncio as aioredis

    store = RedisStateStore(redis_url, ttl=120, prefix=redis_prefix)
    await store.create("s1", b"x", {}, owner="a")
    await store.save("s1", "a", b"y", 1, [ev(0.1)])
    r = aioredis.from_url(redis_url)
    keys = sorted(k.decode() for k in await r.keys(redis_prefix + "*"))
    assert keys == [f"{redis_prefix}events:s1", f"{redis_prefix}session:s1"]
    assert 0 < await r.ttl(keys[0]) <= 120 and 0 < await r.ttl(keys[1]) <= 120
    await r.aclose()
    await store.close()

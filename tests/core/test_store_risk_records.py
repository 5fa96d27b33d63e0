"""The store's kill records, kill lease and day P&L baselines (fakeredis and the real server)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tradetree.core.errors import StoreUnavailable
from tradetree.core.store import PNL_DAY_TTL_SECS, RedisStore


@pytest.fixture(params=["fake", "real"])
def client(request):
    return request.getfixturevalue("fake_redis" if request.param == "fake" else "real_redis")


@pytest.fixture
def store(client, namespace) -> RedisStore:
    return RedisStore(client, namespace)


async def test_kill_progress_is_saved_indexed_and_loaded(store, client, namespace):
    assert await store.kill_progress("global") is None and await store.kill_scopes() == []
    await store.save_kill_progress("global", '{"n": 1}', state="RUNNING", reason="drift", updated_ms=5)
    await store.save_kill_progress("strategy:A", '{"n": 2}', state="DONE", reason="x", updated_ms=6)
    await store.save_kill_progress("global", '{"n": 3}', state="STALLED", reason="drift", updated_ms=7)

    assert await store.kill_progress("global") == '{"n": 3}'
    assert await store.kill_scopes() == ["global", "strategy:A"]
    raw = await client.hgetall(f"{namespace}:ctl:kill:global")
    assert raw == {b"json": b'{"n": 3}', b"state": b"STALLED", b"reason": b"drift", b"updated_ms": b"7"}


async def test_kill_steps_come_back_oldest_first_and_the_latest_count(store):
    for n in range(5):
        await store.append_kill_step("global", f'{{"n": {n}}}')
    await store.append_kill_step("strategy:A", '{"other": 1}')
    assert await store.kill_steps("global") == [f'{{"n": {n}}}' for n in range(5)]
    assert await store.kill_steps("global", 2) == ['{"n": 3}', '{"n": 4}']
    assert await store.kill_steps("strategy:B") == []


async def test_the_lease_excludes_others_until_it_expires_and_only_its_holder_releases_it(store, client, namespace):
    assert await store.acquire_kill_lease("ks-1", 1_000, 30_000) is None
    assert await store.acquire_kill_lease("ks-2", 2_000, 30_000) == "ks-1"
    assert await store.acquire_kill_lease("ks-1", 20_000, 30_000) is None, "the holder renews"
    assert await store.acquire_kill_lease("ks-2", 49_999, 30_000) == "ks-1", "renewed until 50,000"
    assert await store.acquire_kill_lease("ks-2", 50_000, 30_000) is None, "taken over once expired"

    await store.release_kill_lease("ks-1")  # no longer its lease: left alone
    assert await client.hget(f"{namespace}:ctl:kill_lease", "owner") == b"ks-2"
    await store.release_kill_lease("ks-2")
    assert await client.exists(f"{namespace}:ctl:kill_lease") == 0
    assert await store.acquire_kill_lease("ks-1", 50_001, 30_000) is None


async def test_day_baselines_are_set_once_per_day_and_expire(store, client, namespace):
    first = await store.day_pnl_baselines("20220108", {"A:okx:X": D("1.5"), "B:okx:X": D(-2)})
    assert first == {"A:okx:X": D("1.5"), "B:okx:X": D(-2)}
    later = await store.day_pnl_baselines("20220108", {"A:okx:X": D(9), "C:okx:X": D(0)})
    assert later == {"A:okx:X": D("1.5"), "B:okx:X": D(-2), "C:okx:X": D(0)}, "the first observer's stays"
    assert await store.day_pnl_baselines("20220109", {}) == {}, "a new day starts empty"
    assert 0 < await client.ttl(f"{namespace}:ctl:risk_pnl_day:20220108") <= PNL_DAY_TTL_SECS


async def test_kill_records_with_redis_down_raise_store_unavailable(namespace):
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    store = RedisStore(client, namespace)
    try:
        for call in (store.kill_scopes(), store.kill_progress("global"), store.acquire_kill_lease("a", 1, 1),
                     store.append_kill_step("global", "{}"), store.day_pnl_baselines("20220108", {"a": D(1)})):
            with pytest.raises(StoreUnavailable):
                await call
    finally:
        await client.aclose()

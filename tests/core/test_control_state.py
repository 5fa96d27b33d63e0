import pytest

from tradetree.core.control_state import ControlState
from tradetree.core.errors import StoreUnavailable


@pytest.fixture(params=["real", "fake"])
def client(request, real_redis, fake_redis):
    return real_redis if request.param == "real" else fake_redis


async def test_verified_never_moves_backwards(client, namespace):
    cs = ControlState(client, namespace)
    assert await cs.verified_at("okx") is None
    await cs.mark_verified("okx", 2000)
    await cs.mark_verified("okx", 1000)
    assert await cs.verified_at("okx") == 2000


async def test_discrepancies_breakers_pause_and_snapshot(client, namespace):
    cs = ControlState(client, namespace)
    assert await cs.open_discrepancy("okx", "order:1", "status filled 2, applied 1", 10)
    assert not await cs.open_discrepancy("okx", "order:1", "again", 11)  # keeps the first
    assert await cs.set_breaker("strategy:A:rejections", "5 in a row", 12)
    await cs.pause_venue("okx", "fill gap recurs", 13)
    snap = await cs.snapshot("okx")
    assert snap.discrepancies["order:1"]["since_ms"] == 10
    assert snap.breakers["strategy:A:rejections"]["reason"] == "5 in a row"
    assert snap.venue_pause == "fill gap recurs"
    assert await cs.close_discrepancy("okx", "order:1")
    await cs.resume_venue("okx")
    await cs.clear_breaker("strategy:A:rejections")
    snap = await cs.snapshot("okx")
    assert snap.discrepancies == {} and snap.venue_pause is None and snap.breakers == {}


async def test_cursor_round_trip(client, namespace):
    cs = ControlState(client, namespace)
    assert await cs.get_cursor("okx", "BTC-USDT") is None
    await cs.set_cursor("okx", "BTC-USDT", {"ts_ms": 5, "trade_id": "9"})
    assert await cs.get_cursor("okx", "BTC-USDT") == {"ts_ms": 5, "trade_id": "9"}


async def test_dead_redis_raises_store_unavailable(namespace):
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    with pytest.raises(StoreUnavailable):
        await ControlState(client, namespace).snapshot("okx")
    await client.aclose()

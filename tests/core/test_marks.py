"""Marks in Redis (fakeredis) and the pure freshness split."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tradetree.core.errors import StoreUnavailable
from tradetree.core.marks import Mark, MarkBook, fresher, usable_marks
from tradetree.core.redis_keys import RedisKeys

BTC, ETH = ("okx", "BTC-USDT-SWAP"), ("okx", "ETH-USDT-SWAP")


def _mark(px: str, recv_ms: int, ts_ms: int = 1) -> Mark:
    return Mark(price=D(px), ts_ms=ts_ms, recv_ms=recv_ms)


async def test_written_marks_read_back_by_venue_and_instrument(fake_redis):
    book = MarkBook(fake_redis, "t")
    await book.write("okx", {"BTC-USDT-SWAP": _mark("50000.5", 10, ts_ms=7)})
    await book.write("binance", {"BTC-USDT-SWAP": _mark("1", 10)})
    await book.write("okx", {})  # nothing to write: no command
    got = await book.read([BTC, ETH, ("binance", "BTC-USDT-SWAP"), ("nowhere", "X")])
    assert got == {BTC: _mark("50000.5", 10, ts_ms=7), ("binance", "BTC-USDT-SWAP"): _mark("1", 10)}
    assert await book.read([]) == {}
    assert await fake_redis.hkeys(RedisKeys("t").marks("okx")) == [b"BTC-USDT-SWAP"]


async def test_garbled_entry_reads_as_unknown(fake_redis):
    await fake_redis.hset(RedisKeys("t").marks("okx"), mapping={"BTC-USDT-SWAP": "{not json",
                                                                 "ETH-USDT-SWAP": '{"px": "x", "ts_ms": 1}'})
    assert await MarkBook(fake_redis, "t").read([BTC, ETH]) == {}


async def test_redis_down_raises_store_unavailable(fake_redis, monkeypatch):
    book = MarkBook(fake_redis, "t")

    async def down(*args, **kwargs):
        raise RedisConnectionError("refused")

    monkeypatch.setattr(fake_redis, "hset", down)
    with pytest.raises(StoreUnavailable):
        await book.write("okx", {"BTC-USDT-SWAP": _mark("1", 1)})


def test_usable_marks_refuses_old_and_missing_ones_with_the_age():
    marks = {BTC: _mark("100", recv_ms=70_000), ETH: _mark("10", recv_ms=69_999)}
    prices, why = usable_marks(marks, [BTC, ETH, ("okx", "SOL")], now_ms=100_000, max_age_ms=30_000)
    assert prices == {BTC: D(100)}  # exactly 30 s old is still usable
    assert why == {ETH: "last mark 30.0 s old, max 30 s", ("okx", "SOL"): "no mark recorded"}
    # a mark stamped ahead of our clock (skew between processes) is fresh, not negative-aged garbage
    assert usable_marks({BTC: _mark("1", recv_ms=200)}, [BTC], now_ms=100, max_age_ms=1) == ({BTC: D(1)}, {})


def test_fresher_takes_the_mark_received_last():
    old, new = _mark("1", 10), _mark("2", 20)
    assert fresher(old, new) is new and fresher(new, old) is new
    assert fresher(None, old) is old and fresher(old, None) is old and fresher(None, None) is None

"""collect_snapshot / read_book over a store whose positions come from the real apply_fill script."""

from __future__ import annotations

from decimal import Decimal as D

import fakeredis
import pytest
import redis.asyncio as aioredis

from tests.core.test_store import SWAP, make_fill, make_order
from tradetree.core import Mark, MarkBook, RedisStore, Side, collect_snapshot, read_book, valued_positions
from tradetree.core.types import Instrument, InstrumentKind
from tradetree.risk import RiskConfig

NOW = 1_700_000_100_000
ETH = Instrument(venue="okx", inst_id="ETH-USDT-SWAP", kind=InstrumentKind.SWAP, base="ETH", quote="USDT",
                 settle="USDT", contract_value=D("0.1"), tick_size=D("0.01"), lot_size=D("1"), min_size=D("1"))


@pytest.fixture(params=[pytest.param("real", marks=pytest.mark.integration), "fake"])
async def store(request, namespace):
    if request.param == "real":
        client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    else:
        client = fakeredis.FakeAsyncRedis()
    s = RedisStore(client, namespace)
    yield s
    await s.reset_namespace()
    await client.aclose()


async def _book(store: RedisStore) -> None:
    """alpha: long 10 BTC swaps at 100, 4 sold at 150 (realized 4 * 0.01 * 50 = 2), fee 0.5;
    beta: short 3 ETH swaps at 2000, flat-free; gamma: bought and sold 1 BTC swap (flat)."""
    await store.record_order(make_order("a1", inst=SWAP, size="10"))
    await store.record_order(make_order("a2", side=Side.SELL, inst=SWAP, size="4"))
    await store.record_order(make_order("b1", strategy_id="beta", side=Side.SELL, inst=ETH, size="3"))
    await store.record_order(make_order("g1", strategy_id="gamma", inst=SWAP, size="1"))
    await store.record_order(make_order("g2", strategy_id="gamma", side=Side.SELL, inst=SWAP, size="1"))
    await store.apply_fill(make_fill("1", Side.BUY, "10", "100", 10, "a1", SWAP), SWAP)
    await store.apply_fill(make_fill("2", Side.SELL, "4", "150", 20, "a2", SWAP, fee=D("0.5"), fee_ccy="USDT"),
                           SWAP)
    await store.apply_fill(make_fill("3", Side.SELL, "3", "2000", 30, "b1", ETH), ETH)
    await store.apply_fill(make_fill("4", Side.BUY, "1", "100", 40, "g1", SWAP), SWAP)
    await store.apply_fill(make_fill("5", Side.SELL, "1", "101", 50, "g2", SWAP), SWAP)


async def test_the_snapshot_values_each_position_with_the_contract_value_its_fills_used(store):
    await _book(store)
    await MarkBook(store.client, store.namespace).write("okx", {
        "BTC-USDT-SWAP": Mark(price=D("120"), ts_ms=NOW - 2_000, recv_ms=NOW - 2_000)})
    snap = await collect_snapshot(store, {"RiskMonitor": {"state": "running"}}, now_ms=NOW)
    rows = {r["strategy_id"]: r for r in snap["positions"]}
    # (120 - 100) * 6 * 0.01 = 1.2; 2 + 1.2 - 0.5 = 2.7; 6 * 120 * 0.01 = 7.2
    a = rows["alpha"]
    assert (D(a["unrealized_pnl"]), D(a["total_pnl"]), D(a["notional"])) == (D("1.2"), D("2.7"), D("7.2"))
    assert (D(a["mark_price"]), a["mark_age_ms"], D(a["contract_value"])) == (D(120), 2_000, D("0.01"))
    assert a["qty"] == "6" and a["fill_count"] == 2  # the store's keys are all still there
    # no ETH mark: unknown, and beta's totals say so
    assert rows["beta"]["unrealized_pnl"] is None and "no mark recorded" in rows["beta"]["unvalued_reason"]
    assert snap["strategy_pnl"]["beta"]["total_pnl"] is None
    assert snap["strategy_pnl"]["beta"]["unvalued"] == ["okx:ETH-USDT-SWAP"]
    # flat: valued without a mark question (1 * 0.01 * 1 realized)
    assert D(snap["strategy_pnl"]["gamma"]["total_pnl"]) == D("0.01")
    assert D(snap["strategy_pnl"]["alpha"]["total_pnl"]) == D("2.7")
    assert snap["marks"] == {"okx": {"BTC-USDT-SWAP": {"price": "120", "ts_ms": NOW - 2_000,
                                                       "recv_ms": NOW - 2_000}}}
    assert snap["actors"] == {"RiskMonitor": {"state": "running"}} and snap["kill_flag"] is None
    assert snap["fills_by_layer"]["ws"]["applied"] == 5


async def test_configured_rules_judge_age_and_contract_values_as_the_limits_do(store):
    await _book(store)
    await MarkBook(store.client, store.namespace).write("okx", {
        "BTC-USDT-SWAP": Mark(price=D("120"), ts_ms=NOW - 8_000, recv_ms=NOW - 8_000),
        "ETH-USDT-SWAP": Mark(price=D("1990"), ts_ms=NOW, recv_ms=NOW)})
    strict = RiskConfig(max_mark_age_secs=5, contract_values={"okx:ETH-USDT-SWAP": D("0.1")})
    rows, sums, marks = await read_book(store, strict, now_ms=NOW)
    by = {r.strategy_id: r for r in rows}
    assert by["alpha"].mark_price is None and by["alpha"].mark_age_ms == 8_000  # stale under a 5 s bound
    assert by["beta"].unrealized_pnl == D(3)  # (1990 - 2000) * -3 * 0.1
    assert sums["beta"].complete and not sums["alpha"].complete and len(marks) == 2
    # a configured value that disagrees with the one the fills were applied with is not used
    wrong = RiskConfig(contract_values={"okx:ETH-USDT-SWAP": D(1)})
    (beta,) = [r for r in await valued_positions(store, wrong, now_ms=NOW) if r["strategy_id"] == "beta"]
    assert beta["total_pnl"] is None and "applied with 0.1" in beta["unvalued_reason"]


async def test_an_empty_store_gives_an_empty_book(store):
    snap = await collect_snapshot(store)
    assert snap["positions"] == [] and snap["strategy_pnl"] == {} and snap["marks"] == {}

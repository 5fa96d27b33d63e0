"""RedisStore against real Redis and fakeredis: the same assertions on both."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from decimal import Decimal

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tradetree.core import store as store_module
from tradetree.core.clock import ManualClock
from tradetree.core.errors import InvalidOrderTransition, StoreError, StoreUnavailable
from tradetree.core.store import MAX_EXACT_ATOMS, UNATTRIBUTED_STRATEGY, RedisStore, redact_url
from tradetree.core.types import (
    Fill,
    FillLayer,
    Instrument,
    InstrumentKind,
    Order,
    OrderState,
    OrderType,
    Side,
    position_id,
)

D = Decimal

SPOT = Instrument(
    venue="okx",
    inst_id="BTC-USDT",
    kind=InstrumentKind.SPOT,
    base="BTC",
    quote="USDT",
    tick_size=D("0.1"),
    lot_size=D("0.00000001"),
    min_size=D("0.00001"),
)
SWAP = Instrument(
    venue="okx",
    inst_id="BTC-USDT-SWAP",
    kind=InstrumentKind.SWAP,
    base="BTC",
    quote="USDT",
    settle="USDT",
    contract_value=D("0.01"),
    tick_size=D("0.1"),
    lot_size=D("0.01"),
    min_size=D("0.01"),
)


@pytest.fixture(params=[pytest.param("real", marks=pytest.mark.integration), "fake"])
async def client(request, namespace):
    """An async client on real Redis or on fakeredis (the namespace is wiped after)."""
    if request.param == "real":
        c = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    else:
        c = fakeredis.FakeAsyncRedis()
    yield c
    await RedisStore(c, namespace).reset_namespace()
    await c.aclose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ms=1_700_000_000_000)


@pytest.fixture
def store(client, namespace, clock) -> RedisStore:
    return RedisStore(client, namespace, clock=clock)


def make_order(
    coid: str = "c1",
    strategy_id: str = "alpha",
    side: Side = Side.BUY,
    size: str = "1",
    inst: Instrument = SPOT,
    ms: int = 1_000,
    **changes,
) -> Order:
    return Order(
        client_order_id=coid,
        strategy_id=strategy_id,
        venue=inst.venue,
        inst_id=inst.inst_id,
        side=side,
        type=OrderType.MARKET,
        size=D(size),
        created_ms=ms,
        updated_ms=ms,
        **changes,
    )


def make_fill(
    trade_id: str,
    side: Side,
    size: str,
    price: str,
    ts_ms: int,
    coid: str | None = "c1",
    inst: Instrument = SPOT,
    layer: FillLayer = FillLayer.WS,
    **changes,
) -> Fill:
    return Fill(
        venue=inst.venue,
        inst_id=inst.inst_id,
        trade_id=trade_id,
        client_order_id=coid,
        side=side,
        size=D(size),
        price=D(price),
        ts_ms=ts_ms,
        layer=layer,
        **changes,
    )


# -- position accounting --------------------------------------------------------


async def test_adding_averages_the_entry_price(store):
    await store.record_order(make_order(size="4"))
    await store.apply_fill(make_fill("1", Side.BUY, "1", "100", 10), SPOT)
    result = await store.apply_fill(make_fill("2", Side.BUY, "3", "120", 20), SPOT)
    p = result.position
    assert result.applied and result.strategy_id == "alpha"
    assert (p.qty, p.avg_price, p.realized_pnl, p.fill_count, p.updated_ms) == (
        D(4), D(115), D(0), 2, 20
    )
    assert await store.position("alpha", "okx", "BTC-USDT") == p


async def test_reducing_a_long_realizes_pnl_times_contract_value(store):
    await store.record_order(make_order(inst=SWAP, size="10"))
    await store.record_order(make_order("c2", side=Side.SELL, inst=SWAP, size="4"))
    await store.apply_fill(make_fill("1", Side.BUY, "10", "100", 10, inst=SWAP), SWAP)
    result = await store.apply_fill(make_fill("2", Side.SELL, "4", "150", 20, "c2", SWAP), SWAP)
    p = result.position
    assert (p.qty, p.avg_price, p.realized_pnl) == (D(6), D(100), D(2))  # 4 * 0.01 * 50
    assert p.side == "long"


async def test_reducing_a_short_realizes_the_mirror_pnl(store):
    await store.apply_fill(make_fill("1", Side.SELL, "2", "100", 10), SPOT)
    result = await store.apply_fill(make_fill("2", Side.BUY, "0.5", "90", 20), SPOT)
    p = result.position
    assert (p.qty, p.avg_price, p.realized_pnl) == (D("-1.5"), D(100), D(5))


async def test_a_flip_closes_the_old_side_and_opens_the_rest_at_the_fill_price(store):
    await store.apply_fill(make_fill("1", Side.BUY, "2", "100", 10), SPOT)
    result = await store.apply_fill(make_fill("2", Side.SELL, "5", "110", 20), SPOT)
    p = result.position
    assert (p.qty, p.avg_price, p.realized_pnl, p.side) == (D(-3), D(110), D(20), "short")
    result = await store.apply_fill(make_fill("3", Side.BUY, "3", "100", 30), SPOT)
    p = result.position
    assert (p.qty, p.avg_price, p.realized_pnl, p.side) == (D(0), D(0), D(50), "flat")


async def test_quantities_stay_exact_where_doubles_would_drift(store):
    for i in range(10):
        await store.apply_fill(make_fill(str(i), Side.BUY, "0.1", "100", i), SPOT)
    result = await store.apply_fill(make_fill("x", Side.SELL, "0.3", "100", 99), SPOT)
    assert result.position.qty == D("0.7")
    # Order c1 was never recorded, yet its fills count against its client order id.
    assert result.order_applied_size == D("1.3")
    assert await store.applied_size("c1") == D("1.3")


async def test_quote_fees_add_up_and_rebates_subtract(store):
    await store.apply_fill(
        make_fill("1", Side.BUY, "1", "100", 10, fee=D("0.5"), fee_ccy="USDT"), SPOT
    )
    result = await store.apply_fill(
        make_fill("2", Side.SELL, "1", "100", 20, fee=D("-0.25"), fee_ccy="USDT"), SPOT
    )
    assert result.position.fees == D("0.25")
    assert result.position.qty == 0


async def test_swap_fees_in_settle_currency_count_as_quote_fees(store):
    result = await store.apply_fill(
        make_fill("1", Side.BUY, "1", "100", 10, inst=SWAP, fee=D("0.02"), fee_ccy="USDT"), SWAP
    )
    assert (result.position.fees, result.position.qty) == (D("0.02"), D(1))


async def test_a_base_currency_fee_reduces_the_quantity_and_raises_the_cost_basis(store):
    result = await store.apply_fill(
        make_fill("1", Side.BUY, "1", "100", 10, fee=D("0.001"), fee_ccy="BTC"), SPOT
    )
    p = result.position
    assert p.qty == D("0.999")
    assert p.fees == 0
    assert p.avg_price == D(repr(100 * 100_000_000 / 99_900_000))
    # Selling what is left at the buy price loses exactly the fee's value.
    result = await store.apply_fill(make_fill("2", Side.SELL, "0.999", "100", 20), SPOT)
    assert result.position.qty == 0
    assert abs(result.position.realized_pnl - D("-0.1")) < D("1e-9")


async def test_a_fee_in_a_third_currency_is_refused_and_nothing_is_written(store):
    fill = make_fill("1", Side.BUY, "1", "100", 10, fee=D("0.1"), fee_ccy="OKB")
    with pytest.raises(StoreError, match="fee currency 'OKB'"):
        await store.apply_fill(fill, SPOT)
    assert await store.audit_entries() == []
    assert (await store.position("alpha", "okx", "BTC-USDT")).fill_count == 0


async def test_a_size_that_is_not_whole_atoms_is_refused(store):
    with pytest.raises(StoreError, match="whole number of atoms"):
        await store.apply_fill(make_fill("1", Side.BUY, "0.000000001", "100", 10), SPOT)
    assert await store.positions() == []
    assert (await store.fill_layer_counts())["ws"] == {"delivered": 0, "applied": 0}


async def test_a_position_beyond_the_exact_range_is_refused_without_partial_writes(store, client):
    big = str(D(MAX_EXACT_ATOMS // 2 + 1) / 100_000_000)
    await store.apply_fill(make_fill("1", Side.BUY, big, "1", 10), SPOT)
    with pytest.raises(StoreError, match="exact range"):
        await store.apply_fill(make_fill("2", Side.BUY, big, "1", 20), SPOT)
    keys = store.keys
    pid = position_id(UNATTRIBUTED_STRATEGY, "okx", "BTC-USDT")
    assert await client.zcard(keys.position_fills(pid)) == 1
    assert len(await store.audit_entries()) == 1
    # The refused fill was not marked as seen: delivering it later is not a duplicate.
    assert await client.exists(keys.fill(keys.fill_id("okx", "BTC-USDT", "2"))) == 0
    p = await store.position(UNATTRIBUTED_STRATEGY, "okx", "BTC-USDT")
    assert (p.qty, p.fill_count) == (D(big), 1)


async def test_a_fill_of_another_instrument_is_a_caller_error(store):
    with pytest.raises(ValueError, match="not of instrument"):
        await store.apply_fill(make_fill("1", Side.BUY, "1", "100", 10, inst=SWAP), SPOT)


async def test_out_of_order_delivery_gives_the_in_order_state(store, client, namespace):
    fills = [
        make_fill("1", Side.BUY, "2", "100.1", 10),
        make_fill("2", Side.BUY, "1", "103.7", 20),
        make_fill("3", Side.SELL, "4", "99.3", 30),
        make_fill("4", Side.BUY, "0.5", "101.9", 40, fee=D("0.0005"), fee_ccy="BTC"),
        make_fill("5", Side.SELL, "1", "102.2", 40),  # same ts: ordered by trade id
    ]
    for f in fills:
        await store.apply_fill(f, SPOT)
    in_order = await store.position(UNATTRIBUTED_STRATEGY, "okx", "BTC-USDT")
    other = RedisStore(client, namespace + "-rev")
    try:
        for f in reversed(fills):
            await other.apply_fill(f, SPOT)
        assert await other.position(UNATTRIBUTED_STRATEGY, "okx", "BTC-USDT") == in_order
    finally:
        await other.reset_namespace()
    assert in_order.qty == D("-1.5005")
    assert in_order.fill_count == 5 and in_order.updated_ms == 40


# -- orders, attribution and the audit trail ---------------------------------------


async def test_the_order_applied_size_sums_its_fills(store):
    await store.record_order(make_order(size="2"))
    await store.apply_fill(make_fill("2", Side.BUY, "0.5", "101", 20, layer=FillLayer.POLL), SPOT)
    result = await store.apply_fill(make_fill("1", Side.BUY, "1", "100", 10), SPOT)
    assert result.order_applied_size == D("1.5")
    assert await store.applied_size("c1") == D("1.5")
    assert await store.applied_size("nope") == 0
    fills = await store.fills_for_order("c1")
    assert [(f.trade_id, f.layer) for f in fills] == [("1", FillLayer.WS), ("2", FillLayer.POLL)]
    assert await store.fills_for_order("nope") == []


async def test_open_orders_with_applied_pairs_each_tracked_order_with_its_applied_size(store):
    await store.record_order(make_order("a", size="2"))
    await store.record_order(make_order("b", size="1"))
    await store.apply_fill(make_fill("1", Side.BUY, "0.5", "100", 10, coid="a"), SPOT)
    await store.apply_fill(make_fill("2", Side.BUY, "0.25", "100", 11, coid="a"), SPOT)
    pairs = await store.open_orders_with_applied("okx")
    assert [(o.client_order_id, applied) for o, applied in pairs] == [("a", D("0.75")), ("b", D(0))]
    assert [o for o, _ in pairs] == await store.open_orders(venue="okx")
    assert await store.open_orders_with_applied("okx", strategy_id="nope") == []
    assert await store.open_orders_with_applied("binance") == []
    await store.record_order(make_order("z", strategy_id="beta", inst=SPOT.model_copy(update={"venue": "binance"})))
    assert [o.client_order_id for o, _ in await store.open_orders_with_applied()] == ["a", "b", "z"]
    assert [o.client_order_id for o, _ in await store.open_orders_with_applied(strategy_id="beta")] == ["z"]
    await store.untrack_order("a")
    assert [o.client_order_id for o, _ in await store.open_orders_with_applied("okx")] == ["b"]


async def test_a_fill_of_an_unknown_order_is_kept_apart_but_applied_and_audited(store):
    await store.record_order(make_order("known", size="1"))
    await store.apply_fill(make_fill("1", Side.BUY, "1", "100", 10, coid="known"), SPOT)
    result = await store.apply_fill(make_fill("2", Side.SELL, "3", "90", 20, coid="ghost"), SPOT)
    assert result.applied and result.strategy_id == UNATTRIBUTED_STRATEGY
    assert (await store.position("alpha", "okx", "BTC-USDT")).qty == D(1)
    assert (await store.position(UNATTRIBUTED_STRATEGY, "okx", "BTC-USDT")).qty == D(-3)
    audit = await store.audit_entries()
    assert [(e.fill.trade_id, e.strategy_id) for e in audit] == [
        ("1", "alpha"),
        ("2", UNATTRIBUTED_STRATEGY),
    ]
    # Recording the order later does not move fills already applied.
    await store.record_order(make_order("ghost", "beta", Side.SELL, "3"))
    assert (await store.position(UNATTRIBUTED_STRATEGY, "okx", "BTC-USDT")).qty == D(-3)
    assert await store.applied_size("ghost") == D(3)


async def test_a_fill_with_only_a_venue_order_id_is_attributed_through_the_index(store):
    order = make_order(size="1")
    await store.record_order(order)
    await store.update_order(order.transition(OrderState.LIVE, now_ms=2_000, venue_order_id="V9"))
    assert (await store.find_order_by_venue_id("okx", "V9")).client_order_id == "c1"
    assert await store.find_order_by_venue_id("okx", "V0") is None
    fill = make_fill("1", Side.BUY, "1", "100", 10, coid=None, venue_order_id="V9")
    result = await store.apply_fill(fill, SPOT)
    assert result.strategy_id == "alpha" and result.order_applied_size == D(1)
    assert (await store.audit_entries())[0].attributed_order_id == "c1"


async def test_a_duplicate_counts_as_delivered_but_applies_once(store):
    await store.record_order(make_order(size="1"))
    fill = make_fill("7", Side.BUY, "1", "100", 10)
    first = await store.apply_fill(fill, SPOT)
    again = [
        await store.apply_fill(fill.model_copy(update={"layer": layer}), SPOT)
        for layer in (FillLayer.POLL, FillLayer.HEALTH, FillLayer.WS)
    ]
    assert first.applied and not any(r.applied for r in again)
    for r in again:
        assert r.position == first.position and r.strategy_id == "alpha"
        assert r.order_applied_size == D(1)
    counts = await store.fill_layer_counts()
    assert counts == {
        "ws": {"delivered": 2, "applied": 1},
        "poll": {"delivered": 1, "applied": 0},
        "health": {"delivered": 1, "applied": 0},
    }
    assert await store.fill_layer_counts("okx") == counts
    assert (await store.fill_layer_counts("binance"))["ws"] == {"delivered": 0, "applied": 0}
    audit = await store.audit_entries()
    assert [(e.fill.trade_id, e.fill.layer) for e in audit] == [("7", FillLayer.WS)]


async def test_a_duplicate_with_different_content_is_logged_and_ignored(store, caplog):
    await store.apply_fill(make_fill("7", Side.BUY, "1", "100", 10), SPOT)
    with caplog.at_level(logging.ERROR, logger="tradetree.core.store"):
        result = await store.apply_fill(make_fill("7", Side.BUY, "2", "100", 10), SPOT)
    assert not result.applied and result.position.qty == D(1)
    assert "differs from the applied record" in caplog.text


async def test_attribution_is_resolved_inside_the_script_call(store, monkeypatch):
    # The order lands after the client built its call and before the script runs: the
    # script, not an earlier client read, decides the attribution.
    real_script = store._apply_fill
    calls = []

    async def record_then_apply(keys, args):
        if not calls:
            await store.record_order(make_order(size="1"))
        calls.append(args)
        return await real_script(keys=keys, args=args)

    monkeypatch.setattr(store, "_apply_fill", record_then_apply)
    result = await store.apply_fill(make_fill("1", Side.BUY, "1", "100", 10), SPOT)
    assert len(calls) == 1  # one round trip, no resolve-and-retry
    assert result.strategy_id == "alpha"
    assert (await store.position(UNATTRIBUTED_STRATEGY, "okx", "BTC-USDT")).fill_count == 0
    assert (await store.fill_layer_counts())["ws"] == {"delivered": 1, "applied": 1}


class _ReplyLostOnce:
    """A registered script whose first reply is lost, so the client sends the call again."""

    def __init__(self, script) -> None:
        self._script = script
        self.calls = 0

    async def __call__(self, keys, args):
        self.calls += 1
        if self.calls == 1:
            await self._script(keys=keys, args=args)  # executed; the reply never arrives
        return await self._script(keys=keys, args=args)


async def test_a_retried_call_is_neither_a_duplicate_nor_a_new_delivery(store, monkeypatch):
    monkeypatch.setattr(store, "_apply_fill", _ReplyLostOnce(store._apply_fill))
    monkeypatch.setattr(store, "_record_order", _ReplyLostOnce(store._record_order))
    assert await store.record_order(make_order(size="1")) is True
    assert await store.record_order(make_order(size="1")) is False  # another call
    result = await store.apply_fill(make_fill("1", Side.BUY, "1", "100", 10), SPOT)
    assert result.applied and result.position.qty == D(1) and result.order_applied_size == D(1)
    assert (await store.fill_layer_counts())["ws"] == {"delivered": 1, "applied": 1}
    again = await store.apply_fill(make_fill("1", Side.BUY, "1", "100", 10), SPOT)
    assert not again.applied
    assert (await store.fill_layer_counts())["ws"] == {"delivered": 2, "applied": 1}


# -- pages of fills (the poller's path) ------------------------------------------------


class _CountingScript:
    def __init__(self, script) -> None:
        self._script = script
        self.pages: list[int] = []

    async def __call__(self, keys, args):
        self.pages.append(len(json.loads(args[-1])))
        return await self._script(keys=keys, args=args)


async def test_a_page_answers_each_fill_in_input_order_in_one_call(store, client, namespace, monkeypatch):
    await store.record_order(make_order(size="4"))
    counting = _CountingScript(store._apply_fill)
    monkeypatch.setattr(store, "_apply_fill", counting)
    page = [  # newest first, as venues page their fill history
        make_fill("3", Side.SELL, "1", "130", 30),
        make_fill("2", Side.BUY, "3", "120", 20, fee=D("0.1"), fee_ccy="OKB"),  # refused
        make_fill("1", Side.BUY, "1", "100", 10, inst=SWAP),  # not of its instrument
        make_fill("1", Side.BUY, "2", "100", 10),
        make_fill("3", Side.SELL, "1", "130", 30, layer=FillLayer.POLL),  # a duplicate in the page
    ]
    results = await store.apply_fills([(f, SPOT) for f in page])
    assert counting.pages == [3]
    assert isinstance(results[1], StoreError) and "fee currency 'OKB'" in str(results[1])
    assert isinstance(results[2], ValueError) and "not of instrument" in str(results[2])
    first, last, dup = results[3], results[0], results[4]
    assert first.applied and first.position.qty == D(2) and first.order_applied_size == D(2)
    assert last.applied and last.position.qty == D(1) and last.order_applied_size == D(3)
    assert last.position.realized_pnl == D(30)
    assert not dup.applied and dup.position == last.position and dup.order_applied_size == D(3)
    # The same end state as applying them one by one.
    other = RedisStore(client, namespace + "-one")
    try:
        await other.record_order(make_order(size="4"))
        for f in page:
            with contextlib.suppress(StoreError, ValueError):
                await other.apply_fill(f, SPOT)
        assert await other.positions() == await store.positions()
        assert await other.fill_layer_counts() == await store.fill_layer_counts()
    finally:
        await other.reset_namespace()
    assert (await store.fill_layer_counts())["poll"] == {"delivered": 1, "applied": 0}
    assert await store.apply_fills([]) == [] and counting.pages == [3]


async def test_a_long_page_is_sliced_into_calls_without_changing_the_answers(store, monkeypatch):
    monkeypatch.setattr(store_module, "_FILLS_PER_CALL", 2)
    counting = _CountingScript(store._apply_fill)
    monkeypatch.setattr(store, "_apply_fill", counting)
    page = [make_fill(str(i), Side.BUY, "1", "100", i) for i in range(5)]
    results = await store.apply_fills([(f, SPOT) for f in page])
    assert counting.pages == [2, 2, 1]
    assert [r.position.fill_count for r in results] == [1, 2, 3, 4, 5]
    assert [r.order_applied_size for r in results] == [D(i) for i in range(1, 6)]


async def test_a_page_folds_ties_on_ts_by_fill_id_after_earlier_calls(store):
    # "9" is already last at ts 3; "1" and "5" of the same ts sort before it, so neither
    # may take the page's shortcut for fills newer than the position's last one.
    await store.apply_fill(make_fill("9", Side.BUY, "2", "130", 3), SPOT)
    page = [make_fill("5", Side.SELL, "1", "110", 3), make_fill("1", Side.BUY, "1", "100", 3)]
    results = await store.apply_fills([(f, SPOT) for f in page])
    p = await store.position(UNATTRIBUTED_STRATEGY, "okx", "BTC-USDT")
    assert (p.qty, p.avg_price, p.realized_pnl, p.fill_count) == (D(2), D(130), D(10), 3)
    # Sent as "1" then "5": each answers the state after refolding "9" behind it.
    assert (results[1].position.qty, results[1].position.avg_price) == (D(3), D(120))
    assert results[0].position == p


async def test_a_refused_fill_in_a_page_writes_nothing_and_spares_the_others(store, client):
    big = str(D(MAX_EXACT_ATOMS // 2 + 1) / 100_000_000)
    page = [make_fill("1", Side.BUY, big, "1", 10), make_fill("2", Side.BUY, big, "1", 20),
            make_fill("3", Side.SELL, big, "1", 30)]
    results = await store.apply_fills([(f, SPOT) for f in page])
    assert isinstance(results[1], StoreError) and "exact range" in str(results[1])
    assert results[0].applied and results[2].applied and results[2].position.qty == 0
    assert await client.exists(store.keys.fill(store.keys.fill_id("okx", "BTC-USDT", "2"))) == 0


# -- a script that fails writes nothing -------------------------------------------
# Redis does not roll a script back: writes made before a runtime error stay. A fill
# marked applied (its fill key set) whose position was never updated would be lost for
# good, so the script computes the whole page before its first write.


async def _snapshot(client, store) -> dict:
    """Every key of the store's namespace with its type and whole content."""
    readers = {
        "string": client.get,
        "hash": client.hgetall,
        "set": client.smembers,
        "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
        "stream": client.xrange,
        "list": lambda k: client.lrange(k, 0, -1),
    }
    out = {}
    async for key in client.scan_iter(match=store.keys.scan_pattern, count=500):
        kind = await client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        out[key] = (kind, await readers[kind](key))
    return out


async def _state_with_history(store) -> None:
    """An order with an applied fill: a position, its ledger, counters, the audit."""
    await store.record_order(make_order(size="10"))
    await store.record_order(make_order("s1", inst=SWAP, size="10"))
    await store.apply_fill(make_fill("0", Side.BUY, "1", "100", 5), SPOT)


# Sorted canonically the script sees "3" (before "0": refolds it), the duplicate "0",
# "1", "2" (another position) and "4" (unattributed).
_FAILING_PAGE = [
    (make_fill("1", Side.BUY, "2", "110", 10), SPOT),
    (make_fill("0", Side.BUY, "1", "100", 5, layer=FillLayer.POLL), SPOT),
    (make_fill("2", Side.SELL, "3", "50", 20, coid="s1", inst=SWAP), SWAP),
    (make_fill("3", Side.BUY, "1", "90", 1, fee=D("0.001"), fee_ccy="BTC"), SPOT),
    (make_fill("4", Side.SELL, "1", "120", 30, coid=None), SPOT),
]


@pytest.mark.parametrize("fail_after", [0, 1, 3, len(_FAILING_PAGE)])
async def test_a_script_error_mid_page_leaves_redis_unchanged(store, client, monkeypatch, fail_after):
    # The hook raises error() in the script once `fail_after` fills of a call's page are
    # computed; at len(page) every fill is computed and only the writes remain. Every
    # failed call leaves Redis as it was. apply_fills then sends each fill in a call of
    # its own, where the hook fires again only at 0 or 1 (a one-fill page reaches no more).
    await _state_with_history(store)
    before = await _snapshot(client, store)
    counts = await store.fill_layer_counts()
    after_failed_calls = []
    script = store._apply_fill

    async def watched(**kwargs):
        try:
            return await script(**kwargs)
        except RedisError:
            after_failed_calls.append(await _snapshot(client, store))
            raise

    monkeypatch.setattr(store, "_apply_fill", watched)
    monkeypatch.setattr(store_module, "_FAIL_AFTER_FOR_TESTS", fail_after)
    results = await store.apply_fills(_FAILING_PAGE)
    assert after_failed_calls and all(snapshot == before for snapshot in after_failed_calls)
    if fail_after <= 1:
        assert len(after_failed_calls) == 1 + len(_FAILING_PAGE)
        assert all(isinstance(r, StoreError) and "test hook" in str(r) for r in results)
        assert await _snapshot(client, store) == before
        keys = store.keys
        for trade_id, inst in (("1", SPOT), ("2", SWAP), ("3", SPOT), ("4", SPOT)):
            assert await client.exists(keys.fill(keys.fill_id("okx", inst.inst_id, trade_id))) == 0
        assert [p.fill_count for p in await store.positions()] == [1]
        assert len(await store.audit_entries()) == 1
        assert await store.fill_layer_counts() == counts
        assert await store.applied_size("c1") == D(1) and await store.applied_size("s1") == 0
        # Without the hook the same page applies: the hook was the only reason it failed.
        monkeypatch.setattr(store_module, "_FAIL_AFTER_FOR_TESTS", None)
        results = await store.apply_fills(_FAILING_PAGE)
    else:
        assert len(after_failed_calls) == 1  # the page's call; each fill alone applied
    assert [r.applied for r in results] == [True, False, True, True, True]
    assert await store.applied_size("c1") == D(4) and await store.applied_size("s1") == D(3)
    assert len(await store.audit_entries()) == 5


@pytest.mark.parametrize("corrupt", ["read", "write-only"])
async def test_a_key_of_the_wrong_type_fails_only_the_fill_that_needs_it(store, client, corrupt):
    # A bug elsewhere left a string where the script needs a zset. "read": the script
    # reads it (WRONGTYPE from Redis while folding); "write-only": only a write would
    # touch it, so phase 1 checks its type. Either way the page's call fails with Redis
    # unchanged; sent again one fill per call, the unrelated fill (sorted before the
    # corrupt one) is applied and only the fill that needs the key fails.
    await _state_with_history(store)
    keys = store.keys
    if corrupt == "read":
        bad = keys.position_fills(position_id("alpha", "okx", "BTC-USDT-SWAP"))
    else:
        bad = keys.order_fills("s1")
    await client.set(bad, "not a zset")
    page = [(make_fill("1", Side.BUY, "1", "100", 10), SPOT),
            (make_fill("2", Side.BUY, "1", "100", 20, coid="s1", inst=SWAP), SWAP)]
    results = await store.apply_fills(page)
    assert results[0].applied and results[0].position.qty == D(2)
    assert isinstance(results[1], StoreError) and page[1][0].key in str(results[1])
    assert await client.exists(keys.fill(keys.fill_id("okx", "BTC-USDT", "1"))) == 1
    assert await client.exists(keys.fill(keys.fill_id("okx", "BTC-USDT-SWAP", "2"))) == 0
    assert await client.get(bad) == b"not a zset"
    assert await store.applied_size("s1") == 0
    await client.delete(bad)
    again = await store.apply_fills(page)
    assert [r.applied for r in again] == [False, True]


async def test_a_failing_slice_keeps_the_results_of_the_other_slices(store, client, monkeypatch):
    # Three slices of two; the corrupt key is needed by one fill of the middle slice only.
    monkeypatch.setattr(store_module, "_FILLS_PER_CALL", 2)
    await store.record_order(make_order("s1", inst=SWAP, size="10"))
    await client.set(store.keys.order_fills("s1"), "not a zset")
    page = [(make_fill(str(n), Side.BUY, "1", "100", n), SPOT) for n in (1, 2, 4, 5)]
    page.insert(2, (make_fill("3", Side.BUY, "1", "100", 3, coid="s1", inst=SWAP), SWAP))
    results = await store.apply_fills(page)
    assert len(results) == len(page)
    assert isinstance(results[2], StoreError)
    assert [r.applied for i, r in enumerate(results) if i != 2] == [True] * 4
    assert (await store.position(UNATTRIBUTED_STRATEGY, "okx", "BTC-USDT")).qty == D(4)


async def test_a_reply_of_the_wrong_length_is_a_store_error(store, monkeypatch):
    async def short_reply(**_kwargs):
        return "[]"

    monkeypatch.setattr(store, "_apply_fill", short_reply)
    page = [(make_fill("1", Side.BUY, "1", "100", 1), SPOT), (make_fill("2", Side.BUY, "1", "100", 2), SPOT)]
    results = await store.apply_fills(page)
    assert all(isinstance(r, StoreError) and "for a page of 1 fills" in str(r) for r in results)
    with pytest.raises(StoreError, match="for a page of 1 fills"):
        await store.apply_fill(*page[0])


async def test_a_value_lua_reads_as_infinite_is_refused_alone(store, client):
    # 1E+400 is a finite Decimal (Python lets it through) but overflows Lua's doubles.
    page = [(make_fill("1", Side.BUY, "1", "1E+400", 10), SPOT),
            (make_fill("2", Side.BUY, "1", "100", 20), SPOT)]
    results = await store.apply_fills(page)
    assert isinstance(results[0], StoreError) and "cannot hold exactly" in str(results[0])
    assert results[1].applied and results[1].position.qty == 1
    assert results[1].position.avg_price == D(100)
    assert await client.exists(store.keys.fill(store.keys.fill_id("okx", "BTC-USDT", "1"))) == 0
    assert len(await store.audit_entries()) == 1


async def test_keys_built_inside_the_script_match_the_key_module(store, client):
    # Ids with ':' and '%' must land in the keys core.redis_keys names (escaped alike).
    inst = SPOT.model_copy(update={"venue": "ok:x%"})
    order = make_order("c:1%", "strat:a%", inst=inst)
    await store.record_order(order)
    await store.update_order(order.transition(OrderState.LIVE, now_ms=2_000, venue_order_id="V:9%"))
    by_index = make_fill("t:1%", Side.BUY, "1", "100", 10, coid=None, inst=inst, venue_order_id="V:9%")
    result = (await store.apply_fills([(by_index, inst)]))[0]
    assert result.strategy_id == "strat:a%" and result.order_applied_size == D(1)
    keys = store.keys
    pid = position_id("strat:a%", "ok:x%", "BTC-USDT")
    fill_id = keys.fill_id("ok:x%", "BTC-USDT", "t:1%")
    assert await client.smembers(keys.positions) == {pid.encode()}
    for key in (keys.position(pid), keys.position_fills(pid),
                keys.position_ledger(pid), keys.position_after(pid),
                keys.order_applied("c:1%"), keys.order_fills("c:1%"), keys.fill(fill_id)):
        assert await client.exists(key) == 1, key
    again = await store.apply_fill(by_index, inst)
    assert not again.applied and again.position == result.position
    assert again.order_applied_size == D(1)


async def test_the_audit_stream_holds_each_trade_once_with_its_layer_and_apply_time(
    store, clock
):
    layers = [FillLayer.WS, FillLayer.POLL, FillLayer.HEALTH]
    for i, layer in enumerate(layers):
        clock.advance(1)
        await store.apply_fill(make_fill(str(i), Side.BUY, "1", "100", i, layer=layer), SPOT)
        await store.apply_fill(make_fill(str(i), Side.BUY, "1", "100", i, layer=FillLayer.WS), SPOT)
    audit = await store.audit_entries()
    assert [(e.fill.trade_id, e.fill.layer) for e in audit] == list(
        zip(["0", "1", "2"], layers, strict=True)
    )
    assert [e.applied_ms for e in audit] == [1_700_000_001_000 + 1000 * i for i in range(3)]
    assert audit[0].fill == make_fill("0", Side.BUY, "1", "100", 0)
    assert [e.fill.trade_id for e in await store.audit_entries(count=2)] == ["1", "2"]


async def test_record_order_is_set_nx_on_the_client_order_id(store):
    order = make_order(size="1")
    assert await store.record_order(order) is True
    assert await store.record_order(order) is False
    assert await store.record_order(make_order(strategy_id="beta", size="5")) is False
    assert await store.get_order("c1") == order
    assert await store.get_order("missing") is None
    assert await store.open_orders() == [order]


async def test_update_order_follows_the_state_machine_and_never_goes_back(store):
    order = make_order(size="2")
    await store.record_order(order)
    live = order.transition(OrderState.LIVE, now_ms=2_000, venue_order_id="V1")
    assert await store.update_order(live) == live
    partial = live.transition(OrderState.PARTIALLY_FILLED, now_ms=3_000, filled_size=D(1))
    # A snapshot that does not know the venue order id keeps the stored one.
    stored = await store.update_order(partial.model_copy(update={"venue_order_id": None}))
    assert stored == partial and await store.get_order("c1") == partial
    # Older news is ignored, even when its transition would be illegal.
    assert await store.update_order(live) == partial
    with pytest.raises(InvalidOrderTransition):
        await store.update_order(
            partial.model_copy(update={"state": OrderState.LIVE, "updated_ms": 4_000})
        )
    filled = partial.transition(OrderState.FILLED, now_ms=5_000, filled_size=D(2))
    assert await store.update_order(filled) == filled
    assert await store.update_order(filled) == filled  # venues repeat themselves
    with pytest.raises(InvalidOrderTransition):
        await store.update_order(
            filled.model_copy(update={"state": OrderState.CANCELED, "updated_ms": 6_000})
        )
    assert await store.get_order("c1") == filled
    assert [o.client_order_id for o in await store.open_orders()] == ["c1"]  # still tracked


async def test_update_order_refuses_what_it_cannot_store_faithfully(store):
    with pytest.raises(StoreError, match="never recorded"):
        await store.update_order(make_order())
    await store.record_order(make_order())
    with pytest.raises(StoreError, match="strategy_id"):
        await store.update_order(make_order(strategy_id="beta", ms=2_000))
    await store.update_order(make_order(ms=2_000, state=OrderState.LIVE, venue_order_id="V1"))
    with pytest.raises(StoreError, match="differs from the known"):
        await store.update_order(make_order(ms=3_000, state=OrderState.LIVE, venue_order_id="V2"))
    await store.record_order(make_order("c2"))
    with pytest.raises(StoreError, match="already belongs"):
        await store.update_order(
            make_order("c2", ms=3_000, state=OrderState.LIVE, venue_order_id="V1")
        )
    with pytest.raises(StoreError, match="already belongs"):
        await store.record_order(make_order("c3", venue_order_id="V1"))
    assert await store.get_order("c3") is None


async def test_concurrent_updates_keep_the_newest_snapshot(store):
    order = make_order(size="10")
    await store.record_order(order)
    snapshots = [
        order.transition(OrderState.PARTIALLY_FILLED, now_ms=2_000 + i, filled_size=D(i))
        for i in range(1, 10)
    ]
    await asyncio.gather(*(store.update_order(s) for s in reversed(snapshots)))
    assert await store.get_order("c1") == snapshots[-1]


async def test_open_orders_are_tracked_until_the_poller_untracks_them(store):
    a1 = make_order("a1", "alpha", ms=1)
    b1 = make_order("b1", "beta", ms=2)
    a2 = make_order("a2", "alpha", ms=3).model_copy(update={"venue": "binance"})
    for o in (a1, b1, a2):
        await store.record_order(o)
    assert await store.open_orders() == [a1, b1, a2]
    assert await store.open_orders(venue="okx") == [a1, b1]
    assert await store.open_orders(strategy_id="alpha") == [a1, a2]
    assert await store.open_orders(venue="okx", strategy_id="beta") == [b1]
    filled = a1.transition(OrderState.FILLED, now_ms=10, filled_size=a1.size)
    await store.update_order(filled)
    assert [o.client_order_id for o in await store.open_orders(venue="okx")] == ["a1", "b1"]
    await store.untrack_order("a1")
    await store.untrack_order("a1")
    await store.untrack_order("never-recorded")
    assert await store.open_orders() == [b1, a2]
    assert await store.get_order("a1") == filled


async def test_positions_lists_every_position_and_filters_by_strategy(store):
    await store.record_order(make_order("a", "alpha"))
    await store.record_order(make_order("b", "beta", inst=SWAP))
    await store.apply_fill(make_fill("1", Side.BUY, "1", "100", 1, coid="a"), SPOT)
    await store.apply_fill(make_fill("2", Side.SELL, "1", "100", 2, coid="a"), SPOT)
    await store.apply_fill(make_fill("1", Side.BUY, "3", "100", 3, coid="b", inst=SWAP), SWAP)
    everything = await store.positions()
    assert [(p.strategy_id, p.inst_id, p.qty) for p in everything] == [
        ("alpha", "BTC-USDT", D(0)),
        ("beta", "BTC-USDT-SWAP", D(3)),
    ]
    assert await store.positions("beta") == everything[1:]
    assert await store.positions("gamma") == []
    flat = await store.position("gamma", "okx", "BTC-USDT")
    assert (flat.qty, flat.fill_count, flat.strategy_id) == (D(0), 0, "gamma")


# -- liveness and control state ----------------------------------------------------


async def test_heartbeats_strategy_states_and_the_kill_flag(store):
    assert await store.heartbeats() == {}
    await store.heartbeat("gateway:okx", 5)
    await store.heartbeat("gateway:okx", 7)
    await store.heartbeat("risk", 6)
    assert await store.heartbeats() == {"gateway:okx": 7, "risk": 6}

    await store.set_strategy_state("alpha", "RUNNING")
    await store.set_strategy_state("alpha", "WINDING_DOWN")
    await store.set_strategy_state("beta", "PAUSED")
    assert await store.strategy_states() == {"alpha": "WINDING_DOWN", "beta": "PAUSED"}
    with pytest.raises(ValueError, match="not one of"):
        await store.set_strategy_state("alpha", "running")

    assert await store.kill_flag() is None
    await store.set_kill_flag("drawdown breaker", 42)
    assert await store.kill_flag() == "drawdown breaker"
    await store.clear_kill_flag()
    assert await store.kill_flag() is None


async def test_strategy_states_read_back_as_the_enum_and_a_garbled_one_is_named(store):
    from tradetree.core.types import StrategyState

    await store.set_strategy_state("alpha", StrategyState.KILLED)
    assert (await store.strategy_states())["alpha"] is StrategyState.KILLED
    await store.client.hset(store.keys.strategy_states, "beta", "paused")
    with pytest.raises(StoreError, match="strategy beta: stored state 'paused' is not one of"):
        await store.strategy_states()
    assert await store.strategy_states(strict=False) == {"alpha": "KILLED", "beta": "paused"}
    # One strategy's own read sees only its entry: beta's garbled text is beta's problem alone.
    assert await store.strategy_state("alpha") is StrategyState.KILLED
    assert await store.strategy_state("gamma") is None
    with pytest.raises(StoreError, match="strategy beta: stored state 'paused'"):
        await store.strategy_state("beta")


@pytest.mark.parametrize(("before", "after", "changed"), [
    ("RUNNING", "PAUSED", True),
    ("WINDING_DOWN", "WINDING_DOWN", False),
    ("KILLED", "KILLED", False),
    (None, None, False),
])
async def test_pausing_is_a_check_and_set_from_running_only(store, before, after, changed):
    from tradetree.core.types import StrategyState as S

    if before is not None:
        await store.set_strategy_state("s1", before)
    assert await store.transition_strategy_state("s1", {S.RUNNING}, S.PAUSED) is changed
    assert (await store.strategy_states()).get("s1") == after


async def test_a_transition_from_no_recorded_state(store):
    from tradetree.core.types import StrategyState as S

    assert await store.transition_strategy_state("s1", {None, S.PAUSED}, S.RUNNING) is True
    assert await store.transition_strategy_state("s1", {None, S.PAUSED}, S.RUNNING) is False, "now RUNNING"
    assert await store.strategy_states() == {"s1": "RUNNING"}


async def test_reset_namespace_deletes_only_its_own_keys(store, client, namespace):
    neighbour = RedisStore(client, namespace + "-x")
    longer = RedisStore(client, namespace + "x")  # a prefix match without the ':'
    try:
        for s in (store, neighbour, longer):
            await s.heartbeat("risk", 1)
            await s.apply_fill(make_fill("1", Side.BUY, "1", "100", 1), SPOT)
        deleted = await store.reset_namespace()
        assert deleted > 5
        assert await store.heartbeats() == {} and await store.positions() == []
        assert [k async for k in client.scan_iter(match=f"{namespace}:*")] == []
        for s in (neighbour, longer):
            assert await s.heartbeats() == {"risk": 1}
            assert len(await s.audit_entries()) == 1
    finally:
        await neighbour.reset_namespace()
        await longer.reset_namespace()


async def test_an_invalid_namespace_is_refused(client):
    with pytest.raises(ValueError, match="invalid Redis namespace"):
        RedisStore(client, "a:b")
    with pytest.raises(ValueError, match="invalid Redis namespace"):
        RedisStore(client, "tt*")


# -- connecting -------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_connect_to_a_dead_url_raises_store_unavailable_without_the_password():
    port = _closed_port()
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    with pytest.raises(StoreUnavailable) as info:
        await RedisStore.connect(url, "tt", socket_timeout_secs=0.5)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "does not answer" in message
    assert "hunter2" not in message


@pytest.mark.integration
async def test_connect_pings_a_live_server_and_close_releases_it(redis_url, namespace):
    store = await RedisStore.connect(redis_url, namespace)
    await store.ping()
    await store.heartbeat("x", 1)
    assert await store.heartbeats() == {"x": 1}
    await store.reset_namespace()
    await store.close()


async def test_a_client_that_decodes_responses_works_the_same(namespace):
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    store = RedisStore(client, namespace)
    await store.record_order(make_order(size="1"))
    await store.apply_fill(make_fill("1", Side.BUY, "1", "100", 10), SPOT)
    result = await store.apply_fill(make_fill("1", Side.BUY, "1", "100", 10), SPOT)
    assert not result.applied and result.position.qty == D(1)
    assert [p.strategy_id for p in await store.positions()] == ["alpha"]
    assert [e.fill.trade_id for e in await store.audit_entries()] == ["1"]
    assert [o.client_order_id for o in await store.open_orders()] == ["c1"]
    assert await store.fills_for_order("c1") == [make_fill("1", Side.BUY, "1", "100", 10)]
    await client.aclose()


def test_redact_url_hides_only_the_password():
    assert redact_url("redis://u:pw@host:1/0") == "redis://u:***@host:1/0"
    assert redact_url("redis://:pw@host/0") == "redis://:***@host/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


async def test_every_order_write_appends_one_order_event(real_redis, namespace):
    from tradetree.core.store import RedisStore
    from tradetree.core.types import Order, OrderState, OrderType, Side

    store = RedisStore(real_redis, namespace)
    order = Order(client_order_id="ev1", strategy_id="S", venue="okx", inst_id="BTC-USDT", side=Side.BUY,
                  type=OrderType.MARKET, size=1, created_ms=1, updated_ms=1)
    assert await store.record_order(order)
    assert not await store.record_order(order.model_copy(update={"updated_ms": 2}))  # duplicate: no event
    await store.update_order(order.transition(OrderState.REJECTED, now_ms=3, reject_reason="51008"))
    events = await store.order_events()
    assert [o.state for _, o in events] == [OrderState.PENDING_NEW, OrderState.REJECTED]
    assert await store.order_events(after_id=events[0][0]) == events[1:]

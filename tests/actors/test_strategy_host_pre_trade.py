"""The strategy host's pre-trade inputs on fakeredis: marks, every strategy's positions, today's P&L.

The host must give ``risk.pre_trade.check`` what the backtester gives it: a
notional limit is judged on real marks (not refused as "notional unknown"), a
loss limit on today's realized P&L from the day baselines the risk monitor
shares, and a global limit on every strategy's positions.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tests.actors.test_strategy_host import INST as BTC
from tests.actors.test_strategy_host import env  # noqa: F401  (fixture)
from tradetree.core.errors import StoreUnavailable
from tradetree.core.marks import Mark, MarkBook
from tradetree.core.store import RedisStore
from tradetree.core.types import Fill, FillLayer, Instrument, InstrumentKind, Order, OrderIntent, Side, Ticker
from tradetree.risk.config import RiskConfig

ETH = Instrument(venue="okx", inst_id="ETH-USDT-SWAP", kind=InstrumentKind.SWAP, base="ETH", quote="USDT",
                 settle="USDT", contract_value=D("0.1"), tick_size=D("0.01"), lot_size=D("0.1"),
                 min_size=D("0.1"))
CV = {"okx:BTC-USDT-SWAP": D("0.01"), "okx:ETH-USDT-SWAP": D("0.1")}
DAY_MS = 86_400_000


@pytest.fixture
async def host(env):  # noqa: F811
    host, store, clock = env
    host.strategy.on_bar = lambda bar, ctx: []  # the tests send the intents themselves
    await host.start()
    host.fills = 0
    return host, store, clock


async def _fresh(host, clock, px="50000"):
    """Verified positions and a fresh own ticker: the freshness gate lets orders through."""
    await host.control.mark_verified("okx", clock.now_ms())
    await host.on_ticker(Ticker(venue="okx", inst_id=BTC.inst_id, ts_ms=clock.now_ms(), last=D(px)))


async def _fill(host, store, clock, side, size, price, *, sid=None, inst=BTC, reduce_only=False):
    host.fills += 1
    order = Order.from_intent(OrderIntent(strategy_id=sid or host.id, venue="okx", inst_id=inst.inst_id, side=side,
                                          size=D(size), reduce_only=reduce_only), now_ms=clock.now_ms())
    await store.record_order(order)
    await store.apply_fill(Fill(venue="okx", inst_id=inst.inst_id, trade_id=f"t{host.fills}",
                                client_order_id=order.client_order_id, side=side, price=D(price), size=D(size),
                                ts_ms=clock.now_ms(), layer=FillLayer.POLL), inst)


async def _reasons(host, size, side=Side.BUY, *, reduce_only=False):
    intent = OrderIntent(strategy_id=host.id, venue="okx", inst_id=BTC.inst_id, side=side, size=D(size),
                         reduce_only=reduce_only)
    _, orders, positions = await host._read_state()
    return await host.pre_trade_reasons(intent, orders, positions)


async def test_strategy_notional_allows_within_the_limit_and_denies_beyond_naming_the_numbers(host):
    host, store, clock = host
    host.risk = RiskConfig(max_strategy_notional=D(1000), contract_values=CV)
    await _fill(host, store, clock, Side.BUY, "1", "50000")  # 500 at the mark
    await _fresh(host, clock, px="50000")
    assert await _reasons(host, "0.9") == []  # 950
    assert await _reasons(host, "1.1") == [
        f"strategy {host.id} notional 1050 (with orders in flight) exceeds 1000"]


async def test_global_notional_values_other_strategies_with_recorded_marks_and_refuses_stale_ones(host):
    host, store, clock = host
    host.risk = RiskConfig(max_global_notional=D(2000), contract_values=CV)
    await _fill(host, store, clock, Side.BUY, "5", "3000", sid="S2", inst=ETH)  # another strategy's ETH
    await _fresh(host, clock)
    no_mark = "notional unknown: okx:ETH-USDT-SWAP has no mark price"
    assert await _reasons(host, "1") == [f"{no_mark} (no mark recorded)"]

    # the ETH gateway's last price, as it records it
    await MarkBook(store.client, "t").write("okx", {ETH.inst_id: Mark(price=D(3000), ts_ms=1, recv_ms=clock.now_ms())})
    assert await _reasons(host, "1") == []  # 500 + 1500 = 2000, not beyond
    assert await _reasons(host, "2") == ["global notional 2500 (with orders in flight) exceeds 2000"]

    clock.advance(31)
    await _fresh(host, clock)  # our own BTC ticker is fresh; the recorded ETH mark is not
    assert await _reasons(host, "1") == [f"{no_mark} (last mark 31.0 s old, max 30 s)"]


async def test_global_scope_counts_other_strategies_orders_in_flight(host):
    host, store, clock = host
    host.risk = RiskConfig(max_global_notional=D(2000), contract_values=CV)
    other = Order.from_intent(OrderIntent(strategy_id="S2", venue="okx", inst_id=BTC.inst_id, side=Side.BUY,
                                          size=D(3)), now_ms=clock.now_ms())
    await store.record_order(other)  # 1500 at 50000, not filled yet
    await _fresh(host, clock)
    assert await _reasons(host, "1") == []
    assert await _reasons(host, "1.1") == ["global notional 2050 (with orders in flight) exceeds 2000"]


async def test_the_fresher_of_own_ticker_and_recorded_mark_is_used(host):
    host, store, clock = host
    host.risk = RiskConfig(max_order_notional=D(10_000), contract_values=CV)
    book = MarkBook(store.client, "t")
    intent = OrderIntent(strategy_id=host.id, venue="okx", inst_id=BTC.inst_id, side=Side.BUY, size=D(1))
    await book.write("okx", {BTC.inst_id: Mark(price=D(40000), ts_ms=1, recv_ms=clock.now_ms())})
    clock.advance(1)
    await _fresh(host, clock, px="50000")
    inputs, _ = await host.pre_trade_inputs(intent, [], [])
    assert inputs.marks == {("okx", BTC.inst_id): D(50000)}
    clock.advance(1)
    await book.write("okx", {BTC.inst_id: Mark(price=D(45000), ts_ms=2, recv_ms=clock.now_ms())})
    inputs, _ = await host.pre_trade_inputs(intent, [], [])
    assert inputs.marks == {("okx", BTC.inst_id): D(45000)}


async def test_daily_loss_limit_denies_after_a_loss_today_and_allows_the_next_utc_day(host):
    host, store, clock = host
    host.risk = RiskConfig(max_daily_loss_per_strategy=D(5))
    await _fill(host, store, clock, Side.BUY, "2", "1000")
    await _fresh(host, clock)
    assert await _reasons(host, "1") == []  # today's baseline taken
    await _fill(host, store, clock, Side.SELL, "1", "400", reduce_only=True)  # 1 * 0.01 * -600 = -6
    assert await _reasons(host, "1") == [f"daily loss limit: strategy {host.id} P&L today -6 (limit -5)"]
    assert await _reasons(host, "1", Side.SELL, reduce_only=True) == []  # closing takes no new risk
    clock.set_ms(DAY_MS + 1_000)
    await _fresh(host, clock)
    assert await _reasons(host, "1") == []


async def test_global_daily_loss_counts_every_strategy(host):
    host, store, clock = host
    host.risk = RiskConfig(max_daily_loss_per_strategy=D(5), max_daily_loss_global=D(8))
    await _fill(host, store, clock, Side.BUY, "2", "1000", sid="S2")
    await _fresh(host, clock)
    assert await _reasons(host, "1") == []  # S2's baseline taken by this host
    await _fill(host, store, clock, Side.SELL, "1", "100", sid="S2", reduce_only=True)  # -9
    assert await _reasons(host, "1") == ["global daily loss limit: P&L today -9 (limit -8)"]


async def test_unreadable_day_baselines_deny_with_the_reason(host, monkeypatch):
    host, store, clock = host
    host.risk = RiskConfig(max_daily_loss_per_strategy=D(5))

    async def down(self, day, candidates):
        raise StoreUnavailable("Redis unavailable: timeout")

    monkeypatch.setattr(RedisStore, "day_pnl_baselines", down)
    await _fresh(host, clock)
    assert await _reasons(host, "1") == [
        "daily P&L unknown: loss limits cannot be checked (day baselines unreadable: Redis unavailable: timeout)"]


async def test_unreadable_marks_deny_with_the_reason(host, monkeypatch):
    host, store, clock = host
    host.risk = RiskConfig(max_global_notional=D(10_000), contract_values=CV)
    await _fill(host, store, clock, Side.BUY, "1", "3000", sid="S2", inst=ETH)

    async def down(self, wanted):
        raise StoreUnavailable("Redis unavailable: timeout")

    monkeypatch.setattr(MarkBook, "read", down)
    await _fresh(host, clock)  # BTC still has our own ticker
    assert await _reasons(host, "1") == ["notional unknown: okx:ETH-USDT-SWAP has no mark price "
                                         "(marks unreadable: Redis unavailable: timeout)"]


async def test_reduce_only_close_reads_neither_marks_nor_day_baselines(host, monkeypatch):
    host, store, clock = host
    host.risk = RiskConfig(max_global_notional=D(1), max_daily_loss_global=D(1), contract_values=CV)
    await _fill(host, store, clock, Side.BUY, "1", "50000")

    async def must_not_read(*args):
        raise AssertionError("not needed for a reduce-only intent")

    monkeypatch.setattr(MarkBook, "read", must_not_read)
    monkeypatch.setattr(RedisStore, "day_pnl_baselines", must_not_read)
    await _fresh(host, clock)
    assert await _reasons(host, "1", Side.SELL, reduce_only=True) == []
    assert await _reasons(host, "2", Side.SELL, reduce_only=True) != []  # the duplicate-close guard still runs

"""Matching engine units: driven by hand-made market ticks, so every price is known."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tradetree.sim.config import FeeSchedule, SimInstrument, default_instruments
from tradetree.sim.market_data import GeneratedMarket, MarketTick, PublicTrade
from tradetree.sim.matching import BookShape, MatchingEngine, OrderRequest

SPOT, SWAP = "BTC-USDT", "BTC-USDT-SWAP"
FEES = FeeSchedule()
CT = D("0.01")  # BTC-USDT-SWAP contract value


def make_engine(**kw) -> MatchingEngine:
    args = dict(
        fees=FEES,
        initial_balances={"USDT": D("100000"), "BTC": D("1")},
        leverage=D(10),
        book_levels=5,
        seed=7,
        book_shape=BookShape(top_level_notional=D("5000")),
    )
    args.update(kw)
    return MatchingEngine(default_instruments(), **args)


def tick(inst_id: str, ts: int, price: str, trades: list[tuple[str, str]] = ()) -> MarketTick:
    pts = tuple(PublicTrade(str(i), D(px), D(sz), "sell", ts) for i, (px, sz) in enumerate(trades))
    return MarketTick(inst_id, ts, D(price), sum((t.size for t in pts), D(0)), pts)


def step(engine: MatchingEngine, ts: int, price: str = "60000", trades=(), inst=None):
    events = []
    for inst_id in ([inst] if inst else [SPOT, SWAP]):
        events += engine.on_market(tick(inst_id, ts, price, list(trades)))
    return events


def usdt(engine: MatchingEngine) -> D:
    return next(b for b in engine.balances() if b.ccy == "USDT").cash


def test_market_order_walks_the_book_one_fill_per_level_at_vwap():
    e = make_engine()
    step(e, 1000)
    asks = e.book(SPOT).asks
    size = asks[0][1] + asks[1][1] + asks[2][1] / 2
    size = size.quantize(D("0.00001"))
    r = e.submit(OrderRequest(SPOT, "buy", "market", size), 1001)
    assert r.accepted
    fills = [ev.fill for ev in r.events if ev.fill]
    assert [f.px for f in fills] == [asks[0][0], asks[1][0], asks[2][0]]
    assert fills[0].sz == asks[0][1] and fills[1].sz == asks[1][1]
    assert sum(f.sz for f in fills) == size
    assert len({f.trade_id for f in fills}) == 3
    final = r.events[-1].order
    assert final.state == "filled" and final.acc_fill_sz == size
    vwap = sum(f.px * f.sz for f in fills) / size
    assert final.avg_px == vwap
    # What we took is gone from the book until the next market step.
    assert e.book(SPOT).asks[0][0] == asks[2][0]


def test_market_order_larger_than_book_fills_depth_then_cancels_rest():
    e = make_engine(initial_balances={"USDT": D("100000000")})
    step(e, 1000)
    depth = sum(sz for _, sz in e.book(SPOT).asks)
    r = e.submit(OrderRequest(SPOT, "buy", "market", (depth + 1).quantize(D("0.00001"))), 1001)
    final = r.events[-1].order
    assert final.state == "canceled" and final.acc_fill_sz == depth
    assert len([ev for ev in r.events if ev.fill]) == 5


def test_resting_limit_fills_partially_by_traded_volume_as_maker():
    e = make_engine()
    step(e, 1000)
    r = e.submit(OrderRequest(SPOT, "buy", "limit", D("0.5"), px=D("59900"), cl_ord_id="rest1"), 1001)
    assert r.order.state == "live" and len(r.events) == 1
    # A trade at exactly our price is not enough: the queue ahead of us takes it.
    assert step(e, 2000, "59950", [("59900", "1")], inst=SPOT) == []
    ev = step(e, 3000, "59850", [("59890", "0.2")], inst=SPOT)
    assert len(ev) == 1 and ev[0].fill.sz == D("0.2") and ev[0].fill.px == D("59900")
    assert ev[0].fill.exec_type == "M" and ev[0].order.state == "partially_filled"
    assert ev[0].fill.fee == (D("59900") * D("0.2") * FEES.spot_maker).quantize(D("0.00000001"))
    ev = step(e, 4000, "59800", [("59850", "5")], inst=SPOT)
    assert ev[0].fill.sz == D("0.3") and ev[0].order.state == "filled"
    assert e.get_order(cl_ord_id="rest1").acc_fill_sz == D("0.5")


def test_trade_volume_is_shared_in_price_time_priority():
    e = make_engine()
    step(e, 1000)
    low = e.submit(OrderRequest(SPOT, "buy", "limit", D("0.3"), px=D("59800")), 1001).order
    high = e.submit(OrderRequest(SPOT, "buy", "limit", D("0.3"), px=D("59900")), 1002).order
    ev = step(e, 2000, "59700", [("59700", "0.4")], inst=SPOT)
    by_order = {x.order.ord_id: x.fill.sz for x in ev}
    assert by_order == {high.ord_id: D("0.3"), low.ord_id: D("0.1")}


def test_post_only_that_would_cross_is_canceled_and_one_that_rests_is_live():
    e = make_engine()
    step(e, 1000)
    ask = e.book(SPOT).asks[0][0]
    r = e.submit(OrderRequest(SPOT, "buy", "post_only", D("0.1"), px=ask), 1001)
    assert r.accepted
    assert [ev.order.state for ev in r.events] == ["live", "canceled"]
    assert r.events[-1].order.cancel_source == "post_only" and not any(ev.fill for ev in r.events)
    r = e.submit(OrderRequest(SPOT, "buy", "post_only", D("0.1"), px=ask - D("10")), 1002)
    assert [ev.order.state for ev in r.events] == ["live"]


def test_spot_balances_move_and_limit_buy_reserves_quote():
    e = make_engine()
    step(e, 1000)
    start_usdt = usdt(e)
    r = e.submit(OrderRequest(SPOT, "buy", "limit", D("0.5"), px=D("50000")), 1001)
    bal = {b.ccy: b for b in e.balances()}
    reserve = D("50000") * D("0.5") * (1 + FEES.spot_taker)
    assert bal["USDT"].frozen == reserve and bal["USDT"].available == start_usdt - reserve
    e.cancel(SPOT, ord_id=r.order.ord_id, ts_ms=1002)
    assert {b.ccy: b for b in e.balances()}["USDT"].frozen == 0
    r = e.submit(OrderRequest(SPOT, "sell", "market", D("0.4")), 1003)
    fills = [ev.fill for ev in r.events if ev.fill]
    proceeds = sum(f.px * f.sz for f in fills)
    fees = sum(f.fee for f in fills)
    assert fees == sum((f.px * f.sz * FEES.spot_taker).quantize(D("0.00000001")) for f in fills)
    bal = {b.ccy: b for b in e.balances()}
    assert bal["BTC"].cash == D("0.6")
    assert bal["USDT"].cash == start_usdt + proceeds - fees


def test_swap_net_position_open_reduce_flip_with_realized_pnl():
    e = make_engine()
    step(e, 1000)
    cash0 = usdt(e)
    e.submit(OrderRequest(SWAP, "buy", "limit", D("10"), px=D("59000")), 1001)
    step(e, 2000, "58900", [("58950", "100")], inst=SWAP)
    p = e.position(SWAP)
    assert p.pos == D("10") and p.avg_px == D("59000")
    assert p.margin == D("10") * CT * D("59000") / 10
    e.submit(OrderRequest(SWAP, "sell", "limit", D("4"), px=D("60000")), 2001)
    step(e, 3000, "60100", [("60050", "100")], inst=SWAP)
    p = e.position(SWAP)
    assert p.pos == D("6") and p.avg_px == D("59000")
    assert p.realized_pnl == D("4") * CT * D("1000")
    e.submit(OrderRequest(SWAP, "sell", "limit", D("10"), px=D("61000")), 3001)
    ev = step(e, 4000, "61100", [("61050", "100")], inst=SWAP)
    assert ev[0].fill.pnl == D("6") * CT * D("2000")
    p = e.position(SWAP)
    assert p.pos == D("-4") and p.avg_px == D("61000")
    fees = sum(f.fee for f in e.fills(inst_id=SWAP))
    maker = FEES.swap_maker
    assert fees == sum(
        (px * sz * CT * maker).quantize(D("0.00000001"))
        for px, sz in ((D("59000"), D("10")), (D("60000"), D("4")), (D("61000"), D("10")))
    )
    assert usdt(e) == cash0 + D("40") + D("120") - fees
    assert e.account_truth()["positions"] == {SWAP: "-4"}


def test_reduce_only_needs_a_position_and_never_flips():
    e = make_engine()
    step(e, 1000)
    r = e.submit(OrderRequest(SWAP, "sell", "market", D("1"), reduce_only=True), 1001)
    assert r.s_code == "51205" and r.order is None
    e.submit(OrderRequest(SWAP, "buy", "market", D("4")), 1002)
    assert e.position(SWAP).pos == D("4")
    r = e.submit(OrderRequest(SWAP, "buy", "market", D("1"), reduce_only=True), 1003)
    assert r.s_code == "51205"
    r = e.submit(OrderRequest(SWAP, "sell", "market", D("10"), reduce_only=True), 1004)
    assert r.accepted
    final = r.events[-1].order
    assert final.acc_fill_sz == D("4") and final.state == "canceled"
    assert e.position(SWAP).pos == 0


def test_insufficient_funds_and_margin_are_rejected_with_51008():
    e = make_engine()
    step(e, 1000)
    assert e.submit(OrderRequest(SPOT, "buy", "limit", D("2"), px=D("60000")), 1001).s_code == "51008"
    assert e.submit(OrderRequest(SPOT, "sell", "market", D("1.5")), 1002).s_code == "51008"
    # 100000 USDT at 10x carries at most ~1,000,000 notional = ~1666 contracts of 0.01 BTC.
    assert e.submit(OrderRequest(SWAP, "buy", "market", D("2000")), 1003).s_code == "51008"
    assert e.submit(OrderRequest(SWAP, "buy", "limit", D("100"), px=D("59000")), 1004).accepted
    assert e.fills() == []


@pytest.mark.parametrize(
    ("req", "code"),
    [
        (OrderRequest("XRP-USDT", "buy", "market", D("1")), "51001"),
        (OrderRequest(SPOT, "buy", "limit", D("0.1")), "51204"),
        (OrderRequest(SPOT, "buy", "limit", D("0.1"), px=D("60000.05")), "51000"),
        (OrderRequest(SPOT, "buy", "market", D("0.000001")), "51020"),
        (OrderRequest(SWAP, "buy", "market", D("1.005")), "51121"),
        (OrderRequest(SPOT, "buy", "stop", D("1")), "51000"),
        (OrderRequest(SPOT, "buy", "market", D("0.1"), cl_ord_id="bad-id!"), "51000"),
    ],
)
def test_invalid_orders_are_rejected_without_state_change(req, code):
    e = make_engine()
    step(e, 1000)
    r = e.submit(req, 1001)
    assert r.s_code == code and r.order is None and r.events == ()
    assert e.open_orders() == [] and e.order_history() == []


def test_duplicate_live_client_order_id_is_rejected_until_terminal():
    e = make_engine()
    step(e, 1000)
    first = e.submit(OrderRequest(SPOT, "buy", "limit", D("0.1"), px=D("50000"), cl_ord_id="dup1"), 1001)
    assert e.submit(OrderRequest(SPOT, "buy", "limit", D("0.1"), px=D("50000"), cl_ord_id="dup1"), 1002).s_code == "51016"
    assert e.cancel(SPOT, cl_ord_id="dup1", ts_ms=1003).s_code == "0"
    again = e.submit(OrderRequest(SPOT, "buy", "limit", D("0.1"), px=D("50000"), cl_ord_id="dup1"), 1004)
    assert again.accepted and again.order.ord_id != first.order.ord_id
    assert e.get_order(SPOT, cl_ord_id="dup1").ord_id == again.order.ord_id


def test_cancel_codes_and_cancel_all():
    e = make_engine()
    step(e, 1000)
    assert e.cancel(SPOT, ord_id="999", ts_ms=1001).s_code == "51400"
    filled = e.submit(OrderRequest(SPOT, "buy", "market", D("0.01")), 1002).order
    assert e.cancel(SPOT, ord_id=filled.ord_id, ts_ms=1003).s_code == "51402"
    a = e.submit(OrderRequest(SPOT, "buy", "limit", D("0.1"), px=D("50000")), 1004).order
    b = e.submit(OrderRequest(SWAP, "sell", "limit", D("1"), px=D("70000")), 1005).order
    assert e.cancel(SWAP, ord_id=a.ord_id, ts_ms=1006).s_code == "51400"  # wrong instrument
    events = e.cancel_all(1007, source="cancel_all_after")
    assert [(ev.order.ord_id, ev.order.state, ev.order.cancel_source) for ev in events] == [
        (a.ord_id, "canceled", "cancel_all_after"),
        (b.ord_id, "canceled", "cancel_all_after"),
    ]
    assert e.cancel(SPOT, ord_id=a.ord_id, ts_ms=1008).s_code == "51401"
    assert e.open_orders() == []


def test_ioc_and_fok():
    e = make_engine()
    step(e, 1000)
    asks = e.book(SPOT).asks
    r = e.submit(OrderRequest(SPOT, "buy", "ioc", asks[0][1] + asks[1][1] + D("0.5"), px=asks[1][0]), 1001)
    assert r.events[-1].order.state == "canceled"
    assert r.events[-1].order.acc_fill_sz == asks[0][1] + asks[1][1]
    step(e, 2000)
    asks = e.book(SPOT).asks
    r = e.submit(OrderRequest(SPOT, "buy", "fok", asks[0][1] + D("0.00001"), px=asks[0][0]), 2001)
    assert [ev.order.state for ev in r.events] == ["live", "canceled"] and not e.fills(ord_id=r.order.ord_id)


def test_order_ids_trade_ids_sequential_and_u_time_strictly_increases():
    e = make_engine()
    step(e, 1000)
    r1 = e.submit(OrderRequest(SPOT, "buy", "market", D("1.2")), 1001)
    r2 = e.submit(OrderRequest(SPOT, "sell", "market", D("0.1")), 1001)
    assert (r1.order.ord_id, r2.order.ord_id) == ("1", "2")
    trade_ids = [f.trade_id for f in reversed(e.fills())]
    assert trade_ids == [str(i) for i in range(1, len(trade_ids) + 1)]
    u_times = [ev.order.u_time for ev in r1.events]
    assert all(b > a for a, b in zip(u_times, u_times[1:]))


def test_latency_delays_matching_to_the_first_step_after_it():
    e = make_engine(latency_ms=100)
    step(e, 1000)
    r = e.submit(OrderRequest(SPOT, "buy", "market", D("0.01")), 1000)
    assert [ev.order.state for ev in r.events] == ["live"]
    assert step(e, 1050, "61000", inst=SPOT) == []
    ev = step(e, 1100, "62000", inst=SPOT)
    assert ev[-1].order.state == "filled"
    assert ev[-1].fill.px == e.book(SPOT).asks[0][0] or ev[-1].fill.px > D("61000")
    assert ev[-1].fill.ts_ms == 1100


def _run(seed: int) -> list[tuple]:
    insts = default_instruments()
    market = GeneratedMarket(insts, seed=seed, start_ms=0)
    e = MatchingEngine(insts, initial_balances={"USDT": D("1000000"), "BTC": D("10")}, seed=seed)
    for t in market.advance(1000):
        e.on_market(t)
    px = market.last_price(SPOT)
    e.submit(OrderRequest(SPOT, "buy", "market", D("3")), market.now_ms)
    e.submit(OrderRequest(SPOT, "buy", "limit", D("1"), px=px - D("30")), market.now_ms)
    e.submit(OrderRequest(SWAP, "sell", "limit", D("50"), px=market.last_price(SWAP) + D("30")), market.now_ms)
    for _ in range(200):
        for t in market.advance(3000):
            e.on_market(t)
    return [(f.trade_id, f.ord_id, f.px, f.sz, f.fee, f.ts_ms, f.exec_type) for f in e.fills()]


def test_same_seed_same_calls_same_fills():
    a, b = _run(3), _run(3)
    assert a == b and len(a) > 3
    assert _run(4) != a


def test_unknown_instrument_ticks_are_ignored_and_book_empty_before_first_step():
    e = make_engine()
    assert e.book(SPOT).bids == ()
    assert e.on_market(tick("DOGE-USDT", 1, "1")) == []
    # Without a book a zero-latency market order waits for the first step.
    r = e.submit(OrderRequest(SPOT, "buy", "market", D("0.01")), 1)
    assert [ev.order.state for ev in r.events] == ["live"]
    ev = step(e, 1000, inst=SPOT)
    assert ev[-1].order.state == "filled"


def test_quote_sized_spot_market_buy_spends_about_the_quote_amount():
    e = make_engine()
    step(e, 1000)
    r = e.submit(OrderRequest(SPOT, "buy", "market", D("10000"), tgt_ccy="quote_ccy"), 1001)
    final = r.events[-1].order
    fills = e.fills(ord_id=final.ord_id)
    spent = sum(f.px * f.sz for f in fills)
    assert final.state == "filled" and len(fills) > 1 and D("9990") < spent <= D("10000")
    assert final.acc_fill_sz == sum(f.sz for f in fills)  # base units, as OKX reports it
    assert e.submit(OrderRequest(SPOT, "buy", "limit", D("10"), px=D("1"), tgt_ccy="quote_ccy"), 1002).s_code == "51000"


def test_instrument_without_spot_is_a_spot_and_swap_needs_suffix():
    insts = (SimInstrument(inst_id="SOL-USDT", initial_price=D("100"), tick_size=D("0.01"),
                           lot_size=D("0.01"), min_size=D("0.01")),)
    e = MatchingEngine(insts, initial_balances={"USDT": D("1000")})
    assert e.inst_type("SOL-USDT") == "SPOT"
    with pytest.raises(KeyError):
        e.position("SOL-USDT")

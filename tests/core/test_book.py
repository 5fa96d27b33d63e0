"""The book: positions valued at their marks, against hand-computed values (no Redis)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tradetree.core import DEFAULT_VALUATION, Mark, OrderIntent, Position, Side, strategy_values, value_positions
from tradetree.risk import PreTradeInputs, RiskConfig, check_pre_trade

NOW = 1_700_000_100_000
CFG = RiskConfig(max_mark_age_secs=30, contract_values={
    "okx:BTC-USDT-SWAP": D("0.01"), "okx:ETH-USDT-SWAP": D("0.1"), "binance:BTCUSDT": D(1)})


def _pos(strategy, venue, inst, qty, avg, realized="0", fees="0", fills=1) -> Position:
    return Position(strategy_id=strategy, venue=venue, inst_id=inst, qty=D(qty), avg_price=D(avg),
                    realized_pnl=D(realized), fees=D(fees), fill_count=fills, updated_ms=NOW - 5_000)


def _mark(price, age_ms=1_000) -> Mark:
    return Mark(price=D(price), ts_ms=NOW - age_ms, recv_ms=NOW - age_ms)


BOOK = [
    _pos("A", "okx", "BTC-USDT-SWAP", "3", "50000", realized="12.5", fees="0.75"),   # long swap
    _pos("A", "binance", "BTCUSDT", "0.5", "40000", realized="-3", fees="1"),         # long spot, other venue
    _pos("B", "okx", "ETH-USDT-SWAP", "-2", "3000", fees="0.3"),                      # short swap
]
MARKS = {("okx", "BTC-USDT-SWAP"): _mark("51000"), ("binance", "BTCUSDT"): _mark("39000", 2_500),
         ("okx", "ETH-USDT-SWAP"): _mark("3100")}


def _by_key(rows):
    return {(r.strategy_id, r.venue, r.inst_id): r for r in rows}


def test_long_short_and_spot_on_two_venues_by_hand():
    rows = _by_key(value_positions(BOOK, MARKS, now_ms=NOW, rules=CFG))
    btc = rows[("A", "okx", "BTC-USDT-SWAP")]
    # (51000 - 50000) * 3 * 0.01 = 30; |3| * 51000 * 0.01 = 1530; 12.5 + 30 - 0.75 = 41.75
    assert (btc.mark_price, btc.mark_age_ms, btc.contract_value) == (D("51000"), 1_000, D("0.01"))
    assert (btc.unrealized_pnl, btc.notional, btc.total_pnl) == (D(30), D(1530), D("41.75"))
    spot = rows[("A", "binance", "BTCUSDT")]
    # (39000 - 40000) * 0.5 * 1 = -500; 0.5 * 39000 = 19500; -3 - 500 - 1 = -504
    assert (spot.unrealized_pnl, spot.notional, spot.total_pnl, spot.mark_age_ms) == (D(-500), D(19500), D(-504),
                                                                                       2_500)
    eth = rows[("B", "okx", "ETH-USDT-SWAP")]
    # a short loses when the mark rises: (3100 - 3000) * -2 * 0.1 = -20; 2 * 3100 * 0.1 = 620; -20 - 0.3
    assert (eth.unrealized_pnl, eth.notional, eth.total_pnl) == (D(-20), D(620), D("-20.3"))
    assert all(r.valued and r.unvalued_reason == "" for r in rows.values())

    sums = strategy_values(rows.values())
    a, b = sums["A"], sums["B"]
    assert a.complete and (a.unrealized_pnl, a.total_pnl, a.notional) == (D(-470), D("-462.25"), D(21030))
    assert (a.realized_pnl, a.fees, a.open_positions) == (D("9.5"), D("1.75"), 2)
    assert b.complete and (b.unrealized_pnl, b.total_pnl) == (D(-20), D("-20.3"))


def test_a_short_gains_when_the_mark_falls():
    (row,) = value_positions([_pos("B", "okx", "ETH-USDT-SWAP", "-2", "3000")],
                             {("okx", "ETH-USDT-SWAP"): _mark("2950.5")}, now_ms=NOW, rules=CFG)
    assert row.unrealized_pnl == D("9.9")  # (2950.5 - 3000) * -2 * 0.1


@pytest.mark.parametrize("marks, why, age", [
    ({}, "no mark recorded", None),
    ({("okx", "BTC-USDT-SWAP"): _mark("51000", 30_001)}, "30.0 s old, max 30 s", 30_001),
])
def test_a_missing_or_stale_mark_is_unknown_never_zero_and_the_strategy_says_incomplete(marks, why, age):
    marks = {**{k: v for k, v in MARKS.items() if k != ("okx", "BTC-USDT-SWAP")}, **marks}
    rows = _by_key(value_positions(BOOK, marks, now_ms=NOW, rules=CFG))
    btc = rows[("A", "okx", "BTC-USDT-SWAP")]
    assert btc.mark_price is None and btc.mark_age_ms == age
    assert btc.notional is None and btc.unrealized_pnl is None and btc.total_pnl is None and not btc.valued
    assert "okx:BTC-USDT-SWAP" in btc.unvalued_reason and why in btc.unvalued_reason
    a = strategy_values(rows.values())["A"]
    assert not a.complete and a.unvalued == ("okx:BTC-USDT-SWAP",)
    assert a.unrealized_pnl is None and a.total_pnl is None and a.notional is None
    assert (a.unrealized_pnl_known, a.total_pnl_known, a.notional_known) == (D(-500), D(-504), D(19500))
    assert strategy_values(rows.values())["B"].complete  # another strategy's book is unaffected


def test_a_mark_exactly_at_the_bound_is_used_and_one_from_the_future_is_fresh():
    at_bound = {("okx", "BTC-USDT-SWAP"): _mark("51000", 30_000)}
    (row,) = value_positions(BOOK[:1], at_bound, now_ms=NOW, rules=CFG)
    assert row.unrealized_pnl == D(30)
    ahead = {("okx", "BTC-USDT-SWAP"): Mark(price=D("51000"), ts_ms=NOW + 900, recv_ms=NOW + 900)}
    (row,) = value_positions(BOOK[:1], ahead, now_ms=NOW, rules=CFG)
    assert row.mark_age_ms == 0 and row.unrealized_pnl == D(30)


def test_a_flat_position_needs_no_mark_its_total_is_realized_net_of_fees():
    (row,) = value_positions([_pos("A", "okx", "BTC-USDT-SWAP", "0", "0", realized="7.5", fees="1.25", fills=6)],
                             {}, now_ms=NOW, rules=CFG)
    assert (row.unrealized_pnl, row.notional, row.total_pnl, row.mark_price) == (D(0), D(0), D("6.25"), None)
    assert strategy_values([row])["A"].complete


def test_contract_values_configured_recorded_or_conflicting():
    pos = [_pos("A", "okx", "BTC-USDT-SWAP", "3", "50000")]
    recorded = {("okx", "BTC-USDT-SWAP"): D("0.01")}
    # Without configuration, the contract value the fills were applied with is used.
    (row,) = value_positions(pos, MARKS, now_ms=NOW, recorded_contract_values=recorded)
    assert row.contract_value == D("0.01") and row.unrealized_pnl == D(30)
    # Neither: unknown, and the reason names the setting.
    (row,) = value_positions(pos, MARKS, now_ms=NOW)
    assert row.unrealized_pnl is None and "risk.contract_values" in row.unvalued_reason
    # Configured differently from the venue's: unknown, both values named.
    wrong = RiskConfig(contract_values={"okx:BTC-USDT-SWAP": D("0.1")})
    (row,) = value_positions(pos, MARKS, now_ms=NOW, rules=wrong, recorded_contract_values=recorded)
    assert row.notional is None and "0.1" in row.unvalued_reason and "0.01" in row.unvalued_reason
    # The same value written differently is no conflict.
    (row,) = value_positions(pos, MARKS, now_ms=NOW, rules=CFG, recorded_contract_values={
        ("okx", "BTC-USDT-SWAP"): D("0.0100")})
    assert row.unrealized_pnl == D(30)


def test_json_dumps_in_and_out_give_the_same_book():
    rows = value_positions([p.model_dump(mode="json") for p in BOOK], MARKS, now_ms=NOW, rules=CFG)
    assert rows == value_positions(BOOK, MARKS, now_ms=NOW, rules=CFG)
    dumped = [r.model_dump(mode="json") for r in rows]
    btc = next(d for d in dumped if d["inst_id"] == "BTC-USDT-SWAP")
    assert btc["unrealized_pnl"] == "30.00" and btc["qty"] == "3" and btc["mark_price"] == "51000"
    # valued rows fed back in are revalued from their Position fields, not trusted
    assert value_positions(dumped, MARKS, now_ms=NOW, rules=CFG) == rows
    assert strategy_values(dumped) == strategy_values(rows)


def test_plain_position_dumps_count_as_unvalued_unless_flat():
    plain = [p.model_dump(mode="json") for p in BOOK] + [
        _pos("C", "okx", "BTC-USDT-SWAP", "0", "0", realized="2", fees="0.5").model_dump(mode="json")]
    sums = strategy_values(plain)
    assert not sums["A"].complete and sums["A"].unvalued == ("binance:BTCUSDT", "okx:BTC-USDT-SWAP")
    assert sums["C"].complete and sums["C"].total_pnl == D("1.5")


def test_the_default_rules_are_risk_configs_defaults():
    assert DEFAULT_VALUATION.max_mark_age_secs == RiskConfig().max_mark_age_secs
    assert DEFAULT_VALUATION.contract_value("okx", "BTC-USDT-SWAP") is None


def test_the_notional_shown_is_the_one_the_strategy_notional_limit_judges():
    """The pre-trade strategy notional limit at exactly the book's notional plus a new order's
    lets that order through; a hair below refuses it: the two valuations agree to the last digit."""
    rows = value_positions(BOOK, MARKS, now_ms=NOW, rules=CFG)
    a = strategy_values(rows)["A"]
    intent = OrderIntent(strategy_id="A", venue="okx", inst_id="ETH-USDT-SWAP", side=Side.BUY, size=D(1))
    order_notional = D("3100") * D("0.1")  # a new instrument for A: adds |1| * mark * cv
    inputs = PreTradeInputs(positions=tuple(BOOK), in_flight=(), marks={k: m.price for k, m in MARKS.items()})
    limit = a.notional + order_notional
    at = CFG.model_copy(update={"max_strategy_notional": limit})
    below = CFG.model_copy(update={"max_strategy_notional": limit - D("0.000001")})
    assert check_pre_trade(intent, inputs, at) == []
    assert any("notional" in r for r in check_pre_trade(intent, inputs, below))


def test_a_valued_row_is_a_position_and_rows_with_unknown_keys_still_sum():
    rows = value_positions(BOOK, MARKS, now_ms=NOW, rules=CFG)
    assert all(isinstance(r, Position) for r in rows)
    assert value_positions(rows, MARKS, now_ms=NOW, rules=CFG) == rows  # revalued, not doubled
    newer = [{**r.model_dump(mode="json"), "written_by_a_newer_version": 1} for r in rows]
    assert strategy_values(newer) == strategy_values(rows)

"""OKX row parsing: good rows, every garbled variant, and the incident row."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradetree.adapters.okx.parsing import (
    OKX_STATES,
    bar_interval_ms,
    candle_confirmed,
    map_order_state,
    parse_balances,
    parse_candle,
    parse_instrument,
    parse_net_positions,
    parse_order_ack,
    parse_order_fill,
    parse_order_report,
    parse_ticker,
    parse_trade_fill,
)
from tradetree.core.errors import OrderRejected, VenueProtocolError
from tradetree.core.types import FillLayer, InstrumentKind, Liquidity, OrderState, Side


def order_row(**overrides):
    row = {
        "instType": "SWAP", "instId": "BTC-USDT-SWAP", "ordId": "1001", "clOrdId": "tt0123abc",
        "side": "buy", "ordType": "market", "sz": "3", "px": "", "state": "partially_filled",
        "accFillSz": "2", "avgPx": "60010.5", "fee": "-0.06", "feeCcy": "USDT",
        "cTime": "1700000000000", "uTime": "1700000000500",
        "tradeId": "77", "fillPx": "60011", "fillSz": "1", "fillTime": "1700000000400",
        "fillFee": "-0.03", "fillFeeCcy": "USDT", "execType": "T",
    }
    row.update(overrides)
    return row


def fills_history_row(**overrides):
    row = {
        "instType": "SPOT", "instId": "BTC-USDT", "tradeId": "5", "ordId": "42", "clOrdId": "abc",
        "billId": "900", "side": "sell", "fillPx": "60000", "fillSz": "0.01", "fee": "-0.6",
        "feeCcy": "USDT", "execType": "M", "ts": "1700000001000",
    }
    row.update(overrides)
    return row


# -- order reports ------------------------------------------------------------------------


def test_order_report_reads_cumulative_fields():
    report = parse_order_report(order_row(), venue="okx")
    assert report.venue == "okx"
    assert report.inst_id == "BTC-USDT-SWAP"
    assert report.venue_order_id == "1001"
    assert report.client_order_id == "tt0123abc"
    assert report.side is Side.BUY
    assert report.state is OrderState.PARTIALLY_FILLED
    assert report.venue_state == "partially_filled"
    assert report.size == Decimal("3")
    assert report.filled_size == Decimal("2")
    assert report.avg_price == Decimal("60010.5")
    assert report.updated_ms == 1_700_000_000_500


@pytest.mark.parametrize(
    "venue_state,state",
    [
        ("live", OrderState.LIVE),
        ("partially_filled", OrderState.PARTIALLY_FILLED),
        ("filled", OrderState.FILLED),
        ("canceled", OrderState.CANCELED),
        ("mmp_canceled", OrderState.CANCELED),
        ("order_failed", OrderState.CANCELED),
    ],
)
def test_every_okx_state_maps(venue_state, state):
    assert map_order_state(venue_state) is state
    assert parse_order_report(order_row(state=venue_state), venue="okx").state is state


def test_state_table_covers_exactly_the_okx_states():
    assert set(OKX_STATES) == {"live", "partially_filled", "filled", "canceled", "mmp_canceled", "order_failed"}


def test_new_order_has_no_average_price_and_empty_client_id_is_none():
    report = parse_order_report(order_row(state="live", accFillSz="0", avgPx="", clOrdId=""), venue="okx")
    assert report.filled_size == 0
    assert report.avg_price is None
    assert report.client_order_id is None


def test_avg_px_zero_without_fills_is_none():
    report = parse_order_report(order_row(state="live", accFillSz="0", avgPx="0"), venue="okx")
    assert report.avg_price is None


def test_update_time_falls_back_to_creation_time():
    report = parse_order_report(order_row(uTime=""), venue="okx")
    assert report.updated_ms == 1_700_000_000_000


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"ordId": ""}, "ordId"),
        ({"instId": None}, "instId"),
        ({"state": "exploded"}, "state"),
        ({"state": None}, "state"),
        ({"side": "long"}, "side"),
        ({"sz": "abc"}, "sz"),
        ({"sz": "0"}, "sz"),
        ({"sz": "NaN"}, "sz"),
        ({"sz": "Infinity"}, "sz"),
        ({"accFillSz": "-1"}, "accFillSz"),
        ({"accFillSz": "1e"}, "accFillSz"),
        ({"avgPx": "x"}, "avgPx"),
        ({"uTime": "", "cTime": ""}, "cTime"),
        ({"uTime": "12.5"}, "uTime"),
        ({"uTime": "-5"}, "uTime"),
        ({"sz": ["3"]}, "sz"),
        ({"sz": True}, "sz"),
        ({"ordId": 1001}, "ordId"),
    ],
)
def test_garbled_order_row_names_the_field(overrides, field):
    with pytest.raises(VenueProtocolError) as info:
        parse_order_report(order_row(**overrides), venue="okx")
    assert repr(field) in str(info.value)


@pytest.mark.parametrize("row", [None, [], "live", 42])
def test_non_object_rows_raise_protocol_errors(row):
    for parse in (
        lambda: parse_order_report(row, venue="okx"),
        lambda: parse_order_fill(row, venue="okx", layer=FillLayer.WS),
        lambda: parse_trade_fill(row, venue="okx", layer=FillLayer.POLL),
        lambda: parse_ticker(row, venue="okx"),
        lambda: parse_instrument(row, venue="okx"),
    ):
        with pytest.raises(VenueProtocolError):
            parse()


# -- fills from order rows ------------------------------------------------------------------


def test_order_row_fill_is_the_last_fill_with_fee_sign_flipped():
    fill = parse_order_fill(order_row(), venue="okx", layer=FillLayer.WS)
    assert fill is not None
    assert fill.trade_id == "77"
    assert fill.inst_id == "BTC-USDT-SWAP"
    assert fill.client_order_id == "tt0123abc"
    assert fill.venue_order_id == "1001"
    assert fill.side is Side.BUY
    assert fill.price == Decimal("60011")
    assert fill.size == Decimal("1")  # last fill, not accFillSz
    assert fill.fee == Decimal("0.03")  # OKX -0.03 charged -> we paid 0.03
    assert fill.fee_ccy == "USDT"
    assert fill.liquidity is Liquidity.TAKER
    assert fill.ts_ms == 1_700_000_000_400
    assert fill.layer is FillLayer.WS


def test_rebate_is_a_negative_fee():
    fill = parse_order_fill(order_row(fillFee="0.01", execType="M"), venue="okx", layer=FillLayer.WS)
    assert fill.fee == Decimal("-0.01")
    assert fill.liquidity is Liquidity.MAKER


def test_incident_row_status_yes_fill_none():
    """The incident: the order is pushed as filled, but the fill record is dropped (empty tradeId)."""
    row = order_row(state="filled", accFillSz="3", avgPx="60010", tradeId="", fillSz="0", fillPx="")
    report = parse_order_report(row, venue="okx")
    assert report.state is OrderState.FILLED
    assert report.filled_size == Decimal("3")
    assert parse_order_fill(row, venue="okx", layer=FillLayer.WS) is None


def test_status_only_rows_carry_no_fill():
    live = order_row(state="live", accFillSz="0", avgPx="", tradeId="", fillPx="", fillSz="", fillFee="")
    assert parse_order_fill(live, venue="okx", layer=FillLayer.WS) is None
    missing = {k: v for k, v in order_row().items() if k not in ("tradeId", "fillPx", "fillSz")}
    assert parse_order_fill(missing, venue="okx", layer=FillLayer.WS) is None
    zero = order_row(fillSz="0")
    assert parse_order_fill(zero, venue="okx", layer=FillLayer.WS) is None


def test_missing_fee_means_zero_and_fill_time_falls_back_to_update_time():
    fill = parse_order_fill(order_row(fillFee="", fillFeeCcy="", fillTime=""), venue="okx", layer=FillLayer.WS)
    assert fill.fee == 0
    assert fill.fee_ccy == ""
    assert fill.ts_ms == 1_700_000_000_500


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"fillSz": ""}, "fillSz"),
        ({"fillSz": "-1"}, "fillSz"),
        ({"fillSz": "one"}, "fillSz"),
        ({"fillPx": ""}, "fillPx"),
        ({"fillPx": "0"}, "fillPx"),
        ({"fillFee": "free"}, "fillFee"),
        ({"side": ""}, "side"),
        ({"ordId": ""}, "ordId"),
        ({"fillTime": "", "uTime": ""}, "fillTime"),
        ({"fillTime": "soon"}, "fillTime"),
        ({"tradeId": 77}, "tradeId"),
    ],
)
def test_garbled_fill_raises_never_half_parsed(overrides, field):
    with pytest.raises(VenueProtocolError) as info:
        parse_order_fill(order_row(**overrides), venue="okx", layer=FillLayer.WS)
    assert repr(field) in str(info.value)


# -- fills-history rows -----------------------------------------------------------------------


def test_trade_fill_from_fills_history():
    fill = parse_trade_fill(fills_history_row(), venue="okx", layer=FillLayer.POLL)
    assert (fill.trade_id, fill.venue_order_id, fill.client_order_id) == ("5", "42", "abc")
    assert fill.side is Side.SELL
    assert fill.price == Decimal("60000")
    assert fill.size == Decimal("0.01")
    assert fill.fee == Decimal("0.6")
    assert fill.liquidity is Liquidity.MAKER
    assert fill.ts_ms == 1_700_000_001_000
    assert fill.layer is FillLayer.POLL


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"tradeId": ""}, "tradeId"),
        ({"fillSz": "0"}, "fillSz"),
        ({"fillPx": None}, "fillPx"),
        ({"fee": "?"}, "fee"),
        ({"ts": ""}, "ts"),
    ],
)
def test_garbled_fills_history_row(overrides, field):
    with pytest.raises(VenueProtocolError) as info:
        parse_trade_fill(fills_history_row(**overrides), venue="okx", layer=FillLayer.POLL)
    assert repr(field) in str(info.value)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted(order_row())),
        st.one_of(st.none(), st.text(max_size=6), st.integers(), st.floats(), st.lists(st.text(), max_size=2)),
        max_size=8,
    )
)
def test_any_garbling_raises_protocol_error_or_parses(changes):
    """Whatever the fields hold, parsing either succeeds or raises VenueProtocolError, nothing else."""
    row = order_row(**changes)
    for parse in (
        lambda: parse_order_report(row, venue="okx"),
        lambda: parse_order_fill(row, venue="okx", layer=FillLayer.WS),
        lambda: parse_trade_fill(row, venue="okx", layer=FillLayer.POLL),
    ):
        try:
            parse()
        except VenueProtocolError:
            pass


# -- tickers, candles -------------------------------------------------------------------------


def test_ticker():
    ticker = parse_ticker(
        {"instId": "BTC-USDT", "last": "60000.1", "bidPx": "60000", "askPx": "60000.2", "ts": "1700000000000"},
        venue="okx",
    )
    assert ticker.inst_id == "BTC-USDT"
    assert ticker.last == Decimal("60000.1")
    assert ticker.bid == Decimal("60000")
    assert ticker.ask == Decimal("60000.2")
    assert ticker.ts_ms == 1_700_000_000_000


def test_ticker_with_empty_book_side():
    ticker = parse_ticker({"instId": "X-Y", "last": "1", "bidPx": "", "askPx": "0", "ts": "1"}, venue="okx")
    assert ticker.bid is None and ticker.ask is None


@pytest.mark.parametrize(
    "overrides,field",
    [({"last": ""}, "last"), ({"last": "-1"}, "last"), ({"ts": "x"}, "ts"), ({"instId": ""}, "instId"),
     ({"bidPx": "bid"}, "bidPx")],
)
def test_garbled_ticker(overrides, field):
    row = {"instId": "BTC-USDT", "last": "1", "bidPx": "1", "askPx": "2", "ts": "1"}
    row.update(overrides)
    with pytest.raises(VenueProtocolError) as info:
        parse_ticker(row, venue="okx")
    assert repr(field) in str(info.value)


@pytest.mark.parametrize(
    "bar,ms", [("1m", 60_000), ("15m", 900_000), ("1H", 3_600_000), ("4H", 14_400_000),
               ("1Dutc", 86_400_000), ("1W", 604_800_000)],
)
def test_bar_codes(bar, ms):
    assert bar_interval_ms(bar) == ms


@pytest.mark.parametrize("bar", ["1M", "3M", "", "H", "1h", "xm", None])
def test_unknown_bar_codes(bar):
    with pytest.raises(VenueProtocolError):
        bar_interval_ms(bar)


def test_candle():
    row = ["1700000000000", "100", "110", "95", "105", "12.5", "1250", "1250", "0"]
    bar = parse_candle(row, venue="okx", inst_id="BTC-USDT", bar="1m")
    assert (bar.open, bar.high, bar.low, bar.close) == (Decimal(100), Decimal(110), Decimal(95), Decimal(105))
    assert bar.volume == Decimal("12.5")
    assert bar.interval_ms == 60_000
    assert bar.ts_ms == 1_700_000_000_000
    assert candle_confirmed(row) is False
    assert candle_confirmed(row[:8] + ["1"]) is True
    assert candle_confirmed(row[:6]) is True


@pytest.mark.parametrize(
    "row",
    [
        ["1", "100", "90", "95", "105", "1"],  # high below close
        ["1", "100", "110", "101", "105", "1"],  # low above open
        ["1", "100", "110", "95", "105"],  # too short
        ["1", "a", "110", "95", "105", "1"],
        ["1", "100", "110", "95", "105", "-1"],
        "1,2,3",
    ],
)
def test_garbled_candles(row):
    with pytest.raises(VenueProtocolError):
        parse_candle(row, venue="okx", inst_id="BTC-USDT", bar="1m")


def test_candle_confirm_flag_must_be_0_or_1():
    with pytest.raises(VenueProtocolError):
        candle_confirmed(["1", "1", "1", "1", "1", "1", "1", "1", "yes"])


# -- instruments ------------------------------------------------------------------------------


def test_spot_instrument():
    inst = parse_instrument(
        {"instId": "BTC-USDT", "instType": "SPOT", "baseCcy": "BTC", "quoteCcy": "USDT", "state": "live",
         "tickSz": "0.1", "lotSz": "0.00001", "minSz": "0.0001"},
        venue="okx",
    )
    assert inst.kind is InstrumentKind.SPOT
    assert (inst.base, inst.quote, inst.contract_value) == ("BTC", "USDT", Decimal(1))
    assert inst.lot_size == Decimal("0.00001")
    assert inst.ccxt_symbol == "BTC/USDT"


def test_linear_swap_instrument():
    inst = parse_instrument(
        {"instId": "BTC-USDT-SWAP", "instType": "SWAP", "uly": "BTC-USDT", "settleCcy": "USDT", "ctVal": "0.01",
         "state": "live", "tickSz": "0.1", "lotSz": "0.01", "minSz": "0.01", "lever": "100"},
        venue="okx",
    )
    assert inst.kind is InstrumentKind.SWAP
    assert inst.contract_value == Decimal("0.01")
    assert inst.settle == "USDT"
    assert inst.ccxt_symbol == "BTC/USDT:USDT"


@pytest.mark.parametrize(
    "row",
    [
        {"instId": "BTC-USD-SWAP", "instType": "SWAP", "uly": "BTC-USD", "settleCcy": "BTC", "ctVal": "100",
         "state": "live", "tickSz": "0.1", "lotSz": "1", "minSz": "1"},  # inverse
        {"instId": "BTC-USDT-250101", "instType": "FUTURES", "state": "live"},
        {"instId": "BTC-USDT", "instType": "SPOT", "state": "suspend"},
    ],
)
def test_untraded_instruments_are_none(row):
    assert parse_instrument(row, venue="okx") is None


@pytest.mark.parametrize(
    "overrides,field",
    [({"tickSz": ""}, "tickSz"), ({"lotSz": "0"}, "lotSz"), ({"uly": "BTCUSDT"}, "uly"), ({"ctVal": "x"}, "ctVal")],
)
def test_garbled_swap_instrument(overrides, field):
    row = {"instId": "BTC-USDT-SWAP", "instType": "SWAP", "uly": "BTC-USDT", "settleCcy": "USDT", "ctVal": "0.01",
           "state": "live", "tickSz": "0.1", "lotSz": "0.01", "minSz": "0.01"}
    row.update(overrides)
    with pytest.raises(VenueProtocolError) as info:
        parse_instrument(row, venue="okx")
    assert repr(field) in str(info.value)


# -- acks, balances, positions ----------------------------------------------------------------


def test_order_ack():
    assert parse_order_ack({"ordId": "9", "clOrdId": "c1", "sCode": "0", "sMsg": ""}, client_order_id="c1") == "9"


def test_order_ack_with_error_code_is_a_rejection():
    with pytest.raises(OrderRejected) as info:
        parse_order_ack({"ordId": "", "clOrdId": "c1", "sCode": "51008", "sMsg": "no money"}, client_order_id="c1")
    assert info.value.code == "51008"


@pytest.mark.parametrize(
    "row", [{"ordId": "", "clOrdId": "c1", "sCode": "0"}, {"ordId": "9", "clOrdId": "other", "sCode": "0"}]
)
def test_bad_acks(row):
    with pytest.raises(VenueProtocolError):
        parse_order_ack(row, client_order_id="c1")


def test_balances_use_equity_then_cash():
    data = [{"details": [{"ccy": "USDT", "eq": "100.5", "cashBal": "99"}, {"ccy": "BTC", "eq": "", "cashBal": "2"}]}]
    assert parse_balances(data) == {"USDT": Decimal("100.5"), "BTC": Decimal("2")}


@pytest.mark.parametrize("data", [None, [{"details": "x"}], [{"details": [{"ccy": "BTC"}]}], [{"details": [{"eq": "1"}]}]])
def test_garbled_balances(data):
    with pytest.raises(VenueProtocolError):
        parse_balances(data)


def test_net_positions():
    rows = [
        {"instId": "BTC-USDT-SWAP", "posSide": "net", "pos": "-3"},
        {"instId": "ETH-USDT-SWAP", "posSide": "long", "pos": "2"},
        {"instId": "ETH-USDT-SWAP", "posSide": "short", "pos": "5"},
        {"instId": "SOL-USDT-SWAP", "posSide": "net", "pos": "0"},
    ]
    assert parse_net_positions(rows) == {"BTC-USDT-SWAP": Decimal(-3), "ETH-USDT-SWAP": Decimal(-3)}


@pytest.mark.parametrize(
    "rows", [None, [{"instId": "X", "pos": "a"}], [{"instId": "X", "posSide": "up", "pos": "1"}], [{"pos": "1"}]]
)
def test_garbled_positions(rows):
    with pytest.raises(VenueProtocolError):
        parse_net_positions(rows)

"""OKX v5 rows (REST ``data`` entries and WS pushes) -> tradetree domain types.

Pure functions, no I/O. Every parser validates what it reads: a missing
field, a non-numeric string, a non-finite number or an unknown enum value
raises ``VenueProtocolError`` naming the field, never a ``KeyError`` or
``ValueError``, and never returns a half-parsed object. OKX sends numbers as
strings and uses ``""`` for "not applicable"; optional fields treat ``""`` as
absent (okx_protocol.md section 2).

Fees: OKX reports a fee as negative when it is charged; tradetree's
``Fill.fee`` is positive when paid, so the sign flips here and only here.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, overload

from tradetree.adapters.okx.reports import VenueOrderReport
from tradetree.core import (
    Bar,
    Fill,
    FillLayer,
    Instrument,
    InstrumentKind,
    Liquidity,
    OrderRejected,
    OrderState,
    Side,
    Ticker,
    VenueProtocolError,
)

__all__ = [
    "OKX_STATES",
    "map_order_state",
    "parse_instrument",
    "parse_order_report",
    "parse_order_fill",
    "parse_trade_fill",
    "parse_ticker",
    "parse_candle",
    "candle_confirmed",
    "bar_interval_ms",
    "parse_order_ack",
    "parse_balances",
    "parse_net_positions",
]

# OKX order states. ``order_failed`` is a failure *after* acceptance (the
# order may have partly filled), so like ccxt it counts as canceled: REJECTED
# is reserved for orders the venue refused outright at submission.
OKX_STATES: dict[str, OrderState] = {
    "live": OrderState.LIVE,
    "partially_filled": OrderState.PARTIALLY_FILLED,
    "filled": OrderState.FILLED,
    "canceled": OrderState.CANCELED,
    "mmp_canceled": OrderState.CANCELED,
    "order_failed": OrderState.CANCELED,
}

_SIDES = {"buy": Side.BUY, "sell": Side.SELL}
_EXEC_TYPES = {"T": Liquidity.TAKER, "M": Liquidity.MAKER}
_BAR_UNITS_MS = {"m": 60_000, "H": 3_600_000, "D": 86_400_000, "W": 604_800_000}
_MAX_REPR = 80


def _fail(what: str, field: str, problem: str, value: Any = None) -> VenueProtocolError:
    shown = repr(value)
    if len(shown) > _MAX_REPR:
        shown = shown[:_MAX_REPR] + "..."
    suffix = "" if value is None else f" (got {shown})"
    return VenueProtocolError(f"okx {what}: field {field!r}: {problem}{suffix}", venue="okx")


def _mapping(row: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(row, Mapping):
        raise _fail(what, "<row>", "expected a JSON object", row)
    return row


@overload
def _text(row: Mapping[str, Any], field: str, what: str, *, required: Literal[True] = True) -> str: ...
@overload
def _text(row: Mapping[str, Any], field: str, what: str, *, required: bool) -> str | None: ...
def _text(row: Mapping[str, Any], field: str, what: str, *, required: bool = True) -> str | None:
    value = row.get(field)
    if value is None or value == "":
        if required:
            raise _fail(what, field, "missing")
        return None
    if not isinstance(value, str):
        raise _fail(what, field, "expected a string", value)
    return value


@overload
def _decimal(row: Mapping[str, Any], field: str, what: str, *, required: Literal[True] = True) -> Decimal: ...
@overload
def _decimal(row: Mapping[str, Any], field: str, what: str, *, required: bool) -> Decimal | None: ...
def _decimal(row: Mapping[str, Any], field: str, what: str, *, required: bool = True) -> Decimal | None:
    value = row.get(field)
    if value is None or value == "":
        if required:
            raise _fail(what, field, "missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _fail(what, field, "expected a number", value)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _fail(what, field, "not a number", value) from None
    if not number.is_finite():
        raise _fail(what, field, "not a finite number", value)
    return number


def _positive(row: Mapping[str, Any], field: str, what: str) -> Decimal:
    number = _decimal(row, field, what)
    assert number is not None
    if number <= 0:
        raise _fail(what, field, "must be positive", row.get(field))
    return number


def _ms(row: Mapping[str, Any], field: str, what: str, *, required: bool = True) -> int | None:
    number = _decimal(row, field, what, required=required)
    if number is None:
        return None
    if number != number.to_integral_value() or number < 0:
        raise _fail(what, field, "expected epoch milliseconds", row.get(field))
    return int(number)


def _side(row: Mapping[str, Any], what: str) -> Side:
    raw = _text(row, "side", what)
    try:
        return _SIDES[raw]
    except KeyError:
        raise _fail(what, "side", "unknown side", raw) from None


def map_order_state(venue_state: Any) -> OrderState:
    """OKX ``state`` -> OrderState. Raises VenueProtocolError for an unknown state."""
    try:
        return OKX_STATES[venue_state]
    except (KeyError, TypeError):
        raise _fail("order", "state", "unknown order state", venue_state) from None


def parse_instrument(row: Any, *, venue: str) -> Instrument | None:
    """A ``public/instruments`` row -> Instrument, or None for what tradetree does not trade.

    Traded: SPOT and linear SWAP (settled in the quote currency) in state
    ``live``. Anything else (futures, options, inverse swaps, suspended
    instruments) returns None.
    """
    what = "instrument"
    row = _mapping(row, what)
    inst_id = _text(row, "instId", what)
    inst_type = _text(row, "instType", what)
    if row.get("state") != "live" or inst_type not in ("SPOT", "SWAP"):
        return None
    common = {
        "venue": venue,
        "inst_id": inst_id,
        "tick_size": _positive(row, "tickSz", what),
        "lot_size": _positive(row, "lotSz", what),
        "min_size": _positive(row, "minSz", what),
    }
    if inst_type == "SPOT":
        return Instrument(
            kind=InstrumentKind.SPOT,
            base=_text(row, "baseCcy", what),
            quote=_text(row, "quoteCcy", what),
            **common,
        )
    underlying = _text(row, "uly", what) or ""
    parts = underlying.split("-")
    if len(parts) != 2 or not all(parts):
        raise _fail(what, "uly", "expected BASE-QUOTE", underlying)
    base, quote = parts
    settle = _text(row, "settleCcy", what)
    if settle != quote:
        return None  # inverse swap: not traded
    return Instrument(
        kind=InstrumentKind.SWAP,
        base=base,
        quote=quote,
        settle=settle,
        contract_value=_positive(row, "ctVal", what),
        **common,
    )


def parse_order_report(row: Any, *, venue: str) -> VenueOrderReport:
    """An order object (REST ``trade/order``/``orders-pending`` or a WS ``orders`` row) -> report."""
    what = "order"
    row = _mapping(row, what)
    filled = _decimal(row, "accFillSz", what, required=False) or Decimal(0)
    avg = _decimal(row, "avgPx", what, required=False)
    if filled < 0:
        raise _fail(what, "accFillSz", "must not be negative", row.get("accFillSz"))
    updated = _ms(row, "uTime", what, required=False)
    if updated is None:
        updated = _ms(row, "cTime", what)
    return VenueOrderReport(
        venue=venue,
        inst_id=_text(row, "instId", what),
        venue_order_id=_text(row, "ordId", what),
        client_order_id=_text(row, "clOrdId", what, required=False),
        side=_side(row, what),
        state=map_order_state(row.get("state")),
        venue_state=row["state"],
        size=_positive(row, "sz", what),
        filled_size=filled,
        avg_price=avg if avg is not None and avg > 0 and filled > 0 else None,
        updated_ms=updated,
    )


def _fill(
    row: Mapping[str, Any],
    *,
    venue: str,
    layer: FillLayer,
    what: str,
    px_field: str,
    sz_field: str,
    fee_field: str,
    fee_ccy_field: str,
    ts_fields: tuple[str, ...],
) -> Fill:
    fee = _decimal(row, fee_field, what, required=False)
    ts_ms = None
    for field in ts_fields:
        ts_ms = _ms(row, field, what, required=False)
        if ts_ms is not None:
            break
    if ts_ms is None:
        raise _fail(what, ts_fields[0], "missing")
    exec_type = row.get("execType")
    return Fill(
        venue=venue,
        inst_id=_text(row, "instId", what),
        trade_id=_text(row, "tradeId", what),
        client_order_id=_text(row, "clOrdId", what, required=False),
        venue_order_id=_text(row, "ordId", what),
        side=_side(row, what),
        price=_positive(row, px_field, what),
        size=_positive(row, sz_field, what),
        fee=-fee if fee else Decimal(0),
        fee_ccy=_text(row, fee_ccy_field, what, required=False) or "",
        liquidity=_EXEC_TYPES.get(exec_type) if isinstance(exec_type, str) else None,
        ts_ms=ts_ms,
        layer=layer,
    )


def parse_order_fill(row: Any, *, venue: str, layer: FillLayer) -> Fill | None:
    """The last fill carried by an order row (WS ``orders`` or REST ``trade/order``), if any.

    Returns None when the row carries no fill: ``tradeId`` empty (a status-only
    update, or the incident where the fill record was dropped) or ``fillSz``
    zero. A row that does name a trade but whose fill fields are garbled
    raises VenueProtocolError.
    """
    what = "order fill"
    row = _mapping(row, what)
    if _text(row, "tradeId", what, required=False) is None:
        return None
    size = _decimal(row, "fillSz", what)
    if size is not None and size == 0:
        return None
    return _fill(
        row, venue=venue, layer=layer, what=what, px_field="fillPx", sz_field="fillSz",
        fee_field="fillFee", fee_ccy_field="fillFeeCcy", ts_fields=("fillTime", "uTime"),
    )


def parse_trade_fill(row: Any, *, venue: str, layer: FillLayer) -> Fill:
    """A ``trade/fills(-history)`` row -> Fill. Every such row must be a complete fill."""
    return _fill(
        _mapping(row, "fill"), venue=venue, layer=layer, what="fill", px_field="fillPx",
        sz_field="fillSz", fee_field="fee", fee_ccy_field="feeCcy", ts_fields=("ts", "fillTime"),
    )


def parse_ticker(row: Any, *, venue: str) -> Ticker:
    """A ``tickers`` push or ``market/ticker`` row -> Ticker. A bid/ask of ``""`` or 0 is None."""
    what = "ticker"
    row = _mapping(row, what)
    bid = _decimal(row, "bidPx", what, required=False)
    ask = _decimal(row, "askPx", what, required=False)
    return Ticker(
        venue=venue,
        inst_id=_text(row, "instId", what),
        ts_ms=_ms(row, "ts", what),
        last=_positive(row, "last", what),
        bid=bid if bid is not None and bid > 0 else None,
        ask=ask if ask is not None and ask > 0 else None,
    )


def bar_interval_ms(bar: str) -> int:
    """OKX bar code (``1m``, ``4H``, ``1Dutc``, ``1W``) -> length in ms.

    Raises VenueProtocolError for month bars (not fixed-length) and unknown codes.
    """
    code = bar[:-3] if isinstance(bar, str) and bar.endswith("utc") else bar
    if not isinstance(code, str) or len(code) < 2 or code[-1] not in _BAR_UNITS_MS or not code[:-1].isdigit():
        raise _fail("candle", "bar", "unknown bar code", bar)
    return int(code[:-1]) * _BAR_UNITS_MS[code[-1]]


def _candle_row(row: Any) -> list[Any]:
    if not isinstance(row, (list, tuple)) or len(row) < 6:
        raise _fail("candle", "<row>", "expected [ts,o,h,l,c,vol,...]", row)
    return list(row)


def parse_candle(row: Any, *, venue: str, inst_id: str, bar: str) -> Bar:
    """A candle row ``[ts,o,h,l,c,vol,volCcy,volCcyQuote,confirm]`` -> Bar (volume = ``vol``, venue units)."""
    what = "candle"
    cells = _candle_row(row)
    named = dict(zip(("ts", "o", "h", "l", "c", "vol"), cells))
    prices = {k: _positive(named, k, what) for k in ("o", "h", "l", "c")}
    volume = _decimal(named, "vol", what)
    if volume < 0:
        raise _fail(what, "vol", "must not be negative", named["vol"])
    if prices["h"] < max(prices["o"], prices["c"], prices["l"]) or prices["l"] > min(prices["o"], prices["c"]):
        raise _fail(what, "h", "high/low do not bound open/close", cells[:5])
    return Bar(
        venue=venue,
        inst_id=inst_id,
        ts_ms=_ms(named, "ts", what),
        interval_ms=bar_interval_ms(bar),
        open=prices["o"],
        high=prices["h"],
        low=prices["l"],
        close=prices["c"],
        volume=volume,
    )


def candle_confirmed(row: Any) -> bool:
    """True when the candle is final (``confirm == "1"``); rows without the flag are final (REST history)."""
    cells = _candle_row(row)
    if len(cells) < 9:
        return True
    if cells[8] not in ("0", "1"):
        raise _fail("candle", "confirm", "expected '0' or '1'", cells[8])
    return cells[8] == "1"


def parse_order_ack(row: Any, *, client_order_id: str) -> str:
    """A ``batch-orders``/``trade/order`` ack row -> the venue order id.

    Raises:
        OrderRejected: the row carries a non-zero ``sCode`` (reason in the message).
        VenueProtocolError: the ack is for another clOrdId or lacks ``ordId``.
    """
    what = "order ack"
    row = _mapping(row, what)
    s_code = row.get("sCode", "0")
    if s_code not in ("0", 0, ""):
        raise OrderRejected(f"okx rejected order {client_order_id}: {s_code} {row.get('sMsg', '')}".strip(),
                            venue="okx", code=str(s_code))
    acked = _text(row, "clOrdId", what, required=False)
    if acked is not None and acked != client_order_id:
        raise _fail(what, "clOrdId", f"ack for another order (sent {client_order_id!r})", acked)
    return _text(row, "ordId", what)


def parse_balances(data: Any) -> dict[str, Decimal]:
    """``account/balance`` data -> {ccy: equity}. Uses ``eq`` (ccxt's ``total``), else ``cashBal``."""
    what = "balance"
    if not isinstance(data, list):
        raise _fail(what, "data", "expected a list", data)
    balances: dict[str, Decimal] = {}
    for account in data:
        details = _mapping(account, what).get("details", [])
        if not isinstance(details, list):
            raise _fail(what, "details", "expected a list", details)
        for detail in details:
            detail = _mapping(detail, what)
            ccy = _text(detail, "ccy", what)
            amount = _decimal(detail, "eq", what, required=False)
            if amount is None:
                amount = _decimal(detail, "cashBal", what)
            balances[ccy] = balances.get(ccy, Decimal(0)) + amount
    return balances


def parse_net_positions(rows: Any) -> dict[str, Decimal]:
    """``account/positions`` rows -> {inst_id: signed contracts}, flat instruments left out.

    ``posSide`` ``net`` carries the sign in ``pos``; ``long``/``short``
    (hedge mode) rows are added up as +|pos| and -|pos|.
    """
    what = "position"
    if not isinstance(rows, list):
        raise _fail(what, "data", "expected a list", rows)
    net: dict[str, Decimal] = {}
    for row in rows:
        row = _mapping(row, what)
        inst_id = _text(row, "instId", what)
        pos = _decimal(row, "pos", what)
        pos_side = row.get("posSide") or "net"
        if pos_side == "long":
            pos = abs(pos)
        elif pos_side == "short":
            pos = -abs(pos)
        elif pos_side != "net":
            raise _fail(what, "posSide", "unknown position side", pos_side)
        net[inst_id] = net.get(inst_id, Decimal(0)) + pos
    return {inst_id: qty for inst_id, qty in net.items() if qty != 0}

"""OKX v5 REST for the simulator (aiohttp), plus the OKX row formats shared with WS.

Follows ``okx_protocol.md`` sections 2-5 and 7: the ``{"code","msg","data"}``
envelope with string numbers, private endpoints signed with
``base64(HMAC_SHA256(secret, ts + METHOD + raw path?query + raw body))`` and a
30 s skew window (401 with 50102/50103-50107/50111/50112/50113/50105 on
failure), per-order ``sCode`` rejections, and REST fault injection (503 HTML,
429 + 50011, slow 504).

Fees are reported OKX-style: negative when charged. All timestamps in rows are
the venue's clock (see :mod:`sim.server`); only the signature check and
``public/time`` use the wall clock, because that is what clients sign with.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from aiohttp import web

from tradetree.sim.config import SimulatorConfig
from tradetree.sim.faults import FaultInjector
from tradetree.sim.market_data import CandleAggregator, CandleRow, PublicTrade, spot_of
from tradetree.sim.matching import (
    BalanceView,
    BookView,
    FillView,
    MatchingEngine,
    OrderEvent,
    OrderRequest,
    OrderView,
    PositionView,
)

__all__ = [
    "VenueBackend",
    "OkxRestApi",
    "sign_okx",
    "fmt",
    "instrument_row",
    "order_row",
    "ws_order_row",
    "fill_row",
    "position_row",
    "balance_row",
    "ticker_row",
    "book_levels",
    "candle_row",
    "public_trade_row",
    "BAR_MS",
]

_SKEW_MS = 30_000
_PRIVATE_PREFIXES = ("/api/v5/account/", "/api/v5/trade/", "/api/v5/asset/", "/api/v5/users/")
_MAX_BATCH = 20
_BODY = web.RequestKey("okx_raw_body", bytes)

BAR_MS: dict[str, int] = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1H": 3_600_000, "2H": 7_200_000, "4H": 14_400_000, "6H": 21_600_000, "12H": 43_200_000,
    "1D": 86_400_000, "2D": 172_800_000, "3D": 259_200_000, "1W": 604_800_000,
}
for _k in ("6H", "12H", "1D", "2D", "3D", "1W"):
    BAR_MS[_k + "utc"] = BAR_MS[_k]


class VenueBackend(Protocol):
    """What the REST and WS layers need from the running simulator."""

    config: SimulatorConfig
    engine: MatchingEngine
    faults: FaultInjector
    candles: CandleAggregator
    lock: threading.RLock

    def venue_now_ms(self) -> int: ...

    def wall_now_ms(self) -> int: ...

    def publish(self, events: Sequence[OrderEvent]) -> None: ...

    def recent_trades(self, inst_id: str, limit: int) -> list[PublicTrade]: ...

    def arm_cancel_all_after(self, timeout_secs: int) -> int: ...


# ---------------------------------------------------------------------- formats


def fmt(d: Decimal | None) -> str:
    """A decimal as OKX writes it: plain notation, no trailing zeros; None -> ""."""
    if d is None:
        return ""
    if d == 0:
        return "0"
    return format(d.normalize(), "f")


def _neg(d: Decimal) -> str:
    return fmt(-d) if d else "0"


def sign_okx(secret: str, prehash: str) -> str:
    """``base64(HMAC_SHA256(secret, prehash))``: OKX's REST and WS login signature."""
    digest = hmac.new(secret.encode(), prehash.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def instrument_row(engine: MatchingEngine, inst_id: str) -> dict[str, str]:
    cfg = engine.instruments[inst_id]
    common = {
        "instId": inst_id, "state": "live", "tickSz": fmt(cfg.tick_size), "lotSz": fmt(cfg.lot_size),
        "minSz": fmt(cfg.min_size), "listTime": "1600000000000", "expTime": "", "alias": "",
        "maxMktSz": "1000000", "maxLmtSz": "100000000", "ruleType": "normal",
    }
    spot = spot_of(inst_id)
    if spot is None:
        base, quote = inst_id.split("-", 1)
        return {**common, "instType": "SPOT", "baseCcy": base, "quoteCcy": quote, "settleCcy": "",
                "ctVal": "", "ctMult": "", "ctValCcy": "", "ctType": "", "uly": "", "instFamily": "", "lever": ""}
    base, quote = spot.split("-", 1)
    return {**common, "instType": "SWAP", "baseCcy": "", "quoteCcy": "", "settleCcy": quote,
            "ctVal": fmt(cfg.contract_value), "ctMult": "1", "ctValCcy": base, "ctType": "linear",
            "uly": spot, "instFamily": spot, "lever": "100"}


def _td_mode(o: OrderView) -> str:
    return "cash" if o.inst_type == "SPOT" else "cross"


def order_row(o: OrderView, leverage: Decimal) -> dict[str, str]:
    """The OKX order object (REST trade/order, orders-pending, orders-history)."""
    return {
        "instType": o.inst_type, "instId": o.inst_id, "ordId": o.ord_id, "clOrdId": o.cl_ord_id, "tag": o.tag,
        "px": fmt(o.px), "sz": fmt(o.sz), "ordType": o.ord_type, "side": o.side, "posSide": "net",
        "tdMode": _td_mode(o), "tgtCcy": o.tgt_ccy, "reduceOnly": "true" if o.reduce_only else "false",
        "accFillSz": fmt(o.acc_fill_sz), "avgPx": fmt(o.avg_px), "state": o.state,
        "fee": _neg(o.fee), "feeCcy": o.fee_ccy, "rebate": "0", "rebateCcy": o.fee_ccy,
        "lever": fmt(leverage) if o.inst_type == "SWAP" else "", "category": "normal",
        "fillTime": str(o.fill_time) if o.fill_time is not None else "",
        "cancelSource": o.cancel_source, "cTime": str(o.c_time), "uTime": str(o.u_time),
        "slTriggerPx": "", "tpTriggerPx": "", "attachAlgoOrds": [],  # type: ignore[dict-item]
    }


def ws_order_row(event: OrderEvent, leverage: Decimal, *, drop_fill: bool) -> dict[str, Any]:
    """An ``orders`` channel row: the order plus its last fill's fields.

    With ``drop_fill`` the fill fields are blanked (``tradeId:""``,
    ``fillSz:"0"``, ``fillPx:""``) while state and accFillSz stay: the incident.
    """
    row: dict[str, Any] = order_row(event.order, leverage)
    f = event.fill
    if f is None or drop_fill:
        row.update(tradeId="", fillPx="", fillSz="0", fillFee="0", fillFeeCcy="", execType="", fillPnl="0",
                   fillNotionalUsd="")
        if drop_fill and f is not None:
            row["fillTime"] = ""
    else:
        row.update(tradeId=f.trade_id, fillPx=fmt(f.px), fillSz=fmt(f.sz), fillFee=_neg(f.fee),
                   fillFeeCcy=f.fee_ccy, execType=f.exec_type, fillPnl=fmt(f.pnl), fillTime=str(f.ts_ms),
                   fillNotionalUsd=fmt(f.px * f.sz))
    row.update(lastPx=row.get("fillPx", ""), code="0", msg="", amendResult="", reqId="")
    return row


def fill_row(f: FillView) -> dict[str, str]:
    """A REST ``trade/fills(-history)`` row."""
    return {
        "instType": f.inst_type, "instId": f.inst_id, "tradeId": f.trade_id, "billId": f.trade_id,
        "ordId": f.ord_id, "clOrdId": f.cl_ord_id, "tag": f.tag, "side": f.side, "posSide": "net",
        "fillPx": fmt(f.px), "fillSz": fmt(f.sz), "fee": _neg(f.fee), "feeCcy": f.fee_ccy,
        "execType": f.exec_type, "fillPnl": fmt(f.pnl), "subType": "1" if f.side == "buy" else "2",
        "ts": str(f.ts_ms), "fillTime": str(f.ts_ms),
    }


def position_row(p: PositionView) -> dict[str, str]:
    """A cross-margin, net-mode position row (REST and the ``positions`` channel)."""
    return {
        "instType": "SWAP", "instId": p.inst_id, "mgnMode": "cross", "posSide": "net", "pos": fmt(p.pos),
        "posCcy": "", "availPos": fmt(abs(p.pos)), "avgPx": fmt(p.avg_px) if p.pos else "",
        "markPx": fmt(p.mark_px), "last": fmt(p.mark_px), "upl": fmt(p.upl),
        "uplRatio": fmt((p.upl / p.margin).quantize(Decimal("0.00000001"))) if p.margin else "0", "lever": fmt(p.leverage),
        "imr": fmt(p.margin), "mmr": fmt(p.margin / 10), "margin": "", "notionalUsd": fmt(p.notional),
        "liqPx": "", "ccy": "USDT", "realizedPnl": fmt(p.realized_pnl), "fee": _neg(p.fees),
        "adl": "1", "cTime": str(p.c_time), "uTime": str(p.u_time), "pTime": str(p.u_time),
    }


def balance_row(balances: Sequence[BalanceView], ts_ms: int) -> dict[str, Any]:
    """The ``account/balance`` row (also the ``account`` channel row)."""
    details = [
        {
            "ccy": b.ccy, "eq": fmt(b.equity), "cashBal": fmt(b.cash), "availBal": fmt(b.available),
            "availEq": "", "frozenBal": fmt(b.frozen), "ordFrozen": fmt(b.frozen), "upl": fmt(b.upl),
            "eqUsd": fmt(b.equity) if b.ccy == "USDT" else "", "uTime": str(ts_ms),
        }
        for b in balances
    ]
    total = sum((b.equity for b in balances if b.ccy == "USDT"), Decimal(0))
    return {"uTime": str(ts_ms), "totalEq": fmt(total), "details": details}


def ticker_row(engine: MatchingEngine, candles: CandleAggregator, inst_id: str, ts_ms: int) -> dict[str, str]:
    book = engine.book(inst_id, 1)
    last = engine.mark_price(inst_id)
    stats = candles.stats_24h(inst_id)
    open24, high24, low24, vol, quote_vol = stats if stats else (last, last, last, Decimal(0), Decimal(0))
    ct = engine.instruments[inst_id].contract_value if engine.inst_type(inst_id) == "SWAP" else Decimal(1)
    return {
        "instType": engine.inst_type(inst_id), "instId": inst_id, "last": fmt(last), "lastSz": "0",
        "bidPx": fmt(book.bids[0][0]) if book.bids else "", "bidSz": fmt(book.bids[0][1]) if book.bids else "",
        "askPx": fmt(book.asks[0][0]) if book.asks else "", "askSz": fmt(book.asks[0][1]) if book.asks else "",
        "open24h": fmt(open24), "high24h": fmt(high24), "low24h": fmt(low24),
        "sodUtc0": fmt(open24), "sodUtc8": fmt(open24),
        # OKX: spot vol24h is base and volCcy24h quote; swaps: contracts and base.
        "vol24h": fmt(vol), "volCcy24h": fmt(quote_vol if ct == 1 and engine.inst_type(inst_id) == "SPOT" else vol * ct),
        "ts": str(ts_ms),
    }


def book_levels(book: BookView) -> dict[str, Any]:
    return {
        "asks": [[fmt(px), fmt(sz), "0", "1"] for px, sz in book.asks],
        "bids": [[fmt(px), fmt(sz), "0", "1"] for px, sz in book.bids],
        "ts": str(book.ts_ms),
    }


def candle_row(c: CandleRow, *, spot: bool) -> list[str]:
    """``[ts,o,h,l,c,vol,volCcy,volCcyQuote,confirm]``: vol in venue units,
    volCcy quote (spot) or base (swaps), volCcyQuote quote."""
    vol_ccy = c.quote_volume if spot else c.base_volume
    return [str(c.ts_ms), fmt(c.open), fmt(c.high), fmt(c.low), fmt(c.close), fmt(c.volume), fmt(vol_ccy),
            fmt(c.quote_volume), "1" if c.confirmed else "0"]


def public_trade_row(inst_id: str, t: PublicTrade) -> dict[str, str]:
    return {"instId": inst_id, "tradeId": t.trade_id, "px": fmt(t.price), "sz": fmt(t.size), "side": t.side,
            "ts": str(t.ts_ms), "count": "1"}


# ---------------------------------------------------------------------- REST


class _OkxError(Exception):
    """An error reply: HTTP ``status`` with an OKX ``code``."""

    def __init__(self, code: str, msg: str, status: int = 200) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def _envelope(data: list[Any], code: str = "0", msg: str = "", status: int = 200) -> web.Response:
    return web.json_response({"code": code, "msg": msg, "data": data}, status=status,
                             dumps=lambda o: json.dumps(o, separators=(",", ":")))


def _parse_iso_ms(ts: str) -> int:
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def _int_param(q: Any, name: str, default: int | None = None, *, lo: int = 0, hi: int | None = None) -> int | None:
    raw = q.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _OkxError("51000", f"Parameter {name} error") from None
    if value < lo or (hi is not None and value > hi):
        raise _OkxError("51000", f"Parameter {name} error")
    return value


def _dec(raw: Any, name: str) -> Decimal:
    try:
        value = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        raise _OkxError("51000", f"Parameter {name} error") from None
    if not value.is_finite():
        raise _OkxError("51000", f"Parameter {name} error")
    return value


Handler = Callable[[web.Request], Awaitable[list[Any] | web.Response]]


class OkxRestApi:
    """The ``/api/v5`` routes. Handlers return the ``data`` list (or a full
    response, for batch codes) or raise ``_OkxError``."""

    def __init__(self, backend: VenueBackend) -> None:
        self._b = backend
        # Order rows that got past the fault gate (placed or rejected): what reached the venue.
        self.order_requests = 0
        self._routes: dict[tuple[str, str], Handler] = {
            ("GET", "public/time"): self._time,
            ("GET", "public/instruments"): self._instruments,
            ("GET", "market/ticker"): self._ticker,
            ("GET", "market/tickers"): self._tickers,
            ("GET", "market/books"): self._books,
            ("GET", "market/books-full"): self._books,
            ("GET", "market/candles"): self._candles,
            ("GET", "market/history-candles"): self._candles,
            ("GET", "market/trades"): self._trades,
            ("GET", "market/history-trades"): self._trades,
            ("GET", "asset/currencies"): self._currencies,
            ("GET", "account/balance"): self._balance,
            ("GET", "account/positions"): self._positions,
            ("GET", "trade/order"): self._get_order,
            ("GET", "trade/orders-pending"): self._orders_pending,
            ("GET", "trade/orders-history"): self._orders_history,
            ("GET", "trade/orders-history-archive"): self._orders_history,
            ("GET", "trade/fills"): self._fills,
            ("GET", "trade/fills-history"): self._fills,
            ("POST", "trade/order"): self._place_one,
            ("POST", "trade/batch-orders"): self._place_batch,
            ("POST", "trade/cancel-order"): self._cancel_one,
            ("POST", "trade/cancel-batch-orders"): self._cancel_batch,
            ("POST", "trade/cancel-all-after"): self._cancel_all_after,
        }

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/api/v5/{path:.*}", self._dispatch)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        handler = self._routes.get((request.method, path))
        fault = self._b.faults.rest_fault_for(request.path)
        settings = self._b.faults.settings
        if fault == "5xx":
            return web.Response(status=503, text="<html><body><h1>503 Service Unavailable</h1></body></html>",
                                content_type="text/html")
        if fault == "429":
            return _envelope([], code="50011", msg="Too Many Requests", status=429)
        if fault == "timeout" and not settings.rest_timeout_after_processing:
            await asyncio.sleep(settings.rest_timeout_secs)
            return web.Response(status=504, text="<html><body><h1>504 Gateway Time-out</h1></body></html>",
                                content_type="text/html")
        body = await request.read()
        try:
            if request.path.startswith(_PRIVATE_PREFIXES):
                self._authenticate(request, body)
            if handler is None:
                if any(p == path for _, p in self._routes):
                    raise _OkxError("50115", "Invalid request method", 405)
                return web.Response(status=404, text=f"unsupported endpoint /api/v5/{path}")
            request[_BODY] = body
            data = await handler(request)
            response = data if isinstance(data, web.Response) else _envelope(data)
        except _OkxError as err:
            response = _envelope([], code=err.code, msg=err.msg, status=err.status)
        if fault == "timeout":
            await asyncio.sleep(settings.rest_timeout_secs)
            return web.Response(status=504, text="<html><body><h1>504 Gateway Time-out</h1></body></html>",
                                content_type="text/html")
        return response

    def _authenticate(self, request: web.Request, body: bytes) -> None:
        cfg = self._b.config
        h = request.headers
        key, passphrase = h.get("OK-ACCESS-KEY", ""), h.get("OK-ACCESS-PASSPHRASE", "")
        ts, sign = h.get("OK-ACCESS-TIMESTAMP", ""), h.get("OK-ACCESS-SIGN", "")
        for value, code, name in ((key, "50103", "OK-ACCESS-KEY"), (passphrase, "50104", "OK-ACCESS-PASSPHRASE"),
                                  (sign, "50106", "OK-ACCESS-SIGN"), (ts, "50107", "OK-ACCESS-TIMESTAMP")):
            if not value:
                raise _OkxError(code, f'Request header "{name}" can not be empty', 401)
        try:
            ts_ms = _parse_iso_ms(ts)
        except ValueError:
            raise _OkxError("50112", "Invalid OK-ACCESS-TIMESTAMP", 401) from None
        if abs(ts_ms - self._b.wall_now_ms()) > _SKEW_MS:
            raise _OkxError("50102", "Timestamp request expired", 401)
        if not hmac.compare_digest(key, cfg.api_key):
            raise _OkxError("50111", "Invalid OK-ACCESS-KEY", 401)
        if not hmac.compare_digest(passphrase, cfg.passphrase.get_secret_value()):
            raise _OkxError("50105", 'Request header "OK_ACCESS_PASSPHRASE" incorrect', 401)
        prehash = ts + request.method + request.raw_path + body.decode("utf-8", "replace")
        expected = sign_okx(cfg.secret_key.get_secret_value(), prehash)
        if not hmac.compare_digest(sign, expected):
            raise _OkxError("50113", "Invalid Sign", 401)

    # ------------------------------------------------------------ helpers

    def _inst_or_error(self, inst_id: str | None) -> str:
        if not inst_id:
            raise _OkxError("50014", "Parameter instId can not be empty")
        if inst_id not in self._b.engine.instruments:
            raise _OkxError("51001", f"Instrument ID {inst_id} does not exist")
        return inst_id

    def _inst_type_filter(self, raw: str | None) -> str | None:
        if raw in (None, "", "ANY"):
            return None
        if raw not in ("SPOT", "SWAP", "MARGIN", "FUTURES", "OPTION"):
            raise _OkxError("51000", "Parameter instType error")
        return raw

    def _json_body(self, request: web.Request) -> Any:
        try:
            return json.loads(request[_BODY] or b"null")
        except ValueError:
            raise _OkxError("50002", "Json data format error", 400) from None

    # ------------------------------------------------------------ public

    async def _time(self, request: web.Request) -> list[Any]:
        return [{"ts": str(self._b.wall_now_ms())}]

    async def _instruments(self, request: web.Request) -> list[Any]:
        inst_type = request.query.get("instType")
        if not inst_type:
            raise _OkxError("50014", "Parameter instType can not be empty")
        engine = self._b.engine
        want = request.query.get("instId")
        return [
            instrument_row(engine, i)
            for i in engine.instruments
            if engine.inst_type(i) == inst_type and (not want or want == i)
        ]

    async def _ticker(self, request: web.Request) -> list[Any]:
        inst_id = self._inst_or_error(request.query.get("instId"))
        with self._b.lock:
            return [ticker_row(self._b.engine, self._b.candles, inst_id, self._b.venue_now_ms())]

    async def _tickers(self, request: web.Request) -> list[Any]:
        inst_type = self._inst_type_filter(request.query.get("instType"))
        engine = self._b.engine
        with self._b.lock:
            now = self._b.venue_now_ms()
            return [ticker_row(engine, self._b.candles, i, now) for i in engine.instruments
                    if inst_type is None or engine.inst_type(i) == inst_type]

    async def _books(self, request: web.Request) -> list[Any]:
        inst_id = self._inst_or_error(request.query.get("instId"))
        depth = _int_param(request.query, "sz", 1, lo=1, hi=5000)
        with self._b.lock:
            return [book_levels(self._b.engine.book(inst_id, depth))]

    async def _candles(self, request: web.Request) -> list[Any]:
        q = request.query
        inst_id = self._inst_or_error(q.get("instId"))
        bar = q.get("bar") or "1m"
        if bar not in BAR_MS:
            raise _OkxError("51000", "Parameter bar error")
        limit = _int_param(q, "limit", 100, lo=1, hi=300)
        after = _int_param(q, "after")
        before = _int_param(q, "before")
        spot = self._b.engine.inst_type(inst_id) == "SPOT"
        with self._b.lock:
            rows = self._b.candles.candles(inst_id, bar_ms=BAR_MS[bar], limit=limit or 100, after_ms=after,
                                           before_ms=before)
        return [candle_row(c, spot=spot) for c in rows]

    async def _trades(self, request: web.Request) -> list[Any]:
        inst_id = self._inst_or_error(request.query.get("instId"))
        limit = _int_param(request.query, "limit", 100, lo=1, hi=500) or 100
        with self._b.lock:
            trades = self._b.recent_trades(inst_id, limit)
        return [public_trade_row(inst_id, t) for t in trades]

    # ------------------------------------------------------------ private reads

    async def _currencies(self, request: web.Request) -> list[Any]:
        ccys: list[str] = []
        for inst_id in self._b.engine.instruments:
            for ccy in (spot_of(inst_id) or inst_id).split("-"):
                if ccy not in ccys:
                    ccys.append(ccy)
        return [
            {"ccy": c, "name": c, "chain": f"{c}-{c}", "canDep": False, "canWd": False, "canInternal": False,
             "minWd": "0", "maxWd": "0", "wdTickSz": "8", "minFee": "0", "maxFee": "0", "mainNet": True}
            for c in ccys
        ]

    async def _balance(self, request: web.Request) -> list[Any]:
        want = {c for c in request.query.get("ccy", "").split(",") if c}
        with self._b.lock:
            balances = [b for b in self._b.engine.balances() if not want or b.ccy in want]
            return [balance_row(balances, self._b.venue_now_ms())]

    async def _positions(self, request: web.Request) -> list[Any]:
        q = request.query
        inst_ids = {i for i in q.get("instId", "").split(",") if i}
        inst_type = self._inst_type_filter(q.get("instType"))
        if inst_type not in (None, "SWAP"):
            return []
        with self._b.lock:
            return [position_row(p) for p in self._b.engine.positions() if not inst_ids or p.inst_id in inst_ids]

    async def _get_order(self, request: web.Request) -> list[Any]:
        q = request.query
        inst_id = self._inst_or_error(q.get("instId"))
        ord_id, cl_ord_id = q.get("ordId", ""), q.get("clOrdId", "")
        if not ord_id and not cl_ord_id:
            raise _OkxError("51003", "Either client order ID or order ID is required")
        with self._b.lock:
            order = self._b.engine.get_order(inst_id, ord_id=ord_id, cl_ord_id=cl_ord_id)
        if order is None:
            raise _OkxError("51603", "Order does not exist")
        return [order_row(order, self._b.engine.leverage)]

    def _paged_orders(self, request: web.Request, orders: list[OrderView]) -> list[Any]:
        q = request.query
        limit = _int_param(q, "limit", 100, lo=1, hi=100) or 100
        after, before = _int_param(q, "after"), _int_param(q, "before")
        begin, end = _int_param(q, "begin"), _int_param(q, "end")
        ord_type, state = q.get("ordType"), q.get("state")
        out = []
        for o in orders:  # newest first
            seq = int(o.ord_id)
            if (after is not None and seq >= after) or (before is not None and seq <= before):
                continue
            if (begin is not None and o.c_time < begin) or (end is not None and o.c_time > end):
                continue
            if (ord_type and o.ord_type not in ord_type.split(",")) or (state and o.state != state):
                continue
            out.append(order_row(o, self._b.engine.leverage))
            if len(out) >= limit:
                break
        return out

    async def _orders_pending(self, request: web.Request) -> list[Any]:
        q = request.query
        inst_id = q.get("instId") or None
        if inst_id:
            self._inst_or_error(inst_id)
        with self._b.lock:
            orders = self._b.engine.open_orders(inst_id, self._inst_type_filter(q.get("instType")))
        return self._paged_orders(request, orders)

    async def _orders_history(self, request: web.Request) -> list[Any]:
        q = request.query
        if not q.get("instType"):
            raise _OkxError("50014", "Parameter instType can not be empty")
        inst_id = q.get("instId") or None
        if inst_id:
            self._inst_or_error(inst_id)
        with self._b.lock:
            orders = self._b.engine.order_history(inst_id, self._inst_type_filter(q.get("instType")))
        return self._paged_orders(request, orders)

    async def _fills(self, request: web.Request) -> list[Any]:
        q = request.query
        inst_id = q.get("instId") or None
        if inst_id:
            self._inst_or_error(inst_id)
        limit = _int_param(q, "limit", 100, lo=1, hi=100) or 100
        after, before = _int_param(q, "after"), _int_param(q, "before")
        with self._b.lock:
            fills = self._b.engine.fills(
                inst_id=inst_id, inst_type=self._inst_type_filter(q.get("instType")), ord_id=q.get("ordId") or None,
                begin_ms=_int_param(q, "begin"), end_ms=_int_param(q, "end"),
            )
        out = []
        for f in fills:  # newest first
            bill = int(f.trade_id)
            if (after is not None and bill >= after) or (before is not None and bill <= before):
                continue
            out.append(fill_row(f))
            if len(out) >= limit:
                break
        return out

    # ------------------------------------------------------------ trading

    def _order_request(self, raw: Any) -> OrderRequest:
        if not isinstance(raw, dict):
            raise _OkxError("50002", "Json data format error")
        inst_id = self._inst_or_error(raw.get("instId"))
        for name in ("side", "ordType", "sz"):
            if raw.get(name) in (None, ""):
                raise _OkxError("50014", f"Parameter {name} can not be empty")
        if raw.get("posSide") not in (None, "", "net"):
            raise _OkxError("51000", "Parameter posSide error")
        px = raw.get("px")
        reduce_only = raw.get("reduceOnly")
        return OrderRequest(
            inst_id=inst_id, side=str(raw["side"]), ord_type=str(raw["ordType"]), sz=_dec(raw["sz"], "sz"),
            px=_dec(px, "px") if px not in (None, "") else None, cl_ord_id=str(raw.get("clOrdId") or ""),
            tag=str(raw.get("tag") or ""), reduce_only=reduce_only is True or str(reduce_only).lower() == "true",
            tgt_ccy=str(raw.get("tgtCcy") or ""),
        )

    def _place(self, raw: Any) -> tuple[dict[str, str], list[OrderEvent]]:
        b = self._b
        self.order_requests += 1
        cl = str(raw.get("clOrdId") or "") if isinstance(raw, dict) else ""
        tag = str(raw.get("tag") or "") if isinstance(raw, dict) else ""
        now = str(b.venue_now_ms())
        try:
            req = self._order_request(raw)
        except _OkxError as err:
            return {"ordId": "", "clOrdId": cl, "tag": tag, "ts": now, "sCode": err.code, "sMsg": err.msg}, []
        if b.faults.settings.reject_orders:
            return {"ordId": "", "clOrdId": cl, "tag": tag, "ts": now, "sCode": "51008",
                    "sMsg": "Order failed. Insufficient balance or margin."}, []
        with b.lock:
            result = b.engine.submit(req, b.venue_now_ms())
        row = {"ordId": result.order.ord_id if result.order else "", "clOrdId": req.cl_ord_id, "tag": req.tag,
               "ts": now, "sCode": result.s_code, "sMsg": result.s_msg}
        return row, list(result.events)

    @staticmethod
    def _batch_code(rows: list[dict[str, str]]) -> tuple[str, str]:
        ok = sum(r["sCode"] == "0" for r in rows)
        if ok == len(rows):
            return "0", ""
        if ok == 0:
            return "1", "All operations failed"
        return "2", "Bulk operation partially succeeded"

    async def _place_one(self, request: web.Request) -> web.Response:
        row, events = self._place(self._json_body(request))
        self._b.publish(events)
        code, msg = self._batch_code([row])
        return _envelope([row], code=code, msg=msg)

    async def _place_batch(self, request: web.Request) -> web.Response:
        body = self._json_body(request)
        if not isinstance(body, list) or not body:
            raise _OkxError("50002", "Json data format error")
        if len(body) > _MAX_BATCH:
            raise _OkxError("51111", f"Maximum {_MAX_BATCH} orders can be placed in bulk")
        rows, events = [], []
        for raw in body:
            row, evs = self._place(raw)
            rows.append(row)
            events.extend(evs)
        self._b.publish(events)
        code, msg = self._batch_code(rows)
        return _envelope(rows, code=code, msg=msg)

    def _cancel(self, raw: Any) -> tuple[dict[str, str], list[OrderEvent]]:
        b = self._b
        now = str(b.venue_now_ms())
        if not isinstance(raw, dict):
            return {"ordId": "", "clOrdId": "", "ts": now, "sCode": "50002", "sMsg": "Json data format error"}, []
        ord_id, cl = str(raw.get("ordId") or ""), str(raw.get("clOrdId") or "")
        try:
            inst_id = self._inst_or_error(raw.get("instId"))
        except _OkxError as err:
            return {"ordId": ord_id, "clOrdId": cl, "ts": now, "sCode": err.code, "sMsg": err.msg}, []
        if not ord_id and not cl:
            return {"ordId": "", "clOrdId": "", "ts": now, "sCode": "51003",
                    "sMsg": "Either client order ID or order ID is required"}, []
        with b.lock:
            result = b.engine.cancel(inst_id, ord_id=ord_id, cl_ord_id=cl, ts_ms=b.venue_now_ms())
        row = {"ordId": result.order.ord_id if result.order else ord_id,
               "clOrdId": result.order.cl_ord_id if result.order else cl,
               "ts": now, "sCode": result.s_code, "sMsg": result.s_msg}
        return row, list(result.events)

    async def _cancel_one(self, request: web.Request) -> web.Response:
        row, events = self._cancel(self._json_body(request))
        self._b.publish(events)
        code, msg = self._batch_code([row])
        return _envelope([row], code=code, msg=msg)

    async def _cancel_batch(self, request: web.Request) -> web.Response:
        body = self._json_body(request)
        if not isinstance(body, list) or not body:
            raise _OkxError("50002", "Json data format error")
        rows, events = [], []
        for raw in body[:_MAX_BATCH]:
            row, evs = self._cancel(raw)
            rows.append(row)
            events.extend(evs)
        self._b.publish(events)
        code, msg = self._batch_code(rows)
        return _envelope(rows, code=code, msg=msg)

    async def _cancel_all_after(self, request: web.Request) -> list[Any]:
        body = self._json_body(request)
        if not isinstance(body, dict) or body.get("timeOut") in (None, ""):
            raise _OkxError("50014", "Parameter timeOut can not be empty")
        try:
            timeout = int(str(body["timeOut"]))
        except ValueError:
            raise _OkxError("51000", "Parameter timeOut error") from None
        min_secs = self._b.config.cancel_all_after_min_secs
        if timeout != 0 and not (min_secs <= timeout <= 120):
            raise _OkxError("51000", "Parameter timeOut error")
        trigger = self._b.arm_cancel_all_after(timeout)
        return [{"triggerTime": str(trigger), "tag": str(body.get("tag") or ""), "ts": str(self._b.wall_now_ms())}]

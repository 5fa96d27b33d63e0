"""OKX v5 WebSocket for the simulator: ``/ws/v5/public``, ``/private``, ``/business``.

Follows ``okx_protocol.md`` section 6: JSON ``op`` login / subscribe /
unsubscribe (an ``id`` is echoed), text ``ping`` -> ``pong``, pushes shaped
``{"arg": <the subscription>, "data": [...]}``. Channels:

- public: ``tickers``, ``books5`` (full 5-level snapshot each push), ``books``
  (snapshot, then updates chained by ``seqId``/``prevSeqId``; size "0" deletes a
  level), ``trades``;
- business: ``candle<bar>`` (e.g. ``candle1m``; ``confirm`` "1" once a bar is final);
- private (login first, else 60011): ``orders`` (one row per order change, the
  order plus its last fill; no snapshot), ``fills``, ``positions`` and
  ``account`` (a snapshot on subscribe, then changes).

Identical subscriptions on one connection are acknowledged but kept once, so
nothing is pushed twice. Only configured instruments are accepted.

All methods run on the server's event loop. Each connection has one writer
task draining its own queue, so pushes to a connection keep their order.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import WSMsgType, web

from tradetree.sim.market_data import MarketTick
from tradetree.sim.matching import OrderEvent
from tradetree.sim.okx_rest import (
    BAR_MS,
    VenueBackend,
    balance_row,
    book_levels,
    candle_row,
    fmt,
    position_row,
    public_trade_row,
    sign_okx,
    ticker_row,
    ws_order_row,
)

__all__ = ["OkxWsHub", "CUT_CLOSE_CODE"]

log = logging.getLogger(__name__)

CUT_CLOSE_CODE = 4000
_LOGIN_SKEW_SECS = 30
_MAX_QUEUE = 10_000
_PUBLIC = frozenset({"tickers", "books5", "books", "trades"})
_PRIVATE = frozenset({"orders", "fills", "positions", "account"})
_BOOKS_DEPTH = 400


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    kind: str  # "public" | "private" | "business"
    conn_id: str
    logged_in: bool = False
    subs: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> arg
    queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)

    def send(self, payload: dict[str, Any] | str) -> None:
        if self.queue.qsize() >= _MAX_QUEUE:
            log.warning("ws %s: client too slow, dropping connection", self.conn_id)
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(payload if isinstance(payload, str) else _dumps(payload))


@dataclass
class _BookState:
    seq: int
    bids: dict[str, str]  # px -> sz, as sent
    asks: dict[str, str]


def _checksum(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> int:
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts.append(f"{bids[i][0]}:{bids[i][1]}")
        if i < len(asks):
            parts.append(f"{asks[i][0]}:{asks[i][1]}")
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def _sorted_levels(levels: dict[str, str], *, descending: bool) -> list[list[str]]:
    keys = sorted(levels, key=Decimal, reverse=descending)
    return [[k, levels[k], "0", "1"] for k in keys]


class OkxWsHub:
    """Accepts WS connections and pushes market data and account changes to them."""

    def __init__(self, backend: VenueBackend) -> None:
        self._b = backend
        self._conns: set[_Conn] = set()
        self._ids = itertools.count(1)
        self._books: dict[str, _BookState] = {}
        self._candle_ts: dict[tuple[str, int], int] = {}

    def add_routes(self, app: web.Application, prefix: str = "/ws/v5") -> None:
        for kind in ("public", "private", "business"):
            app.router.add_get(f"{prefix}/{kind}", self._make_handler(kind))

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    async def close_all(self, code: int = CUT_CLOSE_CODE, message: str = "connection cut") -> int:
        """Close every connection with ``code``; returns how many were closed."""
        conns = list(self._conns)
        for conn in conns:
            conn.queue.put_nowait(None)
            await conn.ws.close(code=code, message=message.encode())
        return len(conns)

    # ------------------------------------------------------------ connections

    def _make_handler(self, kind: str):
        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(autoping=True, heartbeat=None, compress=True)
            await ws.prepare(request)
            conn = _Conn(ws=ws, kind=kind, conn_id=f"sim{next(self._ids):08d}")
            self._conns.add(conn)
            writer = asyncio.create_task(self._writer(conn))
            try:
                async for msg in ws:
                    if msg.type == WSMsgType.TEXT:
                        self._on_text(conn, msg.data)
                    elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                        break
            finally:
                self._conns.discard(conn)
                conn.queue.put_nowait(None)
                await writer
            return ws

        return handler

    async def _writer(self, conn: _Conn) -> None:
        while True:
            item = await conn.queue.get()
            if item is None:
                if not conn.ws.closed:
                    await conn.ws.close()
                return
            try:
                await conn.ws.send_str(item)
            except (ConnectionError, RuntimeError):
                return

    def _on_text(self, conn: _Conn, text: str) -> None:
        if text == "ping":
            conn.send("pong")
            return
        try:
            msg = json.loads(text)
            op = msg["op"]
            args = msg.get("args") or []
            if not isinstance(args, list):
                raise TypeError("args must be a list")
        except (ValueError, KeyError, TypeError):
            conn.send({"event": "error", "code": "60012", "msg": f"Invalid request: {text[:200]}",
                       "connId": conn.conn_id})
            return
        req_id = msg.get("id")
        if op == "login":
            self._login(conn, args, req_id)
        elif op in ("subscribe", "unsubscribe"):
            for arg in args:
                self._subscribe(conn, op, arg, req_id)
        else:
            self._error(conn, "60012", f"Invalid request: unknown op {op!r}", req_id)

    def _error(self, conn: _Conn, code: str, msg: str, req_id: Any = None) -> None:
        reply: dict[str, Any] = {"event": "error", "code": code, "msg": msg, "connId": conn.conn_id}
        if req_id is not None:
            reply["id"] = req_id
        conn.send(reply)

    def _login(self, conn: _Conn, args: list[Any], req_id: Any) -> None:
        cfg = self._b.config
        arg = args[0] if args and isinstance(args[0], dict) else {}
        ts = str(arg.get("timestamp", ""))
        try:
            skew = abs(float(ts) - time.time())
        except ValueError:
            skew = float("inf")
        if skew > _LOGIN_SKEW_SECS:
            self._error(conn, "60006", "Timestamp request expired", req_id)
            return
        expected = sign_okx(cfg.secret_key.get_secret_value(), ts + "GET" + "/users/self/verify")
        ok = (
            hmac.compare_digest(str(arg.get("apiKey", "")), cfg.api_key)
            and hmac.compare_digest(str(arg.get("passphrase", "")), cfg.passphrase.get_secret_value())
            and hmac.compare_digest(str(arg.get("sign", "")), expected)
        )
        if not ok:
            self._error(conn, "60009", "Login failed.", req_id)
            return
        conn.logged_in = True
        reply: dict[str, Any] = {"event": "login", "code": "0", "msg": "", "connId": conn.conn_id}
        if req_id is not None:
            reply["id"] = req_id
        conn.send(reply)

    def _channel_ok(self, conn: _Conn, channel: str) -> bool:
        if conn.kind == "public":
            return channel in _PUBLIC
        if conn.kind == "private":
            return channel in _PRIVATE
        return channel.startswith("candle") and channel[len("candle"):] in BAR_MS

    def _subscribe(self, conn: _Conn, op: str, arg: Any, req_id: Any) -> None:
        if not isinstance(arg, dict) or not arg.get("channel"):
            self._error(conn, "60012", f"Invalid request: {arg}", req_id)
            return
        channel = str(arg["channel"])
        inst_id = arg.get("instId")
        known = self._b.engine.instruments
        wrong = f"Wrong URL or channel:{channel},instId or instType doesn't exist."
        if not self._channel_ok(conn, channel):
            self._error(conn, "60018", wrong, req_id)
            return
        if channel in _PRIVATE and not conn.logged_in:
            self._error(conn, "60011", "Please log in", req_id)
            return
        needs_inst = channel in _PUBLIC or channel.startswith("candle")
        if (needs_inst and not inst_id) or (inst_id and inst_id not in known):
            self._error(conn, "60018", wrong, req_id)
            return
        if channel in ("orders", "positions") and arg.get("instType") not in ("ANY", "SPOT", "SWAP", "MARGIN",
                                                                              "FUTURES", "OPTION"):
            self._error(conn, "60018", wrong, req_id)
            return
        key = _dumps(dict(sorted(arg.items())))
        reply: dict[str, Any] = {"event": op, "arg": arg, "connId": conn.conn_id}
        if req_id is not None:
            reply["id"] = req_id
        if op == "unsubscribe":
            conn.subs.pop(key, None)
            conn.send(reply)
            return
        fresh = key not in conn.subs
        conn.subs[key] = arg
        conn.send(reply)
        if fresh:
            with self._b.lock:
                self._initial_push(conn, arg)

    def _initial_push(self, conn: _Conn, arg: dict[str, str]) -> None:
        b = self._b
        channel, inst_id = arg["channel"], arg.get("instId", "")
        now = b.venue_now_ms()
        if channel == "tickers":
            conn.send({"arg": arg, "data": [ticker_row(b.engine, b.candles, inst_id, now)]})
        elif channel == "books5":
            conn.send({"arg": arg, "data": [self._books5_row(inst_id)]})
        elif channel == "books":
            state = self._books.get(inst_id) or self._snapshot_state(inst_id)
            bids = _sorted_levels(state.bids, descending=True)
            asks = _sorted_levels(state.asks, descending=False)
            conn.send({"arg": arg, "action": "snapshot", "data": [{
                "asks": asks, "bids": bids, "ts": str(now), "checksum": _checksum(bids, asks),
                "prevSeqId": -1, "seqId": state.seq}]})
        elif channel == "positions":
            rows = [position_row(p) for p in b.engine.positions() if self._position_match(arg, p.inst_id)]
            conn.send({"arg": arg, "data": rows})
        elif channel == "account":
            conn.send({"arg": arg, "data": [self._account_row(arg, now)]})

    # ------------------------------------------------------------ pushes: market

    def _subscribers(self, channel: str, inst_id: str | None = None) -> Iterable[tuple[_Conn, dict[str, str]]]:
        for conn in list(self._conns):
            for arg in list(conn.subs.values()):
                if arg["channel"] == channel and (inst_id is None or arg.get("instId") == inst_id):
                    yield conn, arg

    def _books5_row(self, inst_id: str) -> dict[str, Any]:
        b = self._b
        row = book_levels(b.engine.book(inst_id, 5))
        state = self._books.get(inst_id)
        return {**row, "instId": inst_id, "seqId": state.seq if state else 0}

    def _snapshot_state(self, inst_id: str) -> _BookState:
        book = book_levels(self._b.engine.book(inst_id, _BOOKS_DEPTH))
        state = _BookState(seq=1, bids={p[0]: p[1] for p in book["bids"]}, asks={p[0]: p[1] for p in book["asks"]})
        self._books[inst_id] = state
        return state

    def on_market(self, ticks: Sequence[MarketTick]) -> None:
        """Push tickers, books, trades and candles for the instruments that just stepped."""
        if not self._conns:
            self._books.clear()
            return
        with self._b.lock:
            seen: dict[str, MarketTick] = {}
            for tick in ticks:
                trades = [public_trade_row(tick.inst_id, t) for t in tick.trades]
                for conn, arg in self._subscribers("trades", tick.inst_id):
                    if trades:
                        conn.send({"arg": arg, "data": trades})
                seen[tick.inst_id] = tick
            for inst_id, tick in seen.items():
                self._push_ticker(inst_id, tick.ts_ms)
                self._push_books(inst_id, tick.ts_ms)
                subs = list(self._subscribers("books5", inst_id))
                if subs:
                    row5 = self._books5_row(inst_id)
                    for conn, arg in subs:
                        conn.send({"arg": arg, "data": [row5]})
                self._push_candles(inst_id)

    def push_tickers(self, inst_ids: Sequence[str], ts_ms: int) -> None:
        """Push the current ticker of each of ``inst_ids`` again, stamped ``ts_ms`` (a held replay's
        keep-alive: nothing else is pushed, so no trade, book change or candle appears twice)."""
        if not self._conns:
            return
        with self._b.lock:
            for inst_id in inst_ids:
                self._push_ticker(inst_id, ts_ms)

    def _push_ticker(self, inst_id: str, ts_ms: int) -> None:
        subs = list(self._subscribers("tickers", inst_id))
        if subs:
            row = ticker_row(self._b.engine, self._b.candles, inst_id, ts_ms)
            for conn, arg in subs:
                conn.send({"arg": arg, "data": [row]})

    def _push_books(self, inst_id: str, ts_ms: int) -> None:
        subs = list(self._subscribers("books", inst_id))
        if not subs:
            self._books.pop(inst_id, None)
            return
        state = self._books.get(inst_id)
        if state is None:
            return  # the subscriber's snapshot initialises the state
        book = book_levels(self._b.engine.book(inst_id, _BOOKS_DEPTH))
        new_bids = {p[0]: p[1] for p in book["bids"]}
        new_asks = {p[0]: p[1] for p in book["asks"]}

        def diff(old: dict[str, str], new: dict[str, str], descending: bool) -> list[list[str]]:
            changes = {px: sz for px, sz in new.items() if old.get(px) != sz}
            changes.update({px: "0" for px in old if px not in new})
            return _sorted_levels(changes, descending=descending)

        bids, asks = diff(state.bids, new_bids, True), diff(state.asks, new_asks, False)
        if not bids and not asks:
            return
        prev = state.seq
        state.seq, state.bids, state.asks = prev + 1, new_bids, new_asks
        checksum = _checksum(_sorted_levels(new_bids, descending=True), _sorted_levels(new_asks, descending=False))
        data = [{"asks": asks, "bids": bids, "ts": str(ts_ms), "checksum": checksum,
                 "prevSeqId": prev, "seqId": state.seq}]
        for conn, arg in subs:
            conn.send({"arg": arg, "action": "update", "data": data})

    def _push_candles(self, inst_id: str) -> None:
        b = self._b
        spot = b.engine.inst_type(inst_id) == "SPOT"
        for conn_arg in self._candle_subs(inst_id):
            (conn, arg), bar_ms = conn_arg
            rows = b.candles.candles(inst_id, bar_ms=bar_ms, limit=2)
            if not rows:
                continue
            key = (inst_id, bar_ms)
            last_ts = self._candle_ts.get(key)
            out = []
            if last_ts is not None and rows[0].ts_ms != last_ts and len(rows) > 1:
                out.append(candle_row(rows[1], spot=spot))
            out.append(candle_row(rows[0], spot=spot))
            for row in out:
                conn.send({"arg": arg, "data": [row]})
        for key in {(inst_id, bar_ms) for (_, bar_ms) in self._candle_subs(inst_id)}:
            rows = b.candles.candles(inst_id, bar_ms=key[1], limit=1)
            if rows:
                self._candle_ts[key] = rows[0].ts_ms

    def _candle_subs(self, inst_id: str) -> list[tuple[tuple[_Conn, dict[str, str]], int]]:
        out = []
        for conn in list(self._conns):
            for arg in list(conn.subs.values()):
                ch = arg["channel"]
                if ch.startswith("candle") and arg.get("instId") == inst_id:
                    out.append(((conn, arg), BAR_MS[ch[len("candle"):]]))
        return out

    # ------------------------------------------------------------ pushes: private

    @staticmethod
    def _type_match(arg: dict[str, str], inst_type: str, inst_id: str) -> bool:
        want_type = arg.get("instType", "ANY")
        if want_type not in ("ANY", inst_type):
            return False
        return not arg.get("instId") or arg["instId"] == inst_id

    def _position_match(self, arg: dict[str, str], inst_id: str) -> bool:
        return self._type_match(arg, "SWAP", inst_id)

    def _account_row(self, arg: dict[str, str], ts_ms: int) -> dict[str, Any]:
        want = arg.get("ccy")
        balances = [x for x in self._b.engine.balances() if not want or x.ccy == want]
        return balance_row(balances, ts_ms)

    def on_order_events(self, events: Sequence[OrderEvent]) -> None:
        """Push ``orders``/``fills`` rows for each event, then positions and balances."""
        if not events or not self._conns:
            return
        b = self._b
        faults = b.faults.settings
        leverage = b.engine.leverage
        private = [c for c in self._conns if c.logged_in]
        swap_fills: set[str] = set()
        for ev in events:
            o = ev.order
            if not faults.drop_order_updates:
                row = ws_order_row(ev, leverage, drop_fill=faults.drop_fill_records)
                for conn in private:
                    for arg in list(conn.subs.values()):
                        if arg["channel"] == "orders" and self._type_match(arg, o.inst_type, o.inst_id):
                            conn.send({"arg": arg, "data": [row]})
            f = ev.fill
            if f is None:
                continue
            if f.inst_type == "SWAP":
                swap_fills.add(f.inst_id)
            if faults.drop_fill_records:
                continue
            fill = {"instId": f.inst_id, "fillSz": fmt(f.sz), "fillPx": fmt(f.px), "side": f.side,
                    "ts": str(f.ts_ms), "ordId": f.ord_id, "clOrdId": f.cl_ord_id, "tradeId": f.trade_id,
                    "execType": f.exec_type, "count": "1"}
            for conn in private:
                for arg in list(conn.subs.values()):
                    if arg["channel"] == "fills" and (not arg.get("instId") or arg["instId"] == f.inst_id):
                        conn.send({"arg": arg, "data": [fill]})
        with b.lock:
            now = b.venue_now_ms()
            for conn in private:
                for arg in list(conn.subs.values()):
                    if arg["channel"] == "positions" and swap_fills:
                        rows = [position_row(b.engine.position(i)) for i in sorted(swap_fills)
                                if self._position_match(arg, i)]
                        if rows:
                            conn.send({"arg": arg, "data": rows})
                    elif arg["channel"] == "account":
                        conn.send({"arg": arg, "data": [self._account_row(arg, now)]})

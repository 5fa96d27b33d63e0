"""The simulator's matching engine and account: pure, synchronous, deterministic.

No I/O, no asyncio, no clock: every call takes the time it happens at
(``ts_ms``), so the paper venue drives it in wall time and the backtester in
simulated time. Same seed + same calls = same fills.

Model (simplifications documented where they differ from a real venue):

- **Book.** A synthetic order book per instrument is rebuilt around each
  market price (``on_market``): ``levels`` per side, a two-tick spread
  (``BookShape.spread_ticks``; 0 means bid = ask = the market price, a
  frictionless book for comparisons), level sizes drawn at random and growing
  with depth. What our orders take from it stays taken until the next rebuild.
  Our own resting orders are not part of that book and never match each other.
  The level sizes of a step are drawn from a hash of (seed, instrument, step
  time), so a book depends only on that step and never on how many steps came
  before; the book is materialised only when something needs it
  (a match, a reservation, ``book()``). Both together let the backtester skip
  the market steps during which we have no orders and still see exactly the
  books the paper venue shows.
- **Taker.** A market order (or the marketable part of a limit order) walks the
  book; each level it consumes is one fill with its own trade id at that
  level's price, so a large order fills as several partial fills (VWAP across
  depth). What the book cannot fill is canceled (market, IOC) or rests (limit).
  FOK fills completely or is canceled without fills. A post-only order that
  would cross is accepted and then canceled (as OKX does).
- **Maker.** A resting order fills when a public trade prints *through* its
  price (strictly better than the limit: being at the price is not enough,
  there is a queue in front of us). It fills at its limit price, and the size
  is bounded by the trades' volume at that step, shared in price-time
  priority, hence partial fills.
- **Latency.** An order submitted at ``t`` is matched at the first market step
  at or after ``t + latency_ms``; with zero latency it is matched at once
  against the current book.
- **Fees** are charged in the quote/settle currency (USDT) for every fill,
  spot buys included (OKX charges a spot buy's fee in the base currency). A
  quote-sized spot market buy (``tgtCcy=quote_ccy``) spends at most ``sz`` in
  notional, with the fee on top.
- **Account.** One unified account: cash balances per currency. Open spot
  orders reserve what they may spend (quote for buys, base for sells). Swaps
  are linear, settled in USDT, in net position mode: signed contracts, average
  entry price, realized P&L into USDT. Margin is ``notional / leverage`` at the
  entry price; a swap order reserves the margin of the part that opens
  exposure. Available USDT = cash - reservations - position margin. An order
  that does not fit is rejected with ``51008``; if the price moved by the time
  it matches, it fills only what fits and the rest is canceled.
- **reduceOnly** (swaps) needs a position to reduce, else it is rejected
  (``51205``); its fills never exceed the position, the rest is canceled. On
  spot, reduceOnly is ignored (cash mode has nothing to reduce).
- Order ids and trade ids are sequential integers as strings; every change of
  an order bumps its ``u_time`` strictly.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

from tradetree.sim.config import FeeSchedule, SimInstrument
from tradetree.sim.market_data import MarketTick, derive_seed, spot_of

__all__ = [
    "BookShape",
    "OrderRequest",
    "OrderView",
    "FillView",
    "OrderEvent",
    "SubmitResult",
    "CancelResult",
    "PositionView",
    "BalanceView",
    "BookView",
    "MatchingEngine",
    "ORDER_TYPES",
    "LIVE_STATES",
]

ZERO = Decimal(0)
_TWO_POW_M53 = 2.0**-53  # 53 random bits -> a float in [0, 1)
_FEE_QUANTUM = Decimal("0.00000001")
_CL_ORD_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_shake_128 = hashlib.shake_128

ORDER_TYPES = frozenset({"market", "limit", "post_only", "ioc", "fok"})
LIVE_STATES = frozenset({"live", "partially_filled"})


def frozen_builder(cls: type) -> type:
    """An unfrozen twin of the frozen, slotted dataclass ``cls``, for building instances fast.

    A frozen dataclass sets each field through ``object.__setattr__`` in its
    ``__init__``, several times the cost of a plain attribute store; with the
    20 fields of an :class:`OrderView`, that was a visible share of the
    backtester's order path. The twin has the same fields, defaults and slots,
    so an instance made on it can become a ``cls`` by assigning ``__class__``
    (Python allows that between types of the same layout)::

        view = _OrderViewB(...); view.__class__ = OrderView

    The result is an ordinary, frozen ``cls`` instance, equal to ``cls(...)`` of
    the same values. Raises ``TypeError`` at import if ``cls`` is not a slotted
    dataclass.
    """
    if "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a slotted dataclass")
    ns: dict[str, Any] = {"__annotations__": {f.name: f.type for f in fields(cls)}, "__module__": cls.__module__}
    for f in fields(cls):
        if f.default is not MISSING:
            ns[f.name] = f.default
    twin: Any = dataclass(slots=True, eq=False, repr=False)(type(f"_{cls.__name__}Builder", (), ns))
    if twin.__slots__ != cls.__slots__:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__}: the builder's slots differ")
    return twin


@dataclass(frozen=True, slots=True)
class BookShape:
    """How the synthetic book looks. Notional in quote units."""

    spread_ticks: int = 2  # 0: bid = ask = the market price (no spread)
    level_spacing_bps: Decimal = Decimal("1")  # distance between levels, at least one tick
    top_level_notional: Decimal = Decimal("50000")
    depth_growth: Decimal = Decimal("0.5")  # level i holds about (1 + growth * i) x the top
    market_buffer: Decimal = Decimal("0.02")  # price buffer when reserving for market orders


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order as the venue receives it (OKX field semantics).

    ``sz`` is base units for spot (or quote units for a spot market order with
    ``tgt_ccy="quote_ccy"``) and contracts for swaps.
    """

    inst_id: str
    side: str  # "buy" | "sell"
    ord_type: str  # one of ORDER_TYPES
    sz: Decimal
    px: Decimal | None = None
    cl_ord_id: str = ""
    tag: str = ""
    reduce_only: bool = False
    tgt_ccy: str = ""  # spot market orders: "base_ccy" (default) or "quote_ccy"


@dataclass(frozen=True, slots=True)
class OrderView:
    """A snapshot of one order. ``fee`` is the cumulative fee paid (positive)."""

    ord_id: str
    cl_ord_id: str
    tag: str
    inst_id: str
    inst_type: str  # "SPOT" | "SWAP"
    side: str
    ord_type: str
    px: Decimal | None
    sz: Decimal
    tgt_ccy: str
    reduce_only: bool
    state: str  # live | partially_filled | filled | canceled
    acc_fill_sz: Decimal
    avg_px: Decimal | None
    fee: Decimal
    fee_ccy: str
    c_time: int
    u_time: int
    fill_time: int | None
    cancel_source: str


@dataclass(frozen=True, slots=True)
class FillView:
    """One execution of one of our orders. ``fee`` is positive when paid."""

    trade_id: str
    ord_id: str
    cl_ord_id: str
    tag: str
    inst_id: str
    inst_type: str
    side: str
    px: Decimal
    sz: Decimal
    fee: Decimal
    fee_ccy: str
    exec_type: str  # "T" taker | "M" maker
    ts_ms: int
    pnl: Decimal  # realized P&L of this fill (swaps), else 0


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """An order change, with the fill that caused it (if any)."""

    order: OrderView
    fill: FillView | None = None


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """``s_code == "0"`` means accepted; then ``order`` is set."""

    s_code: str
    s_msg: str
    order: OrderView | None
    events: tuple[OrderEvent, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.s_code == "0"


@dataclass(frozen=True, slots=True)
class CancelResult:
    """``s_code == "0"``: canceled; ``51400``/``51401``/``51402``: unknown / canceled / filled."""

    s_code: str
    s_msg: str
    order: OrderView | None
    events: tuple[OrderEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class PositionView:
    """A net swap position (contracts, signed)."""

    inst_id: str
    pos: Decimal
    avg_px: Decimal
    mark_px: Decimal
    upl: Decimal
    realized_pnl: Decimal
    fees: Decimal
    margin: Decimal
    notional: Decimal  # |pos| * contract value * mark, in USDT
    leverage: Decimal
    c_time: int
    u_time: int


@dataclass(frozen=True, slots=True)
class BalanceView:
    """One currency: ``cash`` (settled), ``equity`` (cash + unrealized P&L),
    ``available`` (cash - reservations - margin), ``frozen``."""

    ccy: str
    cash: Decimal
    equity: Decimal
    available: Decimal
    frozen: Decimal
    upl: Decimal


@dataclass(frozen=True, slots=True)
class BookView:
    """Book levels as ``(price, size)`` pairs, best first."""

    inst_id: str
    ts_ms: int
    bids: tuple[tuple[Decimal, Decimal], ...]
    asks: tuple[tuple[Decimal, Decimal], ...]


_OrderViewB = frozen_builder(OrderView)
_FillViewB = frozen_builder(FillView)
_OrderEventB = frozen_builder(OrderEvent)
_SubmitResultB = frozen_builder(SubmitResult)


@dataclass(slots=True)
class _Inst:
    cfg: SimInstrument
    inst_type: str
    base: str
    quote: str
    ct_val: Decimal  # 1 for spot
    taker: Decimal  # fee rates of this instrument's kind
    maker: Decimal
    inst_id: str = ""  # cfg.inst_id (copied: read on every order)
    fee_ccy: str = ""  # the currency fees are charged in: quote (spot), USDT (swaps)
    lot_f: float = 0.0  # float(cfg.lot_size)
    taker_plus_one: Decimal = ZERO  # 1 + taker


@dataclass(slots=True)
class _Order:
    seq: int
    inst: _Inst
    cl_ord_id: str
    tag: str
    side: str
    ord_type: str
    px: Decimal | None
    sz: Decimal
    tgt_ccy: str
    reduce_only: bool
    c_time: int
    due_ms: int
    ord_id: str = ""  # str(seq)
    state: str = "live"
    u_time: int = 0
    acc_fill_sz: Decimal = ZERO
    acc_notional: Decimal = ZERO
    spent_quote: Decimal = ZERO  # quote_ccy market buys: quote spent so far
    fee: Decimal = ZERO
    fill_time: int | None = None
    matched: bool = False  # has passed its first (taker) match
    reserved: Decimal = ZERO
    reserve_ccy: str = ""
    cancel_source: str = ""
    view: OrderView | None = None  # the last snapshot, valid while u_time is unchanged (see _view)

    @property
    def remaining(self) -> Decimal:
        return self.sz - self.acc_fill_sz

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES


@dataclass(slots=True)
class _Position:
    pos: Decimal = ZERO
    avg_px: Decimal = ZERO
    realized: Decimal = ZERO
    fees: Decimal = ZERO
    c_time: int = 0
    u_time: int = 0


@dataclass(slots=True)
class _Book:
    ts_ms: int
    bids: list[list[Decimal]] = field(default_factory=list)  # [px, size], best first
    asks: list[list[Decimal]] = field(default_factory=list)


class _Rejected(Exception):
    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


class MatchingEngine:
    """One venue: books, orders, fills, balances and swap positions.

    Every mutating call returns the :class:`OrderEvent` list it produced, in
    order; nothing is pushed anywhere by the engine itself.
    """

    def __init__(
        self,
        instruments: Sequence[SimInstrument],
        *,
        fees: FeeSchedule | None = None,
        initial_balances: Mapping[str, Decimal] | None = None,
        leverage: Decimal = Decimal(10),
        book_levels: int = 20,
        latency_ms: int = 0,
        seed: int = 1,
        book_shape: BookShape | None = None,
    ) -> None:
        if leverage <= 0:
            raise ValueError("leverage must be positive")
        if book_levels <= 0:
            raise ValueError("book_levels must be positive")
        self._fees = fees or FeeSchedule()
        self._leverage = Decimal(leverage)
        self._levels = book_levels
        self._latency_ms = latency_ms
        self._shape = book_shape or BookShape()
        self._top_notional_f = float(self._shape.top_level_notional)  # constants of _rebuild_book
        self._growth_f = float(self._shape.depth_growth)
        self._buy_buffer = 1 + self._shape.market_buffer  # the same decimals _reference_px computed each time
        self._sell_buffer = 1 - self._shape.market_buffer
        self._book_salt: dict[str, bytes] = {}  # per instrument: keys the level sizes, see _rebuild_book
        self._book_draws = struct.Struct(f"<{2 * book_levels}Q")
        self._book_due: dict[str, tuple[Decimal, int]] = {}  # inst -> (price, ts) of a book not built yet
        self._insts: dict[str, _Inst] = {}
        for cfg in instruments:
            spot = spot_of(cfg.inst_id)
            fees_ = self._fees
            if spot is not None:
                base, quote = spot.split("-", 1)
                self._insts[cfg.inst_id] = _Inst(cfg, "SWAP", base, quote, cfg.contract_value, fees_.swap_taker,
                                                 fees_.swap_maker, cfg.inst_id, "USDT", float(cfg.lot_size))
            else:
                base, quote = cfg.inst_id.split("-", 1)
                self._insts[cfg.inst_id] = _Inst(cfg, "SPOT", base, quote, Decimal(1), fees_.spot_taker,
                                                 fees_.spot_maker, cfg.inst_id, quote, float(cfg.lot_size))
            inst_ = self._insts[cfg.inst_id]
            inst_.taker_plus_one = 1 + inst_.taker
        self._book_salt = {inst_id: derive_seed(seed, f"book:{inst_id}").to_bytes(8, "little")
                           for inst_id in self._insts}
        self._cash: dict[str, Decimal] = {k: Decimal(v) for k, v in (initial_balances or {}).items()}
        self._orders: dict[int, _Order] = {}
        self._live: dict[int, _Order] = {}
        self._fills: list[FillView] = []
        self._positions: dict[str, _Position] = {}
        self._books: dict[str, _Book] = {}
        self._marks: dict[str, Decimal] = {k: v.cfg.initial_price for k, v in self._insts.items()}
        self._order_seq = 0
        self._trade_seq = 0
        self._now_ms = 0

    # ------------------------------------------------------------------ queries

    @property
    def instruments(self) -> Mapping[str, SimInstrument]:
        return {k: v.cfg for k, v in self._insts.items()}

    @property
    def leverage(self) -> Decimal:
        return self._leverage

    @property
    def now_ms(self) -> int:
        """The latest time the engine has seen (market step or call)."""
        return self._now_ms

    def inst_type(self, inst_id: str) -> str:
        """``"SPOT"`` or ``"SWAP"``. Raises KeyError for an unknown instrument."""
        return self._insts[inst_id].inst_type

    def mark_price(self, inst_id: str) -> Decimal:
        return self._marks[inst_id]

    def book(self, inst_id: str, depth: int | None = None) -> BookView:
        """The current synthetic book (empty before the first market step).

        Raises:
            KeyError: unknown instrument.
        """
        self._insts[inst_id]
        book = self._current_book(inst_id)
        if book is None:
            return BookView(inst_id, self._now_ms, (), ())
        n = depth or self._levels

        def side(levels: list[list[Decimal]]) -> tuple[tuple[Decimal, Decimal], ...]:
            return tuple((px, sz) for px, sz in levels if sz > 0)[:n]

        return BookView(inst_id, book.ts_ms, side(book.bids), side(book.asks))

    def get_order(self, inst_id: str | None = None, *, ord_id: str = "", cl_ord_id: str = "") -> OrderView | None:
        """Look an order up by ``ord_id``, else by ``cl_ord_id`` (the live one first,
        else the most recent). ``inst_id``, when given, must match."""
        order = self._find(inst_id, ord_id, cl_ord_id)
        return self._view(order) if order else None

    def open_orders(self, inst_id: str | None = None, inst_type: str | None = None) -> list[OrderView]:
        """Live and partially filled orders, newest first."""
        return [
            self._view(o)
            for o in sorted(self._live.values(), key=lambda o: -o.seq)
            if (inst_id is None or o.inst.inst_id == inst_id)
            and (inst_type is None or o.inst.inst_type == inst_type)
        ]

    def order_history(self, inst_id: str | None = None, inst_type: str | None = None) -> list[OrderView]:
        """Terminal (filled or canceled) orders, newest first."""
        return [
            self._view(o)
            for o in sorted(self._orders.values(), key=lambda o: -o.seq)
            if not o.is_live
            and (inst_id is None or o.inst.inst_id == inst_id)
            and (inst_type is None or o.inst.inst_type == inst_type)
        ]

    def fills(
        self,
        *,
        inst_id: str | None = None,
        inst_type: str | None = None,
        ord_id: str | None = None,
        begin_ms: int | None = None,
        end_ms: int | None = None,
    ) -> list[FillView]:
        """Our fills, newest first; ``begin_ms``/``end_ms`` bound ``ts_ms`` inclusively."""
        return [
            f
            for f in reversed(self._fills)
            if (inst_id is None or f.inst_id == inst_id)
            and (inst_type is None or f.inst_type == inst_type)
            and (ord_id is None or f.ord_id == ord_id)
            and (begin_ms is None or f.ts_ms >= begin_ms)
            and (end_ms is None or f.ts_ms <= end_ms)
        ]

    def position(self, inst_id: str) -> PositionView:
        """The net position of a swap (flat when never traded). Raises KeyError."""
        inst = self._insts[inst_id]
        if inst.inst_type != "SWAP":
            raise KeyError(f"{inst_id} is not a swap")
        p = self._positions.get(inst_id) or _Position()
        mark = self._marks[inst_id]
        notional = abs(p.pos) * inst.ct_val * mark
        return PositionView(
            inst_id=inst_id,
            pos=p.pos,
            avg_px=p.avg_px,
            mark_px=mark,
            upl=p.pos * inst.ct_val * (mark - p.avg_px),
            realized_pnl=p.realized,
            fees=p.fees,
            margin=self._position_margin(inst, p),
            notional=notional,
            leverage=self._leverage,
            c_time=p.c_time,
            u_time=p.u_time,
        )

    def positions(self) -> list[PositionView]:
        """Open (non-zero) swap positions."""
        return [self.position(i) for i, p in self._positions.items() if p.pos != 0]

    def balances(self) -> list[BalanceView]:
        """Every currency the account has touched."""
        reserved: dict[str, Decimal] = {}
        for o in self._live.values():
            reserved[o.reserve_ccy] = reserved.get(o.reserve_ccy, ZERO) + o.reserved
        out = []
        for ccy, cash in sorted(self._cash.items()):
            margin = self._total_margin() if ccy == "USDT" else ZERO
            upl = self._total_upl() if ccy == "USDT" else ZERO
            frozen = reserved.get(ccy, ZERO) + margin
            out.append(BalanceView(ccy, cash, cash + upl, cash - frozen, frozen, upl))
        return out

    def account_truth(self) -> dict:
        """JSON-able truth for tests: balances, net swap positions and every fill."""
        return {
            "balances": {
                b.ccy: {"cash": _s(b.cash), "equity": _s(b.equity), "available": _s(b.available), "frozen": _s(b.frozen)}
                for b in self.balances()
            },
            "positions": {p.inst_id: _s(p.pos) for p in self.positions()},
            "trades": [
                {
                    "trade_id": f.trade_id, "ord_id": f.ord_id, "cl_ord_id": f.cl_ord_id, "inst_id": f.inst_id,
                    "side": f.side, "px": _s(f.px), "sz": _s(f.sz), "fee": _s(f.fee), "fee_ccy": f.fee_ccy,
                    "exec_type": f.exec_type, "ts_ms": f.ts_ms,
                }
                for f in self._fills
            ],
            "open_orders": len(self._live),
        }

    # ------------------------------------------------------------------ market

    def on_market(self, tick: MarketTick) -> list[OrderEvent]:
        """One market step of one instrument.

        Resting orders fill from the step's trades, then the book is rebuilt
        around the new price, then orders whose latency has elapsed are matched
        against it. Unknown instruments are ignored.
        """
        inst = self._insts.get(tick.inst_id)
        if inst is None:
            return []
        self._now_ms = max(self._now_ms, tick.ts_ms)
        events: list[OrderEvent] = []
        live = self._live  # (both steps below have nothing to do without live orders)
        if live:
            self._fill_resting(inst, tick, events)
        self._marks[inst.inst_id] = tick.price
        self._books.pop(inst.inst_id, None)
        self._book_due[inst.inst_id] = (tick.price, tick.ts_ms)
        if live:
            self._match_due(tick.ts_ms, events, only=inst.inst_id)
        return events

    def process_due(self, ts_ms: int) -> list[OrderEvent]:
        """Match orders whose latency has elapsed at ``ts_ms`` against the current
        books (for when no market step arrives, e.g. frozen market data)."""
        self._now_ms = max(self._now_ms, ts_ms)
        events: list[OrderEvent] = []
        self._match_due(ts_ms, events, only=None)
        return events

    def _fill_resting(self, inst: _Inst, tick: MarketTick, events: list[OrderEvent]) -> None:
        if not self._live or not tick.trades:
            return
        resting = [o for o in self._live.values() if o.inst is inst and o.matched]
        if not resting or not tick.trades:
            return
        buys = sorted((o for o in resting if o.side == "buy"), key=lambda o: (-o.px, o.seq))  # type: ignore[operator]  # resting orders are priced
        sells = sorted((o for o in resting if o.side == "sell"), key=lambda o: (o.px, o.seq))
        for trade in tick.trades:
            for queue, through in ((buys, lambda o, p=trade.price: o.px > p), (sells, lambda o, p=trade.price: o.px < p)):
                budget = trade.size
                for o in queue:
                    if budget <= 0 or not through(o):
                        break
                    if not o.is_live:
                        continue
                    size = min(o.remaining, budget)
                    filled = self._execute(o, o.px, size, "M", tick.ts_ms, events)  # type: ignore[arg-type]  # resting orders are priced
                    budget -= filled
                    if filled < size and o.is_live:
                        # Could not afford or reduce more: the rest cannot fill.
                        self._finish(o, "canceled", tick.ts_ms, events, source="funds")

    def _has_book(self, inst_id: str) -> bool:
        return inst_id in self._books or inst_id in self._book_due

    def _current_book(self, inst_id: str) -> _Book | None:
        """The book of the latest market step, built now if it was not yet (None before any step)."""
        book = self._books.get(inst_id)
        if book is None:
            due = self._book_due.pop(inst_id, None)
            if due is not None:
                book = self._rebuild_book(self._insts[inst_id], *due)
        return book

    def _rebuild_book(self, inst: _Inst, mid: Decimal, ts_ms: int) -> _Book:
        shape = self._shape
        cfg = inst.cfg
        tick = cfg.tick_size
        lot = cfg.lot_size
        # Keyed by the step alone: the same step always gets the same book (see the module doc).
        # One uniform in [0, 1) per (level, side), from a hash of (seed, instrument, step time).
        key = self._book_salt[inst.inst_id] + (ts_ms & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
        draws = self._book_draws.unpack(_shake_128(key).digest(self._book_draws.size))
        if mid % tick:
            mid = (mid / tick).to_integral_value(ROUND_HALF_UP) * tick
        half = ZERO if shape.spread_ticks == 0 else tick * (shape.spread_ticks // 2 or 1)
        spacing = tick  # level 0 does not use it
        if self._levels > 1:
            spacing = max(tick, (mid * shape.level_spacing_bps / 10_000 / tick).to_integral_value(ROUND_DOWN) * tick)
        # (mid * 1 is mid, digit for digit: spot skips the multiplication)
        unit_value = float(mid) if inst.inst_type == "SPOT" else float(mid * inst.ct_val)
        # Sizes in whole lots, computed in floats (the exact size of a random level does not matter,
        # only that it is deterministic): top x (1 + growth * i) x U[0.5, 1.5), at least one lot.
        top_lots = self._top_notional_f / unit_value / inst.lot_f if unit_value > 0 else 1.0
        growth = self._growth_f
        bids: list[list[Decimal]] = []
        asks: list[list[Decimal]] = []
        book = _Book(ts_ms, bids, asks)
        bid_px, ask_px = mid - half, mid + half
        last = self._levels - 1
        for i in range(self._levels):
            level_lots = top_lots * (1 + growth * i)
            if bid_px > 0:
                bids.append([bid_px, lot * max(1, int(level_lots * (0.5 + (draws[2 * i] >> 11) * _TWO_POW_M53)))])
            asks.append([ask_px, lot * max(1, int(level_lots * (0.5 + (draws[2 * i + 1] >> 11) * _TWO_POW_M53)))])
            if i < last:
                bid_px -= spacing
                ask_px += spacing
        self._books[inst.inst_id] = book
        return book

    def _match_due(self, ts_ms: int, events: list[OrderEvent], only: str | None) -> None:
        if not self._live:
            return
        due = sorted(
            (
                o
                for o in self._live.values()
                if not o.matched
                and o.due_ms <= ts_ms
                and (only is None or o.inst.inst_id == only)
                and self._has_book(o.inst.inst_id)
            ),
            key=lambda o: o.seq,
        )
        for o in due:
            self._match_new(o, max(ts_ms, o.due_ms), events)

    # ------------------------------------------------------------------ orders

    def submit(self, req: OrderRequest, ts_ms: int) -> SubmitResult:
        """Validate, accept and (with zero latency) match one order.

        Returns a rejected result (``s_code`` != "0", no state change) for:
        ``51001`` unknown instrument, ``51000`` bad parameter (ordType, side,
        px, clOrdId, tgtCcy), ``51204`` limit order without price, ``51020``
        below the minimum size, ``51121`` not a lot-size multiple, ``51016``
        duplicate live clOrdId, ``51205`` reduceOnly without a position to
        reduce, ``51008`` insufficient balance or margin.
        """
        self._now_ms = max(self._now_ms, ts_ms)
        try:
            inst = self._validate(req)
            order = self._accept(inst, req, ts_ms)
        except _Rejected as rej:
            return SubmitResult(rej.code, rej.msg, None)
        events: list[OrderEvent] = [_event(self._view(order), None)]
        if self._latency_ms == 0 and (inst.inst_id in self._books or inst.inst_id in self._book_due):
            self._match_new(order, ts_ms, events)  # (_has_book, inlined)
        result = _SubmitResultB("0", "Order placed", self._view(order), tuple(events))
        result.__class__ = SubmitResult  # see frozen_builder
        return result

    def _validate(self, req: OrderRequest) -> _Inst:
        inst = self._insts.get(req.inst_id)
        if inst is None:
            raise _Rejected("51001", f"Instrument ID {req.inst_id} does not exist.")
        if req.side not in ("buy", "sell"):
            raise _Rejected("51000", "Parameter side error")
        if req.ord_type not in ORDER_TYPES:
            raise _Rejected("51000", "Parameter ordType error")
        if req.cl_ord_id and not _CL_ORD_ID.match(req.cl_ord_id):
            raise _Rejected("51000", "Parameter clOrdId error")
        quote_sized = inst.inst_type == "SPOT" and req.ord_type == "market" and req.tgt_ccy == "quote_ccy"
        if req.tgt_ccy not in ("", "base_ccy", "quote_ccy") or (req.tgt_ccy == "quote_ccy" and not quote_sized):
            raise _Rejected("51000", "Parameter tgtCcy error")
        if req.ord_type != "market":
            if req.px is None:
                raise _Rejected("51204", "The price for the limit order can not be empty")
            if req.px <= 0 or req.px % inst.cfg.tick_size != 0:
                raise _Rejected("51000", "Parameter px error")
        if req.sz <= 0:
            raise _Rejected("51000", "Parameter sz error")
        if not quote_sized:
            if req.sz < inst.cfg.min_size:
                raise _Rejected("51020", f"Order amount should be greater than the min available amount {inst.cfg.min_size}")
            if req.sz % inst.cfg.lot_size != 0:
                raise _Rejected("51121", f"Order count should be the integer multiples of the lot size {inst.cfg.lot_size}")
        if req.cl_ord_id and self._live and any(o.cl_ord_id == req.cl_ord_id for o in self._live.values()):
            raise _Rejected("51016", "Duplicated client order ID")
        if req.reduce_only and inst.inst_type == "SWAP":
            pos = self._positions.get(inst.inst_id, _Position()).pos
            if pos == 0 or (pos > 0) == (req.side == "buy"):
                raise _Rejected("51205", "Reduce-Only is not available")
        return inst

    def _accept(self, inst: _Inst, req: OrderRequest, ts_ms: int) -> _Order:
        order = _Order(
            seq=self._order_seq + 1,
            ord_id=str(self._order_seq + 1),
            inst=inst,
            cl_ord_id=req.cl_ord_id,
            tag=req.tag,
            side=req.side,
            ord_type=req.ord_type,
            px=req.px if req.ord_type != "market" else None,
            sz=req.sz,
            tgt_ccy=req.tgt_ccy or ("base_ccy" if inst.inst_type == "SPOT" else ""),
            reduce_only=req.reduce_only and inst.inst_type == "SWAP",
            c_time=ts_ms,
            due_ms=ts_ms + self._latency_ms,
            u_time=ts_ms,
        )
        ccy, amount = self._reservation(order)
        if amount > self._available(ccy):
            raise _Rejected("51008", "Order failed. Insufficient balance or margin.")
        order.reserve_ccy, order.reserved = ccy, amount
        self._order_seq += 1
        self._orders[order.seq] = order
        self._live[order.seq] = order
        return order

    def _reference_px(self, order: _Order) -> Decimal:
        """The price to reserve at: the limit, else the far side of the book plus a buffer."""
        if order.px is not None:
            return order.px
        inst = order.inst
        book = self._current_book(inst.inst_id)
        levels = (book.asks if order.side == "buy" else book.bids) if book else []
        base = self._walk_estimate(levels, order.sz) if levels else self._marks[inst.inst_id]
        return base * self._buy_buffer if order.side == "buy" else base * self._sell_buffer

    @staticmethod
    def _walk_estimate(levels: list[list[Decimal]], size: Decimal) -> Decimal:
        """The worst price a taker of ``size`` would reach (last level if the book is short)."""
        left = size
        for px, sz in levels:
            left -= sz
            if left <= 0:
                return px
        return levels[-1][0]

    def _reservation(self, order: _Order) -> tuple[str, Decimal]:
        inst = order.inst
        fee_rate = inst.taker
        if inst.inst_type == "SPOT":
            if order.side == "sell":
                return inst.base, order.sz
            if order.tgt_ccy == "quote_ccy":
                return inst.quote, order.sz * inst.taker_plus_one
            return inst.quote, order.sz * self._reference_px(order) * inst.taker_plus_one
        px = self._reference_px(order)
        opening = self._opening_size(inst, order.side, order.sz)
        notional = order.sz * inst.ct_val * px
        return "USDT", opening * inst.ct_val * px / self._leverage + notional * fee_rate

    def _opening_size(self, inst: _Inst, side: str, size: Decimal) -> Decimal:
        pos = self._positions.get(inst.inst_id, _Position()).pos
        closing = abs(pos) if pos != 0 and (pos > 0) != (side == "buy") else ZERO
        return max(ZERO, size - closing)

    def _match_new(self, order: _Order, ts_ms: int, events: list[OrderEvent]) -> None:
        """First match of an accepted order: take liquidity, then rest or finish."""
        order.matched = True
        book = self._current_book(order.inst.inst_id)
        assert book is not None  # only due orders of instruments with a market step get here
        levels = book.asks if order.side == "buy" else book.bids
        limit = order.px

        def crosses(px: Decimal) -> bool:
            return limit is None or (px <= limit if order.side == "buy" else px >= limit)

        if order.ord_type == "post_only":
            if any(sz > 0 and crosses(px) for px, sz in levels):
                self._finish(order, "canceled", ts_ms, events, source="post_only")
            return
        if order.ord_type == "fok":
            depth = sum((sz for px, sz in levels if crosses(px)), ZERO)
            worst = max((px for px, _ in levels if crosses(px)), default=None) if order.side == "buy" else min(
                (px for px, _ in levels if crosses(px)), default=None)
            if worst is None or depth < order.remaining or self._fillable(order, worst, order.remaining) < order.remaining:
                self._finish(order, "canceled", ts_ms, events, source="fok")
                return
        last_px: Decimal | None = None
        buy = order.side == "buy"
        quote_sized = order.tgt_ccy == "quote_ccy"
        for level in levels:
            if order.state not in LIVE_STATES:  # order.is_live, crosses() and _taker_want(), inlined
                break
            if limit is not None and (level[0] > limit if buy else level[0] < limit):
                break
            if level[1] <= 0:
                continue
            rest = self._taker_want(order, level[0]) if quote_sized else order.sz - order.acc_fill_sz
            want = min(level[1], rest)
            if want <= 0:
                break
            filled = self._execute(order, level[0], want, "T", ts_ms, events)
            level[1] -= filled
            last_px = level[0]
            if filled < want:
                break
        if order.state not in LIVE_STATES:
            return
        if order.tgt_ccy == "quote_ccy":
            px = last_px or self._marks[order.inst.inst_id]
            one_lot = px * order.inst.cfg.lot_size
            done = order.acc_fill_sz > 0 and order.sz - order.spent_quote < one_lot
            self._finish(order, "filled" if done else "canceled", ts_ms, events, source="market")
        elif order.ord_type in ("market", "ioc", "fok"):
            self._finish(order, "canceled", ts_ms, events, source=order.ord_type)

    def _taker_want(self, order: _Order, px: Decimal) -> Decimal:
        if order.tgt_ccy != "quote_ccy":
            return order.remaining
        lot = order.inst.cfg.lot_size
        left = (order.sz - order.spent_quote) / px
        return (left / lot).to_integral_value(ROUND_DOWN) * lot

    def _fillable(self, order: _Order, px: Decimal, want: Decimal) -> Decimal:
        """How much of ``want`` at ``px`` the account can take (funds, margin, reduce-only)."""
        inst = order.inst
        if order.reduce_only:
            pos = self._positions.get(inst.inst_id, _Position()).pos
            reducing = pos != 0 and (pos > 0) != (order.side == "buy")
            want = min(want, abs(pos)) if reducing else ZERO
        if want <= 0:
            return ZERO
        budget = self._available(order.reserve_ccy) + order.reserved
        cost = self._cost(order, px, want)
        if cost <= budget:
            return want
        lot = inst.cfg.lot_size
        size = (want * max(budget, ZERO) / cost / lot).to_integral_value(ROUND_DOWN) * lot
        while size > 0 and self._cost(order, px, size) > budget:
            size -= lot
        return max(size, ZERO)

    def _cost(self, order: _Order, px: Decimal, size: Decimal) -> Decimal:
        """What filling ``size`` at ``px`` takes from the order's reserve currency (taker fee, to be safe)."""
        inst = order.inst
        if inst.inst_type == "SPOT":
            return size if order.side == "sell" else px * size * inst.taker_plus_one
        rate = inst.taker
        notional = px * size * inst.ct_val
        return self._opening_size(inst, order.side, size) * inst.ct_val * px / self._leverage + notional * rate

    def _execute(self, order: _Order, px: Decimal, want: Decimal, exec_type: str, ts_ms: int,
                 events: list[OrderEvent]) -> Decimal:
        """Fill up to ``want`` at ``px`` within funds and reduce-only limits; return the size filled."""
        inst = order.inst
        size = self._fillable(order, px, want)
        if size <= 0:
            return ZERO
        rate = inst.taker if exec_type == "T" else inst.maker
        notional = px * size * inst.ct_val
        fee = (notional * rate).quantize(_FEE_QUANTUM, ROUND_HALF_UP)
        # Release what this fill uses of the reservation before moving cash, so
        # available balance never counts the same money twice.
        consumed = self._cost(order, px, size) if inst.inst_type == "SWAP" else (
            size if order.side == "sell" else notional + fee)
        release = min(order.reserved, consumed)
        order.reserved -= release
        pnl = ZERO
        if inst.inst_type == "SPOT":
            sign = 1 if order.side == "buy" else -1
            self._cash[inst.base] = self._cash.get(inst.base, ZERO) + sign * size
            self._cash[inst.quote] = self._cash.get(inst.quote, ZERO) - sign * notional - fee
        else:
            pnl = self._apply_position(inst, order.side, px, size, fee, ts_ms)
            self._cash["USDT"] = self._cash.get("USDT", ZERO) + pnl - fee
        self._trade_seq += 1
        order.acc_fill_sz += size
        order.acc_notional += px * size
        order.spent_quote += notional
        order.fee += fee
        order.fill_time = ts_ms
        fill = _FillViewB(str(self._trade_seq), order.ord_id, order.cl_ord_id, order.tag, inst.inst_id,
                          inst.inst_type, order.side, px, size, fee, inst.fee_ccy, exec_type, ts_ms, pnl)
        fill.__class__ = FillView  # see frozen_builder
        self._fills.append(fill)
        done = order.tgt_ccy != "quote_ccy" and order.sz - order.acc_fill_sz <= 0
        if done:
            self._finish(order, "filled", ts_ms, events, fill=fill)
        else:
            self._touch(order, "partially_filled", ts_ms)
            events.append(_event(self._view(order), fill))
        return size

    def _apply_position(self, inst: _Inst, side: str, px: Decimal, size: Decimal, fee: Decimal, ts_ms: int) -> Decimal:
        """Apply a swap fill to the net position; return the realized P&L (before fees)."""
        p = self._positions.setdefault(inst.inst_id, _Position(c_time=ts_ms))
        qty = size if side == "buy" else -size
        pnl = ZERO
        if p.pos == 0:
            p.c_time = ts_ms
        if p.pos == 0 or (p.pos > 0) == (qty > 0):
            new_pos = p.pos + qty
            p.avg_px = (abs(p.pos) * p.avg_px + size * px) / abs(new_pos)
            p.pos = new_pos
        else:
            closing = min(size, abs(p.pos))
            direction = 1 if p.pos > 0 else -1
            pnl = closing * inst.ct_val * (px - p.avg_px) * direction
            p.pos += qty
            if p.pos == 0:
                p.avg_px = ZERO
            elif (p.pos > 0) != (direction > 0):  # flipped: the rest opened at px
                p.avg_px = px
                p.c_time = ts_ms
        p.realized += pnl
        p.fees += fee
        p.u_time = ts_ms
        return pnl

    def cancel(self, inst_id: str, *, ord_id: str = "", cl_ord_id: str = "", ts_ms: int,
               source: str = "user") -> CancelResult:
        """Cancel one live order by ``ord_id`` or ``cl_ord_id``.

        Codes: ``51400`` unknown order, ``51401`` already canceled, ``51402``
        already filled (OKX's codes; ccxt maps all three to OrderNotFound).
        """
        self._now_ms = max(self._now_ms, ts_ms)
        order = self._find(inst_id, ord_id, cl_ord_id)
        if order is None:
            return CancelResult("51400", "Order cancellation failed as the order does not exist.", None)
        if order.state == "canceled":
            return CancelResult("51401", "Order cancellation failed as the order is already canceled.", self._view(order))
        if order.state == "filled":
            return CancelResult("51402", "Order cancellation failed as the order is already completed.", self._view(order))
        events: list[OrderEvent] = []
        self._finish(order, "canceled", ts_ms, events, source=source)
        return CancelResult("0", "", self._view(order), tuple(events))

    def cancel_all(self, ts_ms: int, *, inst_id: str | None = None, source: str = "cancel_all") -> list[OrderEvent]:
        """Cancel every live order (of ``inst_id`` when given), oldest first."""
        self._now_ms = max(self._now_ms, ts_ms)
        events: list[OrderEvent] = []
        for order in sorted(self._live.values(), key=lambda o: o.seq):
            if inst_id is None or order.inst.inst_id == inst_id:
                self._finish(order, "canceled", ts_ms, events, source=source)
        return events

    # ------------------------------------------------------------------ internals

    def _find(self, inst_id: str | None, ord_id: str, cl_ord_id: str) -> _Order | None:
        order: _Order | None = None
        if ord_id:
            order = self._orders.get(int(ord_id)) if ord_id.isdigit() else None
        elif cl_ord_id:
            matches = [o for o in self._orders.values() if o.cl_ord_id == cl_ord_id]
            live = [o for o in matches if o.is_live]
            order = live[-1] if live else matches[-1] if matches else None
        if order is not None and inst_id is not None and order.inst.inst_id != inst_id:
            return None
        return order

    def _finish(self, order: _Order, state: str, ts_ms: int, events: list[OrderEvent], *,
                source: str = "", fill: FillView | None = None) -> None:
        order.reserved = ZERO
        order.matched = True
        if state == "canceled":
            order.cancel_source = source
        self._live.pop(order.seq, None)
        order.state = state  # _touch, inlined
        order.u_time = max(ts_ms, order.u_time + 1)
        events.append(_event(self._view(order), fill))

    @staticmethod
    def _touch(order: _Order, state: str, ts_ms: int) -> None:
        order.state = state
        order.u_time = max(ts_ms, order.u_time + 1)

    def _available(self, ccy: str) -> Decimal:
        reserved = ZERO  # summed as sum() would, so the result is the same to the last digit
        for o in self._live.values():
            if o.reserve_ccy == ccy:
                reserved += o.reserved
        margin = self._total_margin() if ccy == "USDT" and self._positions else ZERO
        return self._cash.get(ccy, ZERO) - reserved - margin

    def _position_margin(self, inst: _Inst, p: _Position) -> Decimal:
        return abs(p.pos) * inst.ct_val * p.avg_px / self._leverage

    def _total_margin(self) -> Decimal:
        return sum((self._position_margin(self._insts[i], p) for i, p in self._positions.items()), ZERO)

    def _total_upl(self) -> Decimal:
        return sum(
            (p.pos * self._insts[i].ct_val * (self._marks[i] - p.avg_px) for i, p in self._positions.items()),
            ZERO,
        )

    @staticmethod
    def _taker_rate(inst: _Inst) -> Decimal:
        return inst.taker

    @staticmethod
    def _maker_rate(inst: _Inst) -> Decimal:
        return inst.maker

    def _view(self, o: _Order) -> OrderView:
        # Every change of a field shown in a view goes with a strictly later u_time (_touch), so a
        # snapshot with the current u_time is still exact.
        cached = o.view
        if cached is not None and cached.u_time == o.u_time:
            return cached
        avg = (o.acc_notional / o.acc_fill_sz) if o.acc_fill_sz > 0 else None
        inst = o.inst
        # Positional, in OrderView's field order (defined above): keywords cost a visible share here.
        view = _OrderViewB(o.ord_id, o.cl_ord_id, o.tag, inst.inst_id, inst.inst_type, o.side, o.ord_type, o.px,
                           o.sz, o.tgt_ccy, o.reduce_only, o.state, o.acc_fill_sz, avg, o.fee, inst.fee_ccy,
                           o.c_time, o.u_time, o.fill_time, o.cancel_source)
        view.__class__ = OrderView  # see frozen_builder
        o.view = view
        return view


def _event(view: OrderView, fill: FillView | None) -> OrderEvent:
    event = _OrderEventB(view, fill)
    event.__class__ = OrderEvent  # see frozen_builder
    return event


def _s(d: Decimal) -> str:
    """A decimal as a plain string without exponent or trailing zeros."""
    if d == 0:
        return "0"
    return format(d.normalize(), "f")

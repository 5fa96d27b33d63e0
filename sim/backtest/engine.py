"""The backtester: a strategy, the pre-trade checks and the simulator's matching engine, in simulated time.

Same code as paper trading, driven from candles instead of the wall clock:

- **Strategy.** The configured class (``strategies.registry``), fed
  :class:`~core.types.Bar` objects and a :class:`~strategies.base.StrategyContext`
  per bar, as the strategy host feeds it; its ``on_fill`` / ``on_order_update``
  hooks get every fill and order change, and a strategy with
  ``quotes_to_cancel()`` (market making) has those ids canceled after each bar.
- **Pre-trade checks.** ``risk.pre_trade.check`` on every intent, with the
  host's rules: a denial drops the rest of the bar's plan, and so does a
  venue rejection. The freshness gate is satisfied by construction and not
  called: positions are the engine's own truth, updated synchronously with
  every fill (never stale, no discrepancy possible), market data is the
  replay's current point (age 0), and a backtest has no kill flag, breakers
  or pauses. The checks get better inputs than the host has: marks (the
  current point's price, so notional limits can be evaluated) and today's
  realized P&L net of fees (so loss limits are enforced, not failed closed).
- **Matching.** ``sim.matching.MatchingEngine``, the simulator's, with the
  market path and book of :mod:`sim.backtest.book_model`. Decision timing is
  the :class:`~sim.backtest.config.FillRule`; orders go in at decision time
  and the engine applies ``latency_ms``: an order is matched when it is due,
  against the book of the latest market point (``process_due`` at the due
  time, as the simulator's market loop does between points), or by the point
  that arrives exactly then.

**Speed without leaving the event loop.** Every bar goes through
``strategy.on_bar`` and every order through the engine. The engine is fed
the market points only while one of our orders is live; the points in
between are skipped because they cannot change anything: with no live order
a point only moves the mark and replaces the book, and books are keyed by
their step (never by history), so feeding just the current point before an
order reproduces exactly the state that feeding all of them would have. The
parity test compares against a dense, simulator-style drive. Preparation is
arrays (:mod:`sim.backtest.prepare`: integer ticks, the emit and decision-time
tables; shareable with ``prepared=``); bars are
built from them while preparing (:mod:`sim.backtest.bars`, as a data loader
would; they are immutable, their prices decimals with a precomputed ``float``)
and contexts per bar, both without
re-validating values the backtester made itself (:mod:`sim.backtest._fast`,
:meth:`StrategyContext.unvalidated`; validation was the largest per-bar cost).
Orders are built the same way from the validated intent; the matching engine
builds its frozen views through unfrozen twins (``sim.matching.frozen_builder``).
The cyclic garbage collector is paused during the loop (see :meth:`Backtester.run`).

Deterministic: client order ids are sequential (``bt0000000001``...), the
book is seeded by ``BacktestConfig.seed``, nothing reads the wall clock
except the timings.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from tradetree.core import (
    TERMINAL_STATES,
    ConfigError,
    Fill,
    FillLayer,
    Liquidity,
    Order,
    OrderIntent,
    OrderState,
    OrderType,
    Side,
    StrategyConfig,
)
from tradetree.risk import PreTradeInputs, check_pre_trade, pending_by_instrument
from tradetree.sim.backtest._fast import unvalidated
from tradetree.sim.backtest.bars import bar_tables, clear_bar_tables
from tradetree.sim.backtest.book_model import ReplayPath
from tradetree.sim.backtest.config import BacktestConfig, FillRule
from tradetree.sim.backtest.data import CandleSeries, align_series
from tradetree.sim.backtest.ledger import PositionLedger
from tradetree.sim.backtest.metrics import Metrics, RoundTrip, compute_metrics
from tradetree.sim.backtest.prepare import (
    POINTS_PER_CANDLE,
    PreparedMarket,
    market_key,
    prepare_market,
)
from tradetree.sim.backtest.runfolder import TradeRow
from tradetree.sim.config import SimInstrument
from tradetree.sim.market_data import spot_of
from tradetree.sim.matching import MatchingEngine, OrderEvent, OrderRequest, frozen_builder
from tradetree.strategies import Strategy, StrategyContext, build_strategy

__all__ = [
    "OrderRecord",
    "DenialRecord",
    "EquityCurve",
    "BacktestResult",
    "Backtester",
    "run_backtest",
    "ProgressCallback",
    "prepare_data",
    "clear_bar_tables",
]

ProgressCallback = Callable[[int, int], None]  # (candles done, candles total)

_ZERO = Decimal(0)
_DAY_MS = 86_400_000
_STATE = {
    "live": OrderState.LIVE,
    "partially_filled": OrderState.PARTIALLY_FILLED,
    "filled": OrderState.FILLED,
    "canceled": OrderState.CANCELED,
}
_ORD_TYPE = {OrderType.MARKET: "market", OrderType.LIMIT: "limit", OrderType.POST_ONLY: "post_only"}
_SIDE = {Side.BUY: "buy", Side.SELL: "sell"}  # Side.value, without the enum property's cost

_OrderRequestB = frozen_builder(OrderRequest)
_ORDER_FIELDS = set(Order.model_fields)
# Every field in the model's order, with its default (state PENDING_NEW, nothing filled...): an Order
# built from an intent (_send) names every field, also ones added later. _send sets the required ones.
_ORDER_DEFAULTS = {name: None if f.is_required() else f.default for name, f in Order.model_fields.items()}
if {n for n, f in Order.model_fields.items() if f.is_required()} - {
        "client_order_id", "strategy_id", "venue", "inst_id", "side", "type", "size", "created_ms", "updated_ms"}:
    raise ImportError("Order has a required field the backtester's _send does not set")
_INPUT_FIELDS = set(PreTradeInputs.model_fields)


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """One order of the run, in its final state (or its state at the end of the data)."""

    client_order_id: str
    inst_id: str
    side: str
    type: str
    size: Decimal
    price: Decimal | None
    reduce_only: bool
    submitted_ms: int
    state: str
    filled_size: Decimal
    avg_fill_price: Decimal | None
    reason: str
    reject_reason: str


@dataclass(frozen=True, slots=True)
class DenialRecord:
    """An intent the pre-trade checks refused (nothing was sent)."""

    ts_ms: int
    inst_id: str
    side: str
    size: Decimal
    reduce_only: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class EquityCurve:
    """Sampled at every candle close: equity, and per instrument position and close price."""

    ts_ms: np.ndarray  # candle close times
    equity: np.ndarray
    positions: dict[str, np.ndarray]
    closes: dict[str, np.ndarray]
    gross_notional: np.ndarray


@dataclass(frozen=True)
class BacktestResult:
    """Everything a run produced. ``trades`` is the reproducible output (byte-identical per seed)."""

    strategy_config: StrategyConfig
    config: BacktestConfig
    sources: dict[str, str]
    contract_values: dict[str, Decimal]
    trades: list[TradeRow]
    orders: list[OrderRecord]
    denials: list[DenialRecord]
    equity: EquityCurve
    metrics: Metrics
    round_trips: list[RoundTrip]
    account: dict
    notes: list[str]
    timings: dict[str, float]
    trade_from_ms: int | None = None
    warmup_intents_dropped: int = 0
    interval_ms: int = 60_000


def prepare_data(
    strategy_config: StrategyConfig,
    data: CandleSeries | Mapping[str, CandleSeries],
    config: BacktestConfig | None = None,
) -> PreparedMarket:
    """The preparation a :class:`Backtester` of these arguments would make, to share (``prepared=``).

    Raises:
        ConfigError: as :class:`Backtester` for the data and the bar interval.
    """
    return _prepare(strategy_config, data, config or BacktestConfig(), None)[2]


def _prepare(strategy_config: StrategyConfig, data: CandleSeries | Mapping[str, CandleSeries],
             config: BacktestConfig, given: PreparedMarket | None
             ) -> tuple[dict[str, CandleSeries], list[SimInstrument], PreparedMarket]:
    """The aligned series by symbol, the instruments (strategy order) and the preparation of a run.

    The preparation is ``given`` if it was made from these inputs, else a fresh one.

    Raises:
        ConfigError: missing or unalignable data, an unknown instrument, or a bar interval that is
            not a multiple of the candle length.
    """
    symbols = tuple(strategy_config.symbols)
    try:
        series = align_series(_series_by_symbol(symbols, data))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    insts = [config.instrument(s) for s in symbols]
    candle_ms = series[symbols[0]].interval_ms
    bar_ms = config.bar_interval_ms or candle_ms
    if bar_ms % candle_ms:
        raise ConfigError(f"bar_interval_ms {bar_ms} is not a multiple of the candle length {candle_ms} ms")
    next_tick = config.fill_rule is FillRule.NEXT_TICK
    ordered = {inst.inst_id: series[s] for inst, s in zip(insts, symbols)}
    ticks = {inst.inst_id: inst.tick_size for inst in insts}
    if given is not None and given.key == market_key(ordered, ticks, bar_ms, next_tick):
        return series, insts, given
    return series, insts, prepare_market(ordered, ticks, bar_ms, next_tick)


def _series_by_symbol(
    symbols: tuple[str, ...], data: CandleSeries | Mapping[str, CandleSeries]
) -> dict[str, CandleSeries]:
    if isinstance(data, CandleSeries):
        if len(symbols) != 1:
            raise ConfigError(f"the strategy trades {list(symbols)}: give one candle series per symbol")
        return {symbols[0]: data}
    out = {}
    for s in symbols:
        series = data.get(s)
        if series is None and spot_of(s) is not None:
            series = data.get(spot_of(s) or "")
        if series is None:
            raise ConfigError(f"no candle data for {s} (have {sorted(data)})")
        out[s] = series
    return out


class Backtester:
    """One backtest run. Build it (prepares data, strategy and engine), then :meth:`run` once.

    Args:
        strategy_config: the strategy as deployed (class, venue, symbols, params).
        data: one :class:`CandleSeries` for a single-symbol strategy, or one per
            symbol (a swap may use its spot's candles); several series are
            aligned on their common open times.
        config: fill rule, latency, fees, book model, limits...
        strategy: an already-built strategy object (default: built from the config).
        trade_from_ms: bars before this time warm the strategy up; its intents
            are dropped (counted) and metrics start here.
        progress: called every ``config.progress_every_bars`` candles.
        prepared: the data already prepared (:func:`sim.backtest.prepare.prepare_market`, e.g. shared
            by a sweep); used only if its key is this run's, else prepared again.

    Raises:
        ConfigError: unknown strategy class or instrument, bad params, missing
            data, or a bar interval that is not a multiple of the candle length.
    """

    def __init__(
        self,
        strategy_config: StrategyConfig,
        data: CandleSeries | Mapping[str, CandleSeries],
        config: BacktestConfig | None = None,
        *,
        strategy: Strategy | None = None,
        trade_from_ms: int | None = None,
        progress: ProgressCallback | None = None,
        prepared: PreparedMarket | None = None,
    ) -> None:
        t0 = time.perf_counter()
        self.config = config = config or BacktestConfig()
        self.strategy_config = strategy_config
        self.strategy = strategy if strategy is not None else build_strategy(strategy_config)
        self.strategy_id = self.strategy.id
        self.venue = strategy_config.venue
        self.notes: list[str] = []
        self.series, insts, market = _prepare(strategy_config, data, config, prepared)
        self.interval_ms = candle_ms = self.series[strategy_config.symbols[0]].interval_ms
        if config.bar_interval_ms is None and strategy_config.bar_interval_ms != candle_ms:
            self.notes.append(
                f"the strategy config asks for {strategy_config.bar_interval_ms} ms bars (paper); this backtest "
                f"uses the candle length, {candle_ms} ms (set bar_interval_ms to aggregate candles)"
            )
        if prepared is not None and market is not prepared:
            self.notes.append("the preparation passed (prepared=) was made from other candles or settings: "
                              "the data was prepared again")
        self.bar_ms = market.bar_ms
        self.prepared = market
        k = len(insts)
        self.paths = [ReplayPath(inst, market.paths[i], trade_id_stride=k, trade_id_offset=i)
                      for i, inst in enumerate(insts)]
        self.bars = bar_tables(market, self.venue)
        # _emit[i]: the bar that becomes final at market point (i, _phase), or -1.
        self._emit = market.emit.tolist()
        self._phase = market.phase
        if config.fill_rule is FillRule.NEXT_TICK:
            self.notes.append("the last bar is never final (no later market point): it is not traded")
        self._decision_ms = market.decision_ms.tolist()
        self.contract_values = {inst.inst_id: inst.contract_value for inst in insts}
        self.engine = MatchingEngine(
            insts, fees=config.fees, initial_balances=config.initial_balances, leverage=config.leverage,
            book_levels=config.book.levels, latency_ms=config.latency_ms, seed=config.seed,
            book_shape=config.book.shape(),
        )
        self.ledger = PositionLedger(self.strategy_id, self.venue, self.contract_values)
        quote = insts[0].inst_id.split("-")[1]
        self.capital = config.capital_quote or config.initial_balances.get(quote) or Decimal("100000")
        self.trade_from_ms = trade_from_ms
        self._progress = progress
        self._risk = config.risk
        self._latency_ms = config.latency_ms
        # Whether the strategy has its own hooks (a class override or one set on the instance): the
        # base class's do nothing, so they are neither called nor given their arguments otherwise.
        self._wants_fills = getattr(self.strategy.on_fill, "__func__", None) is not Strategy.on_fill
        self._wants_updates = getattr(self.strategy.on_order_update, "__func__", None) is not Strategy.on_order_update
        self._cancels = getattr(self.strategy, "quotes_to_cancel", None)
        self._spot = {inst.inst_id: spot_of(inst.inst_id) is None for inst in insts}
        # run state
        self._live: dict[str, Order] = {}  # non-terminal orders by client order id
        self._all_orders: dict[str, Order] = {}
        self._reasons: dict[str, str] = {}
        # pending_by_instrument of the live orders, recomputed whenever an order changes; fills are
        # applied as they happen, so what is applied for an order is its filled size.
        self._pending: dict[str, Decimal] = {}
        self._fed = -1  # the last market point fed to the engine, as 4 * candle + phase
        self._dues: deque[int] = deque()  # due times of submitted orders (latency > 0), in order
        self._seq = 0
        self._trades: list[TradeRow] = []
        self._denials: list[DenialRecord] = []
        self._day = -1
        self._day_base = _ZERO
        self._warmup_dropped = 0
        self._ran = False
        self.timings: dict[str, float] = {"prep_secs": time.perf_counter() - t0}

    # ------------------------------------------------------------------ the loop

    def run(self) -> BacktestResult:
        """Replay every candle; return the result.

        Raises:
            RuntimeError: called twice.
        """
        if self._ran:
            raise RuntimeError("a Backtester runs once; build a new one")
        self._ran = True
        t0 = time.perf_counter()
        n = len(self.paths[0])
        chunk = self.config.progress_every_bars
        loop = self._loop_one if len(self.paths) == 1 else self._loop_many
        # The loop allocates a bar and a context per bar, which keeps triggering the cyclic garbage
        # collector, and its passes over the long-lived data (prepared bars, every import) took 15-25 %
        # of the run. What the loop makes is acyclic and freed by reference counting, so the collector
        # is paused for the loop and restored after it.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for start in range(0, n, chunk):
                loop(start, min(n, start + chunk))
                if self._progress is not None:
                    self._progress(min(n, start + chunk), n)
            last = POINTS_PER_CANDLE * n - 1
            if self._fed != last:  # the final marks, so the account is valued at the last price
                self._feed(n - 1, POINTS_PER_CANDLE - 1)
            while self._dues:  # orders due after the data ends meet the last book, as in paper
                self._on_events(self.engine.process_due(self._dues.popleft()))
        finally:
            if gc_was_enabled:
                gc.enable()
        run_secs = time.perf_counter() - t0
        self.timings.update(run_secs=run_secs, candles=float(n),
                            candles_per_sec=n / run_secs if run_secs > 0 else float("inf"))
        return self._result()

    def _loop_many(self, start: int, stop: int) -> None:
        feed, decide, live, emit, phase = self._feed, self._decide, self._live, self._emit, self._phase
        for i in range(start, stop):
            if live:
                feed(i, 0)
                if phase:
                    feed(i, 1)
                    feed(i, 2)
                    feed(i, 3)
            b = emit[i]
            if b >= 0:
                decide(b, i, phase)
            if live and not phase:
                feed(i, 1)
                feed(i, 2)
                feed(i, 3)

    def _loop_one(self, start: int, stop: int) -> None:
        """``_loop_many`` for one instrument with ``_decide`` inlined: the hot path."""
        feed, live, emit, phase, now_ms = self._feed, self._live, self._emit, self._phase, self._decision_ms
        bars = self.bars[0].bars
        on_bar, cancels, ledger = self.strategy.on_bar, self._cancels, self.ledger
        new_tuple, ctx_cls = tuple.__new__, StrategyContext
        for i in range(start, stop):
            if live:
                feed(i, 0)
                if phase:
                    feed(i, 1)
                    feed(i, 2)
                    feed(i, 3)
            b = emit[i]
            if b >= 0:
                now = now_ms[i]
                # StrategyContext.unvalidated, inlined
                intents = on_bar(bars[b], new_tuple(ctx_cls, (now, ledger.quantities, self._pending)))
                if intents:
                    self._submit_plan(intents, now, i, phase)
                if cancels is not None:
                    ids = cancels()
                    if ids:
                        self._cancel(ids, now)
            if live and not phase:
                feed(i, 1)
                feed(i, 2)
                feed(i, 3)

    def _feed(self, i: int, j: int) -> None:
        """Feed market point ``(i, j)`` of every instrument to the engine, then process its events."""
        self._fed = POINTS_PER_CANDLE * i + j
        dues = self._dues
        ts = self.paths[0].point_ts(i, j)
        if dues:
            while dues and dues[0] < ts:
                events = self.engine.process_due(dues.popleft())
                if events:
                    self._on_events(events)
        on_market = self.engine.on_market
        for path in self.paths:
            events = on_market(path.tick(i, j, with_trade=bool(self._live)))
            if events:
                self._on_events(events)
        while dues and dues[0] <= ts:  # matched by this point (due exactly now)
            dues.popleft()

    def _context(self, now_ms: int) -> StrategyContext:
        return StrategyContext.unvalidated(now_ms, self.ledger.quantities, self._pending)

    def _decide(self, b: int, i: int, j: int) -> None:
        """Bar ``b`` became final at market point ``(i, j)``: ask the strategy, act on its answer."""
        now = self._decision_ms[i]
        on_bar = self.strategy.on_bar
        for table in self.bars:
            intents = on_bar(table.bar(b), self._context(now))
            if intents:
                self._submit_plan(intents, now, i, j)
            if self._cancels is not None:
                ids = self._cancels()
                if ids:
                    self._cancel(ids, now)

    # ------------------------------------------------------------------ orders

    def _submit_plan(self, intents: list[OrderIntent], now: int, i: int, j: int) -> None:
        if self.trade_from_ms is not None and now < self.trade_from_ms:
            self._warmup_dropped += len(intents)
            return
        risk = self._risk
        for intent in intents:
            reasons = check_pre_trade(intent, self._pre_trade_inputs(now, i, j), risk)
            if reasons:
                self._denials.append(DenialRecord(now, intent.inst_id, intent.side.value, intent.size,
                                                  intent.reduce_only, tuple(reasons)))
                break  # the rest of a plan (e.g. open after close) depends on this leg
            if self._fed != POINTS_PER_CANDLE * i + j:
                self._feed(i, j)  # bring the engine to this point (see the module doc)
            if not self._send(intent, now):
                break

    def _send(self, intent: OrderIntent, now: int) -> bool:
        """Submit one intent; False when the venue rejected it."""
        self._seq += 1
        coid = f"bt{self._seq:010d}"
        values = _ORDER_DEFAULTS.copy()  # Order.from_intent without re-validating the validated intent
        values.update(client_order_id=coid, strategy_id=intent.strategy_id, venue=intent.venue,
                      inst_id=intent.inst_id, side=intent.side, type=intent.type, size=intent.size,
                      price=intent.price, reduce_only=intent.reduce_only, created_ms=now, updated_ms=now)
        order = unvalidated(Order, values, _ORDER_FIELDS)
        self._reasons[coid] = intent.reason
        request = _OrderRequestB(intent.inst_id, _SIDE[intent.side], _ORD_TYPE[intent.type], intent.size,
                                 intent.price, coid, "", intent.reduce_only,
                                 "base_ccy" if self._spot[intent.inst_id] else "")
        request.__class__ = OrderRequest  # sim.matching.frozen_builder
        result = self.engine.submit(request, now)
        if result.s_code != "0":
            order = order.transition(OrderState.REJECTED, now_ms=now,
                                     reject_reason=f"{result.s_code}: {result.s_msg}")
            self._all_orders[coid] = order
            self.strategy.on_order_update(order)
            return False
        self._live[coid] = order
        self._all_orders[coid] = order
        if self._latency_ms:
            self._dues.append(now + self._latency_ms)
        if result.events:
            self._on_events(result.events)  # ends with this order's state: _pending is recomputed there
        else:
            self._pending = pending_by_instrument((o, o.filled_size) for o in self._live.values())
        return True

    def _cancel(self, ids: list[str], now: int) -> None:
        for coid in ids:
            order = self._live.get(coid)
            if order is None:
                continue  # already final: canceling it is harmless
            if self._fed < 0:
                continue  # nothing reached the engine yet
            result = self.engine.cancel(order.inst_id, ord_id=order.venue_order_id or "", cl_ord_id=coid, ts_ms=now)
            if result.events:
                self._on_events(result.events)

    def _pre_trade_inputs(self, now: int, i: int, j: int) -> PreTradeInputs:
        self._roll_day(now)
        return unvalidated(PreTradeInputs, {
            "positions": self.ledger.positions(),
            "in_flight": tuple(self._live.values()),
            "applied_sizes": {c: o.filled_size for c, o in self._live.items()},
            "marks": {(self.venue, p.inst_id): p.point_price(i, j) for p in self.paths},
            "daily_pnl": {self.strategy_id: self.ledger.realized_total - self.ledger.fees_total - self._day_base},
        }, _INPUT_FIELDS)

    def _roll_day(self, ts_ms: int) -> None:
        day = ts_ms // _DAY_MS
        if day != self._day:
            self._day = day
            self._day_base = self.ledger.realized_total - self.ledger.fees_total

    def _on_events(self, events: list[OrderEvent] | tuple[OrderEvent, ...]) -> None:
        strategy = self.strategy
        last = len(events) - 1
        for k, ev in enumerate(events):
            view = ev.order
            coid = view.cl_ord_id
            order = self._live.get(coid)
            if order is None:
                continue  # not one of ours, or already final
            fill = self._apply_fill(ev) if ev.fill is not None else None
            if (k < last and events[k + 1].order.cl_ord_id == coid and not self._wants_updates
                    and (fill is None or not self._wants_fills)):
                continue  # a later event of this batch supersedes this state, and nobody watches it
            state = _STATE[view.state]
            order = order.transition(state, now_ms=view.u_time, venue_order_id=view.ord_id,
                                     filled_size=view.acc_fill_sz, avg_fill_price=view.avg_px)
            self._all_orders[coid] = order
            if state in TERMINAL_STATES:
                del self._live[coid]
            else:
                self._live[coid] = order
            self._pending = pending_by_instrument((o, o.filled_size) for o in self._live.values())
            if fill is not None:
                strategy.on_fill(fill)
            if self._wants_updates:  # (the base class's hook does nothing)
                strategy.on_order_update(order)

    def _apply_fill(self, ev: OrderEvent) -> Fill | None:
        fv = ev.fill
        assert fv is not None
        self._roll_day(fv.ts_ms)
        self.ledger.apply(fv.inst_id, fv.side == "buy", fv.px, fv.sz, fv.fee, fv.ts_ms)
        liquidity = "taker" if fv.exec_type == "T" else "maker"
        self._trades.append(TradeRow(  # positional: ts_ms, inst_id, side, price, size, fee, fee_ccy, liquidity,
            fv.ts_ms, fv.inst_id, fv.side, fv.px, fv.sz, fv.fee, fv.fee_ccy, liquidity,  # client_order_id,
            fv.cl_ord_id, self.strategy_id, self.venue, fv.trade_id,  # strategy_id, venue, trade_id
        ))
        if not self._wants_fills:
            return None
        return Fill(
            venue=self.venue, inst_id=fv.inst_id, trade_id=fv.trade_id, client_order_id=fv.cl_ord_id,
            venue_order_id=fv.ord_id, side=Side(fv.side), price=fv.px, size=fv.sz, fee=fv.fee,
            fee_ccy=fv.fee_ccy, liquidity=Liquidity(liquidity), ts_ms=fv.ts_ms, layer=FillLayer.WS,
        )

    # ------------------------------------------------------------------ results

    def _equity(self) -> EquityCurve:
        first = self.paths[0]
        ts = np.asarray(first.ts_ms, dtype=np.int64)
        n = len(ts)
        cash = np.zeros(n)
        positions: dict[str, np.ndarray] = {}
        closes: dict[str, np.ndarray] = {}
        value = np.zeros(n)
        gross = np.zeros(n)
        for path in self.paths:
            inst = path.inst_id
            cv = float(self.contract_values[inst])
            rows = [t for t in self._trades if t.inst_id == inst]
            qty = np.zeros(n)
            if rows:
                idx = np.searchsorted(ts, np.asarray([t.ts_ms for t in rows], dtype=np.int64), side="right") - 1
                idx = np.clip(idx, 0, n - 1)
                signed = np.asarray([float(t.size) * t.sign for t in rows])
                flows = np.asarray([-float(t.price) * float(t.size) * t.sign * cv - float(t.fee) for t in rows])
                np.add.at(qty, idx, signed)
                np.add.at(cash, idx, flows)
            qty = np.cumsum(qty)
            close = self.series[inst].close
            positions[inst] = qty
            closes[inst] = close
            value += qty * close * cv
            gross += np.abs(qty) * close * cv
        equity = float(self.capital) + np.cumsum(cash) + value
        return EquityCurve(ts + self.interval_ms, equity, positions, closes, gross)

    def _result(self) -> BacktestResult:
        curve = self._equity()
        start = 0
        if self.trade_from_ms is not None:
            start = int(np.searchsorted(curve.ts_ms - self.interval_ms, self.trade_from_ms, side="left"))
            start = min(start, len(curve.ts_ms) - 1)
        orders = [self._record(o) for o in self._all_orders.values()]
        metrics, trips = compute_metrics(
            equity=curve.equity[start:], bar_close_ms=curve.ts_ms[start:], capital=float(self.capital),
            interval_ms=self.interval_ms, trades=self._trades, orders=len(orders),
            contract_values=self.contract_values, gross_notional=curve.gross_notional[start:],
        )
        return BacktestResult(
            strategy_config=self.strategy_config, config=self.config,
            sources={s: self.series[s].source for s in self.series}, contract_values=self.contract_values,
            trades=list(self._trades), orders=orders, denials=list(self._denials), equity=curve, metrics=metrics,
            round_trips=trips, account=self.engine.account_truth(), notes=list(self.notes),
            timings=dict(self.timings), trade_from_ms=self.trade_from_ms,
            warmup_intents_dropped=self._warmup_dropped, interval_ms=self.interval_ms,
        )

    def _record(self, o: Order) -> OrderRecord:
        return OrderRecord(
            client_order_id=o.client_order_id, inst_id=o.inst_id, side=o.side.value, type=o.type.value,
            size=o.size, price=o.price, reduce_only=o.reduce_only, submitted_ms=o.created_ms, state=o.state.value,
            filled_size=o.filled_size, avg_fill_price=o.avg_fill_price, reason=self._reasons.get(o.client_order_id, ""),
            reject_reason=o.reject_reason,
        )


def run_backtest(
    strategy_config: StrategyConfig,
    data: CandleSeries | Mapping[str, CandleSeries],
    config: BacktestConfig | None = None,
    *,
    strategy: Strategy | None = None,
    trade_from_ms: int | None = None,
    progress: ProgressCallback | None = None,
    prepared: PreparedMarket | None = None,
) -> BacktestResult:
    """Build a :class:`Backtester` and run it. Raises as :class:`Backtester`."""
    return Backtester(strategy_config, data, config, strategy=strategy, trade_from_ms=trade_from_ms,
                      progress=progress, prepared=prepared).run()

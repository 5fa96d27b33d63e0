"""Backtest vs the simulator driven as its server drives it: same orders and fills.

The reference below is written independently of the backtester: a
CandleReplay advanced in fixed market steps, every tick into the matching
engine first (``SimulatorServer._step``), then tickers to a BarAggregator, and
on each closed bar the strategy host's decision rules (positions from applied
fills, ``pending_by_instrument``, ``pre_trade.check``, stop the plan at the
first denial or rejection), orders submitted at the venue time of the step.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.backtest.conftest import mean_reversion_config
from tradetree.core.bars import BarAggregator
from tradetree.core.config import StrategyConfig
from tradetree.core.types import Order, OrderState, Position, Ticker
from tradetree.risk import pre_trade
from tradetree.risk.config import RiskConfig
from tradetree.risk.pre_trade_inputs import pending_by_instrument
from tradetree.sim.backtest.config import BacktestConfig
from tradetree.sim.backtest.data import CandleSeries
from tradetree.sim.backtest.parity import comparable_fills, comparable_orders, run_for_parity
from tradetree.sim.market_data import CandleReplay
from tradetree.sim.matching import MatchingEngine, OrderRequest
from tradetree.strategies.base import StrategyContext
from tradetree.strategies.registry import build_strategy

_STATES = {"live": OrderState.LIVE, "partially_filled": OrderState.PARTIALLY_FILLED,
           "filled": OrderState.FILLED, "canceled": OrderState.CANCELED}


class SimulatorStyleRun:
    """The paper path in-process: replay steps -> engine -> tickers -> bars -> host rules -> engine."""

    def __init__(self, sc: StrategyConfig, series: CandleSeries, cfg: BacktestConfig, step_ms: int) -> None:
        insts = [cfg.instrument(s) for s in sc.symbols]
        self.venue = sc.venue
        self.inst = insts[0]
        self.strategy = build_strategy(sc)
        self.replay = CandleReplay({sc.symbols[0]: series.to_candles()}, insts, start_ms=None)
        self.engine = MatchingEngine(insts, fees=cfg.fees, initial_balances=cfg.initial_balances,
                                     leverage=cfg.leverage, book_levels=cfg.book.levels, latency_ms=cfg.latency_ms,
                                     seed=cfg.seed, book_shape=cfg.book.shape())
        self.bars = BarAggregator(series.interval_ms)
        self.step_ms = step_ms
        self.risk = RiskConfig()
        self.positions: dict[str, Decimal] = {}
        self.orders: dict[str, Order] = {}
        self.applied: dict[str, Decimal] = {}
        self.seq = 0
        self.decisions: list[tuple[int, int]] = []  # (bar close point = ticker ts, venue time of the decision)

    def _apply(self, events) -> None:
        for ev in events:
            order = self.orders[ev.order.cl_ord_id]
            if ev.fill is not None:
                f = ev.fill
                signed = f.sz if f.side == "buy" else -f.sz
                self.positions[f.inst_id] = self.positions.get(f.inst_id, Decimal(0)) + signed
                self.applied[f.cl_ord_id] = self.applied.get(f.cl_ord_id, Decimal(0)) + f.sz
            self.orders[order.client_order_id] = order.transition(
                _STATES[ev.order.state], now_ms=ev.order.u_time, filled_size=ev.order.acc_fill_sz)

    def _decide(self, bar, now: int) -> None:
        open_orders = [o for o in self.orders.values() if not o.state.is_terminal]
        ctx = StrategyContext(now_ms=now, positions=dict(self.positions),
                              pending=pending_by_instrument(
                                  (o, self.applied.get(o.client_order_id, Decimal(0))) for o in open_orders))
        for intent in self.strategy.on_bar(bar, ctx):
            positions = tuple(
                p for p in [self._position(i) for i in self.positions] if p is not None)
            inputs = pre_trade.PreTradeInputs(positions=positions, in_flight=tuple(open_orders),
                                              applied_sizes=dict(self.applied))
            if pre_trade.check(intent, inputs, self.risk):
                break
            self.seq += 1
            coid = f"bt{self.seq:010d}"
            order = Order.from_intent(intent, now_ms=now, client_order_id=coid)
            result = self.engine.submit(OrderRequest(
                intent.inst_id, intent.side.value, intent.type.value, intent.size, intent.price, coid,
                reduce_only=intent.reduce_only), now)
            if not result.accepted:
                break
            self.orders[coid] = order
            open_orders.append(order)
            self._apply(result.events)

    def _position(self, inst_id: str) -> Position:
        return Position(strategy_id=self.strategy.id, venue=self.venue, inst_id=inst_id,
                        qty=self.positions[inst_id])

    def run(self) -> None:
        self._apply(self._step(self.replay.advance(1)))
        while not self.replay.exhausted:
            ticks = self.replay.advance(self.step_ms)
            events = self._step(ticks)
            if not ticks:
                events.extend(self.engine.process_due(self.replay.now_ms))
            self._apply(events)
            now = self.replay.now_ms  # venue time when the host sees the tickers of this step
            for tick in ticks:
                ticker = Ticker(venue=self.venue, inst_id=tick.inst_id, ts_ms=tick.ts_ms, last=tick.price)
                for bar in self.bars.add(ticker):
                    self.decisions.append((tick.ts_ms, now))
                    self._decide(bar, now)

    def _step(self, ticks) -> list:
        events = []
        for tick in ticks:
            events.extend(self.engine.on_market(tick))
        return events

    def fills(self):
        return tuple(reversed(self.engine.fills()))

    def orders_view(self):
        return sorted([*self.engine.order_history(), *self.engine.open_orders()], key=lambda o: int(o.ord_id))


@pytest.mark.parametrize("class_name", ["MeanReversion", "TrendFollowing"])
def test_zero_latency_backtest_equals_simulator_driven_run(candles, class_name):
    if class_name == "MeanReversion":
        sc = mean_reversion_config()
    else:
        sc = StrategyConfig.model_validate({
            "class": "TrendFollowing", "version": "v1", "venue": "okx", "symbols": ["BTC-USDT-SWAP"],
            "params": {"fast_bars": 3, "slow_bars": 8, "vol_window_bars": 5, "atr_bars": 5, "atr_stop_mult": 1.5,
                       "size": "2"}})
    cfg = BacktestConfig(seed=5)
    backtest = run_for_parity(sc, candles, cfg)
    paper = SimulatorStyleRun(sc, candles, cfg, step_ms=5_000)  # 250 ms ticks at 20x: steps end on the points
    paper.run()

    assert len(backtest.fills) >= 10, "the strategy should trade on this data"
    assert comparable_orders(backtest.orders) == comparable_orders(paper.orders_view())
    assert comparable_fills(backtest.fills) == comparable_fills(paper.fills())
    # Same engine calls in the same order: even ids and the whole account agree.
    assert backtest.account == paper.engine.account_truth()


def test_latency_with_steps_on_the_points_still_identical(candles):
    """An order due between two points is matched at its due time against the latest point's book
    (the server's ``process_due``); the backtester does the same."""
    sc = mean_reversion_config()
    cfg = BacktestConfig(seed=5, latency_ms=10_000)
    backtest = run_for_parity(sc, candles, cfg)
    paper = SimulatorStyleRun(sc, candles, cfg, step_ms=5_000)
    paper.run()
    assert len(backtest.fills) >= 10
    assert comparable_orders(backtest.orders) == comparable_orders(paper.orders_view())
    assert comparable_fills(backtest.fills) == comparable_fills(paper.fills())
    assert all(f.ts_ms % 5_000 == 0 and f.ts_ms % 15_000 != 0 for f in backtest.fills)  # between points


def test_paper_decision_delay_moves_timestamps_and_with_latency_prices(candles):
    """Paper decides at the end of its market step, the backtester at the bar's closing point.

    With 7 s steps (not dividing the 15 s point spacing) paper's decisions come
    0-6 s after the closing point. Zero latency: same orders and prices, only
    the timestamps move by that delay. 10 s latency: paper's order is due that
    much later too and is matched at a step end after its due time (the first
    one without a market point, or the point at or after due); when the next
    point arrived by then, it fills on that point's book, at another price.
    The backtester models the delay if it is added to ``latency_ms``.
    """
    sc = mean_reversion_config()
    spacing = candles.interval_ms // 4

    paper0 = SimulatorStyleRun(sc, candles, BacktestConfig(seed=5), step_ms=7_000)
    paper0.run()
    bt0 = run_for_parity(sc, candles, BacktestConfig(seed=5))
    delay = {point: now - point for point, now in paper0.decisions}
    assert any(delay.values()), "the 7 s steps should delay some decisions"
    assert [(f.px, f.sz, f.side) for f in bt0.fills] == [(f.px, f.sz, f.side) for f in paper0.fills()]
    for b, p in zip(bt0.fills, paper0.fills()):
        assert p.ts_ms - b.ts_ms == delay[b.ts_ms]

    latency = 10_000
    cfg = BacktestConfig(seed=5, latency_ms=latency)
    bt = run_for_parity(sc, candles, cfg)
    paper = SimulatorStyleRun(sc, candles, cfg, step_ms=7_000)
    paper.run()
    assert len(bt.orders) == len(paper.orders_view()) >= 10
    moved = 0
    for ob, op in zip(bt.orders, paper.orders_view()):
        point = ob.c_time  # the backtester submits at the closing point
        assert op.c_time == point + delay[point]
        assert ob.fill_time == point + latency  # due between two points: matched then, on the point's book
        # paper: at the first step end at or after due, or one step later when that step brought a point
        # before due (the server runs process_due only in steps without ticks)
        assert ob.fill_time <= op.fill_time < op.c_time + latency + 2 * 7_000
        next_point = point + spacing
        if op.fill_time >= next_point:
            moved += 1  # the next point's book
        else:
            assert (op.avg_px, op.acc_fill_sz) == (ob.avg_px, ob.acc_fill_sz)
    assert 0 < moved < len(bt.orders), "some, not all, orders should meet a later book"

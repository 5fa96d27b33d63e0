"""Parity with paper trading: a backtest's orders and fills, as the venue saw them.

``run_for_parity`` runs a strategy on a candle series through the backtester
and returns the matching engine's own record of every order and fill, in the
simulator's terms (``OrderView`` / ``FillView``). A paper run of the same data
on the simulator gives the same records (from ``SimulatorServer.engine``), so
the two can be compared with :func:`comparable_orders` / :func:`comparable_fills`,
which drop what legitimately differs between runs (client order ids, venue
order and trade ids).

What makes them equal, and what does not (``tests/backtest/test_parity.py``
shows both):

- With a market loop whose steps end on the replay's points and on the
  orders' due times (``tick_interval_ms * time_scale`` dividing a quarter of
  the bar and ``latency_ms``), paper and backtest decide at the same instants
  on the same bars, and their orders meet the same books: identical orders
  and fills, with or without latency. (An order due between two points is
  matched at its due time against the latest point's book: the server's
  ``process_due``, which the backtester calls at the due time.)
- Paper decides when its host receives the ticker, i.e. at the end of the
  market step that brought the bar's closing point, plus the host's own
  processing time (scaled by ``time_scale``); the backtester decides at the
  point itself. With zero latency that only moves order and fill timestamps
  (the book is still the point's book). With ``latency_ms`` > 0 the delay
  moves the due time too, and paper matches at a step end after it: an order
  that the delay pushes past the next point fills on that point's book, at
  another price. Model it by adding the expected decision delay to
  ``latency_ms`` of the backtest.
- Paper bars are built from tickers and carry volume 0; backtest bars carry
  the candle volume (only strategies that read volume can differ). Paper bars
  are aligned to the epoch; the simulator starts a replay on a candle boundary
  (``SimulatorConfig.replay_align_ms``), so they hold the same candles.

``tests/backtest/test_parity.py`` checks the pure part (the matching engine
driven as the simulator's server loop drives it); ``tests/test_paper_parity.py``
the whole tree on a replay with ``stepped_clock``, order by order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tradetree.core import StrategyConfig
from tradetree.sim.backtest.config import BacktestConfig
from tradetree.sim.backtest.data import CandleSeries
from tradetree.sim.backtest.engine import Backtester, BacktestResult
from tradetree.sim.matching import FillView, OrderView
from tradetree.strategies import Strategy

__all__ = ["ParityRun", "run_for_parity", "comparable_orders", "comparable_fills"]


@dataclass(frozen=True)
class ParityRun:
    """The engine's record of a backtest: every accepted order (by venue order id) and every fill
    (in execution order), the account truth, and the backtest result."""

    orders: tuple[OrderView, ...]
    fills: tuple[FillView, ...]
    account: dict
    result: BacktestResult


def run_for_parity(
    strategy_config: StrategyConfig,
    data: CandleSeries | Mapping[str, CandleSeries],
    config: BacktestConfig | None = None,
    *,
    strategy: Strategy | None = None,
) -> ParityRun:
    """Backtest ``strategy_config`` on ``data``; return its orders and fills. Raises as ``Backtester``."""
    bt = Backtester(strategy_config, data, config, strategy=strategy)
    result = bt.run()
    engine = bt.engine
    orders = sorted([*engine.order_history(), *engine.open_orders()], key=lambda o: int(o.ord_id))
    fills = tuple(reversed(engine.fills()))
    return ParityRun(tuple(orders), fills, engine.account_truth(), result)


def comparable_orders(orders: Sequence[OrderView]) -> list[tuple]:
    """What must agree between two runs' orders, in order: instrument, side, type, size, price,
    reduce-only, creation time, final state, filled size, average price, fee."""
    return [(o.inst_id, o.side, o.ord_type, o.sz, o.px, o.reduce_only, o.c_time, o.state, o.acc_fill_sz, o.avg_px,
             o.fee) for o in orders]


def comparable_fills(fills: Sequence[FillView]) -> list[tuple]:
    """What must agree between two runs' fills, in order: instrument, side, price, size, fee,
    maker/taker, time."""
    return [(f.inst_id, f.side, f.px, f.sz, f.fee, f.exec_type, f.ts_ms) for f in fills]

"""The backtester: the same strategies, pre-trade checks and matching engine as paper trading, in simulated time.

Public surface (the rest lives in the submodules named below):

- configuration: :class:`BacktestConfig`, :class:`FillRule`, :class:`BookModel`
  (``config``, ``book_model``);
- data: :class:`CandleSeries`, :func:`load_candle_series`, :func:`synthetic_candles`
  (``data``);
- running: :class:`Backtester`, :func:`run_backtest`, :class:`BacktestResult`
  (``engine``), :func:`run_for_parity` (``parity``);
- outputs: ``report.write_run`` (run folder with plots), ``compare.compare_runs``
  (divergence report), ``export.export_run_from_redis`` (paper/live run folder),
  ``sweep.run_sweep`` (Ray sweeps), ``cli.register`` (``tradetree`` sub-commands).
"""

from tradetree.sim.backtest.book_model import BookModel
from tradetree.sim.backtest.cli import DEFAULT_RUNS_DIR
from tradetree.sim.backtest.cli import register as register_commands
from tradetree.sim.backtest.config import BacktestConfig, FillRule, load_backtest_config
from tradetree.sim.backtest.data import CandleSeries, load_candle_series, synthetic_candles
from tradetree.sim.backtest.engine import Backtester, BacktestResult, run_backtest
from tradetree.sim.backtest.export import export_run_from_redis
from tradetree.sim.backtest.parity import run_for_parity

__all__ = [
    "BacktestConfig",
    "FillRule",
    "BookModel",
    "load_backtest_config",
    "CandleSeries",
    "load_candle_series",
    "synthetic_candles",
    "Backtester",
    "BacktestResult",
    "run_backtest",
    "run_for_parity",
    "DEFAULT_RUNS_DIR",
    "export_run_from_redis",
    "register_commands",
]

"""What the backtest CLI reads, written for a test: a strategy file and a seeded candle file."""

from __future__ import annotations

from pathlib import Path

from tradetree.sim.backtest.data import synthetic_candles

STRATEGY = """class: MeanReversion
version: v2
venue: okx
symbols: [BTC-USDT-SWAP]
bar_interval_ms: 60000
params:
  window_bars: 12
  entry_z: 1.2
  exit_z: 0.2
  size: "1"
"""


def write_cli_inputs(folder: Path) -> tuple[Path, Path]:
    """(strategy YAML, 300 one-minute BTC candles as csv.gz) in ``folder``."""
    data = folder / "btc.csv.gz"
    synthetic_candles(300, seed=11, start_price=60_000.0, annual_vol=0.8).to_frame().to_csv(data, index=False)
    strategy = folder / "mr.yaml"
    strategy.write_text(STRATEGY)
    return strategy, data

"""The package exports what its __all__ says, and nothing in it is missing."""

import tradetree.sim.backtest as bt


def test_public_surface():
    assert sorted(bt.__all__) == sorted([
        "BacktestConfig", "FillRule", "BookModel", "load_backtest_config", "CandleSeries", "load_candle_series",
        "synthetic_candles", "Backtester", "BacktestResult", "run_backtest", "run_for_parity",
    ])
    for name in bt.__all__:
        assert getattr(bt, name) is not None

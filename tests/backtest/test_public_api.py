"""The package exports what its __all__ says, and nothing in it is missing."""

import tradetree.sim.backtest as bt


def test_public_surface():
    assert sorted(bt.__all__) == sorted([
        "BacktestConfig", "FillRule", "BookModel", "load_backtest_config", "CandleSeries", "load_candle_series",
        "synthetic_candles", "Backtester", "BacktestResult", "run_backtest", "run_for_parity",
        # what the app's CLI and export use
        "DEFAULT_RUNS_DIR", "export_run_from_redis", "register_commands",
    ])
    for name in bt.__all__:
        assert getattr(bt, name) is not None

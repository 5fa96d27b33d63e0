"""The run folder a backtest writes: data files, plots and the report."""

from __future__ import annotations

import csv
import json

from tradetree.sim.backtest.config import BacktestConfig
from tradetree.sim.backtest.engine import run_backtest
from tradetree.sim.backtest.report import write_run
from tradetree.sim.backtest.runfolder import read_run_meta, read_trades_csv


def test_report_files_are_written(tmp_path, candles, mr_config):
    result = run_backtest(mr_config, candles, BacktestConfig())
    out = write_run(result, tmp_path / "run")
    for name in ("run.json", "trades.csv", "orders.csv", "denials.csv", "round_trips.csv", "equity.csv",
                 "metrics.json", "equity.png", "price.png", "report.md", "report.html"):
        assert (out / name).exists(), name
    for png in ("equity.png", "price.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_trades_csv(out / "trades.csv") == result.trades
    meta = read_run_meta(out / "run.json")
    assert meta["kind"] == "backtest" and meta["strategy_id"] == mr_config.id
    assert meta["contract_values"] == {"BTC-USDT-SWAP": "0.01"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["net_pnl"] == result.metrics.net_pnl
    with (out / "equity.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["ts_ms", "equity", "position_BTC-USDT-SWAP"] and len(rows) == len(candles) + 1
    report = (out / "report.md").read_text()
    assert "Sharpe" in report and "![equity](equity.png)" in report and mr_config.id in report
    assert "<table>" in (out / "report.html").read_text()

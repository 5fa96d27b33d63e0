"""The backtest, sweep and compare sub-commands, end to end on small files."""

from __future__ import annotations

import argparse

import pytest

from tests.backtest.inputs import write_cli_inputs
from tradetree.core.errors import ConfigError
from tradetree.sim.backtest.cli import parse_data_args, register


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="tradetree")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture
def files(tmp_path):
    return write_cli_inputs(tmp_path)


def test_backtest_then_compare(tmp_path, files, capsys):
    strategy, data = files
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("backtest", str(strategy), "--data", str(data), "--seed", "3", "--out", str(a),
                   "--no-progress") == 0
    assert run_cli("backtest", str(strategy), "--data", f"BTC-USDT-SWAP={data}", "--latency-ms", "20000",
                   "--out", str(b), "--no-progress", "--no-plots") == 0
    assert (a / "report.md").exists() and (a / "equity.png").exists() and not (b / "equity.png").exists()
    printed = capsys.readouterr().out
    assert "bars/s" in printed and "run folder" in printed
    assert run_cli("compare", str(a), str(b), "--data", str(data), "--out", str(tmp_path / "cmp")) == 0
    assert "difference B - A" in (tmp_path / "cmp" / "compare.md").read_text()


def test_backtest_config_file_and_bad_inputs(tmp_path, files):
    strategy, data = files
    cfg = tmp_path / "bt.yaml"
    cfg.write_text("fill_rule: signal_close\nbook: {spread_ticks: 0, levels: 1}\nfees: {swap_taker: '0.001'}\n")
    assert run_cli("backtest", str(strategy), "--data", str(data), "--config", str(cfg), "--out",
                   str(tmp_path / "c"), "--no-progress", "--no-plots") == 0
    assert '"fill_rule": "signal_close"' in (tmp_path / "c" / "run.json").read_text()
    cfg.write_text("latency: 5\n")
    with pytest.raises(ConfigError, match="latency"):
        run_cli("backtest", str(strategy), "--data", str(data), "--config", str(cfg), "--no-progress")
    with pytest.raises(ConfigError, match="--data"):
        run_cli("backtest", str(strategy), "--data", str(tmp_path / "missing.csv"), "--no-progress")


def test_sweep_command(ray_session, tmp_path, files):
    strategy, data = files
    out = tmp_path / "sweep"
    assert run_cli("sweep", str(strategy), "--data", str(data), "--grid", "window_bars=8,12", "--grid",
                   "entry_z=1.0..2.0", "--random", "3", "--top", "2", "--warmup-bars", "20", "--out", str(out),
                   "--no-progress") == 0
    assert "In-sample vs held-out" in (out / "sweep.md").read_text()
    assert len((out / "sweep.csv").read_text().splitlines()) == 4


def test_data_args_name_instruments():
    with pytest.raises(ConfigError, match="two files"):
        parse_data_args(["A-B=x.csv", "A-B=y.csv"], ("A-B",))

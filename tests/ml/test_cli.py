import argparse
import json

import pytest
import yaml

from tradetree.ml.cli import main, register
from tradetree.ml.data import save_candles

from .conftest import small_config


@pytest.fixture
def files(tmp_path, regime_market, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps to the terminal width
    data = tmp_path / "btc.csv.gz"
    save_candles(regime_market.candles.iloc[:4000], data)
    config = tmp_path / "vol.yaml"
    raw = small_config(name="cli_vol").model_dump(mode="json")
    raw["walk_forward"]["n_splits"] = 2
    config.write_text(yaml.safe_dump(raw))
    return tmp_path, data, config


def test_register_adds_the_ml_commands():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ml", "list", "--registry", "/x"])
    assert args.func.__name__ == "cmd_list" and str(args.registry) == "/x"


def test_eval_train_list(files, capsys):
    tmp, data, config = files
    out_json = tmp / "out" / "metrics.json"
    assert main(["ml", "eval", "--config", str(config), "--data", str(data), "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    for word in ("catboost", "persistence", "ewma", "har_rv", "r2", "PASSED"):
        assert word in printed
    assert json.loads(out_json.read_text())["metrics"]["catboost"]["r2"] > 0

    registry = tmp / "registry"
    argv = ["ml", "train", "--config", str(config), "--data", str(data), "--registry", str(registry), "--thread-count", "1"]
    assert main(argv + ["--require-pass"]) == 0
    assert "registered cli_vol v1" in capsys.readouterr().out

    assert main(["ml", "list", "--registry", str(registry)]) == 0
    listed = capsys.readouterr().out
    assert "cli_vol" in listed and "v1" in listed and "yes" in listed


def test_bad_inputs_exit_2(files, capsys):
    tmp, data, config = files
    assert main(["ml", "eval", "--config", str(tmp / "missing.yaml"), "--data", str(data)]) == 2
    assert "cannot read config" in capsys.readouterr().out
    assert main(["ml", "eval", "--config", str(config), "--data", str(data), "--cross", "ETH"]) == 2
    assert "ASSET=PATH" in capsys.readouterr().out
    assert main(["ml", "list", "--registry", str(tmp / "empty")]) == 0
    assert "no models registered" in capsys.readouterr().out


def test_fetch_downloads_into_the_cache(tmp_path, monkeypatch, capsys):
    from tradetree.ml import cli as ml_cli

    from .test_data import T0, AsyncFakeExchange

    exchange = AsyncFakeExchange(30)
    closed = []

    async def close():
        closed.append(True)

    exchange.close = close
    monkeypatch.setattr(ml_cli, "_make_exchange", lambda exchange_id: exchange)
    argv = ["ml", "fetch", "--exchange", "fakex", "--symbol", "BTC/USDT", "--timeframe", "1m",
            "--since", str(T0), "--until", "2023-11-14T22:40:00", "--cache-dir", str(tmp_path)]
    assert main(argv) == 0
    # 2023-11-14T22:40 UTC is T0 + 26 minutes: bars 0..25 are closed by then
    assert "26 BTC/USDT 1m bars" in capsys.readouterr().out
    assert closed == [True]
    assert main(argv[:-2] + ["--cache-dir", str(tmp_path), "--since", "yesterday"]) == 2


def test_fetch_unknown_exchange(tmp_path, capsys):
    assert main(["ml", "fetch", "--exchange", "no_such_exchange", "--symbol", "X/Y", "--since", "0",
                 "--cache-dir", str(tmp_path)]) == 2
    assert "unknown ccxt exchange" in capsys.readouterr().out

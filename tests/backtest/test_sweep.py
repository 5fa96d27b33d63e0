"""Sweeps on Ray: parameter sets, ranking, the held-out re-run."""

from __future__ import annotations

import pytest

from tradetree.core.errors import ConfigError
from tradetree.sim.backtest.config import BacktestConfig
from tradetree.sim.backtest.data import synthetic_candles
from tradetree.sim.backtest.sweep import (
    ParamRange,
    SweepSpec,
    parameter_sets,
    parse_param_spec,
    run_sweep,
    sweep_markdown,
)


def test_param_specs_parse_choices_and_ranges():
    assert parse_param_spec("window_bars=10,20") == ("window_bars", [10, 20])
    assert parse_param_spec("size='1', 2.5") == ("size", ["1", 2.5])
    assert parse_param_spec("entry_z=1..3") == ("entry_z", ParamRange(1.0, 3.0, True))
    assert parse_param_spec("entry_z=1.0..3") == ("entry_z", ParamRange(1.0, 3.0, False))
    for bad in ("window_bars", "=1,2", "x=3..1", "x="):
        with pytest.raises(ConfigError):
            parse_param_spec(bad)


def test_grid_and_random_parameter_sets():
    grid = parameter_sets(SweepSpec(choices={"a": [1, 2], "b": [3, 4, 5]}))
    assert len(grid) == 6 and {"a": 2, "b": 5} in grid
    spec = SweepSpec(choices={"a": [1, 2]}, ranges={"z": ParamRange(0.5, 1.5, False)}, random=5, seed=3)
    drawn = parameter_sets(spec)
    assert drawn == parameter_sets(spec) and len(drawn) == 5
    assert all(0.5 <= p["z"] <= 1.5 for p in drawn)
    assert len(parameter_sets(SweepSpec(choices={"a": [1, 2]}, random=10))) == 2  # no more than the grid
    with pytest.raises(ConfigError, match="random"):
        parameter_sets(SweepSpec(ranges={"z": ParamRange(0, 1, False)}))


def test_sweep_ranks_and_re_runs_the_top_on_held_out_data(ray_session, mr_config):
    data = synthetic_candles(600, seed=17, start_price=60_000.0, annual_vol=0.8)
    spec = SweepSpec(choices={"window_bars": [8, 16], "entry_z": [0.1, 1.2, 2.0]})  # entry_z 0.1 < exit_z: invalid
    seen = []
    result = run_sweep(mr_config, data, BacktestConfig(), spec, holdout_fraction=0.3, top=2, metric="net_pnl",
                       warmup_bars=50, progress=lambda d, t: seen.append((d, t)))
    assert len(result.rows) == 6
    good = [r for r in result.rows if r.in_sample is not None]
    bad = [r for r in result.rows if r.in_sample is None]
    assert len(good) == 4 and len(bad) == 2 and all("exit_z must be below entry_z" in r.error for r in bad)
    assert result.rows[-2:] == bad  # failures rank last
    pnl = [r.in_sample["net_pnl"] for r in good]
    assert pnl == sorted(pnl, reverse=True)
    top = result.top_rows()
    assert top == [result.rows[0], result.rows[1]]
    assert all(r.held_out["bars"] == 600 - result.in_sample_bars for r in top)
    assert result.in_sample_bars == 420 and result.held_out_bars == 180
    assert seen[-1] == (8, 8)
    text = sweep_markdown(result)
    assert "In-sample vs held-out" in text and "held-out net_pnl" in text


def test_a_task_on_the_shared_preparation_scores_as_one_that_prepares_itself(mr_config, candles):
    from tradetree.sim.backtest.engine import clear_bar_tables, prepare_data
    from tradetree.sim.backtest.sweep import _backtest_task

    config = BacktestConfig(seed=3)
    window = {mr_config.symbols[0]: candles.slice(0, 300)}
    shared = prepare_data(mr_config, window, config)
    sc, cfg = mr_config.model_dump(mode="json", by_alias=True), config.model_dump(mode="json")
    clear_bar_tables()
    alone = _backtest_task(sc, {"entry_z": 1.0}, (window, None), cfg, None)
    clear_bar_tables()
    with_shared = _backtest_task(sc, {"entry_z": 1.0}, (window, shared), cfg, None)
    assert alone["metrics"] == with_shared["metrics"] and alone["metrics"]["round_trips"] > 0
    assert with_shared["cpu_secs"] > 0

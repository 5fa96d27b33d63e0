import math
from decimal import Decimal

import numpy as np
import pytest

from tradetree.core.config import StrategyConfig
from tradetree.core.errors import ConfigError
from tradetree.core.types import Bar, Side
from tradetree.strategies import (
    RealizedVolForecaster,
    StrategyContext,
    VolatilityForecaster,
    VolScaledDirectional,
    build_strategy,
)

INST = "BTC-USDT-SWAP"
UP = [100 + i for i in range(12)]
DOWN = [100 - i for i in range(12)]


def _cfg(**params):
    base = {"ema_bars": 3, "slope_bars": 2, "vol_window_bars": 5, "history_bars": 50,
            "target_vol_per_bar": 0.01, "size_at_target_vol": "2", "max_size": "5", "lot_size": "0.1",
            "rebalance_band": 0.2}
    base.update(params)
    return StrategyConfig.model_validate(
        {"class": "VolScaledDirectional", "version": "v1", "venue": "okx", "symbols": [INST], "params": base})


class FixedForecaster:
    """Returns a set forecast and records what it was given."""

    def __init__(self, value):
        self.value = value
        self.seen = []

    def forecast(self, closes):
        self.seen.append(list(closes))
        return self.value


def _bar(i, close):
    c = Decimal(str(close))
    return Bar(venue="okx", inst_id=INST, ts_ms=i * 1000, interval_ms=1000, open=c, high=c, low=c, close=c)


def _run(strategy, closes, position=Decimal(0)):
    """Feed closes at a fixed position; return the intents of the last bar."""
    out = []
    for i, close in enumerate(closes):
        out = strategy.on_bar(_bar(i, close), StrategyContext(now_ms=i, positions={INST: position}))
    return out


def test_sizes_inversely_to_the_forecast():
    sizes = {}
    for forecast in (0.02, 0.01, 0.005):
        s = VolScaledDirectional(_cfg(), forecaster=FixedForecaster(forecast))
        out = _run(s, UP)
        assert [(o.side, o.reduce_only) for o in out] == [(Side.BUY, False)]
        sizes[forecast] = out[0].size
    assert sizes == {0.02: Decimal("1.0"), 0.01: Decimal("2.0"), 0.005: Decimal("4.0")}


def test_size_is_capped_and_rounded_down_to_the_lot():
    s = VolScaledDirectional(_cfg(), forecaster=FixedForecaster(0.001))  # 20 contracts uncapped
    assert _run(s, UP)[0].size == Decimal("5")
    s = VolScaledDirectional(_cfg(), forecaster=FixedForecaster(0.03))  # 0.666...
    assert _run(s, UP)[0].size == Decimal("0.6")
    s = VolScaledDirectional(_cfg(), forecaster=FixedForecaster(0.5))  # 0.04: below one lot
    assert _run(s, UP) == []


def test_goes_short_on_a_falling_ema_unless_shorting_is_off():
    s = VolScaledDirectional(_cfg(), forecaster=FixedForecaster(0.01))
    out = _run(s, DOWN)
    assert [(o.side, o.size) for o in out] == [(Side.SELL, Decimal("2.0"))]
    s = VolScaledDirectional(_cfg(allow_short=False), forecaster=FixedForecaster(0.01))
    assert _run(s, DOWN) == []
    out = _run(VolScaledDirectional(_cfg(allow_short=False), forecaster=FixedForecaster(0.01)), DOWN,
               position=Decimal(2))
    assert [(o.side, o.size, o.reduce_only) for o in out] == [(Side.SELL, Decimal(2), True)]


def test_flips_with_a_reduce_only_close_first():
    s = VolScaledDirectional(_cfg(), forecaster=FixedForecaster(0.01))
    out = _run(s, DOWN, position=Decimal(3))
    assert [(o.side, o.size, o.reduce_only) for o in out] == [(Side.SELL, 3, True), (Side.SELL, 2, False)]


def test_no_trade_without_a_valid_forecast():
    for bad in (math.nan, math.inf, 0.0, -0.01):
        s = VolScaledDirectional(_cfg(), forecaster=FixedForecaster(bad))
        assert _run(s, UP, position=Decimal(1)) == []


def test_rebalances_only_outside_the_band():
    s = VolScaledDirectional(_cfg(rebalance_band=0.2), forecaster=FixedForecaster(0.01))  # target 2
    assert _run(s, UP, position=Decimal("1.8")) == []  # 0.2 off: 11 % of 1.8
    s = VolScaledDirectional(_cfg(rebalance_band=0.2), forecaster=FixedForecaster(0.01))
    out = _run(s, UP, position=Decimal("1.5"))  # 0.5 off: 33 %
    assert [(o.side, o.size) for o in out] == [(Side.BUY, Decimal("0.5"))]
    s = VolScaledDirectional(_cfg(rebalance_band=0.2), forecaster=FixedForecaster(0.005))  # target 4
    out = _run(s, UP, position=Decimal("2"))
    assert [(o.side, o.size) for o in out] == [(Side.BUY, Decimal("2.0"))]


def test_flat_slope_inside_the_threshold_goes_flat():
    s = VolScaledDirectional(_cfg(signal_threshold_bps=50.0), forecaster=FixedForecaster(0.01))
    closes = [100.0] * 8 + [100.1, 100.2]  # a slope of a few bps
    out = _run(s, closes, position=Decimal(2))
    assert s.last_direction == 0
    assert [(o.side, o.size, o.reduce_only) for o in out] == [(Side.SELL, 2, True)]


def test_forecaster_gets_the_closes_oldest_first_capped_at_history_bars():
    fake = FixedForecaster(0.01)
    s = VolScaledDirectional(_cfg(history_bars=6), forecaster=fake)
    _run(s, UP)
    assert fake.seen[-1] == [float(c) for c in UP[-6:]]
    assert len(fake.seen) == len(UP) - 2  # from the first bar with a slope (ema_bars=3, slope_bars=2)


def test_pending_orders_count_as_exposure():
    s = VolScaledDirectional(_cfg(), forecaster=FixedForecaster(0.01))
    for i, close in enumerate(UP[:-1]):
        s.on_bar(_bar(i, close), StrategyContext(now_ms=i, pending={INST: Decimal(2)}))
    assert s.on_bar(_bar(20, UP[-1]), StrategyContext(now_ms=20, pending={INST: Decimal(2)})) == []


def test_default_forecaster_is_realized_vol_of_log_returns():
    rng = np.random.default_rng(9)
    closes = list(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 30))))
    f = RealizedVolForecaster(10)
    assert f.forecast(closes) == pytest.approx(float(np.std(np.diff(np.log(closes[-11:])), ddof=1)))
    assert math.isnan(f.forecast(closes[:10]))
    s = build_strategy(_cfg(vol_window_bars=10))
    assert isinstance(s.forecaster, RealizedVolForecaster) and s.forecaster.window_bars == 10
    assert isinstance(s.forecaster, VolatilityForecaster)
    assert isinstance(FixedForecaster(1), VolatilityForecaster)


def test_with_the_default_forecaster_trades_once_warm():
    rng = np.random.default_rng(4)
    closes = [float(c) for c in 100 * np.exp(np.cumsum(0.002 + rng.normal(0, 0.01, 20)))]
    s = VolScaledDirectional(_cfg())
    out = _run(s, closes)
    assert s.last_forecast == pytest.approx(float(np.std(np.diff(np.log(closes[-6:])), ddof=1)))
    assert s.last_direction == -1  # this seed's EMA turns down at the end
    assert [(o.side, o.size) for o in out] == [(Side.SELL, Decimal("1.2"))]  # 2 x 0.01 / 0.01646


@pytest.mark.parametrize("params,field", [
    ({"target_vol_per_bar": 0}, "target_vol_per_bar"),
    ({"history_bars": 5}, "history_bars"),
    ({"max_size": "0.05"}, "max_size"),
    ({"lot_size": "-1"}, "lot_size"),
    ({"extra": True}, "extra"),
])
def test_bad_params_name_the_field(params, field):
    with pytest.raises(ConfigError) as err:
        VolScaledDirectional(_cfg(**params))
    assert "VolScaledDirectional_v1_BTC" in str(err.value)
    assert field in str(err.value)

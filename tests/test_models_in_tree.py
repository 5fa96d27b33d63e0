"""A served model in the running tree, by config only: ``models:`` plus ``vol_forecaster: {kind: server}``.

Real Ray, real Redis, the embedded simulator (60x, 12 s bars close every ~0.2 s of wall time). A tiny
volatility model (9 bars of warmup) is trained and registered on generated candles first (<1 s). The
tree must run ``ModelServer[vol_tiny]`` (control status), and VolScaledDirectional must trade on its
forecasts: the server answers predictions, and without a forecast the strategy does not trade at all
(a served forecaster has no fallback), so its orders were sized from the model.
"""

from __future__ import annotations

import pytest
import ray

from tests.scenarios.harness import running_tree, scenario_config
from tests.strategies.test_vol_scaled_forecaster import tiny_model_config
from tradetree.control import Control
from tradetree.ml.features import FeatureInputs
from tradetree.ml.pipeline import train_and_register
from tradetree.ml.registry import ModelRegistry
from tradetree.ml.synthetic import generate_regime_candles
from tradetree.tree import model_server_id

pytestmark = pytest.mark.integration

SERVER = model_server_id("vol_tiny")
VOL_STRATEGY = {
    "class": "VolScaledDirectional", "version": "v90", "venue": "okx", "symbols": ["BTC-USDT-SWAP"],
    "bar_interval_ms": 12_000,
    # sizes ~0.3-3 contracts for the tiny model's forecasts; no signal threshold, so it trades often
    "params": {"ema_bars": 3, "slope_bars": 1, "vol_window_bars": 5, "history_bars": 30,
               "target_vol_per_bar": 0.004, "size_at_target_vol": "1", "max_size": "3", "lot_size": "0.01",
               "rebalance_band": 0.25, "allow_short": True,
               "vol_forecaster": {"kind": "server", "name": "vol_tiny", "timeout_secs": 2}},
}


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory):
    registry = ModelRegistry(tmp_path_factory.mktemp("registry"))
    market = generate_regime_candles(1500, seed=5)
    assert train_and_register(FeatureInputs(market.candles), tiny_model_config(), registry).record.approved
    return registry.root


def test_vol_scaled_directional_trades_on_the_tree_model_server(ray_session, redis_url, namespace, registry_root):
    config = scenario_config(redis_url, namespace, strategies=[VOL_STRATEGY],
                             models=[{"name": "vol_tiny", "registry_root": str(registry_root)}])
    (strategy,) = config.strategies
    with running_tree(config) as tree:
        status = Control(tree.ray_ns).status()["actors"]
        assert status[SERVER]["state"] == "running" and status[SERVER]["parent"] == "RootSupervisor"
        tree.wait_running()  # released: its venue's probes and the model server's are green
        tree.wait_for(lambda: [e for e in tree.audit() if e.strategy_id == strategy.id], 45,
                      "a fill of the VolScaledDirectional strategy")
        server = ray.get(tree.actor(SERVER).stats.remote(), timeout=10)
        host = ray.get(tree.actor(strategy.id).stats.remote(), timeout=10)
        assert server["state"] == "serving" and server["version"] == "v1"
        assert server["predictions_served"] > 0 and server["batches_failed"] == 0
        assert host["orders_sent"] > 0 and host["last_error"] == ""
        assert tree.health(SERVER).healthy

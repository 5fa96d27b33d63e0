"""The engine config's ``models:`` block: validation at load, and how the tree spec serves the models.

Fast: no model is trained or loaded, no Ray (a registry root is just a folder here).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from tradetree.config import EngineConfig, load_engine_config, resolve_served_models, served_model_refs
from tradetree.core.config import StrategyConfig, VenueCredentials
from tradetree.core.errors import ConfigError
from tradetree.strategies.registry import build_strategy
from tradetree.supervisor.spec import iter_tree, validate_tree
from tradetree.tree import (
    METRICS_EXPORTER_ID,
    RISK_MONITOR_ID,
    STRATEGY_SUPERVISOR_ID,
    build_root_spec,
    gateway_id,
    model_server_id,
    reconciler_id,
)

INST = "BTC-USDT-SWAP"
VOL_PARAMS = {"ema_bars": 5, "slope_bars": 2, "vol_window_bars": 5, "history_bars": 40,
              "target_vol_per_bar": 0.004, "size_at_target_vol": "1", "max_size": "3", "lot_size": "0.01"}
CREDS = VenueCredentials(api_key=SecretStr("k"), secret_key=SecretStr("s"), passphrase=SecretStr("p"))
ENDPOINTS = {"okx": SimpleNamespace(rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1/ws/v5", credentials=CREDS)}


def _vol_strategy(forecaster: dict | None, version: str = "v2") -> dict:
    params = dict(VOL_PARAMS) if forecaster is None else {**VOL_PARAMS, "vol_forecaster": forecaster}
    return {"class": "VolScaledDirectional", "version": version, "venue": "okx", "symbols": [INST], "params": params}


def _raw(tmp_path, *, models=None, strategies=()) -> dict:
    registry = tmp_path / "registry"
    registry.mkdir(exist_ok=True)
    return {"name": "tt-models", "venues": [{"name": "okx"}], "strategies": list(strategies),
            "models": [{"name": "vol_btc", "registry_root": str(registry)}] if models is None else models}


def _write(path, data) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_models_block_defaults(tmp_path):
    config = EngineConfig.model_validate(_raw(tmp_path))
    (model,) = config.models
    assert (model.name, model.version, model.require_approved) == ("vol_btc", None, True)
    assert EngineConfig.model_validate({"venues": [{"name": "okx"}]}).models == ()


def test_duplicate_model_names_are_refused(tmp_path):
    root = str(tmp_path)
    with pytest.raises(ValidationError, match="models: names must be unique"):
        EngineConfig.model_validate(_raw(tmp_path, models=[{"name": "a", "registry_root": root},
                                                           {"name": "a", "registry_root": root, "version": "v2"}]))


def test_a_missing_registry_root_fails_at_load_naming_the_field(tmp_path):
    engine = tmp_path / "engine.yaml"
    _write(engine, {**_raw(tmp_path), "models": [{"name": "vol_btc", "registry_root": "no/such/registry"}]})
    with pytest.raises(ConfigError) as err:
        load_engine_config(engine)
    message = str(err.value)
    assert str(engine) in message and "models.0.registry_root" in message and "no/such/registry" in message


def test_a_relative_registry_root_is_taken_from_the_config_folder(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "models").mkdir()
    engine = tmp_path / "conf" / "engine.yaml"
    _write(engine, {**_raw(tmp_path), "models": [{"name": "vol_btc", "registry_root": "models"}]})
    monkeypatch.chdir(tmp_path)  # not the config's folder: "models" does not exist here
    assert load_engine_config(engine).models[0].registry_root == tmp_path / "conf" / "models"


def test_a_strategy_naming_an_unknown_served_model_is_refused(tmp_path):
    bad = _vol_strategy({"kind": "server", "name": "vol_eth"})
    with pytest.raises(ValidationError) as err:
        EngineConfig.model_validate(_raw(tmp_path, strategies=[bad]))
    assert "strategies.0 (VolScaledDirectional_v2_BTC): params.vol_forecaster.name" in str(err.value)
    assert "'vol_eth' is not in the engine config's models:" in str(err.value)


def test_a_strategy_file_naming_an_unknown_served_model_is_named_with_its_file(tmp_path):
    strategy_file = tmp_path / "VolScaledDirectional_v2_BTC.yaml"
    _write(strategy_file, _vol_strategy({"kind": "server", "name": "vol_eth"}))
    engine = tmp_path / "engine.yaml"
    _write(engine, {**_raw(tmp_path), "strategy_files": [strategy_file.name]})
    with pytest.raises(ConfigError) as err:
        load_engine_config(engine)
    assert str(err.value).startswith(f"{strategy_file}: params.vol_forecaster.name: served model 'vol_eth'")


def test_a_served_model_loads_without_ray_or_a_model(tmp_path):
    """Load builds every strategy once: a served forecaster is only looked up at its first forecast."""
    strategy_file = tmp_path / "VolScaledDirectional_v2_BTC.yaml"
    _write(strategy_file, _vol_strategy({"kind": "server", "name": "vol_btc"}))
    engine = tmp_path / "engine.yaml"
    _write(engine, {**_raw(tmp_path), "strategy_files": [strategy_file.name]})
    config = load_engine_config(engine)
    (strategy,) = config.strategies
    assert served_model_refs(strategy) == [("vol_forecaster", "vol_btc")]
    resolved = resolve_served_models(strategy, ray_namespace="ns")
    assert resolved.params["vol_forecaster"] == {"kind": "server", "name": "vol_btc",
                                                 "actor_name": "ModelServer[vol_btc]", "ray_namespace": "ns"}
    assert resolved.id == strategy.id and served_model_refs(resolved) == []


def test_an_unresolved_served_model_outside_the_tree_says_to_use_kind_model():
    """The backtester builds strategies from their file: there is no tree to serve the model."""
    config = StrategyConfig.model_validate(_vol_strategy({"kind": "server", "name": "vol_btc"}))
    with pytest.raises(ConfigError, match="use kind 'model' with registry_root"):
        build_strategy(config)


def test_forecaster_specs_are_validated_with_the_strategy(tmp_path):
    for bad, needle in [({"kind": "model", "name": "x"}, "needs \\['registry_root'\\]"),
                        ({"kind": "server"}, "needs"),
                        ({"kind": "crystal_ball"}, "kind"),
                        ({"kind": "realized", "window_bars": 1}, "window_bars"),
                        ({"kind": "realized", "window_bars": 40}, "history_bars must be above")]:
        with pytest.raises(ConfigError, match=needle):
            build_strategy(StrategyConfig.model_validate(_vol_strategy(bad)))
    missing = {"kind": "model", "registry_root": str(tmp_path), "name": "nope"}
    with pytest.raises(ConfigError, match="ModelNotFound"):
        build_strategy(StrategyConfig.model_validate(_vol_strategy(missing)))


def test_the_tree_serves_each_model_before_the_strategies(tmp_path):
    other = _vol_strategy(None, version="v3")  # realized vol: not held for a model server
    config = EngineConfig.model_validate({
        **_raw(tmp_path, strategies=[_vol_strategy({"kind": "server", "name": "vol_btc"}), other]),
        "metrics": {"enabled": True, "port": 0},
    })
    root = build_root_spec(config, redis_url="redis://127.0.0.1:1/0", endpoints=ENDPOINTS, ray_namespace="tt-ns")
    validate_tree(root)
    order = [c.id for c in root.children]
    server_id = model_server_id("vol_btc")
    assert order.index(RISK_MONITOR_ID) < order.index(server_id) < order.index(STRATEGY_SUPERVISOR_ID)
    server = next(c for c in root.children if c.id == server_id)
    assert server.actor_class == "tradetree.actors.model_server:ModelServerActor"
    assert server.args == (str(tmp_path / "registry"), "vol_btc", None)
    assert server.kwargs == {"require_approved": True} and server.restart.value == "permanent"
    assert not server.start_paused  # its start is gated by its probes (serving, file integrity, canary)

    strategies = {c.id: c for c in next(c for c in root.children if c.id == STRATEGY_SUPERVISOR_ID).children}
    served, realized = strategies["VolScaledDirectional_v2_BTC"], strategies["VolScaledDirectional_v3_BTC"]
    assert served.release_after == (gateway_id("okx"), reconciler_id("okx"), RISK_MONITOR_ID, server_id)
    assert realized.release_after == (gateway_id("okx"), reconciler_id("okx"), RISK_MONITOR_ID)
    assert served.args[0].params["vol_forecaster"]["actor_name"] == server_id
    assert served.args[0].params["vol_forecaster"]["ray_namespace"] == "tt-ns"
    build_strategy(served.args[0])  # what the strategy host builds: no Ray contacted yet

    metrics = next(c for c in iter_tree(root) if c.id == METRICS_EXPORTER_ID)
    assert metrics.kwargs["components"]["model_servers"] == {"vol_btc": server_id}

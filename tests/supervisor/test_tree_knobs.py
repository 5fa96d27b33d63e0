"""The engine config's supervision and dead-man knobs reach the tree spec; defaults are unchanged."""

from types import SimpleNamespace

import pytest
from pydantic import SecretStr, ValidationError

from tradetree.config import EngineConfig
from tradetree.core.config import VenueCredentials
from tradetree.tree import ROOT_ID, STRATEGY_SUPERVISOR_ID, build_root_spec, gateway_id, reconciler_id

STRATEGY = {"class": "MeanReversion", "version": "v1", "venue": "okx", "symbols": ["BTC-USDT-SWAP"],
            "params": {"size": "1"}}
CREDS = VenueCredentials(api_key=SecretStr("k"), secret_key=SecretStr("s"), passphrase=SecretStr("p"))
ENDPOINTS = {"okx": SimpleNamespace(rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1/ws/v5", credentials=CREDS)}


def _config(**extra) -> EngineConfig:
    return EngineConfig.model_validate({"venues": [{"name": "okx"}], "strategies": [STRATEGY], **extra})


def _spec(config: EngineConfig):
    root = build_root_spec(config, redis_url="redis://127.0.0.1:1/0", endpoints=ENDPOINTS, ray_namespace="t")
    nodes = {c.id: c for c in root.children}
    venue = nodes["VenueSupervisor[okx]"]
    children = {c.id: c for c in venue.children}
    return root, venue, nodes[STRATEGY_SUPERVISOR_ID], children[gateway_id("okx")], children[reconciler_id("okx")]


def test_defaults_are_the_documented_intensities_and_a_60s_dead_man():
    root, venue, strategies, gateway, reconciler = _spec(_config())
    assert root.id == ROOT_ID and (root.intensity, root.period_secs) == (3, 60.0)
    assert (venue.intensity, venue.period_secs) == (5, 60.0)
    assert (strategies.intensity, strategies.period_secs) == (10, 60.0)
    assert gateway.startup_timeout_secs == reconciler.startup_timeout_secs == 60.0
    assert gateway.kwargs["dead_man_switch_secs"] == 60 and gateway.kwargs["dead_man_rearm_secs"] == 15.0


def test_knobs_reach_the_spec():
    config = _config(supervision={"root_intensity": 1, "root_period_secs": 10, "venue_intensity": 2,
                                  "venue_period_secs": 20, "strategy_intensity": 4, "strategy_period_secs": 30,
                                  "venue_startup_timeout_secs": 5, "service_intensity": 7,
                                  "service_period_secs": 40},
                     dead_man_switch_secs=10)
    root, venue, strategies, gateway, reconciler = _spec(config)
    assert (root.intensity, root.period_secs) == (1, 10.0)
    assert (venue.intensity, venue.period_secs) == (2, 20.0)
    assert (strategies.intensity, strategies.period_secs) == (4, 30.0)
    services = next(c for c in root.children if c.id == "ServiceSupervisor")
    assert (services.intensity, services.period_secs, services.escalate) == (7, 40.0, False)
    assert gateway.startup_timeout_secs == reconciler.startup_timeout_secs == 5.0
    assert gateway.kwargs["dead_man_switch_secs"] == 10 and gateway.kwargs["dead_man_rearm_secs"] == 2.5


def test_dead_man_switch_can_be_off_but_not_below_okx_bounds():
    assert _config(dead_man_switch_secs=0).dead_man_switch_secs == 0
    for bad in (5, 121, -1):
        with pytest.raises(ValidationError, match="dead_man_switch_secs"):
            _config(dead_man_switch_secs=bad)
    with pytest.raises(ValidationError):
        _config(supervision={"root_intensity": -1})


def test_a_host_waits_for_a_submission_as_long_as_its_venues_rest_timeout_needs():
    from tradetree.actors.strategy_host import ORDER_ADMISSION_SECS, order_call_timeout_secs

    config = EngineConfig.model_validate({"venues": [{"name": "okx", "http_timeout_secs": 25}],
                                          "strategies": [STRATEGY]})
    _, _, strategies, _, _ = _spec(config)
    (host,) = strategies.children
    assert host.kwargs["venue_http_timeout_secs"] == 25.0
    assert order_call_timeout_secs(25.0) > ORDER_ADMISSION_SECS + 2 * 25.0

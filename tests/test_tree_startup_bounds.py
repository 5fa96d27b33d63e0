"""A supervisor's start bound covers its children started one after the other (a busy machine is slow,
not broken); it never drops below a supervisor's default bound."""

from types import SimpleNamespace

from pydantic import SecretStr

from tradetree.config import EngineConfig
from tradetree.core.config import VenueCredentials
from tradetree.core.names import STRATEGY_SUPERVISOR_ID
from tradetree.supervisor.spec import SupervisorSpec, iter_tree
from tradetree.tree import build_root_spec, sequential_startup_secs

CREDS = VenueCredentials(api_key=SecretStr("k"), secret_key=SecretStr("s"), passphrase=SecretStr("p"))
ENDPOINTS = {"okx": SimpleNamespace(rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1/ws/v5", credentials=CREDS)}
DEFAULT = SupervisorSpec.model_fields["startup_timeout_secs"].default


def _strategy(n: int) -> dict:
    return {"class": "MeanReversion", "version": f"v{n}", "venue": "okx", "symbols": ["BTC-USDT-SWAP"],
            "params": {"size": "1"}}


def test_sequential_startup_is_the_sum_with_the_default_as_floor():
    kids = tuple(SimpleNamespace(startup_timeout_secs=s) for s in (60.0, 60.0, 30.0))
    assert sequential_startup_secs(kids) == 150.0
    assert sequential_startup_secs(kids[2:]) == DEFAULT
    assert sequential_startup_secs(()) == DEFAULT


def test_every_supervisor_of_the_tree_outlasts_its_children_in_sequence():
    config = EngineConfig.model_validate({"venues": [{"name": "okx"}],
                                          "strategies": [_strategy(n) for n in range(6)],
                                          "supervision": {"venue_startup_timeout_secs": 90}})
    root = build_root_spec(config, redis_url="redis://127.0.0.1:1/0", endpoints=ENDPOINTS, ray_namespace="t")

    def check(spec: SupervisorSpec) -> None:
        total = sum(c.startup_timeout_secs for c in spec.children)
        assert spec.startup_timeout_secs >= total, spec.id
        for c in spec.children:
            if isinstance(c, SupervisorSpec):
                check(c)

    check(root)
    strategies = next(c for c in root.children if c.id == STRATEGY_SUPERVISOR_ID)
    assert strategies.startup_timeout_secs == 6 * 30.0  # six strategy hosts of 30 s each
    assert root.startup_timeout_secs > DEFAULT


def test_child_startup_knob_reaches_every_non_venue_child():
    config = EngineConfig.model_validate({"venues": [{"name": "okx"}], "strategies": [_strategy(1)],
                                          "metrics": {"enabled": True},
                                          "supervision": {"child_startup_timeout_secs": 200}})
    root = build_root_spec(config, redis_url="redis://127.0.0.1:1/0", endpoints=ENDPOINTS, ray_namespace="t")
    nodes = {c.id: c for c in iter_tree(root)}
    for cid in ("Alerter", "MetricsExporter", "RiskMonitor"):
        assert nodes[cid].startup_timeout_secs == 200.0, cid
    assert [c.startup_timeout_secs for c in nodes[STRATEGY_SUPERVISOR_ID].children] == [200.0]
    from tradetree.config import SupervisionConfig

    assert SupervisionConfig().child_startup_timeout_secs == 30.0  # default unchanged

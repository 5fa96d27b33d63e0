"""The ``execution`` package exports exactly the public names of its modules."""

from __future__ import annotations

from tradetree import execution
from tradetree.execution import (
    anomalies,
    canary,
    discrepancy_keys,
    drift,
    fill_health,
    gateway_rules,
    poll_plan,
    probes,
    reconciliation,
    venue_reduce_only,
)


def test_public_surface_is_what_it_claims():
    modules = (anomalies, canary, discrepancy_keys, drift, fill_health, gateway_rules, poll_plan, probes, reconciliation, venue_reduce_only)
    exported_by_modules = {name for module in modules for name in module.__all__}
    assert set(execution.__all__) == exported_by_modules
    assert len(execution.__all__) == len(set(execution.__all__))
    for name in execution.__all__:
        obj = getattr(execution, name)
        assert any(getattr(module, name, None) is obj for module in modules), name


def test_actor_module_surface():
    from tradetree.actors import reconciler

    for name in reconciler.__all__:
        assert hasattr(reconciler, name), name
    assert reconciler.ReconcilerConfig is reconciliation.ReconcilerConfig

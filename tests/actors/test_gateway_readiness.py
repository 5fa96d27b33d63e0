"""The gateway's ``rest`` probe is a readiness probe: a venue whose REST API fails holds back
what depends on the gateway, but is no reason to restart the gateway (its WS may still deliver fills)."""

from __future__ import annotations

import pytest

from tests.adapters.sim_helpers import eventually

pytestmark = pytest.mark.integration


async def test_rest_failing_is_not_ready_but_still_live(gateway, sim):
    async def ready() -> bool:
        return (await gateway.check_health()).healthy

    await eventually(ready, what="ready")
    sim.faults.set_rest_errors(1.0, "5xx", paths=("/api/v5/public/time",))
    report = await gateway.check_health()
    rest = next(p for p in report.probes if p.name == "rest")
    assert not rest.ok and rest.liveness is False and rest.detail
    assert not report.healthy  # dependents stay held
    assert report.live  # the supervisor does not restart it
    assert all(p.liveness for p in report.probes if p.name not in ("rest", "market_data_fresh"))
    sim.faults.clear_all()
    await eventually(ready, what="ready again")

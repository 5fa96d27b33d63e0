"""Scenario 5: the kill switch while the venue's REST answers 503 to everything for 10 s.

The incident's kill switch crashed in an infinite retry loop. Here, with a
position open and an order resting at the venue, ``Control.kill`` sets the kill
flag at once (no venue needed), then its cancel step fails against the dead
REST API: every attempt is recorded, retried after a backoff within the
configured bounds, the run gives up STALLED after ``step_max_attempts`` and the
risk monitor resumes it later. Nothing crashes. Once the venue answers again
the kill cancels, winds the position down with reduce-only market orders and
verifies: flat at the venue and in Redis, each step in the kill's audit trail.
"""

import time
from decimal import Decimal

import pytest

from tests.scenarios.harness import allow_direct, running_tree, scenario_config
from tests.scenarios.tree_helpers import RAY_TIMEOUT_SECS, call, kill_flag
from tradetree.control import Control
from tradetree.core.types import OrderIntent, OrderState, OrderType, Side
from tradetree.risk.kill_switch import KillStep, StepOutcome

pytestmark = pytest.mark.integration

# An operator's position, wound down with the strategies'. On its own instrument, so the wind-down of
# each position is checked apart.
INST = "ETH-USDT-SWAP"
HOLDER = "ManualHolder_v1_ETH"
OUTAGE_SECS = 10.0
KILL = {"max_clip_size": "2", "step_max_attempts": 4, "backoff_min_secs": 0.2, "backoff_max_secs": 1.0,
        "max_duration_secs": 60, "verify_interval_secs": 0.2, "call_timeout_secs": 5}


def submit(tree, intent: OrderIntent):
    import ray

    allow_direct(tree, intent.strategy_id)
    return ray.get(tree.gateway().submit_order.remote(intent), timeout=RAY_TIMEOUT_SECS)


def test_kill_switch_rides_out_a_venue_outage(ray_session, redis_url, namespace):
    config = scenario_config(redis_url, namespace, kill_switch=KILL)
    bounds = config.kill_switch
    with running_tree(config) as tree:
        tree.wait_running()
        opened = submit(tree, OrderIntent(strategy_id=HOLDER, venue="okx", inst_id=INST, side=Side.BUY,
                                          size=Decimal("3"), reason="scenario: open a position"))
        assert opened.state in (OrderState.FILLED, OrderState.LIVE, OrderState.PARTIALLY_FILLED), opened
        with tree.sim.lock:
            far_below = (tree.sim.engine.mark_price(INST) * Decimal("0.8")).quantize(Decimal("0.01"))
        resting = submit(tree, OrderIntent(strategy_id=HOLDER, venue="okx", inst_id=INST, side=Side.BUY,
                                           type=OrderType.LIMIT, price=far_below, size=Decimal("1"),
                                           reason="scenario: resting order"))
        assert resting.state is OrderState.LIVE, resting
        tree.wait_for(lambda: tree.matches_venue() and tree.venue_positions().get(INST), 30,
                      "the position in Redis and at the venue")
        assert tree.truth()["open_orders"] >= 1

        tree.sim.faults.set_rest_errors(1.0, "5xx")
        outage_started = time.monotonic()
        progress = Control(tree.ray_ns).kill("scenario: kill during a venue outage")
        assert progress["state"] in ("RUNNING", "STALLED"), progress
        assert kill_flag(tree) == "scenario: kill during a venue outage"  # set before any venue call
        assert set(tree.strategy_states().values()) == {"WINDING_DOWN"}

        def steps() -> list[KillStep]:
            return [KillStep.model_validate(s) for s in call(tree, "RiskMonitor", "kill_steps", None, 1000)]

        tree.wait_for(lambda: time.monotonic() - outage_started >= OUTAGE_SECS
                      and sum(s.outcome is StepOutcome.FAILED for s in steps()) >= 2,
                      60, f"{OUTAGE_SECS:g}s of outage with failed kill steps")
        tree.sim.faults.clear_all()

        done = tree.wait_for(lambda: (p := call(tree, "RiskMonitor", "kill_progress", None))["state"] == "DONE"
                             and p, 90, "the kill to finish")
        tree.wait_for(lambda: tree.matches_venue() and not tree.venue_positions() and not tree.summed_positions(),
                      30, "flat at the venue and in Redis")
        assert tree.truth()["open_orders"] == 0
        assert tree.redis(lambda s, c: s.get_order(resting.client_order_id)).state is OrderState.CANCELED
        assert set(tree.strategy_states().values()) == {"KILLED"}
        assert kill_flag(tree) is not None  # stays set until an operator clears it

        trail = steps()
        failed = [s for s in trail if s.outcome is StepOutcome.FAILED]
        assert failed and all("cancel okx" == s.step or "flatten" in s.step for s in failed), failed
        assert any(s.step == "cancel okx" for s in failed)
        _assert_bounded(trail, bounds)
        names = [s.step for s in trail]
        for expected in ("request", "flag", "cancel okx", "verify", "done"):
            assert expected in names, names
        assert any(s.step.startswith(f"flatten {HOLDER} okx {INST}") and s.outcome is StepOutcome.OK
                   for s in trail), names
        assert done["orders_submitted"] >= 1 and done["remaining"] == [] and done["waiting_on"] == []

        # No crash anywhere: nothing was restarted. The risk monitor hosting the kill ran throughout,
        # and a venue whose REST is down is not a reason to restart its gateway or reconciler
        # (their REST probes are readiness probes: they hold releases, they do not restart).
        assert {name: row["restarts"] for name, row in tree.status().items() if row["restarts"]} == {}


def _assert_bounded(trail: list[KillStep], bounds) -> None:
    """Per run and step: attempts count up from 1 without gaps, never past the bound, each retry
    after at least the minimum backoff; a step that hit the bound left the run STALLED."""
    by_run: dict[int, list[KillStep]] = {}
    for s in trail:
        by_run.setdefault(s.run, []).append(s)
    for run, entries in by_run.items():
        last_failure: dict[str, KillStep] = {}
        for s in entries:
            if s.outcome is StepOutcome.OK:
                last_failure.pop(s.step, None)
            if s.outcome is not StepOutcome.FAILED:
                continue
            assert s.attempt >= 1, s  # attempts count from 1
            assert s.attempt <= bounds.step_max_attempts, s  # never beyond the configured retries
            prev = last_failure.get(s.step)
            if prev is None:
                assert s.attempt == 1, (run, s)
            else:
                assert s.attempt == prev.attempt + 1, (run, prev, s)
                # ts_ms is wall time; the sleep between runs on the monotonic clock (allow 5 ms of skew)
                assert s.ts_ms - prev.ts_ms >= bounds.backoff_min_secs * 1000 - 5, (prev, s)
            last_failure[s.step] = s
            if s.attempt == bounds.step_max_attempts:
                assert any(e.outcome is StepOutcome.STALLED and e.ts_ms >= s.ts_ms for e in entries), (run, s)

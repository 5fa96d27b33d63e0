"""Scenario 6: ``ray.kill`` of the gateway, the reconciler, a strategy and the risk monitor.

Each is restarted by its own supervisor, and the fresh incarnation is not put
back to work until its probes pass: the tests hold one probe red with a fault
aimed at a single REST path, see the failing probe named in the status and the
child not green for what depends on it (a restarted strategy waits PAUSED),
see the rest of the tree keep working meanwhile, then clear the fault and see
it released. A failing readiness probe (the venue's REST, drift) holds the
child's dependents but never restarts the child again.

The tests share one tree and run in order; each leaves it green. The last
test uses its own tree with a root intensity of 1: one restart too many puts
the engine in SAFE MODE (kill flag, every strategy PAUSED, a critical alert).
"""

from __future__ import annotations

import uuid

import pytest
import ray

from tests.conftest import TEST_REDIS_URL
from tests.scenarios.harness import Tree, running_tree, scenario_config
from tests.scenarios.tree_helpers import breakers, call, heartbeat_ms, kill_flag
from tradetree.control import Control
from tradetree.tree import ROOT_ID, gateway_id, reconciler_id

pytestmark = pytest.mark.integration

GATEWAY, RECONCILER = gateway_id("okx"), reconciler_id("okx")
# Only the gateway's ``rest`` probe calls this; only the reconciler's drift check calls that.
PROBE_PATH_GATEWAY = "/api/v5/public/time"
PROBE_PATH_DRIFT = "/api/v5/account/positions"


def _delete_namespace(namespace: str) -> None:
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def tree(ray_session):
    namespace = f"tt-test-{uuid.uuid4().hex[:12]}"
    try:
        with running_tree(scenario_config(TEST_REDIS_URL, namespace)) as t:
            t.wait_running()
            yield t
    finally:
        _delete_namespace(namespace)


def restarts(tree: Tree, name: str) -> int:
    return Control(tree.ray_ns).status()["actors"][name]["restarts"]


def wait_green(tree: Tree) -> None:
    """Every actor of the tree RUNNING with passing probes, every strategy RUNNING."""

    def green() -> bool:
        status = tree.status()
        not_green = {k: row for k, row in status.items() if row["state"] != "running" or row["detail"]}
        states = tree.strategy_states()
        held = {s.id: (states.get(s.id), tree.redis(lambda st, c, i=s.id: c.strategy_pause(i)))
                for s in tree.config.strategies if states.get(s.id) != "RUNNING"}
        assert not not_green and not held, (not_green, held, breakers(tree))
        return True

    tree.wait_for(green, 60, "every actor running with passing probes and every strategy RUNNING")


def kill_actor(tree: Tree, name: str) -> None:
    ray.kill(tree.actor(name), no_restart=True)


def green_for_dependents(tree: Tree, name: str) -> bool:
    """What a release gate asks: is ``name`` running with every probe passing?"""
    return call(tree, ROOT_ID, "child_healthy", name) is True


def test_gateway_restart_is_not_green_until_its_probes_pass_while_the_reconciler_keeps_polling(tree):
    wait_green(tree)
    before, reconciler_before = restarts(tree, GATEWAY), restarts(tree, RECONCILER)
    kill_actor(tree, GATEWAY)
    tree.sim.faults.set_rest_errors(1.0, "5xx", paths=(PROBE_PATH_GATEWAY,))
    try:
        held = tree.wait_for(lambda: (row := tree.status()[GATEWAY])["restarts"] == before + 1
                             and "rest" in row["detail"] and row, 30, "the new gateway with its rest probe failing")
        # Its liveness probes pass (it runs), its readiness does not: nothing waiting on it is released.
        assert held["state"] == "running", held
        assert not green_for_dependents(tree, GATEWAY)
        # Meanwhile the reconciler (its own REST client) polls on: heartbeat and verification advance.
        beat, polled = heartbeat_ms(tree, "reconciler:okx"), call(tree, RECONCILER, "stats")["counters"]
        verified = tree.control_snapshot().verified_at_ms
        tree.wait_for(lambda: heartbeat_ms(tree, "reconciler:okx") > beat
                      and call(tree, RECONCILER, "stats")["counters"]["poll_cycles_ok"] >= polled["poll_cycles_ok"] + 8
                      and tree.control_snapshot().verified_at_ms > verified,
                      30, "eight clean poll cycles of the reconciler while the gateway is not green")
        row = tree.status()[GATEWAY]
        # Still not green, and a failing readiness probe (the venue's REST) never restarts it again.
        assert "rest" in row["detail"] and row["restarts"] == before + 1, row
        assert not green_for_dependents(tree, GATEWAY)
        row = tree.status()[RECONCILER]
        assert row["state"] == "running" and row["restarts"] == reconciler_before, row
    finally:
        tree.sim.faults.clear_all()
    wait_green(tree)
    assert green_for_dependents(tree, GATEWAY)
    assert restarts(tree, GATEWAY) == before + 1
    fills = len(tree.audit())
    tree.wait_for_fills(fills + 1)  # the strategy trades again through the new gateway
    tree.wait_for(tree.matches_venue, 30, "Redis to match the venue")


def test_reconciler_restart_is_not_green_until_its_probes_pass_while_the_gateway_keeps_working(tree):
    wait_green(tree)
    before = restarts(tree, RECONCILER)
    kill_actor(tree, RECONCILER)
    tree.sim.faults.set_rest_errors(1.0, "5xx", paths=(PROBE_PATH_DRIFT,))
    try:
        tree.wait_for(lambda: (row := tree.status()[RECONCILER])["restarts"] == before + 1
                      and "no_drift" in row["detail"], 30, "the new reconciler with its drift probe failing")
        assert not green_for_dependents(tree, RECONCILER)
        # Meanwhile the gateway works: its heartbeat advances and market data reaches the strategy.
        strategy = tree.config.strategies[0].id
        beat, ticker = heartbeat_ms(tree, "gateway:okx"), call(tree, strategy, "stats")["last_ticker_ms"]
        tree.wait_for(lambda: heartbeat_ms(tree, "gateway:okx") > beat
                      and call(tree, strategy, "stats")["last_ticker_ms"] > ticker,
                      30, "gateway heartbeat and tickers while the reconciler is not green")
        assert tree.health(GATEWAY).healthy
        assert "no_drift" in tree.status()[RECONCILER]["detail"] and not green_for_dependents(tree, RECONCILER)
    finally:
        tree.sim.faults.clear_all()
    wait_green(tree)
    assert green_for_dependents(tree, RECONCILER)
    assert restarts(tree, RECONCILER) == before + 1
    tree.wait_for(tree.matches_venue, 30, "Redis to match the venue")


def test_strategy_comes_back_paused_and_is_released_when_the_venue_is_green(tree):
    wait_green(tree)
    strategy = tree.config.strategies[0].id
    before = restarts(tree, strategy)
    # Hold the venue's pipeline red first (the gateway's rest probe), then kill the strategy.
    tree.sim.faults.set_rest_errors(1.0, "5xx", paths=(PROBE_PATH_GATEWAY,))
    try:
        tree.wait_for(lambda: "rest" in tree.status()[GATEWAY]["detail"], 20, "the gateway's rest probe failing")
        kill_actor(tree, strategy)
        held = tree.wait_for(lambda: (row := tree.status()[strategy])["state"] == "paused"
                             and row["restarts"] == before + 1 and row, 30, "the new strategy incarnation PAUSED")
        assert held["parent"] == "StrategySupervisor"
        assert tree.strategy_states()[strategy] == "PAUSED"
        hold = tree.redis(lambda s, c: c.strategy_pause(strategy))
        assert hold is not None and hold["source"] == "supervisor", hold
        assert call(tree, strategy, "check_health").healthy  # its own probes pass: it waits for the venue
    finally:
        tree.sim.faults.clear_all()
    wait_green(tree)
    assert tree.strategy_states()[strategy] == "RUNNING"
    assert tree.redis(lambda s, c: c.strategy_pause(strategy)) is None
    assert restarts(tree, strategy) == before + 1


def test_risk_monitor_restart_resumes_from_redis(tree):
    wait_green(tree)
    before = restarts(tree, "RiskMonitor")
    cursor = call(tree, "RiskMonitor", "stats")["persisted_cursor"]
    kill_actor(tree, "RiskMonitor")
    beat = heartbeat_ms(tree, "reconciler:okx")
    tree.wait_for(lambda: tree.status()["RiskMonitor"]["restarts"] == before + 1, 30, "the risk monitor restarted")
    assert heartbeat_ms(tree, "reconciler:okx") >= beat
    wait_green(tree)
    # The new incarnation took up the event cursor from Redis: it never re-read an event the old
    # one had already counted (a re-read would count old rejections twice).
    stats = call(tree, "RiskMonitor", "stats")
    events = tree.redis(lambda s, c: s.order_events(count=100_000))
    already_counted = sum(_stream_id(eid) <= _stream_id(cursor) for eid, _ in events)
    assert already_counted > 0 and stats["events_read"] <= len(events) - already_counted, (stats, len(events))
    assert _stream_id(stats["persisted_cursor"]) >= _stream_id(cursor)
    assert stats["trips"] == 0 and stats["breakers_opened"] == 0
    assert call(tree, "RiskMonitor", "breakers") == {}
    assert restarts(tree, "RiskMonitor") == before + 1
    tree.wait_for(tree.matches_venue, 30, "Redis to match the venue")


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def test_too_many_restarts_put_the_engine_in_safe_mode(ray_session, redis_url, namespace):
    config = scenario_config(redis_url, namespace, supervision={"root_intensity": 1})
    strategy = config.strategies[0].id
    with running_tree(config) as tree:
        tree.wait_running()
        kill_actor(tree, "RiskMonitor")  # one restart: within the intensity
        tree.wait_for(lambda: (row := tree.status()["RiskMonitor"])["restarts"] == 1 and row["state"] == "running",
                      30, "the first restart")
        assert kill_flag(tree) is None and tree.strategy_states()[strategy] == "RUNNING"
        kill_actor(tree, "RiskMonitor")  # one more within the period: escalate

        reason = tree.wait_for(lambda: kill_flag(tree), 30, "the SAFE MODE kill flag")
        assert reason.startswith("SAFE MODE:") and "RiskMonitor" in reason
        tree.wait_for(lambda: tree.strategy_states()[strategy] == "PAUSED", 10, "the strategy PAUSED")
        root = call(tree, ROOT_ID, "status")
        assert root["state"] == "escalated" and "more than 1 restart" in root["escalation_reason"]
        escalated = [a for a in tree.alerts() if a["key"] == f"{ROOT_ID}:escalated"]
        assert len(escalated) == 1 and escalated[0]["severity"] == "critical", escalated
        # Nothing trades in SAFE MODE: the strategy's actor is paused and its orders would be refused.
        hold = tree.wait_for(lambda: (h := tree.redis(lambda s, c: c.strategy_pause(strategy)))
                             and "SAFE MODE" in h["reason"] and h, 10, "the strategy actor paused for SAFE MODE")
        assert hold["source"] != "supervisor"  # a supervisor release would not lift it


def test_crashes_of_the_children_that_never_trade_never_reach_safe_mode(ray_session, redis_url, namespace):
    """The metrics exporter and the alerter sit under the ServiceSupervisor, which never escalates
    (its crash loop is tests/supervisor/test_placement.py's): with a root intensity of 1, four of
    their crashes leave the kill flag unset and trading on."""
    config = scenario_config(redis_url, namespace, supervision={"root_intensity": 1, "service_intensity": 10},
                             metrics={"enabled": True, "port": 0})
    strategy = config.strategies[0].id
    with running_tree(config) as tree:
        tree.wait_running()
        for name in ("MetricsExporter", "Alerter", "MetricsExporter", "Alerter"):
            tree.wait_for(lambda n=name: tree.status()[n]["state"] == "running", 60, f"{name} running")
            before = tree.status()[name]["restarts"]
            kill_actor(tree, name)
            tree.wait_for(lambda n=name, b=before: (row := tree.status()[n])["state"] != "running"
                          or row["restarts"] > b, 60, f"{name} seen dead")
        services = call(tree, "ServiceSupervisor", "status")
        assert services["state"] == "running" and services["restarts_in_window"] >= 2, services
        root = call(tree, ROOT_ID, "status")
        assert root["state"] == "running" and root["restarts_in_window"] == 0, root
        assert kill_flag(tree) is None
        assert tree.strategy_states()[strategy] == "RUNNING"
        # Both are back, and the root never saw a failure.
        for name in ("MetricsExporter", "Alerter"):
            tree.wait_for(lambda n=name: tree.status()[n]["state"] == "running", 90, f"{name} running again")
        assert kill_flag(tree) is None and call(tree, ROOT_ID, "status")["restarts_in_window"] == 0

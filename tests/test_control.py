"""The control API and its CLI on a running tree (real Ray, real Redis, the simulator).

One tree for the module, two strategies. Each test leaves the tree as it found
it, except the last, which kills one strategy for good. Probes are held red
with a fault on the one REST path only the gateway's ``rest`` probe calls.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest

from tests.conftest import TEST_REDIS_URL
from tests.scenarios.harness import STRATEGY, Tree, running_tree, scenario_config
from tests.scenarios.tree_helpers import call
from tradetree.cli import main as cli
from tradetree.control import Control, ControlError, ProbesFailing
from tradetree.tree import gateway_id, reconciler_id

pytestmark = pytest.mark.integration

GATEWAY, RECONCILER = gateway_id("okx"), reconciler_id("okx")
GATEWAY_PROBE_PATH = "/api/v5/public/time"  # only the gateway's rest probe calls it


@pytest.fixture(scope="module")
def tree(ray_session):
    import redis

    namespace = f"tt-test-{uuid.uuid4().hex[:12]}"
    strategies = [{**STRATEGY, "symbols": ["BTC-USDT-SWAP"]},
                  {**STRATEGY, "symbols": ["ETH-USDT-SWAP"], "params": {**STRATEGY["params"], "size": "3"}}]
    try:
        with running_tree(scenario_config(TEST_REDIS_URL, namespace, strategies=strategies)) as t:
            t.wait_running()
            yield t
    finally:
        client = redis.Redis.from_url(TEST_REDIS_URL)
        keys = list(client.scan_iter(match=f"{namespace}:*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def ctl(tree) -> Control:
    return Control(tree.ray_ns)


def ids(tree: Tree) -> tuple[str, str]:
    first, second = (s.id for s in tree.config.strategies)
    return first, second


def run_cli(tree: Tree, capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli([*argv, "--namespace", tree.ray_ns])
    out, err = capsys.readouterr()
    return code, out, err


def wait_gateway_green(tree: Tree) -> None:
    tree.wait_for(lambda: tree.health(GATEWAY).healthy, 30, "the gateway's probes to pass")


def test_status_shows_every_actor_and_the_state_in_redis(tree, ctl, capsys):
    first, second = ids(tree)
    status = ctl.status()
    actors = status["actors"]
    expected = {"RootSupervisor", "ServiceSupervisor", "Alerter", "VenueSupervisor[okx]", GATEWAY, RECONCILER, "RiskMonitor",
                "StrategySupervisor", first, second}
    assert set(actors) == expected
    assert all(row["state"] == "running" for row in actors.values()), actors
    assert actors[GATEWAY]["parent"] == "VenueSupervisor[okx]" and actors[first]["parent"] == "StrategySupervisor"
    assert actors["Alerter"]["parent"] == "ServiceSupervisor"
    assert status["breakers"] == {} and status["kill"] is None
    assert status["snapshot"]["strategies"] == {first: "RUNNING", second: "RUNNING"}
    assert status["snapshot"]["kill_flag"] is None

    code, out, _ = run_cli(tree, capsys, "status", "--json")
    assert code == 0
    shown = json.loads(out)
    assert set(shown["actors"]) == expected and shown["snapshot"]["strategies"][first] == "RUNNING"
    code, out, _ = run_cli(tree, capsys, "status")
    assert code == 0 and GATEWAY in out and first in out


def test_positions_are_the_ones_in_redis(tree, ctl):
    tree.wait_for_fills(2)

    def same() -> bool:  # trading goes on between the two reads: retry until they agree
        shown = {(r["strategy_id"], r["venue"], r["inst_id"]): Decimal(r["qty"]) for r in ctl.positions()}
        return shown == {(p.strategy_id, p.venue, p.inst_id): p.qty for p in tree.positions()} and shown

    shown = tree.wait_for(same, 30, "the control API's positions to equal Redis")
    assert {sid for sid, _, _ in shown} <= {s.id for s in tree.config.strategies}


def test_pause_holds_until_resume_which_is_refused_while_a_probe_fails(tree, ctl):
    first, second = ids(tree)
    ctl.pause(first, "test: operator pause")
    assert tree.strategy_states()[first] == "PAUSED"
    assert tree.redis(lambda s, c: c.strategy_pause(first))["source"] == "operator"
    assert call(tree, first, "resume") is False  # a supervisor release does not lift an operator's pause
    assert tree.strategy_states() == {first: "PAUSED", second: "RUNNING"}

    tree.sim.faults.set_rest_errors(1.0, "5xx", paths=(GATEWAY_PROBE_PATH,))
    try:
        tree.wait_for(lambda: not tree.health(GATEWAY).healthy, 20, "the gateway's rest probe failing")
        with pytest.raises(ProbesFailing) as refused:
            ctl.resume(first)
        assert f"resume {first} refused" in str(refused.value) and f"{GATEWAY}: rest:" in str(refused.value)
        assert tree.strategy_states()[first] == "PAUSED"
    finally:
        tree.sim.faults.clear_all()
    wait_gateway_green(tree)
    ctl.resume(first)
    assert tree.strategy_states()[first] == "RUNNING"
    assert tree.redis(lambda s, c: c.strategy_pause(first)) is None


def test_cli_pause_and_resume_with_exit_codes(tree, capsys):
    first, _ = ids(tree)
    code, out, _ = run_cli(tree, capsys, "pause", first, "--reason", "test: from the CLI")
    assert code == 0 and f"{first} paused" in out
    assert tree.redis(lambda s, c: c.strategy_pause(first))["reason"] == "test: from the CLI"
    tree.sim.faults.set_rest_errors(1.0, "5xx", paths=(GATEWAY_PROBE_PATH,))
    try:
        tree.wait_for(lambda: not tree.health(GATEWAY).healthy, 20, "the gateway's rest probe failing")
        code, _, err = run_cli(tree, capsys, "resume", first)
        assert code == 4 and f"{GATEWAY}: rest:" in err, err
    finally:
        tree.sim.faults.clear_all()
    wait_gateway_green(tree)
    code, out, _ = run_cli(tree, capsys, "resume", first)
    assert code == 0 and f"{first} resumed" in out
    assert tree.strategy_states()[first] == "RUNNING"


def test_reconcile_runs_a_full_cycle_now(tree, ctl, capsys):
    report = ctl.reconcile("okx")
    assert report["venue"] == "okx" and report["poll"]["ok"] and report["drift"]["ok"], report
    code, out, _ = run_cli(tree, capsys, "reconcile", "okx")
    assert code == 0 and json.loads(out)["poll"]["ok"] is True
    with pytest.raises(ControlError):
        ctl.reconcile("binance")  # no such venue in this tree


def test_restart_waits_for_green_and_is_refused_naming_the_probe(tree, ctl, capsys):
    before = ctl.status()["actors"][GATEWAY]["restarts"]
    tree.sim.faults.set_rest_errors(1.0, "5xx", paths=(GATEWAY_PROBE_PATH,))
    try:
        with pytest.raises(ProbesFailing) as refused:
            ctl.restart(GATEWAY, ready_timeout_secs=3.0)
        assert f"restart {GATEWAY}" in str(refused.value) and f"{GATEWAY}: rest:" in str(refused.value)
    finally:
        tree.sim.faults.clear_all()
    wait_gateway_green(tree)
    assert ctl.status()["actors"][GATEWAY]["restarts"] == before + 1

    code, out, _ = run_cli(tree, capsys, "restart", GATEWAY)
    assert code == 0 and "restarted and its probes pass" in out
    assert ctl.status()["actors"][GATEWAY]["restarts"] == before + 2
    with pytest.raises(ControlError):
        ctl.restart("NoSuchActor")
    tree.wait_running()


def test_restart_waits_as_long_as_the_childs_own_stop_and_start_bounds(monkeypatch):
    """A nested supervisor's start bound is the sum of its children's: no fixed cap may cut it short."""
    import tradetree.control as control

    status = {
        "root": {"state": "running", "parent": None},
        "VenueSupervisor[okx]": {"state": "running", "parent": "root", "supervisor": True,
                                 "startup_timeout_secs": 400.0, "shutdown_timeout_secs": 60.0},
    }
    monkeypatch.setattr(control, "tree_status", lambda namespace, root_id: status)
    ctl = Control("ns")
    calls = []
    monkeypatch.setattr(ctl, "_call", lambda name, method, *args, timeout_secs: calls.append(
        (name, method, args, timeout_secs)))
    monkeypatch.setattr(ctl, "_failing_probes", lambda names: [])
    ctl.restart("VenueSupervisor[okx]")
    assert calls == [("root", "restart_child", ("VenueSupervisor[okx]",), 400.0 + 60.0 + 30.0)]


def test_alerts_list_what_the_tree_reported(tree, ctl):
    import ray

    ray.kill(tree.risk_monitor(), no_restart=True)  # the root reports the exit, then the restart
    keys = ("RootSupervisor:RiskMonitor:exit", "RootSupervisor:RiskMonitor:restarted")
    tree.wait_for(lambda: set(keys) <= {a["key"] for a in ctl.alerts()}, 30, "the exit and restart alerts")
    alerts = ctl.alerts()
    assert all({"ts_ms", "severity", "key", "title", "text", "outcome"} <= set(a) for a in alerts)
    assert [a["ts_ms"] for a in alerts] == sorted(a["ts_ms"] for a in alerts)  # oldest first
    exit_alert, restarted = ([a for a in alerts if a["key"] == k][-1] for k in keys)
    assert exit_alert["severity"] == "warning" and "RiskMonitor" in exit_alert["title"]
    assert restarted["severity"] == "info" and exit_alert["ts_ms"] <= restarted["ts_ms"]
    assert len(ctl.alerts(n=1)) == 1
    tree.wait_for(lambda: tree.health("RiskMonitor").healthy, 30, "the new risk monitor green")


def test_kill_one_strategy_winds_it_down_and_leaves_the_other_trading(tree, ctl, capsys):
    first, second = ids(tree)
    tree.wait_for(lambda: any(p.strategy_id == second and p.qty != 0 for p in tree.positions())
                  or len(tree.audit()) >= 6, 90, "some trading")
    code, out, _ = run_cli(tree, capsys, "kill", "test: kill one strategy", "--strategy", second, "--wait")
    assert code == 0
    progress = json.loads(out)
    assert progress["state"] == "DONE" and progress["strategy_id"] == second, progress
    assert tree.strategy_states()[second] == "KILLED"
    assert all(p.qty == 0 for p in tree.positions() if p.strategy_id == second)
    assert tree.redis(lambda s, c: s.kill_flag()) is None  # a strategy kill does not stop the others
    assert ctl.kill_progress(second)["state"] == "DONE"
    assert ctl.kill_progress() is None

    tree.wait_for(lambda: tree.strategy_states()[first] == "RUNNING", 10, f"{first} still RUNNING")
    fills = len(tree.audit())
    tree.wait_for_fills(fills + 1)  # the other strategy keeps trading
    with pytest.raises(ControlError, match="KILLED"):
        ctl.resume(second)
    tree.wait_for(tree.matches_venue, 30, "Redis to match the venue")


def _audit(ctl: Control, action: str) -> list[dict]:
    return [a for a in ctl.operator_log(200) if a["action"] == action]


def test_resume_says_what_it_did_and_never_lifts_a_venue_pause(tree, ctl, capsys):
    first, _ = ids(tree)
    tree.wait_for(lambda: tree.strategy_states()[first] == "RUNNING", 60, f"{first} RUNNING")
    assert ctl.resume(first, "test") == f"{first} already RUNNING: nothing done"

    ctl.pause(first, "test: before a fill gap")
    tree.redis(lambda s, c: c.pause_venue("okx", "test: fill gap", 1, source="fill_health"))
    try:
        with pytest.raises(ProbesFailing, match="tradetree release-venue okx") as refused:
            ctl.resume(first, "test")
        assert "venue okx paused: test: fill gap" in str(refused.value)
        assert tree.strategy_states()[first] == "PAUSED"
        assert tree.redis(lambda s, c: c.venue_pause("okx")) == "test: fill gap", "resume lifts no venue pause"

        code, out, _ = run_cli(tree, capsys, "release-venue", "okx", "--reason", "test: gap explained")
        assert code == 0 and "pauses lifted: fill_health" in out, out
        assert tree.redis(lambda s, c: c.venue_pause("okx")) is None
        assert tree.strategy_states()[first] == "PAUSED", "releasing a venue resumes no strategy"
        code, out, _ = run_cli(tree, capsys, "release-venue", "okx")
        assert code == 0 and "was not paused: nothing done" in out
    finally:
        tree.redis(lambda s, c: c.resume_venue("okx"))
    code, out, _ = run_cli(tree, capsys, "resume", first, "--reason", "test: back")
    assert code == 0 and f"{first} resumed (was PAUSED)" in out
    assert tree.strategy_states()[first] == "RUNNING"

    refused_entry = [a for a in _audit(ctl, "resume") if a["outcome"] == "refused"][-1]
    assert "venue okx paused" in refused_entry["detail"] and "@" in refused_entry["who"]
    released = [a for a in _audit(ctl, "release-venue") if a["outcome"] == "done"][-1]
    assert released["why"] == "test: gap explained" and released["target"] == "okx"
    assert _audit(ctl, "resume")[-1]["outcome"] == "done"
    alert_keys = {a["key"] for a in ctl.alerts(200)}
    assert "operator:release-venue:okx" in alert_keys, "every verb is alerted"


def test_reset_breaker_closes_it_audited_and_refuses_nothing_it_need_not(tree, ctl, capsys):
    name = "strategy:ghost:test"
    tree.redis(lambda s, c: c.set_breaker(name, "test: tripped", 1))
    assert name in ctl.status()["breakers"]
    code, out, _ = run_cli(tree, capsys, "reset-breaker", name, "test: false alarm")
    assert code == 0 and f"breaker {name} closed" in out
    assert name not in tree.redis(lambda s, c: c.breakers())
    code, out, _ = run_cli(tree, capsys, "reset-breaker", name, "test: again")
    assert code == 0 and "was not open: nothing done" in out
    entries = _audit(ctl, "reset-breaker")
    assert [e["outcome"] for e in entries[-2:]] == ["done", "noop"] and entries[-2]["why"] == "test: false alarm"


def test_clear_kill_is_refused_while_a_kill_is_stalled(tree, ctl, capsys):
    from tradetree.risk import KillPhase, KillProgress, KillState

    stalled = KillProgress(scope="strategy:ghost", strategy_id="ghost", reason="test", state=KillState.STALLED,
                           phase=KillPhase.CANCEL, started_ms=1, updated_ms=1, stalled_reason="test: venue 503s")
    tree.redis(lambda s, c: s.save_kill_progress(stalled.scope, stalled.model_dump_json(), state="STALLED",
                                                  reason="test", updated_ms=1))
    try:
        code, _, err = run_cli(tree, capsys, "clear-kill", "test: too early")
        assert code == 4 and "strategy:ghost STALLED" in err and "test: venue 503s" in err, err
        assert _audit(ctl, "clear-kill")[-1]["outcome"] == "refused"
    finally:
        done = stalled.model_copy(update={"state": KillState.DONE, "stalled_reason": ""})
        tree.redis(lambda s, c: s.save_kill_progress(done.scope, done.model_dump_json(), state="DONE",
                                                      reason="test", updated_ms=2))


def test_after_a_global_kill_clear_kill_and_resume_bring_trading_back(tree, ctl, capsys):
    first, second = ids(tree)
    code, out, _ = run_cli(tree, capsys, "kill", "test: global", "--wait")
    assert code == 0 and json.loads(out)["state"] == "DONE", out
    assert tree.redis(lambda s, c: s.kill_flag()) == "test: global"
    assert set(tree.strategy_states().values()) == {"KILLED"}
    tree.wait_for(lambda: tree.health("RiskMonitor").healthy, 30, "the risk monitor green")

    code, out, err = run_cli(tree, capsys, "clear-kill", "test: incident over")
    assert code == 0, err
    assert "kill flag cleared (was 'test: global')" in out and first in out and second in out
    assert tree.redis(lambda s, c: s.kill_flag()) is None
    assert tree.strategy_states() == {first: "PAUSED", second: "PAUSED"}
    assert _audit(ctl, "clear-kill")[-1]["outcome"] == "done"

    wait_gateway_green(tree)
    assert ctl.resume(first, "test: trade again") == f"{first} resumed (was PAUSED)"
    assert tree.strategy_states()[first] == "RUNNING"
    fills = len(tree.audit())
    tree.wait_for_fills(fills + 1, timeout_secs=180)

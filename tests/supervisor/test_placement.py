"""Placement: the pure node choice, and the supervisor using it when a node is lost (fake cluster, virtual time)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.supervisor.fakes import CHILD_CLASS, FakeClusterBackend, VirtualSleep
from tests.supervisor.test_supervisor import FAST
from tradetree.core.clock import ManualClock
from tradetree.core.lifecycle import ComponentState
from tradetree.supervisor.placement import NodeView, NoNodeFits, Placement, choose_node
from tradetree.supervisor.restart_policy import ChildState, RestartIntensity
from tradetree.supervisor.spec import ChildSpec, SupervisorSpec
from tradetree.supervisor.supervisor import Supervisor

NODES = [NodeView("n1"), NodeView("n2"), NodeView("n3")]


def test_a_single_node_without_constraints_is_left_to_ray():
    assert choose_node(Placement(), [NodeView("n1")], occupied={}) is None


def test_spread_from_puts_a_reconciler_away_from_its_gateway():
    got = choose_node(Placement(spread_from=("gw",)), NODES, occupied={"gw": "n1", "x": "n2"})
    assert got == "n3"


def test_children_avoid_the_supervisors_node_then_balance():
    assert choose_node(Placement(), NODES, occupied={}, own_node="n1") == "n2"
    assert choose_node(Placement(), NODES, occupied={"a": "n2"}, own_node="n1") == "n3"


def test_children_avoid_every_supervisor_above_them():
    assert choose_node(Placement(), NODES, occupied={}, own_node="n2", ancestor_nodes=("n1",)) == "n3"


def test_suspected_and_dead_nodes_are_never_chosen():
    nodes = [NodeView("n1"), NodeView("n2", alive=False), NodeView("n3")]
    assert choose_node(Placement(), nodes, occupied={"a": "n3"}, suspect={"n1"}) == "n3"
    with pytest.raises(NoNodeFits, match="suspected"):
        choose_node(Placement(), nodes, occupied={}, suspect={"n1", "n3"})


def test_a_head_without_cpus_gets_work_only_when_nothing_else_can():
    head, worker = NodeView("h", resources={}), NodeView("w", resources={"CPU": 1.0})
    assert choose_node(Placement(), [head, worker], occupied={"a": "w", "b": "w"}) == "w"
    assert choose_node(Placement(), [head, worker], occupied={}, suspect={"w"}) == "h"


def test_labels_and_resources_are_hard():
    nodes = [NodeView("n1", labels={"zone": "a"}, resources={"CPU": 4}),
             NodeView("n2", labels={"zone": "b"}, resources={"CPU": 1})]
    assert choose_node(Placement(node_labels={"zone": "b"}), nodes, occupied={}) == "n2"
    assert choose_node(Placement(resources={"CPU": 2}), nodes, occupied={}) == "n1"
    with pytest.raises(NoNodeFits):
        choose_node(Placement(node_labels={"zone": "c"}), nodes, occupied={})


@given(st.lists(st.sampled_from(["n1", "n2", "n3"]), max_size=6), st.sets(st.sampled_from(["n1", "n2", "n3"]), max_size=2))
def test_the_choice_is_deterministic_and_never_suspect(placed, suspect):
    occupied = {f"c{i}": n for i, n in enumerate(placed)}
    first = choose_node(Placement(spread_from=("c0",)), NODES, occupied=occupied, suspect=suspect)
    assert first == choose_node(Placement(spread_from=("c0",)), NODES, occupied=dict(reversed(occupied.items())),
                                suspect=suspect)
    assert first not in suspect


def test_restarts_of_one_group_count_once():
    clock = ManualClock()
    window = RestartIntensity(1, 60.0, clock)
    assert window.record("node:n1") and window.record("node:n1") and window.record("node:n1")
    assert window.count() == 1
    assert not window.record()  # a second, unrelated failure exceeds intensity 1
    clock.advance(61)
    assert window.record("node:n1")  # the window moved on: a new loss counts again


def child(cid: str, **kw) -> ChildSpec:
    return ChildSpec(id=cid, actor_class=CHILD_CLASS, **{**FAST, **kw})


class Cluster:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.sleep = VirtualSleep(self.clock)
        self.backend = FakeClusterBackend(self.clock, self.sleep, ["n1", "n2", "n3"], own_node="n1")
        self.escalations: list[str] = []
        self.alerts: list[tuple] = []

    def supervisor(self, *children, **spec_kw) -> Supervisor:
        spec = SupervisorSpec(id="root", children=children, **{"intensity": 1, "period_secs": 60, **spec_kw})
        return Supervisor(spec, self.backend, alert=lambda *a: self.alerts.append(a),
                          on_escalate=self.escalations.append, clock=self.clock, sleep=self.sleep, seed=7,
                          run_monitor=False)

    async def advance(self, sup: Supervisor, seconds: float, passes: int = 1) -> None:
        for _ in range(passes):
            self.clock.advance(seconds)
            sup.tick()
            await sup.settle()


async def test_children_lost_with_one_node_restart_elsewhere_as_one_failure():
    c = Cluster()
    sup = c.supervisor(child("gw"), child("rec", placement=Placement(spread_from=("gw",))), child("strat"))
    await sup.start()
    nodes = {cid: sup.status()["children"][cid]["node_id"] for cid in ("gw", "rec", "strat")}
    assert "n1" not in nodes.values()  # off the supervisor's node
    assert nodes["gw"] != nodes["rec"]
    lost_node = nodes["gw"]
    lost = c.backend.lose_node(lost_node)
    assert len(lost) >= 2 or lost == ["gw"]
    await c.advance(sup, 1.0, passes=4)
    # intensity 1, yet no escalation: the children of one node count once
    assert sup.state is ComponentState.RUNNING and not c.escalations
    for cid in ("gw", "rec", "strat"):
        assert sup.child_state(cid) is ChildState.RUNNING
        assert sup.status()["children"][cid]["node_id"] != lost_node
    assert sup.status()["suspect_nodes"] == [lost_node]
    assert all(node != lost_node for name, node in c.backend.placements[3:])
    assert sum(1 for a in c.alerts if a[0] == "critical" and "lost" in a[2]) == 1


async def test_a_second_node_loss_is_a_second_failure():
    c = Cluster()
    sup = c.supervisor(child("a"), child("b", placement=Placement(spread_from=("a",))))
    await sup.start()
    first = sup.status()["children"]["a"]["node_id"]
    c.backend.lose_node(first)
    await c.advance(sup, 1.0, passes=3)
    assert sup.state is ComponentState.RUNNING
    second = sup.status()["children"]["a"]["node_id"]
    c.backend.lose_node(second)
    await c.advance(sup, 1.0, passes=3)
    assert sup.state is ComponentState.ESCALATED  # two nodes within the window: intensity 1 exceeded


async def test_a_crash_on_a_healthy_node_is_an_ordinary_failure():
    c = Cluster()
    sup = c.supervisor(child("a"), child("b"))
    await sup.start()
    c.backend.crash("a")
    await c.advance(sup, 1.0, passes=2)
    c.backend.crash("b")
    await c.advance(sup, 1.0, passes=2)
    assert sup.state is ComponentState.ESCALATED and sup.status()["suspect_nodes"] == []


async def test_a_supervisor_that_never_escalates_keeps_restarting_at_the_longest_backoff():
    c = Cluster()
    sup = c.supervisor(child("exporter"), escalate=False, intensity=1)
    await sup.start()
    for _ in range(5):
        c.backend.crash("exporter")
        await c.advance(sup, 1.0, passes=2)
    assert sup.state is ComponentState.RUNNING and not c.escalations
    assert sup.child_state("exporter") is ChildState.RUNNING
    assert any(a[0] == "critical" and "crash-looping" in a[2] for a in c.alerts)
    assert FAST["backoff"].max_secs in c.sleep.calls


async def test_the_supervisor_writes_its_heartbeat_while_it_supervises():
    from tests.supervisor.fakes import FakeHeartbeats

    class Beats(FakeHeartbeats):
        def __init__(self) -> None:
            super().__init__()
            self.written: list[tuple[str, int]] = []

        async def beat(self, key: str, ts_ms: int) -> None:
            self.written.append((key, ts_ms))

    c = Cluster()
    beats = Beats()
    spec = SupervisorSpec(id="RootSupervisor", children=(child("a"),))
    sup = Supervisor(spec, c.backend, store=beats, clock=c.clock, sleep=c.sleep, seed=1, run_monitor=False)
    await sup.start()
    for _ in range(3):
        await asyncio.sleep(0)  # the beat loop runs between awaits; its virtual sleeps move the clock
    assert beats.written and beats.written[0][0] == "supervisor:RootSupervisor"
    await sup.stop()
    n = len(beats.written)
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(beats.written) == n

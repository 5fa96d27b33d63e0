"""Supervisor over a fake backend, in virtual time: deterministic, no Ray.

The monitor loop is off (``run_monitor=False``): each test drives passes with
``tick()`` and waits for the tasks they launched with ``settle()``.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.supervisor.fakes import CHILD_CLASS, FakeBackend, FakeHeartbeats, VirtualSleep
from tradetree.core.clock import ManualClock
from tradetree.core.errors import StoreUnavailable
from tradetree.core.lifecycle import ComponentState
from tradetree.supervisor.restart_policy import ChildState
from tradetree.supervisor.spec import BackoffSpec, ChildSpec, RestartType, SupervisorSpec
from tradetree.supervisor.supervisor import (
    RestartRefused,
    StartFailed,
    Supervisor,
    SupervisorStateError,
    UnknownChild,
)

FAST = dict(
    probe_period_secs=1.0,
    probe_timeout_secs=0.05,  # real seconds, for hanging fakes
    probe_failures_to_restart=3,
    startup_timeout_secs=5.0,
    backoff=BackoffSpec(min_secs=0.5, max_secs=8, jitter=0.2),
)


def child(cid: str, **kw) -> ChildSpec:
    return ChildSpec(id=cid, actor_class=CHILD_CLASS, **{**FAST, **kw})


class Harness:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.sleep = VirtualSleep(self.clock)
        self.backend = FakeBackend(self.clock, self.sleep)
        self.escalations: list[str] = []
        self.alerts: list[tuple[str, str, str, str]] = []

    def supervisor(self, *children, store=None, **spec_kw) -> Supervisor:
        spec = SupervisorSpec(id=spec_kw.pop("id", "root"), children=children, **{"intensity": 5, "period_secs": 60, **spec_kw})
        sup = Supervisor(
            spec,
            self.backend,
            store=store,
            alert=lambda *a: self.alerts.append(a),
            on_escalate=self.escalations.append,
            nested_kwargs={"parent": spec.id},
            clock=self.clock,
            sleep=self.sleep,
            seed=42,
            run_monitor=False,
        )
        if self.backend.live(spec.id) is None:
            self.backend.register(spec.id, sup)  # nested supervisors ask it about release_after ids
        return sup

    async def advance(self, sup: Supervisor, seconds: float, passes: int = 1) -> None:
        """Let ``seconds`` of virtual time pass, ``passes`` monitor passes, and settle."""
        for _ in range(passes):
            self.clock.advance(seconds)
            sup.tick()
            await sup.settle()


@pytest.fixture
def h() -> Harness:
    return Harness()


async def test_children_start_in_order_through_the_probe_gate(h):
    sup = h.supervisor(child("a"), child("b"), child("c"))
    await sup.start()
    assert sup.state is ComponentState.RUNNING
    creates = [name for op, name, _ in h.backend.ops("create")]
    assert creates == ["a", "b", "c"]
    # each child was started and probed before the next one was created
    order = [(op, name, d) for op, name, d in h.backend.log if op in ("create", "call")]
    assert [(op, name, d if op == "call" else "") for op, name, d in order[:3]] == [
        ("create", "a", ""), ("call", "a", "start"), ("call", "a", "check_health")
    ]
    assert all(sup.child_state(c) is ChildState.RUNNING for c in "abc")
    assert (await sup.check_health()).healthy


async def test_status_gives_each_childs_stop_and_start_bounds(h):
    sup = h.supervisor(child("a"), child("b", startup_timeout_secs=300.0, shutdown_timeout_secs=45.0))
    children = sup.status()["children"]
    assert (children["a"]["startup_timeout_secs"], children["a"]["shutdown_timeout_secs"]) == (5.0, 5.0)
    assert (children["b"]["startup_timeout_secs"], children["b"]["shutdown_timeout_secs"]) == (300.0, 45.0)


async def test_stop_is_in_reverse_order_and_idempotent(h):
    sup = h.supervisor(child("a"), child("b"), child("c"))
    await sup.start()
    await sup.stop()
    stops = [name for op, name, d in h.backend.ops("call") if d == "stop"]
    kills = [name for op, name, _ in h.backend.ops("kill")]
    assert stops == ["c", "b", "a"] and kills == ["c", "b", "a"]
    assert sup.state is ComponentState.STOPPED
    await sup.stop()
    assert len(h.backend.ops("kill")) == 3


async def test_failed_start_unwinds_started_children_in_reverse(h):
    h.backend.behaviour("c").start_error = "venue auth rejected"
    sup = h.supervisor(child("a"), child("b"), child("c"), child("d"))
    with pytest.raises(StartFailed, match=r"child 'c' did not start.*venue auth rejected.*stopped 2"):
        await sup.start()
    assert [n for _, n, _ in h.backend.ops("kill")] == ["c", "b", "a"]
    assert [n for _, n, d in h.backend.ops("call") if d == "stop"] == ["b", "a"]
    assert not h.backend.ops("create", "d")
    assert sup.state is ComponentState.STOPPED
    assert all(h.backend.live(n) is None for n in "abcd")


async def test_a_failed_start_undoes_what_started_while_those_children_still_run(h):
    h.backend.behaviour("c").start_error = "venue auth rejected"
    spec = SupervisorSpec(id="root", children=(child("a"), child("b"), child("c")), intensity=5, period_secs=60)
    seen: list[tuple[str, list[str]]] = []

    async def undo(reason: str) -> str:
        seen.append((reason, [n for n in "ab" if h.backend.live(n) is not None]))
        return "strategies paused and 1 open order(s) canceled"

    sup = Supervisor(spec, h.backend, on_start_abandoned=undo, clock=h.clock, sleep=h.sleep, seed=1,
                     run_monitor=False)
    with pytest.raises(StartFailed, match=r"stopped 2 child\(ren\) already started; before that: strategies paused "
                                          r"and 1 open order\(s\) canceled"):
        await sup.start()
    assert len(seen) == 1 and "child 'c' did not start" in seen[0][0] and "venue auth rejected" in seen[0][0]
    assert seen[0][1] == ["a", "b"], "undone while the started children still run"
    assert all(h.backend.live(n) is None for n in "abc")


async def test_a_failing_undo_hook_does_not_stop_the_unwind(h):
    h.backend.behaviour("b").start_error = "boom"

    async def undo(reason: str) -> str:
        raise RuntimeError("gateway gone")

    spec = SupervisorSpec(id="root", children=(child("a"), child("b")), intensity=5, period_secs=60)
    sup = Supervisor(spec, h.backend, on_start_abandoned=undo, clock=h.clock, sleep=h.sleep, seed=1,
                     run_monitor=False)
    with pytest.raises(StartFailed, match=r"undoing what had started failed first: RuntimeError: gateway gone"):
        await sup.start()
    assert h.backend.live("a") is None


async def test_start_fails_naming_the_probe_that_never_passed(h):
    h.backend.behaviour("b").healthy = False
    sup = h.supervisor(child("a"), child("b"))
    with pytest.raises(StartFailed, match=r"'b'.*probe 'fills_flowing' failing: no fills for 30s"):
        await sup.start()
    assert h.backend.live("a") is None


async def test_start_fails_when_create_fails(h):
    h.backend.fail_create.add("b")
    sup = h.supervisor(child("a"), child("b"))
    with pytest.raises(StartFailed, match="create failed"):
        await sup.start()
    assert h.backend.live("a") is None


async def test_start_kills_a_leftover_actor_with_the_same_name(h):
    leftover = h.backend.create("a", CHILD_CLASS, (), {}, num_cpus=0)
    sup = h.supervisor(child("a"))
    await sup.start()
    assert not leftover.alive
    assert sup.child_handle("a") is not leftover


async def test_start_twice_is_refused_with_the_rule(h):
    sup = h.supervisor(child("a"))
    await sup.start()
    with pytest.raises(SupervisorStateError, match="start\\(\\) needs a new, stopped or escalated"):
        await sup.start()


async def test_dead_child_is_restarted_after_backoff_and_sibling_untouched(h):
    sup = h.supervisor(child("a"), child("b"))
    await sup.start()
    b_handle = sup.child_handle("b")
    h.backend.crash("a")
    before = h.clock.monotonic()
    await h.advance(sup, 1.0)
    assert sup.child_state("a") is ChildState.RUNNING
    assert len(h.backend.incarnations("a")) == 2
    # the restart waited a backoff: 0.5s +/- 20% for the first attempt
    assert any(0.4 <= s <= 0.6 for s in h.sleep.calls)
    assert h.clock.monotonic() - before >= 1.4
    assert sup.child_handle("b") is b_handle and b_handle.alive
    assert sup.status()["children"]["a"]["restarts"] == 1
    assert sup.status()["children"]["a"]["last_exit"].startswith("died")
    assert sup.status()["children"]["b"]["restarts"] == 0
    assert any(a[0] == "warning" and "a died" in a[2] for a in h.alerts)


async def test_unhealthy_child_restarted_only_after_consecutive_failures(h):
    sup = h.supervisor(child("a", probe_failures_to_restart=3))
    await sup.start()
    h.backend.behaviour("a").healthy = False
    await h.advance(sup, 1.1, passes=2)
    assert sup.child_state("a") is ChildState.RUNNING
    assert sup.status()["children"]["a"]["consecutive_failures"] == 2
    h.backend.behaviour("a").healthy = True  # one passing probe resets the count
    await h.advance(sup, 1.1)
    assert sup.status()["children"]["a"]["consecutive_failures"] == 0
    h.backend.behaviour("a").healthy = False
    await h.advance(sup, 1.1, passes=2)
    assert len(h.backend.incarnations("a")) == 1
    h.backend.behaviour("a").healthy_after_probes = 1  # the next incarnation passes from its 2nd probe
    h.backend.behaviour("a").healthy = True
    first = h.backend.child("a")
    first.behaviour = type(first.behaviour)(healthy=False)  # ...but this one keeps failing
    await h.advance(sup, 1.1)
    assert len(h.backend.incarnations("a")) == 2
    assert sup.child_state("a") is ChildState.RUNNING
    # graceful stop was attempted on the unhealthy incarnation before the kill
    assert "stop" in first.events and not h.backend.incarnations("a")[0].alive
    assert sup.status()["children"]["a"]["last_exit"].startswith("unhealthy: 3 consecutive failing probes")


async def test_hanging_probe_counts_as_a_failure(h):
    sup = h.supervisor(child("a", probe_failures_to_restart=2))
    await sup.start()
    h.backend.behaviour("a").probe_hang = True
    await h.advance(sup, 1.1)
    assert "did not answer" in sup.status()["children"]["a"]["last_probe_error"]
    assert sup.child_state("a") is ChildState.RUNNING
    h.backend.behaviour("a").probe_hang = False
    first = h.backend.child("a")
    first.behaviour = type(first.behaviour)(healthy=False)  # the second failure is a plain unhealthy report
    await h.advance(sup, 1.1)
    assert len(h.backend.incarnations("a")) == 2
    assert sup.child_state("a") is ChildState.RUNNING


async def test_one_hung_child_never_blocks_the_others(h):
    sup = h.supervisor(child("a", probe_timeout_secs=30.0), child("b"))
    await sup.start()
    h.backend.behaviour("a").probe_hang = True
    h.clock.advance(1.1)
    sup.tick()  # a's probe now hangs (for 30 real seconds)
    await asyncio.sleep(0)
    h.backend.crash("b")
    for _ in range(30):
        h.clock.advance(1.1)
        sup.tick()
        for _ in range(20):
            await asyncio.sleep(0)
        if sup.child_state("b") is ChildState.RUNNING and len(h.backend.incarnations("b")) == 2:
            break
    assert len(h.backend.incarnations("b")) == 2 and sup.child_state("b") is ChildState.RUNNING
    # still exactly one probe in flight for a: the monitor did not stack probes on it
    assert len([1 for op, n, d in h.backend.ops("call", "a") if d == "check_health"]) == 2  # gate + one
    await sup.stop()


async def test_stale_heartbeat_means_hung_killed_and_restarted(h):
    beats = FakeHeartbeats()
    beats.beats["gateway:a"] = lambda: h.clock.now_ms()
    sup = h.supervisor(child("a", heartbeat_key="gateway:a", heartbeat_stale_secs=5), store=beats)
    await sup.start()
    await h.advance(sup, 1.0, passes=3)
    assert len(h.backend.incarnations("a")) == 1
    frozen = h.clock.now_ms()
    beats.beats["gateway:a"] = frozen  # the child stops beating but still answers probes
    await h.advance(sup, 1.0, passes=4)
    assert len(h.backend.incarnations("a")) == 1  # 4s old: not yet stale
    beats.beats["gateway:a"] = lambda: frozen if len(h.backend.incarnations("a")) == 1 else h.clock.now_ms()
    await h.advance(sup, 2.0)
    assert len(h.backend.incarnations("a")) == 2
    hung = h.backend.incarnations("a")[0]
    assert not hung.alive and "stop" not in hung.obj.events  # hung: killed, not asked to stop
    assert sup.status()["children"]["a"]["last_exit"].startswith("hung: heartbeat 'gateway:a'")
    assert sup.child_state("a") is ChildState.RUNNING


async def test_missing_heartbeat_gets_a_grace_period_then_restarts(h):
    beats = FakeHeartbeats()
    sup = h.supervisor(child("a", heartbeat_key="gateway:a", heartbeat_stale_secs=5), store=beats)
    await sup.start()
    await h.advance(sup, 2.0, passes=2)
    assert len(h.backend.incarnations("a")) == 1
    await h.advance(sup, 2.0)
    assert len(h.backend.incarnations("a")) == 2


async def test_unreadable_heartbeats_restart_nothing_but_show_in_health(h):
    beats = FakeHeartbeats()
    beats.error = StoreUnavailable("redis down")
    sup = h.supervisor(child("a", heartbeat_key="gateway:a", heartbeat_stale_secs=1), store=beats)
    await sup.start()
    await h.advance(sup, 2.0, passes=3)
    assert len(h.backend.incarnations("a")) == 1
    report = await sup.check_health()
    assert not report.healthy
    assert [p.name for p in report.failing()] == ["heartbeats"]
    assert "redis down" in sup.status()["heartbeat_error"]


async def test_probe_gate_holds_a_restarted_child_until_healthy(h):
    sup = h.supervisor(child("a", start_paused=True), child("b"))
    await sup.start()
    h.backend.behaviour("a").healthy_after_probes = 3  # each new incarnation fails 3 probes first
    h.backend.crash("a")
    states_at_probe: list[ChildState] = []
    original = type(h.backend).call

    async def spying_call(self, handle, method, *args, **kw):
        if handle.name == "a" and method == "check_health":
            states_at_probe.append(sup.child_state("a"))
        return await original(self, handle, method, *args, **kw)

    type(h.backend).call = spying_call
    try:
        await h.advance(sup, 1.0)
    finally:
        type(h.backend).call = original
    fresh = h.backend.child("a")
    assert fresh.events == ["start", "pause", "probe:fail", "probe:fail", "probe:fail", "probe:ok", "resume"]
    assert ChildState.PROBING in states_at_probe
    assert sup.child_state("a") is ChildState.RUNNING


async def test_start_paused_child_waits_for_release_after_children(h):
    sup = h.supervisor(
        child("gw", probe_failures_to_restart=100), child("strat", start_paused=True, release_after=("gw",))
    )
    await sup.start()
    strat = h.backend.child("strat")
    assert strat.events[:2] == ["start", "pause"] and strat.events[-1] == "resume"
    # the gateway goes bad; the strategy is restarted meanwhile and must stay paused
    h.backend.behaviour("gw").healthy = False
    await h.advance(sup, 1.1)
    assert not (await sup.child_healthy("gw"))
    h.backend.crash("strat")
    await h.advance(sup, 1.1, passes=4)
    assert sup.child_state("strat") is ChildState.PAUSED
    fresh = h.backend.child("strat")
    assert fresh.paused and "resume" not in fresh.events
    assert sup.status()["children"]["strat"]["release_after"] == ["gw"]
    assert not (await sup.check_health()).healthy
    h.backend.behaviour("gw").healthy = True
    await h.advance(sup, 1.1, passes=2)
    assert sup.child_state("strat") is ChildState.RUNNING
    assert fresh.events[-1] == "resume" and not fresh.paused
    assert (await sup.check_health()).healthy


async def test_a_resume_slower_than_a_probe_is_a_bring_up_step_not_a_failure(h):
    # resume() writes Redis: on a busy machine it may take longer than a probe may (0.05 s here).
    h.backend.behaviour("strat").resume_secs = 0.3
    sup = h.supervisor(child("gw"), child("strat", start_paused=True, release_after=("gw",)))
    await sup.start()
    assert sup.child_state("strat") is ChildState.RUNNING
    assert h.backend.child("strat").events[-1] == "resume"
    assert len(h.backend.incarnations("strat")) == 1


async def test_a_resume_that_outlives_the_start_bound_still_fails_the_start(h):
    h.backend.behaviour("strat").resume_secs = 0.5
    sup = h.supervisor(child("gw"), child("strat", start_paused=True, release_after=("gw",),
                                          startup_timeout_secs=0.2))
    with pytest.raises(StartFailed, match="resume"):
        await sup.start()


async def test_failing_resume_restarts_the_paused_child(h):
    sup = h.supervisor(child("gw"), child("strat", start_paused=True, release_after=("gw",)))
    await sup.start()
    h.backend.behaviour("gw").healthy = False
    await h.advance(sup, 1.1)
    h.backend.crash("strat")
    await h.advance(sup, 1.1)
    assert sup.child_state("strat") is ChildState.PAUSED
    h.backend.behaviour("strat").resume_error = "boom"
    h.backend.behaviour("gw").healthy = True
    await h.advance(sup, 1.1, passes=2)
    assert "resume() failed" in sup.status()["children"]["strat"]["last_exit"]
    assert len(h.backend.incarnations("strat")) >= 3


async def test_restart_intensity_exceeded_stops_children_and_escalates_once(h):
    sup = h.supervisor(child("a"), child("b"), intensity=1, period_secs=60)
    await sup.start()
    h.backend.crash("a")
    await h.advance(sup, 1.1)
    assert sup.child_state("a") is ChildState.RUNNING and not h.escalations
    h.backend.crash("a")
    await h.advance(sup, 1.1)
    assert sup.state is ComponentState.ESCALATED
    assert len(h.escalations) == 1 and "more than 1 restart(s) within 60s" in h.escalations[0]
    assert h.backend.live("a") is None and h.backend.live("b") is None
    assert sup.child_state("b") is ChildState.ESCALATED
    assert any(a[0] == "critical" for a in h.alerts)
    # escalated: nothing is restarted any more, no matter how long we wait
    await h.advance(sup, 100, passes=3)
    assert len(h.backend.incarnations("a")) == 2 and len(h.escalations) == 1
    health = await sup.check_health()
    assert not health.healthy and "escalated" in health.probes[0].detail


async def test_restarts_outside_the_window_do_not_escalate(h):
    sup = h.supervisor(child("a"), intensity=1, period_secs=10)
    await sup.start()
    for _ in range(4):
        h.backend.crash("a")
        await h.advance(sup, 11)
    assert sup.state is ComponentState.RUNNING and not h.escalations
    assert len(h.backend.incarnations("a")) == 5


async def test_escalation_can_keep_children_for_safe_mode(h):
    seen_alive: list[bool] = []
    sup = h.supervisor(child("a"), child("risk"), intensity=0, stop_children_on_escalate=False)
    sup._on_escalate = lambda reason: seen_alive.append(h.backend.live("risk") is not None)
    await sup.start()
    h.backend.crash("a")
    await h.advance(sup, 1.1)
    assert sup.state is ComponentState.ESCALATED and seen_alive == [True]
    assert sup.child_state("risk") is ChildState.RUNNING and h.backend.live("risk") is not None
    assert sup.child_state("a") is ChildState.ESCALATED
    # still probing for status, but a further death is recorded, not restarted
    h.backend.crash("risk")
    await h.advance(sup, 1.1)
    assert sup.child_state("risk") is ChildState.DEAD and len(h.backend.incarnations("risk")) == 1
    # an operator start() after SAFE MODE brings everything back fresh
    await sup.start()
    assert sup.state is ComponentState.RUNNING
    assert sup.child_state("a") is ChildState.RUNNING and sup.child_state("risk") is ChildState.RUNNING


async def test_failing_escalation_hook_does_not_crash_loop(h):
    sup = h.supervisor(child("a"), intensity=0)

    def broken_hook(reason: str) -> None:
        raise RuntimeError("safe mode hook failed")

    sup._on_escalate = broken_hook
    await sup.start()
    h.backend.crash("a")
    await h.advance(sup, 1.1, passes=3)
    assert sup.state is ComponentState.ESCALATED
    assert len(h.backend.incarnations("a")) == 1


async def test_repeated_start_failures_back_off_exponentially_then_escalate(h):
    sup = h.supervisor(child("a", backoff=BackoffSpec(min_secs=1, max_secs=60, jitter=0)), intensity=4, period_secs=600)
    await sup.start()
    h.backend.behaviour("a").start_error = "exchange down"
    h.backend.crash("a")
    await h.advance(sup, 1.1)
    backoffs = [s for s in h.sleep.calls if s in (1, 2, 4, 8, 16)]
    assert backoffs == [1, 2, 4, 8]
    assert sup.state is ComponentState.ESCALATED and "exchange down" in h.escalations[0]


async def test_temporary_child_is_not_restarted(h):
    sup = h.supervisor(child("a", restart=RestartType.TEMPORARY), child("b"))
    await sup.start()
    h.backend.crash("a")
    await h.advance(sup, 1.1, passes=3)
    assert sup.child_state("a") is ChildState.STOPPED
    assert len(h.backend.incarnations("a")) == 1
    report = await sup.check_health()
    assert [p.name for p in report.failing()] == ["child:a"]


async def test_transient_child_restarted_after_crash_not_after_clean_exit(h):
    sup = h.supervisor(child("a", restart=RestartType.TRANSIENT))
    await sup.start()
    h.backend.crash("a")
    await h.advance(sup, 1.1)
    assert len(h.backend.incarnations("a")) == 2
    h.backend.crash("a", intended=True)
    await h.advance(sup, 1.1, passes=2)
    assert sup.child_state("a") is ChildState.STOPPED
    assert len(h.backend.incarnations("a")) == 2


async def test_restart_child_brings_a_fresh_incarnation_through_the_gate(h):
    sup = h.supervisor(child("a"), child("b"))
    await sup.start()
    old = sup.child_handle("a")
    await sup.restart_child("a")
    assert not old.alive and "stop" in old.obj.events
    assert sup.child_state("a") is ChildState.RUNNING and sup.child_handle("a") is not old
    assert sup.status()["children"]["a"]["restarts"] == 1


async def test_restart_child_refuses_naming_the_failing_probe(h):
    sup = h.supervisor(child("a", startup_timeout_secs=3))
    await sup.start()
    h.backend.behaviour("a").healthy = False
    with pytest.raises(RestartRefused, match="probe 'fills_flowing' failing: no fills for 30s"):
        await sup.restart_child("a")
    assert sup.child_state("a") in (ChildState.UNHEALTHY, ChildState.BACKOFF, ChildState.STARTING, ChildState.PROBING)
    # supervision goes on: once the probes pass, the policy brings it back
    h.backend.behaviour("a").healthy = True
    await sup.settle()
    assert sup.child_state("a") is ChildState.RUNNING


async def test_restart_child_errors(h):
    sup = h.supervisor(child("a"))
    with pytest.raises(UnknownChild):
        await sup.restart_child("zz")
    with pytest.raises(SupervisorStateError, match="needs a running supervisor"):
        await sup.restart_child("a")


async def test_adopt_keeps_live_children_and_recreates_missing_ones(h):
    first = h.supervisor(child("a"), child("b"), child("c", start_paused=True))
    await first.start()
    a_handle, c_handle = first.child_handle("a"), first.child_handle("c")
    h.backend.crash("b")  # died while no supervisor was watching
    # the supervisor itself restarts: a fresh object over the same actors
    second = h.supervisor(child("a"), child("b"), child("c", start_paused=True))
    outcome = await second.adopt()
    assert outcome == {"a": "adopted", "b": "created", "c": "adopted"}
    assert second.child_handle("a") is a_handle
    assert len(h.backend.incarnations("a")) == 1 and len(h.backend.incarnations("b")) == 2
    # an adopted paused-type child is paused again and goes through the release gate
    assert c_handle.obj.events[-1] == "pause" and second.child_state("c") is ChildState.PAUSED
    await h.advance(second, 1.1)
    assert second.child_state("c") is ChildState.RUNNING and c_handle.obj.events[-1] == "resume"


async def test_adopt_restarts_an_unanswering_child(h):
    first = h.supervisor(child("a"))
    await first.start()
    old = first.child_handle("a")
    h.backend.behaviour("a").probe_hang = True
    second = h.supervisor(child("a"))
    assert await second.adopt() == {"a": "restarting"}
    h.backend.behaviour("a").probe_hang = False
    await second.settle()
    assert not old.alive and second.child_state("a") is ChildState.RUNNING


async def test_status_reports_each_child(h):
    sup = h.supervisor(child("a"), child("b"))
    await sup.start()
    h.backend.behaviour("b").healthy = False
    await h.advance(sup, 1.1)
    status = sup.status()
    assert status["id"] == "root" and status["state"] == "running" and status["strategy"] == "one_for_one"
    b = status["children"]["b"]
    assert b["state"] == "running" and b["consecutive_failures"] == 1
    assert b["failing_probes"] == [{"name": "fills_flowing", "ok": False, "detail": "no fills for 30s", "liveness": True}]
    assert b["last_probe"]["component"] == "b"
    assert status["children"]["a"]["failing_probes"] == []


async def test_monitor_loop_runs_on_its_own(h):
    """The real loop (run_monitor=True) restarts a dead child without manual ticks."""
    spec = SupervisorSpec(id="root", children=(child("a", probe_period_secs=0.02),))
    sup = Supervisor(spec, h.backend, clock=h.clock, sleep=h.sleep, seed=1)
    await sup.start()
    h.backend.crash("a")
    for _ in range(500):
        await asyncio.sleep(0)
        if len(h.backend.incarnations("a")) == 2 and sup.child_state("a") is ChildState.RUNNING:
            break
    assert len(h.backend.incarnations("a")) == 2 and sup.child_state("a") is ChildState.RUNNING
    await sup.stop()
    assert sup.state is ComponentState.STOPPED


# -- nested supervisors ---------------------------------------------------------------


def tree(h: Harness, **root_kw) -> Supervisor:
    venue = SupervisorSpec(id="venue", intensity=1, period_secs=60, probe_timeout_secs=1.0,
                           children=(child("gw"), child("rec")))
    strategies = SupervisorSpec(
        id="strategies", probe_timeout_secs=1.0,
        children=(child("mr", start_paused=True, release_after=("gw", "rec")),),
    )
    return h.supervisor(venue, strategies, **root_kw)


async def test_release_after_across_supervisors(h):
    root = tree(h)
    await root.start()
    strategies = h.backend.supervisors["strategies"]
    assert strategies.child_state("mr") is ChildState.RUNNING
    venue = h.backend.supervisors["venue"]
    h.backend.behaviour("rec").healthy = False
    await h.advance(venue, 1.1)
    h.backend.crash("mr")
    await h.advance(strategies, 1.1, passes=3)
    assert strategies.child_state("mr") is ChildState.PAUSED
    h.backend.behaviour("rec").healthy = True
    await h.advance(venue, 1.1)
    await h.advance(strategies, 1.1)
    assert strategies.child_state("mr") is ChildState.RUNNING


async def test_a_nested_supervisor_with_a_child_down_is_not_restarted_by_its_parent(h):
    root = tree(h)
    await root.start()
    venue = h.backend.supervisors["venue"]
    h.backend.behaviour("gw").healthy = False
    await h.advance(venue, 1.1)
    await h.advance(root, 1.1, passes=4)
    assert len(h.backend.incarnations("venue")) == 1
    assert root.status()["children"]["venue"]["consecutive_failures"] == 0
    assert not (await root.check_health()).healthy


async def test_nested_escalation_is_handled_by_the_parent(h):
    root = tree(h)
    await root.start()
    venue = h.backend.supervisors["venue"]
    for _ in range(2):
        h.backend.crash("gw")
        await h.advance(venue, 1.1)
    assert venue.state is ComponentState.ESCALATED
    assert h.backend.live("venue") is None and h.backend.live("gw") is None and h.backend.live("rec") is None
    await h.advance(root, 1.1)
    assert root.child_state("venue") is ChildState.RUNNING
    assert len(h.backend.incarnations("venue")) == 2
    new_venue = h.backend.supervisors["venue"]
    assert new_venue is not venue and new_venue.child_state("gw") is ChildState.RUNNING
    assert not h.escalations  # the root absorbed it


async def test_heartbeats_from_the_redis_store(h, fake_redis, namespace):
    """The real store is a HeartbeatSource: a child whose heartbeat stops is restarted."""
    from tradetree.core.store import RedisStore

    store = RedisStore(fake_redis, namespace)
    sup = h.supervisor(child("gw", heartbeat_key="gateway:okx", heartbeat_stale_secs=5), store=store)
    await sup.start()
    await store.heartbeat("gateway:okx", h.clock.now_ms())
    await h.advance(sup, 3.0)
    await store.heartbeat("gateway:okx", h.clock.now_ms())
    await h.advance(sup, 3.0)
    assert len(h.backend.incarnations("gw")) == 1 and sup.status()["heartbeat_error"] is None
    await h.advance(sup, 3.0)  # last beat is now 6s old
    assert len(h.backend.incarnations("gw")) == 2
    assert "heartbeat 'gateway:okx'" in sup.status()["children"]["gw"]["last_exit"]


async def test_failing_readiness_gates_release_but_never_restarts(h):
    """A reconciler that sees the venue's fills stop is doing its job: restarting it would switch
    off the layer that catches them. Its readiness probe holds strategies paused instead."""
    sup = h.supervisor(child("rec", probe_failures_to_restart=2),
                       child("strat", start_paused=True, release_after=("rec",)))
    h.backend.behaviour("rec").ready = False
    await sup.start()  # liveness passes: the reconciler is put to work
    assert sup.child_state("rec") is ChildState.RUNNING
    await h.advance(sup, 1.1, passes=6)
    assert len(h.backend.incarnations("rec")) == 1
    assert sup.child_state("strat") is ChildState.PAUSED
    assert "resume" not in h.backend.child("strat").events
    assert "venue REST failing" in sup.status()["children"]["rec"]["failing_probes"][0]["detail"]
    h.backend.behaviour("rec").ready = True
    await h.advance(sup, 1.1, passes=2)
    assert sup.child_state("strat") is ChildState.RUNNING


async def test_a_redis_outage_holds_children_instead_of_restarting_them(h):
    """While a child's store probe fails, whatever fails with it is presumed its consequence: no
    restart (a restart cannot bring Redis back), however long the outage. After it, the usual rules."""
    sup = h.supervisor(child("a", probe_failures_to_restart=2))
    await sup.start()
    h.backend.behaviour("a").store_down = True
    await h.advance(sup, 1.1, passes=6)
    assert len(h.backend.incarnations("a")) == 1 and sup.child_state("a") is ChildState.RUNNING
    report = await h.backend.child("a").check_health()
    assert {p.name for p in report.failing()} == {"store", "fills_flowing"}
    h.backend.behaviour("a").store_down = False
    h.backend.behaviour("a").healthy = False  # Redis is back; now a real liveness failure restarts it
    await h.advance(sup, 1.1, passes=2)
    assert len(h.backend.incarnations("a")) >= 2


async def test_heartbeats_missed_during_an_outage_count_from_when_redis_returned(h):
    beats = FakeHeartbeats()
    beats.beats["gateway:a"] = lambda: h.clock.now_ms()
    sup = h.supervisor(child("a", heartbeat_key="gateway:a", heartbeat_stale_secs=5), store=beats)
    await sup.start()
    await h.advance(sup, 1.0, passes=2)
    frozen = h.clock.now_ms()
    beats.beats["gateway:a"] = frozen  # Redis goes down: the child cannot write, we cannot read
    beats.error = StoreUnavailable("redis down")
    await h.advance(sup, 1.0, passes=20)
    beats.error = None  # back: the last beat is 20 s old, but nobody could have written one
    await h.advance(sup, 1.0, passes=4)
    assert len(h.backend.incarnations("a")) == 1
    await h.advance(sup, 1.0, passes=4)  # still no beat 8 s after Redis returned: hung
    assert len(h.backend.incarnations("a")) == 2
    assert sup.status()["children"]["a"]["last_exit"].startswith("hung: heartbeat 'gateway:a'")

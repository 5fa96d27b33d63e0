"""Supervision on a real Ray: kill a child, watch the gate, exceed intensity.

Few and quick: each test builds a tiny tree under unique actor names and
removes it afterwards (the actors are detached).
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.supervisor.ray_children import write_marker
from tradetree.supervisor.spec import BackoffSpec, ChildSpec, SupervisorSpec
from tradetree.supervisor.supervisor import launch_supervisor

pytestmark = pytest.mark.integration

WORKER = "tests.supervisor.ray_children:Worker"


def worker(name: str, control_dir: str, **kw: Any) -> ChildSpec:
    return ChildSpec(
        id=name,
        actor_class=WORKER,
        args=(name, control_dir),
        probe_period_secs=0.1,
        probe_timeout_secs=5.0,
        startup_timeout_secs=60.0,
        backoff=BackoffSpec(min_secs=0.05, max_secs=0.5),
        **kw,
    )


async def wait_until(what: str, check: Callable[[], Any], timeout_secs: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_secs
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


async def _cleanup(ray: Any, root: Any, names: list[str]) -> None:
    try:
        await asyncio.wait_for(root.stop.remote(), timeout=30)
    except Exception:
        pass
    for name in names:
        try:
            ray.kill(ray.get_actor(name))
        except ValueError:
            pass


async def test_killed_child_restarted_only_after_probes_pass_while_sibling_works(ray_session, tmp_path):
    ray = ray_session
    suffix = uuid.uuid4().hex[:6]
    root_id, steady, flaky = f"root-{suffix}", f"steady-{suffix}", f"flaky-{suffix}"
    spec = SupervisorSpec(
        id=root_id,
        intensity=5,
        period_secs=60,
        children=(
            worker(steady, str(tmp_path)),
            worker(flaky, str(tmp_path), start_paused=True, release_after=(steady,), kwargs={"start_paused": True}),
        ),
    )
    root = await launch_supervisor(spec, seed=1)
    try:
        status = await root.status.remote()
        assert {c["state"] for c in status["children"].values()} == {"running"}
        steady_handle = ray.get_actor(steady)
        old_flaky = ray.get_actor(flaky)

        (tmp_path / f"{flaky}.unhealthy").touch()  # fresh incarnations will fail their probes
        count_before = await steady_handle.work_count.remote()
        ray.kill(old_flaky)

        async def probing() -> bool:
            child = (await root.status.remote())["children"][flaky]
            return child["state"] == "probing" and child["restarts"] >= 1

        await wait_until("the restarted child to sit in the probe gate", probing)
        new_flaky = ray.get_actor(flaky)
        assert new_flaky._actor_id != old_flaky._actor_id
        await wait_until("a failed probe", lambda: _has(new_flaky, "probe:fail"))
        events = await new_flaky.events.remote()
        assert "pause" in events and "resume" not in events  # not put back to work
        assert (await new_flaky.work_count.remote()) == 0

        # the sibling was never touched and kept working meanwhile
        assert ray.get_actor(steady)._actor_id == steady_handle._actor_id
        await wait_until("the sibling to keep working",
                         lambda: _grew(steady_handle, count_before))
        assert (await root.status.remote())["children"][steady]["state"] == "running"

        (tmp_path / f"{flaky}.unhealthy").unlink()

        async def running() -> bool:
            return (await root.status.remote())["children"][flaky]["state"] == "running"

        await wait_until("the child to pass its probes and be released", running)
        events = await new_flaky.events.remote()
        assert events.index("resume") > events.index("probe:ok") > events.index("probe:fail")
        assert (await root.check_health.remote()).healthy
    finally:
        await _cleanup(ray, root, [flaky, steady, root_id])


async def test_too_many_restarts_call_the_escalation_hook(ray_session, tmp_path):
    ray = ray_session
    suffix = uuid.uuid4().hex[:6]
    root_id, child_id = f"root-{suffix}", f"crashy-{suffix}"
    marker = tmp_path / "escalated.txt"
    spec = SupervisorSpec(id=root_id, intensity=1, period_secs=60, children=(worker(child_id, str(tmp_path)),))
    root = await launch_supervisor(spec, seed=2, on_escalate=functools.partial(write_marker, str(marker)))
    try:
        first = ray.get_actor(child_id)
        ray.kill(first)

        async def restarted() -> bool:
            child = (await root.status.remote())["children"][child_id]
            return child["state"] == "running" and child["restarts"] == 1

        await wait_until("the first restart", restarted)
        ray.kill(ray.get_actor(child_id))

        async def escalated() -> bool:
            return marker.exists()

        await wait_until("the escalation hook", escalated)
        assert "more than 1 restart(s) within 60s" in marker.read_text()
        status = await root.status.remote()
        assert status["state"] == "escalated"
        with pytest.raises(ValueError):
            ray.get_actor(child_id)  # children stopped, nothing restarted
        await asyncio.sleep(0.5)
        assert (await root.status.remote())["children"][child_id]["restarts"] == 1  # no crash loop
    finally:
        await _cleanup(ray, root, [child_id, root_id])


async def _has(handle: Any, event: str) -> bool:
    return event in await handle.events.remote()


async def _grew(handle: Any, before: int) -> bool:
    return (await handle.work_count.remote()) > before


async def test_nested_supervisors_release_across_the_tree_and_absorb_an_escalation(ray_session, tmp_path):
    ray = ray_session
    s = uuid.uuid4().hex[:6]
    root_id, venue_id, strats_id = f"root-{s}", f"venue-{s}", f"strategies-{s}"
    gw, strat = f"gw-{s}", f"strat-{s}"
    nested = dict(probe_period_secs=0.1, probe_timeout_secs=5.0, startup_timeout_secs=60.0,
                  backoff=BackoffSpec(min_secs=0.05, max_secs=0.5))
    spec = SupervisorSpec(
        id=root_id,
        intensity=3,
        period_secs=60,
        children=(
            SupervisorSpec(id=venue_id, intensity=1, period_secs=60, children=(worker(gw, str(tmp_path)),), **nested),
            SupervisorSpec(
                id=strats_id,
                children=(worker(strat, str(tmp_path), start_paused=True, release_after=(gw,),
                                 kwargs={"start_paused": True}),),
                **nested,
            ),
        ),
    )
    root = await launch_supervisor(spec, seed=3)
    names = [strat, gw, strats_id, venue_id, root_id]
    try:
        strategies = ray.get_actor(strats_id)
        status = await strategies.status.remote()
        assert status["children"][strat]["state"] == "running"  # released: gw is green in another subtree
        assert (await ray.get_actor(strat).events.remote())[-1] == "resume"
        old_venue = ray.get_actor(venue_id)

        ray.kill(ray.get_actor(gw))

        async def gw_restarted() -> bool:
            child = (await old_venue.status.remote())["children"][gw]
            return child["state"] == "running" and child["restarts"] == 1

        await wait_until("the venue supervisor to restart its gateway", gw_restarted)
        ray.kill(ray.get_actor(gw))  # over the venue's intensity: it stops gw and exits

        async def venue_replaced() -> bool:
            child = (await root.status.remote())["children"][venue_id]
            return child["state"] == "running" and child["restarts"] == 1

        await wait_until("the root to restart the escalated venue supervisor", venue_replaced)
        new_venue = ray.get_actor(venue_id)
        assert new_venue._actor_id != old_venue._actor_id
        assert (await new_venue.status.remote())["children"][gw]["state"] == "running"
        assert (await root.status.remote())["state"] == "running"
        assert ray.get_actor(strats_id)._actor_id == strategies._actor_id  # the sibling subtree untouched
    finally:
        await _cleanup(ray, root, names)

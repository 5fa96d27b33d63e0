"""A start that does not finish, in time or at all, never leaves a live, half-started tree behind.

The strategy supervisor is replaced by an actor whose start never returns (or fails), so the
tree's start stops after the venue's gateway is up; meanwhile an order rests at the venue. When
this process's bound on the start runs out, or when the root gives up on the child, what started
is paused and its orders canceled before the tree is torn down, and the error says so.
"""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from pathlib import Path

import pytest
import ray

from tests.scenarios.harness import Tree, allow_direct, scenario_config
from tradetree.core import STRATEGY_SUPERVISOR_ID, HealthReport, TradetreeError, gateway_id
from tradetree.runner import EngineRuntime
from tradetree.supervisor import ChildSpec

pytestmark = pytest.mark.integration


class HangingStart:
    """Stands in for the strategy supervisor: its start never returns (a child stuck coming up)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    async def start(self, adopt: bool = False) -> None:
        await asyncio.sleep(3600)

    async def stop(self) -> None:
        pass

    async def check_health(self) -> HealthReport:
        return HealthReport(component=STRATEGY_SUPERVISOR_ID, ts_ms=0, probes=())


class FailingStart(HangingStart):
    """Stands in for the strategy supervisor: its start fails once the test has an order resting."""

    def __init__(self, flag: str, *args, **kwargs) -> None:
        self.flag = Path(flag)

    async def start(self, adopt: bool = False) -> None:
        while not self.flag.exists():
            await asyncio.sleep(0.2)
        raise RuntimeError("a strategy host could not start")


def _hanging_strategies(build, flag: Path | None = None):
    def build_root_spec(*args, **kwargs):
        spec = build(*args, **kwargs)
        hang = ChildSpec(id=STRATEGY_SUPERVISOR_ID, actor_class=f"{__name__}:HangingStart", startup_timeout_secs=900)
        if flag is not None:
            hang = ChildSpec(id=STRATEGY_SUPERVISOR_ID, actor_class=f"{__name__}:FailingStart", args=(str(flag),),
                             startup_timeout_secs=900)
        children = tuple(hang if c.id == STRATEGY_SUPERVISOR_ID else c for c in spec.children)
        return spec.model_copy(update={"children": children, "startup_timeout_secs": 1800})

    return build_root_spec


def _start_with_an_order_resting(ray_session, redis_url, namespace, tmp_path, monkeypatch, *, flag, timeout):
    import tradetree.tree as tree_module
    from tradetree.core.types import OrderIntent, OrderType, Side

    monkeypatch.setattr(tree_module, "build_root_spec", _hanging_strategies(tree_module.build_root_spec, flag))
    config = scenario_config(redis_url, namespace).model_copy(update={"state_dir": tmp_path / "state"})
    runtime = EngineRuntime(config, include_dashboard=False, start_timeout_secs=timeout)
    failure: list[BaseException] = []

    def start() -> None:
        try:
            runtime.start()
        except BaseException as exc:  # what the test checks
            failure.append(exc)

    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    tree = Tree(runtime)
    gateway = tree.wait_for(lambda: ray.get_actor(gateway_id("okx"), namespace=runtime.ray_namespace), 80,
                            "the gateway created")
    tree.wait_for(lambda: ray.get(gateway.check_health.remote(), timeout=10).live, 80, "the gateway up")
    with tree.sim.lock:
        price = (tree.sim.engine.mark_price("BTC-USDT-SWAP") * Decimal("0.5")).quantize(Decimal("0.1"))
    allow_direct(tree, "resting_probe")
    ray.get(gateway.submit_order.remote(OrderIntent(
        strategy_id="resting_probe", venue="okx", inst_id="BTC-USDT-SWAP", side=Side.BUY, type=OrderType.LIMIT,
        size=Decimal("1"), price=price, reason="rests at the venue while the start hangs")), timeout=30)
    with tree.sim.lock:
        assert len(tree.sim.engine.open_orders()) == 1
    if flag is not None:
        flag.write_text("order resting")
    starter.join(300)
    assert not starter.is_alive(), "start() never returned"
    assert failure and isinstance(failure[0], TradetreeError), failure
    with tree.sim.lock:
        assert tree.sim.engine.open_orders() == []  # canceled at the venue, not just forgotten
    with pytest.raises(ValueError):
        ray.get_actor(gateway_id("okx"), namespace=runtime.ray_namespace)  # and then torn down
    return str(failure[0])


def test_a_start_that_times_out_pauses_and_cancels_before_it_tears_down(ray_session, redis_url, namespace, tmp_path,
                                                                         monkeypatch):
    message = _start_with_an_order_resting(ray_session, redis_url, namespace, tmp_path, monkeypatch, flag=None,
                                           timeout=60.0)
    assert "started in part" in message and "1 open order(s) canceled" in message, message


def test_a_child_that_fails_to_start_gets_its_orders_canceled_before_the_root_unwinds(
        ray_session, redis_url, namespace, tmp_path, monkeypatch):
    message = _start_with_an_order_resting(ray_session, redis_url, namespace, tmp_path, monkeypatch,
                                           flag=tmp_path / "order-resting", timeout=None)
    assert "a strategy host could not start" in message, message
    assert "before that: strategies paused and 1 open order(s) canceled" in message, message
    assert "started in part" not in message, "the root undid it already; the runner has nothing to add"

"""The Ray port of the kill switch: errors arrive as ``core.errors`` (stand-in actors, and without Ray)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest

from tradetree.actors.kill_switch_ray import PORT_CALL_TIMEOUT_SECS, RayVenuePort
from tradetree.core.errors import OrderRejected, VenueUnavailable
from tradetree.core.names import gateway_id
from tradetree.core.types import Order, OrderIntent, Side
from tradetree.risk.kill_switch import KillSwitchConfig
from tradetree.supervisor.actor_client import ActorClient


class _Gateway:
    def __init__(self, fail_cancel: bool) -> None:
        self.fail_cancel = fail_cancel

    async def cancel_all(self, strategy_id=None) -> int:
        if self.fail_cancel:
            raise VenueUnavailable("okx answered 503", venue="okx", code="50001")
        return 2 if strategy_id is None else 1

    async def submit_account_order(self, intent: OrderIntent) -> Order:  # the kill switch's entry
        if intent.size > 5:
            raise OrderRejected("size too large", venue=intent.venue, code="51008")
        return Order.from_intent(intent, now_ms=1, client_order_id="c1")


@pytest.mark.integration
async def test_ray_ports_translate_errors_and_find_actors_by_name(ray_session):
    ray = ray_session
    tag = uuid.uuid4().hex[:6]
    ok_venue, bad_venue, gone_venue = f"ok{tag}", f"bad{tag}", f"gone{tag}"
    gateway = ray.remote(num_cpus=0)(_Gateway)
    actors = [
        gateway.options(name=gateway_id(ok_venue)).remote(False),
        gateway.options(name="custom-name-" + tag).remote(True),
    ]
    try:
        port = RayVenuePort({ok_venue: gateway_id(ok_venue), bad_venue: "custom-name-" + tag})
        assert port.venues() == tuple(sorted((ok_venue, bad_venue)))
        assert await port.cancel_all(ok_venue) == 2 and await port.cancel_all(ok_venue, "A") == 1
        intent = OrderIntent(strategy_id="A", venue=ok_venue, inst_id="BTC-USDT-SWAP", side=Side.SELL,
                             size=Decimal(1), reduce_only=True)
        assert (await port.submit_order(intent)).client_order_id == "c1"

        with pytest.raises(VenueUnavailable) as err:
            await port.cancel_all(bad_venue)
        assert type(err.value) is VenueUnavailable and err.value.code == "50001"
        with pytest.raises(OrderRejected):
            await port.submit_order(intent.model_copy(update={"size": Decimal(9)}))
        with pytest.raises(VenueUnavailable, match="not found"):
            await port.cancel_all(gone_venue)
    finally:
        for a in actors:
            ray.kill(a)


class _Hung:
    """A handle whose every method answers never (a hung actor)."""

    def __getattr__(self, method: str):
        return self

    def remote(self, *args):
        return asyncio.Event().wait()


async def test_ports_call_through_the_actor_client_and_keep_the_executor_contract():
    looked_up: list[tuple[str, str | None]] = []

    def lookup(name: str, namespace: str | None):
        looked_up.append((name, namespace))
        if name.startswith("missing"):
            raise ValueError(f"Failed to look up actor with name '{name}'")
        return _Hung()

    port = RayVenuePort(["okx"], client=ActorClient("ns", timeout_secs=0.05, lookup=lookup))
    with pytest.raises(VenueUnavailable, match=r"VenueGateway\[okx\].cancel_all: CallTimeout") as err:
        await port.cancel_all("okx")
    assert err.value.venue == "okx" and looked_up == [(gateway_id("okx"), "ns")]
    with pytest.raises(VenueUnavailable, match="actor missing_gw not found"):
        await RayVenuePort({"x": "missing_gw"}, client=ActorClient("ns", timeout_secs=0.05, lookup=lookup)).cancel_all("x")
    # The backstop never cuts a call before the executor's own default step timeout does.
    assert PORT_CALL_TIMEOUT_SECS > KillSwitchConfig.model_fields["call_timeout_secs"].default

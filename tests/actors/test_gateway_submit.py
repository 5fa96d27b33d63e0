"""The gateway's submit path on fakeredis with a scripted REST client: what each answer to a
placement does to the recorded order."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.actors.offline_gateway import SWAP, offline_gateway
from tradetree.core.errors import OrderRejected, VenueAuthError, VenueProtocolError, VenueUnavailable
from tradetree.core.types import Order, OrderIntent, OrderState, Side, StrategyState


class ScriptedRest:
    """Answers every placement with ``answer`` (returned when a str, raised otherwise); a lookup fails."""

    def __init__(self) -> None:
        self.answer: str | Exception = "123"
        self.sent: list[str] = []  # client order ids, in the order the venue got them

    async def create_order(self, order: Order) -> str:
        self.sent.append(order.client_order_id)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def fetch_order(self, order: Order):
        raise VenueUnavailable("lookup: 503")


@pytest.fixture
async def gateway(fake_redis, namespace):
    gw, _ = offline_gateway(fake_redis, namespace, rest=ScriptedRest())
    await gw._store.set_strategy_state("s1", StrategyState.RUNNING)  # else the gateway's gate refuses its orders
    yield gw
    await gw._fanout.close()


def intent(inst_id: str = SWAP.inst_id) -> OrderIntent:
    return OrderIntent(strategy_id="s1", venue="okx", inst_id=inst_id, side=Side.BUY, size=Decimal(1))


@pytest.mark.parametrize(("answer", "state", "reason"), [
    ("123", OrderState.LIVE, None),
    (OrderRejected("no margin"), OrderState.REJECTED, "no margin"),
    (VenueUnavailable("503"), OrderState.PENDING_NEW, None),  # unknown, and the lookup failed too
    (VenueProtocolError("garbled ack"), OrderState.PENDING_NEW, None),
])
async def test_the_answer_to_a_placement_decides_the_recorded_order(gateway, answer, state, reason):
    gateway._rest.answer = answer
    order = await gateway.submit_order(intent())
    stored = await gateway._store.get_order(order.client_order_id)
    assert order.state is state and stored.state is state
    assert gateway._rest.sent == [order.client_order_id]
    if reason is not None:
        assert reason in stored.reject_reason
    if state is OrderState.LIVE:
        assert stored.venue_order_id == "123"


async def test_refused_credentials_reject_the_order_and_raise(gateway):
    gateway._rest.answer = VenueAuthError("bad key")
    with pytest.raises(VenueAuthError):
        await gateway.submit_order(intent())
    (coid,) = gateway._rest.sent
    stored = await gateway._store.get_order(coid)
    assert stored.state is OrderState.REJECTED and "credentials rejected" in stored.reject_reason


async def test_an_unlisted_instrument_is_rejected_without_sending(gateway):
    order = await gateway.submit_order(intent("DOGE-USDT-SWAP"))
    assert order.state is OrderState.REJECTED and "not listed" in order.reject_reason
    assert gateway._rest.sent == []


async def test_an_order_the_poller_moves_on_during_the_ack_is_returned_as_stored(gateway, monkeypatch):
    # The poller records the order FILLED (at the same moment) between the ack's read of the stored
    # order and its update: the store refuses PENDING_NEW's LIVE, and the order is live at the venue,
    # so submit_order returns what the store holds instead of raising.
    store = gateway._store
    read = store.get_order
    moved = []

    async def get_order(coid):
        order = await read(coid)
        if not moved and order is not None and order.state is OrderState.PENDING_NEW:
            moved.append(await store.update_order(order.transition(
                OrderState.FILLED, now_ms=gateway._clock.now_ms(), venue_order_id="123", filled_size=Decimal(1))))
        return order

    monkeypatch.setattr(store, "get_order", get_order)
    order = await gateway.submit_order(intent())
    assert moved, "the poller's update never ran"
    assert order.state is OrderState.FILLED and order.venue_order_id == "123"
    assert (await read(order.client_order_id)).state is OrderState.FILLED

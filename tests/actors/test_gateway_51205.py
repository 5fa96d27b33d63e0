"""A close the venue refuses with 51205 although it is valid: retried once without the flag.

Against the simulator over loopback and a real Redis. The race is the one the
gateway's send lock cannot close: an order sent outside it (here the
reconciler's canary, recorded in Redis and placed on the same account the way
``actors.reconciler_canary`` does) moves the venue's net between the moment the
gateway decided to send ``reduceOnly`` and the moment the close arrives.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.actors.offline_gateway import offline_gateway
from tests.actors.test_gateway_sim import make_gateway
from tests.actors.test_gateway_venue_reduce_only import hold
from tests.adapters.sim_helpers import eventually
from tradetree.actors.gateway import VenueGateway
from tradetree.core.errors import OrderRejected, StoreUnavailable, VenueUnavailable
from tradetree.core.store import RedisStore
from tradetree.core.types import Order, OrderDenied, OrderIntent, OrderState, Side, StrategyState
from tradetree.execution import CANARY_STRATEGY_ID
from tradetree.risk.rules import RejectionStreak

SWAP = "BTC-USDT-SWAP"


def intent(strategy: str, side: Side, size: str, *, reduce_only: bool = False) -> OrderIntent:
    return OrderIntent(strategy_id=strategy, venue="okx", inst_id=SWAP, side=side, size=Decimal(size),
                       reduce_only=reduce_only, reason="test")


class Alerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, str]] = []

    async def __call__(self, severity: str, key: str, title: str, text: str) -> None:
        self.sent.append((severity, key, title, text))


@pytest.fixture
async def store(real_redis, namespace):
    store = RedisStore(real_redis, namespace)
    await store.set_strategy_state("A", StrategyState.RUNNING)
    return store


@pytest.fixture
async def alerts():
    return Alerts()


@pytest.fixture
async def gateway(sim, redis_url, namespace, real_redis, store, alerts):
    gw = make_gateway(sim, redis_url, namespace, heartbeat_interval_secs=0.05, dead_man_switch_secs=0,
                      alert_sink=alerts)
    await gw.start()
    yield gw
    await gw.stop()


async def settled(store: RedisStore, order: Order) -> bool:
    now = await store.get_order(order.client_order_id)
    return (now is not None and now.state is OrderState.FILLED
            and await store.applied_size(order.client_order_id) == now.size)


def venue_net(sim) -> Decimal:
    return Decimal(sim.account_truth()["positions"].get(SWAP, "0"))


def canary_races_the_close(gateway, store, sim, *, then=None) -> list[Order]:
    """Before the first order the gateway places after this, a canary sell of 1 is recorded and placed
    (and filled: the simulator matches at once) on the same account, outside the gateway's send lock.
    ``then`` (if given) runs before every later placement. Returns what the gateway placed, in order."""
    rest = gateway._rest
    place = rest.create_order
    placed: list[Order] = []

    async def create_order(order: Order) -> str:
        if not placed:
            canary = Order.from_intent(intent(CANARY_STRATEGY_ID, Side.SELL, "1"), now_ms=gateway._clock.now_ms())
            assert await store.record_order(canary)
            await place(canary)
        elif then is not None:
            then()
        placed.append(order)
        return await place(order)

    rest.create_order = create_order
    return placed


async def streak_of(store: RedisStore, strategy: str) -> tuple[int, list[Order]]:
    """What the risk monitor's rejection breaker counts for ``strategy`` from the order events so far."""
    streak, rejected = RejectionStreak(limit=5), []
    for _, order in await store.order_events():
        streak.on_order(order)
        if order.state is OrderState.REJECTED and order.strategy_id == strategy:
            rejected.append(order)
    return streak.count(strategy), rejected


async def open_a(gateway, store, sim) -> None:
    opened = await gateway.submit_order(intent("A", Side.BUY, "1"))
    await eventually(lambda: settled(store, opened), what="A long 1")
    assert venue_net(sim) == 1


async def test_a_valid_close_refused_by_a_race_is_retried_once_without_the_flag(gateway, store, sim, alerts):
    await open_a(gateway, store, sim)
    placed = canary_races_the_close(gateway, store, sim)

    close = await gateway.submit_order(intent("A", Side.SELL, "1", reduce_only=True))

    assert not isinstance(close, OrderDenied)
    # Sent twice under one client order id: with the flag (refused), then without it.
    assert [(o.client_order_id, o.venue_reduce_only) for o in placed] == [
        (close.client_order_id, True), (close.client_order_id, False)]
    assert close.state in (OrderState.LIVE, OrderState.FILLED) and close.venue_reduce_only is False
    await eventually(lambda: settled(store, close), what="the retried close filled and applied")
    assert (await store.position("A", "okx", SWAP)).qty == 0
    assert venue_net(sim) == -1  # the canary's leg, still out: its way back closes it
    # One order at the venue for the close (the refused attempt never became one), filled.
    (at_venue,) = [o for o in sim.engine.order_history() if o.cl_ord_id == close.client_order_id]
    assert at_venue.state == "filled"

    assert gateway.counters["venue_reduce_only_retried"] == 1
    await eventually(lambda: len(alerts.sent) == 1, what="the alert")
    ((severity, key, title, text),) = alerts.sent
    assert severity == "warning" and key == "gateway:okx:reduce_only_refused:A" and "51205" in title
    assert close.client_order_id in text and "51205" in text and "0 at the venue" in text
    assert await streak_of(store, "A") == (0, [])  # the refusal was never recorded as a rejection

    back = await gateway.submit_account_order(intent(CANARY_STRATEGY_ID, Side.BUY, "1"))
    assert isinstance(back, OrderDenied)  # the canary is no strategy the kill switch winds down
    await store.set_strategy_state(CANARY_STRATEGY_ID, StrategyState.RUNNING)
    back = await gateway.submit_order(intent(CANARY_STRATEGY_ID, Side.BUY, "1", reduce_only=True))
    await eventually(lambda: settled(store, back), what="the canary's way back")
    assert venue_net(sim) == 0 and sum((p.qty for p in await store.positions()), Decimal(0)) == 0


async def test_a_retry_the_venue_refuses_too_is_an_ordinary_rejection(gateway, store, sim, alerts):
    await open_a(gateway, store, sim)
    placed = canary_races_the_close(gateway, store, sim, then=lambda: sim.faults.set_reject_orders(True))
    try:
        close = await gateway.submit_order(intent("A", Side.SELL, "1", reduce_only=True))
    finally:
        sim.faults.clear_all()

    assert [o.venue_reduce_only for o in placed] == [True, False]
    assert close.state is OrderState.REJECTED and "51008" in close.reject_reason
    stored = await store.get_order(close.client_order_id)
    assert stored.state is OrderState.REJECTED and stored.venue_reduce_only is False
    assert (await store.position("A", "okx", SWAP)).qty == 1  # still open: the caller goes on from there
    count, rejected = await streak_of(store, "A")
    assert count == 1 and [o.client_order_id for o in rejected] == [close.client_order_id]
    assert gateway.counters["venue_reduce_only_retried"] == 1
    await eventually(lambda: len(alerts.sent) == 1, what="the alert of the retry")


# -- the same path with a scripted venue (fakeredis) ------------------------------------------


class RefusingRest:
    """Answers every placement with 51205 while ``refusals`` last; reports the venue's net as ``net``."""

    def __init__(self, refusals: int, net: str = "1") -> None:
        self.refusals, self.net, self.sent = refusals, Decimal(net), []
        self.positions_error: Exception | None = None

    async def create_order(self, order: Order) -> str:
        self.sent.append((order.client_order_id, order.venue_reduce_only))
        if self.refusals:
            self.refusals -= 1
            raise OrderRejected(f"okx rejected order {order.client_order_id}: 51205 Reduce-Only is not available",
                                venue="okx", code="51205")
        return "9"

    async def fetch_positions(self) -> dict[str, Decimal]:
        if self.positions_error is not None:
            raise self.positions_error
        return {SWAP: self.net}


async def offline(fake_redis, namespace, rest, alerts) -> VenueGateway:
    gw, _ = offline_gateway(fake_redis, namespace, rest=rest)
    gw._alert_sink = alerts
    await gw._store.set_strategy_state("A", StrategyState.RUNNING)
    await hold(gw, "A", "1")
    return gw


async def test_a_second_51205_on_the_retry_is_one_ordinary_rejection(fake_redis, namespace, alerts):
    gw = await offline(fake_redis, namespace, RefusingRest(refusals=2), alerts)
    close = await gw.submit_order(intent("A", Side.SELL, "1", reduce_only=True))
    assert gw._rest.sent == [(close.client_order_id, True), (close.client_order_id, False)]
    assert close.state is OrderState.REJECTED and "51205" in close.reject_reason
    assert await streak_of(gw._store, "A") == (1, [close])
    assert gw.counters["venue_reduce_only_retried"] == 1
    await eventually(lambda: len(alerts.sent) == 1, what="the alert of the retry")


@pytest.mark.parametrize("venue", ["books disagree", "position unreadable", "flag not recordable"])
async def test_a_refusal_that_cannot_be_checked_or_explained_is_not_retried(fake_redis, namespace, alerts,
                                                                           monkeypatch, venue):
    rest = RefusingRest(refusals=1, net="0" if venue == "books disagree" else "1")
    gw = await offline(fake_redis, namespace, rest, alerts)
    if venue == "position unreadable":
        rest.positions_error = VenueUnavailable("positions: 503")
    if venue == "flag not recordable":
        real = gw._store.update_order

        async def update_order(order):
            if order.state is OrderState.PENDING_NEW:
                raise StoreUnavailable("redis: connection refused")
            return await real(order)

        monkeypatch.setattr(gw._store, "update_order", update_order)
    close = await gw.submit_order(intent("A", Side.SELL, "1", reduce_only=True))
    assert rest.sent == [(close.client_order_id, True)]  # never sent without the flag
    assert close.state is OrderState.REJECTED and "51205" in close.reject_reason
    assert close.venue_reduce_only is True
    assert gw.counters["venue_reduce_only_retried"] == 0 and alerts.sent == []


async def test_account_level_orders_are_never_retried(fake_redis, namespace, alerts):
    gw = await offline(fake_redis, namespace, RefusingRest(refusals=1), alerts)
    await gw._store.set_strategy_state("A", StrategyState.WINDING_DOWN)
    clip = await gw.submit_account_order(intent("A", Side.SELL, "1", reduce_only=True))
    assert gw._rest.sent == [(clip.client_order_id, True)]  # the kill switch sized it; it re-plans
    assert clip.state is OrderState.REJECTED and gw.counters["venue_reduce_only_refusals_kept"] == 0

"""FillReconciler on fakeredis with a scripted venue and a ManualClock: the thin loop's own duties."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from pydantic import SecretStr

from tests.adapters.sim_helpers import eventually
from tradetree.actors.alerter import AlerterClient
from tradetree.actors.reconciler import FillReconciler
from tradetree.actors.reconciler_context import ReconcilerContext
from tradetree.adapters.okx.reports import VenueOrderReport
from tradetree.core.clock import ManualClock, WallClock
from tradetree.core.config import VenueConfig, VenueCredentials
from tradetree.core.control_state import ControlState
from tradetree.core.errors import CallTimeout, OrderNotFound, VenueUnavailable
from tradetree.core.lifecycle import ComponentState
from tradetree.core.names import ALERTER_ID
from tradetree.core.store import RedisStore
from tradetree.core.types import Fill, FillLayer, Instrument, InstrumentKind, Order, OrderState, OrderType, Side
from tradetree.execution.reconciliation import ReconcilerConfig
from tradetree.supervisor.actor_client import ActorClient

SWAP = Instrument(venue="okx", inst_id="BTC-USDT-SWAP", kind=InstrumentKind.SWAP, base="BTC", quote="USDT",
                  settle="USDT", contract_value=Decimal("0.01"), tick_size=Decimal("0.1"),
                  lot_size=Decimal("0.01"), min_size=Decimal("0.01"))
CONFIG = ReconcilerConfig(poll_interval_secs=2.0, cursor_overlap_secs=1.0, fill_gap_alert_secs=5.0)


class ScriptedVenue:
    """The reconciler's REST surface, answering from lists the test fills in."""

    def __init__(self) -> None:
        self.fills: list[Fill] = []
        self.reports: dict[str, VenueOrderReport] = {}
        self.positions: dict[str, Decimal] = {}
        self.broken: set[str] = set()
        self.fill_queries: list[tuple[str, int | None, FillLayer]] = []

    async def load_instruments(self):
        return [SWAP]

    async def fetch_order(self, order):
        if "order" in self.broken:
            raise VenueUnavailable("order endpoint down", venue="okx")
        if order.client_order_id not in self.reports:
            raise OrderNotFound("unknown", venue="okx")
        return self.reports[order.client_order_id]

    async def fetch_fills(self, inst_id, since_ms=None, layer=FillLayer.POLL):
        self.fill_queries.append((inst_id, since_ms, layer))
        if "fills" in self.broken:
            raise VenueUnavailable("fills endpoint down", venue="okx")
        return [f.model_copy(update={"layer": layer}) for f in self.fills
                if f.inst_id == inst_id and (since_ms is None or f.ts_ms >= since_ms)]

    async def fetch_positions(self):
        if "positions" in self.broken:
            raise RuntimeError("a bug, not a venue error")
        return dict(self.positions)

    async def close(self):
        pass


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def venue():
    return ScriptedVenue()


@pytest.fixture
def store(fake_redis, namespace, clock):
    return RedisStore(fake_redis, namespace, clock=clock)


@pytest.fixture
def control(fake_redis, namespace):
    return ControlState(fake_redis, namespace)


def make(venue, store, control, clock, config=CONFIG) -> FillReconciler:
    return FillReconciler(VenueConfig(name="okx", rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1/ws/v5"),
                          store=store, control=control, rest=venue, clock=clock, config=config)


def fill(trade_id: str, ts_ms: int, size: str = "1", coid: str = "c1") -> Fill:
    return Fill(venue="okx", inst_id=SWAP.inst_id, trade_id=trade_id, client_order_id=coid, venue_order_id="v1",
                side=Side.BUY, price=Decimal(60000), size=Decimal(size), ts_ms=ts_ms, layer=FillLayer.POLL)


def report(state: OrderState, filled: str, coid: str = "c1") -> VenueOrderReport:
    return VenueOrderReport(venue="okx", inst_id=SWAP.inst_id, venue_order_id="v1", client_order_id=coid,
                            side=Side.BUY, state=state, venue_state=state.value, size=Decimal(2),
                            filled_size=Decimal(filled), avg_price=Decimal(60000) if Decimal(filled) else None,
                            updated_ms=1)


async def record(store, clock, coid="c1") -> Order:
    order = Order(client_order_id=coid, strategy_id="s1", venue="okx", inst_id=SWAP.inst_id, side=Side.BUY,
                  type=OrderType.MARKET, size=Decimal(2), state=OrderState.PENDING_NEW, created_ms=clock.now_ms(),
                  updated_ms=clock.now_ms())
    assert await store.record_order(order)
    return order


async def test_cursor_persists_and_next_fetch_starts_before_it(venue, store, control, clock):
    t0 = clock.now_ms()
    await record(store, clock)
    venue.fills = [fill("1", t0 + 100), fill("2", t0 + 200)]
    venue.reports["c1"] = report(OrderState.FILLED, "2")
    rec = make(venue, store, control, clock)
    first = await rec.poll_once()
    assert first.ok and first.fills_applied == 2 and first.untracked == ("c1",)
    assert (await control.get_cursor("okx", SWAP.inst_id))["ts_ms"] == t0 + 200
    # a new reconciler (a restart) resumes from the cursor in Redis, with the overlap
    again = make(venue, store, control, clock)
    second = await again.poll_once()
    assert venue.fill_queries[-1] == (SWAP.inst_id, t0 + 200 - 1_000, FillLayer.POLL)
    assert second.ok and second.fills_applied == 0 and second.fills_duplicate == 2


async def test_first_cycle_starts_at_the_oldest_tracked_order(venue, store, control, clock):
    order = await record(store, clock)
    clock.advance(30)
    rec = make(venue, store, control, clock)
    await rec.poll_once()
    assert venue.fill_queries[0] == (SWAP.inst_id, order.created_ms - 1_000, FillLayer.POLL)
    assert (await control.get_cursor("okx", SWAP.inst_id))["ts_ms"] == order.created_ms


async def test_a_fill_that_cannot_be_stored_holds_the_cursor_and_fails_the_cycle(venue, store, control, clock):
    t0 = clock.now_ms()
    await record(store, clock)
    venue.reports["c1"] = report(OrderState.PARTIALLY_FILLED, "1.000000001")
    # a size finer than the store's exact atoms is refused: it must be fetched again, never skipped
    venue.fills = [fill("1", t0 + 100), fill("2", t0 + 200, size="0.000000001"), fill("3", t0 + 300)]
    rec = make(venue, store, control, clock)
    outcome = await rec.poll_once()
    assert not outcome.ok and any("fills BTC-USDT-SWAP" in e for e in outcome.errors)
    assert (await control.get_cursor("okx", SWAP.inst_id))["ts_ms"] == t0 + 200
    assert await control.verified_at("okx") is None
    assert [o.client_order_id for o in await store.open_orders(venue="okx")] == ["c1"]


async def test_verified_only_after_a_fully_successful_cycle(venue, store, control, clock):
    await record(store, clock)
    venue.reports["c1"] = report(OrderState.LIVE, "0")
    venue.broken = {"order"}
    rec = make(venue, store, control, clock)
    outcome = await rec.poll_once()
    assert not outcome.ok and outcome.decisions == {"c1": "lookup_failed"}
    assert await control.verified_at("okx") is None
    venue.broken = set()
    clock.advance(1)
    assert (await rec.poll_once()).ok
    assert await control.verified_at("okx") == clock.now_ms()
    assert (await store.heartbeats())["reconciler:okx"] == clock.now_ms()


async def test_ws_terminal_status_and_ws_fills_never_untrack_without_the_poller(venue, store, control, clock):
    order = await record(store, clock)
    # the WS path: status FILLED and both fills applied
    await store.update_order(order.transition(OrderState.FILLED, now_ms=clock.now_ms() + 1, filled_size=Decimal(2),
                                              venue_order_id="v1"))
    for f in (fill("1", clock.now_ms()), fill("2", clock.now_ms())):
        await store.apply_fill(f.model_copy(update={"layer": FillLayer.WS}), SWAP)
    venue.broken = {"order"}  # the poller cannot see the order this cycle
    rec = make(venue, store, control, clock)
    await rec.poll_once()
    assert [o.client_order_id for o in await store.open_orders(venue="okx")] == ["c1"]
    venue.broken = set()
    venue.reports["c1"] = report(OrderState.FILLED, "2")
    assert (await rec.poll_once()).untracked == ("c1",)


async def test_ws_moving_an_order_during_the_cycle_is_not_an_anomaly(venue, store, control, clock):
    order = await record(store, clock)
    acked = order.transition(OrderState.LIVE, now_ms=clock.now_ms() + 1, venue_order_id="v1")
    await store.update_order(acked)
    venue.reports["c1"] = report(OrderState.PARTIALLY_FILLED, "1")  # the venue's answer is already old...
    original = venue.fetch_order

    async def fetch_while_the_ws_writes(o):
        # ...because the WS path writes FILLED while the poller waits for that answer
        await store.update_order(acked.transition(OrderState.FILLED, now_ms=clock.now_ms() + 2,
                                                  filled_size=Decimal(2)))
        return await original(o)

    venue.fetch_order = fetch_while_the_ws_writes
    rec = make(venue, store, control, clock)
    outcome = await rec.poll_once()
    assert outcome.ok and outcome.anomalies == {} and outcome.orders_updated == ()
    assert (await store.get_order("c1")).state is OrderState.FILLED
    assert [o.client_order_id for o in await store.open_orders(venue="okx")] == ["c1"]


async def test_fill_health_gap_timing_targeted_fetch_and_discrepancy(venue, store, control, clock):
    order = await record(store, clock)
    await store.update_order(order.transition(OrderState.FILLED, now_ms=clock.now_ms() + 1, filled_size=Decimal(2),
                                              venue_order_id="v1"))
    venue.fills = [fill("1", clock.now_ms() + 5), fill("2", clock.now_ms() + 6)]
    rec = make(venue, store, control, clock)
    assert await rec.check_fill_health() == []
    clock.advance(4.9)
    assert await rec.check_fill_health() == []
    clock.advance(0.1)
    actions = await rec.check_fill_health()
    assert [a.kind.value for a in actions] == ["alert", "targeted_fetch"]
    assert venue.fill_queries[-1] == (SWAP.inst_id, order.created_ms - 1_000, FillLayer.HEALTH)
    assert await store.applied_size("c1") == 2
    assert {e.fill.layer for e in await store.audit_entries()} == {FillLayer.HEALTH}
    assert "fill_gap:c1" in await control.discrepancies("okx")
    clock.advance(1)
    (resolved,) = await rec.check_fill_health()
    assert resolved.kind.value == "resolved"
    assert await control.discrepancies("okx") == {}
    assert rec.ctx.counters["fills_applied_health"] == 2


async def test_a_targeted_fetch_applies_every_fill_it_can_when_one_fails(venue, store, control, clock):
    order = await record(store, clock)
    await store.update_order(order.transition(OrderState.FILLED, now_ms=clock.now_ms() + 1, filled_size=Decimal(2),
                                              venue_order_id="v1"))
    # Sorted first, refused by the store (not a whole number of atoms): the fill after it still counts.
    venue.fills = [fill("0", clock.now_ms() + 4, size="0.000000001"), fill("1", clock.now_ms() + 5, size="2")]
    rec = make(venue, store, control, clock)
    await rec.check_fill_health()
    clock.advance(5)
    await rec.check_fill_health()
    assert await store.applied_size("c1") == 2
    assert rec.ctx.counters["fills_applied_health"] == 1
    assert rec.ctx.counters["targeted_fetch_failures"] == 1


async def test_rest_and_poll_fresh_probes_follow_the_clock(venue, store, control, clock):
    rec = make(venue, store, control, clock)
    rec.state = ComponentState.RUNNING  # probes without timers: the cycles are driven by hand
    await rec.poll_once()
    await rec.check_fill_health()
    await rec.check_drift()
    assert (await rec.check_health()).healthy
    clock.advance(3 * CONFIG.poll_interval_secs + 0.01)
    failing = {p.name for p in (await rec.check_health()).failing()}
    assert {"rest", "poll_fresh"} <= failing


async def test_one_crashing_check_never_stops_the_others(venue, store, control, clock):
    fast = CONFIG.model_copy(update={"poll_interval_secs": 0.02, "drift_interval_secs": 0.02,
                                     "fill_health_interval_secs": 0.02})
    venue.broken = {"positions"}  # drift hits an unexpected exception every time
    rec = make(venue, store, control, clock, config=fast)
    await rec.start()
    try:
        await eventually(lambda: rec.ctx.counters["poll_cycles_ok"] >= 3 and rec.ctx.counters["loop_crashes"] >= 3,
                         what="poll keeps going while drift crashes")
        assert rec.ctx.counters["health_checks"] >= 3
        assert "RuntimeError" in rec.ctx.last_errors["drift"]
        assert all(not t.done() for t in rec._tasks)
    finally:
        await rec.stop()
    assert all(t.done() for t in asyncio.all_tasks() if t.get_name().startswith("reconciler:okx"))


async def test_a_second_start_during_the_first_is_refused(venue, store, control, clock):
    release = asyncio.Event()
    loading = venue.load_instruments

    async def slow_instruments():
        await release.wait()
        return await loading()

    venue.load_instruments = slow_instruments
    rec = make(venue, store, control, clock)
    first = asyncio.create_task(rec.start())
    try:
        await eventually(lambda: rec.state is ComponentState.STARTING, what="start() in progress")
        assert (await rec.check_health()).probes[0].detail == "state starting"
        with pytest.raises(RuntimeError, match="allowed once, state is starting"):
            await rec.start()
        release.set()
        await first
        assert rec.state is ComponentState.RUNNING and rec.stats()["state"] == "running"
    finally:
        release.set()
        await rec.stop()
    assert rec.state is ComponentState.STOPPED


class _AlerterHandle:
    """A stand-in for the alerter actor's handle: ``alert.remote(...)`` is awaitable, as a Ray ref is."""

    def __init__(self, hang: bool = False) -> None:
        self.sent: list[tuple[str, ...]] = []
        self.hang = hang
        self.alert = self

    def remote(self, *args: str):
        async def answer() -> None:
            if self.hang:
                await asyncio.Event().wait()
            self.sent.append(args)
        return answer()


async def test_alerts_reach_the_named_alerter_and_are_logged_only_while_it_is_absent():
    handle = _AlerterHandle()
    actors: dict[str, object] = {}
    looked_up: list[tuple[str, str | None]] = []

    def lookup(name: str, namespace: str | None):
        looked_up.append((name, namespace))
        if name not in actors:
            raise ValueError(f"Failed to look up actor {name}")
        return actors[name]

    sink = AlerterClient(client=ActorClient("ns1", timeout_secs=5.0, lookup=lookup))
    assert sink.actor_name == ALERTER_ID
    venue = VenueConfig(name="okx", rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1/ws/v5")
    ctx = ReconcilerContext(venue, ReconcilerConfig(), WallClock(), sink.alert)
    await ctx.alert("warning", "k", "title", "text")  # absent: logged only, no failure counted
    assert ctx.counters["alert_failures"] == 0
    actors[ALERTER_ID] = handle
    await ctx.alert("critical", "k", "title", "text")
    assert handle.sent == [("critical", "okx:k", "title", "text")]
    assert looked_up == [(ALERTER_ID, "ns1"), (ALERTER_ID, "ns1")]

    hung = AlerterClient("A2", client=ActorClient(None, timeout_secs=0.05, lookup=lambda n, ns: _AlerterHandle(True)))
    with pytest.raises(CallTimeout, match="A2.alert"):  # a hung alerter fails the call; the context counts it
        await hung.alert("info", "k", "t", "x")
    hung_ctx = ReconcilerContext(venue, ReconcilerConfig(), WallClock(), hung.alert)
    await hung_ctx.alert("info", "k", "t", "x")
    assert hung_ctx.counters["alert_failures"] == 1


def test_needs_a_store_and_a_rest_client():
    venue = VenueConfig(name="okx", rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1/ws/v5")
    creds = VenueCredentials(api_key=SecretStr("k"), secret_key=SecretStr("s"), passphrase=SecretStr("p"))
    with pytest.raises(ValueError):
        FillReconciler(venue, rest_url="http://127.0.0.1:1", credentials=creds)
    with pytest.raises(ValueError):
        FillReconciler(venue, redis_url="redis://127.0.0.1:1", namespace="x")


async def test_discrepancies_left_from_before_a_restart_close_once_their_condition_is_clear(
        venue, store, control, clock):
    now = clock.now_ms()
    await control.open_discrepancy("okx", "fill_gap:gone", "from a previous run", now)
    await control.open_discrepancy("okx", "drift:BTC-USDT-SWAP", "from a previous run", now)
    await control.open_discrepancy("okx", "drift:ETH-USDT-SWAP", "from a previous run", now)
    await control.open_discrepancy("okx", "operator:hold", "not the reconciler's", now)
    venue.positions = {"ETH-USDT-SWAP": Decimal(1)}  # still drifting: Redis holds nothing there
    rec = make(venue, store, control, clock)
    await rec.check_fill_health()
    await rec.check_drift()
    assert set(await control.discrepancies("okx")) == {"drift:ETH-USDT-SWAP", "operator:hold"}


async def test_open_gap_keeps_its_discrepancy_across_a_restart(venue, store, control, clock):
    order = await record(store, clock)
    await store.update_order(order.transition(OrderState.FILLED, now_ms=clock.now_ms() + 1, filled_size=Decimal(2),
                                              venue_order_id="v1"))
    await control.open_discrepancy("okx", "fill_gap:c1", "from a previous run", clock.now_ms())
    rec = make(venue, store, control, clock)
    await rec.check_fill_health()
    assert "fill_gap:c1" in await control.discrepancies("okx")


async def _probe_ok(rec, name: str) -> bool:
    report = await rec.check_health()
    return next(p for p in report.probes if p.name == name).ok


async def test_a_restart_does_not_forget_that_the_ws_stopped_carrying_fills(venue, store, control, clock):
    # A previous incarnation applied fills over REST that the WS never delivered.
    for i, layer in enumerate((FillLayer.WS, FillLayer.POLL, FillLayer.POLL)):
        await store.apply_fill(fill(str(i), clock.now_ms() + i, coid="").model_copy(update={"layer": layer}), SWAP)
        clock.advance(0.5)
    fresh = make(venue, store, control, clock)
    fresh.state = ComponentState.RUNNING  # probes without timers
    await fresh.poll_once()
    await fresh.check_fill_health()
    await fresh.check_drift()
    clock.advance(CONFIG.fill_gap_alert_secs)
    await fresh.poll_once()
    await fresh.check_fill_health()
    assert not await _probe_ok(fresh, "fills_flowing_ws")
    assert "not delivered by the WS" in fresh.ctx.monitor.ws_flow(clock.monotonic()).detail
    # the WS delivers again (a duplicate counts): flowing
    await store.apply_fill(fill("2", clock.now_ms(), coid="").model_copy(update={"layer": FillLayer.WS}), SWAP)
    await fresh.check_fill_health()
    assert await _probe_ok(fresh, "fills_flowing_ws")


async def test_a_restart_dates_an_open_gap_from_its_discrepancy(venue, store, control, clock):
    order = await record(store, clock)
    await store.update_order(order.transition(OrderState.FILLED, now_ms=clock.now_ms() + 1, filled_size=Decimal(2),
                                              venue_order_id="v1"))
    clock.advance(60)
    await control.open_discrepancy("okx", "fill_gap:c1", "seen by a previous incarnation", clock.now_ms() - 30_000)
    fresh = make(venue, store, control, clock)
    fresh.state = ComponentState.RUNNING
    assert await fresh.check_fill_health() == []  # first look: the gap is known since 30 s ago...
    assert not await _probe_ok(fresh, "fills_flowing_ws")  # ...and the probe already says so
    clock.advance(CONFIG.fill_health_interval_secs)
    actions = await fresh.check_fill_health()  # ...so the episode opens now, not T from now
    assert [a.kind.value for a in actions] == ["alert", "targeted_fetch"]


async def test_no_drift_probe_reads_drift_discrepancies_from_redis(venue, store, control, clock):
    await control.open_discrepancy("okx", "drift:BTC-USDT-SWAP", "seen by a previous incarnation", clock.now_ms())
    fresh = make(venue, store, control, clock)
    fresh.state = ComponentState.RUNNING
    fresh.last_drift_ok_ms = clock.now_ms()
    assert not await _probe_ok(fresh, "no_drift")
    await fresh.check_drift()  # venue and Redis agree (both flat): the discrepancy closes
    assert await _probe_ok(fresh, "no_drift")


async def test_drift_check_reads_redis_around_the_venue_so_a_fill_meanwhile_is_no_drift(venue, store, control,
                                                                                     clock):
    """The venue fills one of our orders between our Redis read and our venue read, and the fill is
    applied by the time we read Redis again: at every check. Nothing is suspected, nothing paused."""
    rec = make(venue, store, control, clock)
    real_fetch = venue.fetch_positions
    trades = iter(range(1, 100))

    async def fill_while_reading():
        venue.positions[SWAP.inst_id] = venue.positions.get(SWAP.inst_id, Decimal(0)) + 1
        answer = await real_fetch()
        f = fill(str(next(trades)), clock.now_ms(), coid="")
        await store.apply_fill(f.model_copy(update={"client_order_id": None, "layer": FillLayer.WS}), SWAP)
        return answer

    venue.fetch_positions = fill_while_reading
    for _ in range(4):
        outcome = await rec.check_drift()
        assert outcome.ok and outcome.suspected == () and outcome.confirmed == ()
        clock.advance(5)
    assert not await control.venue_pauses("okx")
    # a fill the venue made and Redis never got is still caught: the same drift twice in a row
    venue.fetch_positions = real_fetch
    venue.positions[SWAP.inst_id] += 1
    assert (await rec.check_drift()).suspected == (SWAP.inst_id,)
    assert (await rec.check_drift()).confirmed == (SWAP.inst_id,)
    assert "drift" in " ".join(await control.venue_pauses("okx"))

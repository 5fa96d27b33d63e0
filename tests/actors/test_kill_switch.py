"""The kill switch executor, in simulated time, with an in-memory book and venue.

``FakeBook`` stands in for the Redis store's position truth and ``FakeVenue``
for the gateways: it records an order in the book before "sending" it (as the
gateway does), fills market orders at once and applies the fill to the book
(unless told not to: the incident), and refuses reduce-only orders that would
not reduce the venue's net position. The kill switch's own journal lives in
the Redis store (fakeredis, and the real server where it matters).
"""

from __future__ import annotations

import asyncio
import collections
import random
from decimal import Decimal

import pytest

from tradetree.actors.kill_switch import KillSwitch
from tradetree.core.clock import ManualClock
from tradetree.core.errors import StoreError, StoreUnavailable, VenueAuthError, VenueUnavailable
from tradetree.core.store import RedisStore
from tradetree.core.types import Order, OrderDenied, OrderIntent, OrderState, OrderType, Position, Side
from tradetree.risk.kill_switch import KillPhase, KillState, KillSwitchConfig, StepOutcome

D = Decimal
BTC, ETH = "BTC-USDT-SWAP", "ETH-USDT-SWAP"


class FakeBook:
    """Positions, orders, applied sizes, strategy states and the kill flag, in memory."""

    def __init__(self, events: list[tuple]) -> None:
        self.events = events
        self.qty: dict[tuple[str, str, str], Decimal] = {}
        self.orders: dict[str, Order] = {}
        self.applied: dict[str, Decimal] = {}
        self.states: dict[str, str] = {}
        self.state_history: list[tuple[str, str]] = []
        self.flag: str | None = None
        self.down = False
        self.reads: collections.Counter[str] = collections.Counter()

    def _check(self, read: str = "") -> None:
        self.reads[read] += 1
        if self.down:
            raise StoreUnavailable("Redis does not answer")

    def position(self, strategy: str, inst: str = BTC, venue: str = "okx") -> Decimal:
        return self.qty.get((strategy, venue, inst), D(0))

    def apply_fill(self, coid: str) -> None:
        o = self.orders[coid]
        key = (o.strategy_id, o.venue, o.inst_id)
        self.qty[key] = self.qty.get(key, D(0)) + o.side.sign * o.filled_size
        self.applied[coid] = o.filled_size

    async def positions(self, strategy_id: str | None = None) -> list[Position]:
        self._check()
        return [Position(strategy_id=s, venue=v, inst_id=i, qty=q) for (s, v, i), q in sorted(self.qty.items())
                if strategy_id in (None, s)]

    async def open_orders_with_applied(self, venue: str | None = None,
                                       strategy_id: str | None = None) -> list[tuple[Order, Decimal]]:
        # Tracked until terminal with every fill applied (the poller's untrack rule), as the store.
        self._check("open_orders_with_applied")
        return [(o, self.applied.get(o.client_order_id, D(0))) for o in self.orders.values()
                if venue in (None, o.venue) and strategy_id in (None, o.strategy_id)
                and not (o.state.is_terminal and self.applied.get(o.client_order_id, D(0)) >= o.filled_size)]

    async def exposure(self, venue: str | None = None,
                       strategy_id: str | None = None) -> tuple[list[tuple[Order, Decimal]], list[Position]]:
        return await self.open_orders_with_applied(venue, strategy_id), await self.positions()

    async def get_order(self, client_order_id: str) -> Order | None:
        self._check("get_order")
        return self.orders.get(client_order_id)

    async def applied_size(self, client_order_id: str) -> Decimal:
        self._check("applied_size")
        return self.applied.get(client_order_id, D(0))

    async def strategy_states(self, *, strict: bool = True) -> dict[str, str]:
        self._check()
        return dict(self.states)

    async def set_strategy_state(self, strategy_id: str, state: str) -> None:
        self._check()
        self.states[strategy_id] = state
        self.state_history.append((strategy_id, state))
        self.events.append(("state", strategy_id, state))

    async def set_kill_flag(self, reason: str, ts_ms: int) -> None:
        self._check()
        self.flag = reason
        self.events.append(("flag", reason))

    async def kill_flag(self) -> str | None:
        self._check()
        return self.flag


class FakeVenue:
    """Gateways of ``venues`` over a ``FakeBook``. ``fail[method]`` failures to raise first
    (-1: forever); ``hold`` blocks a submission after the order is recorded."""

    def __init__(self, book: FakeBook, venues: tuple[str, ...] = ("okx",)) -> None:
        self.book = book
        self._venues = venues
        self.fail = {"cancel_all": 0, "submit_order": 0}
        self.error: Exception = VenueUnavailable("503 from the venue", venue="okx")
        self.deny_first = 0
        self.no_liquidity = False
        self.apply_fills = True
        self.hold: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.calls: list[tuple] = []
        self.submitted: list[OrderIntent] = []
        self.unbooked: dict[tuple[str, str], Decimal] = {}  # (venue, inst) the venue holds that the book misses
        self.position_reads = 0
        self._n = 0

    def venues(self):
        return self._venues

    async def venue_positions(self, venue: str) -> dict[str, Decimal]:
        self.position_reads += 1
        net: dict[str, Decimal] = {}
        for (_, v, i), q in self.book.qty.items():
            if v == venue:
                net[i] = net.get(i, D(0)) + q
        for (v, i), q in self.unbooked.items():
            if v == venue:
                net[i] = net.get(i, D(0)) + q
        return {i: q for i, q in net.items() if q != 0}

    def _maybe_fail(self, method: str) -> None:
        left = self.fail[method]
        if left:
            self.fail[method] = left - 1 if left > 0 else left
            raise self.error

    async def cancel_all(self, venue: str, strategy_id: str | None = None) -> int:
        self.calls.append(("cancel_all", venue, strategy_id))
        self.book.events.append(("cancel_all", venue, strategy_id))
        self._maybe_fail("cancel_all")
        n = 0
        for coid, o in list(self.book.orders.items()):
            if o.venue == venue and strategy_id in (None, o.strategy_id) and not o.state.is_terminal:
                self.book.orders[coid] = o.transition(OrderState.CANCELED, now_ms=o.updated_ms + 1)
                n += 1
        return n

    async def submit_order(self, intent: OrderIntent) -> Order | OrderDenied:
        self.calls.append(("submit_order", intent))
        self.book.events.append(("submit_order", intent.strategy_id, intent.side.value, intent.size))
        self._maybe_fail("submit_order")
        if self.deny_first:
            self.deny_first -= 1
            return OrderDenied(intent=intent, reasons=("market data stale",), ts_ms=1, checked_by="gateway")
        self._n += 1
        order = Order.from_intent(intent, now_ms=1000 + self._n, client_order_id=f"kill{self._n}")
        self.book.orders[order.client_order_id] = order  # recorded before it is sent
        self.submitted.append(intent)
        net = sum((q for (s, v, i), q in self.book.qty.items() if (v, i) == (intent.venue, intent.inst_id)), D(0))
        if intent.reduce_only and (net == 0 or (net > 0) == (intent.side is Side.BUY) or intent.size > abs(net)):
            rejected = order.transition(OrderState.REJECTED, now_ms=order.updated_ms + 1,
                                        reject_reason="reduce-only order would not reduce the position")
            self.book.orders[order.client_order_id] = rejected
            return rejected
        if self.no_liquidity:
            canceled = order.transition(OrderState.CANCELED, now_ms=order.updated_ms + 1)
            self.book.orders[order.client_order_id] = canceled
            return canceled
        if self.hold is not None:
            self.entered.set()
            await self.hold.wait()
        filled = order.transition(OrderState.FILLED, now_ms=order.updated_ms + 1, filled_size=intent.size)
        self.book.orders[order.client_order_id] = filled
        if self.apply_fills:
            self.book.apply_fill(order.client_order_id)
        return filled


class FakeStrategies:
    """``reachable``: True pauses, False answers "not paused", None raises."""

    def __init__(self, reachable: bool | None = True) -> None:
        self.reachable = reachable
        self.paused: list[tuple[str, str]] = []

    async def pause(self, strategy_id: str, reason: str) -> bool:
        if self.reachable is None:
            raise VenueUnavailable(f"actor {strategy_id} not found")
        if self.reachable:
            self.paused.append((strategy_id, reason))
        return self.reachable


class SimTime:
    """Simulated time: sleeping records the delay and advances the clock."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.sleeps: list[float] = []

    async def sleep(self, secs: float) -> None:
        self.sleeps.append(secs)
        self.clock.advance(secs)
        await asyncio.sleep(0)


@pytest.fixture(params=["fake", "real"])
def client(request):
    return request.getfixturevalue("fake_redis" if request.param == "fake" else "real_redis")


@pytest.fixture
def events() -> list[tuple]:
    return []


@pytest.fixture
def book(events) -> FakeBook:
    b = FakeBook(events)
    b.states = {"A": "RUNNING", "B": "RUNNING"}
    return b


@pytest.fixture
def venue(book) -> FakeVenue:
    return FakeVenue(book)


@pytest.fixture
def sim() -> SimTime:
    return SimTime()


def config(**overrides) -> KillSwitchConfig:
    base = dict(max_clip_size=D(1), step_max_attempts=5, backoff_min_secs=1, backoff_max_secs=8,
                max_duration_secs=120, verify_interval_secs=1, call_timeout_secs=5, lease_secs=30)
    return KillSwitchConfig(**{**base, **overrides})


def make(book, venue, client, namespace, sim, *, cfg=None, owner="ks-1", strategies=None) -> KillSwitch:
    return KillSwitch(book, RedisStore(client, namespace), venue, cfg or config(), strategies=strategies, clock=sim.clock,
                      sleep=sim.sleep, rng=random.Random(1), owner_id=owner)


def limit_order(coid: str, strategy: str, inst: str = BTC) -> Order:
    return Order(client_order_id=coid, strategy_id=strategy, venue="okx", inst_id=inst, side=Side.BUY,
                 type=OrderType.LIMIT, size=D(1), price=D(100), state=OrderState.LIVE, created_ms=1, updated_ms=1)


async def test_global_kill_sets_the_flag_first_cancels_flattens_and_records_every_step(
        book, venue, client, namespace, sim, events):
    book.qty = {("A", "okx", BTC): D("2.5"), ("B", "okx", ETH): D(-1)}
    book.orders["l1"] = limit_order("l1", "A")
    ks = make(book, venue, client, namespace, sim)

    result = await ks.kill("position drift")

    assert events[0] == ("flag", "position drift"), "the kill flag is set before anything else"
    first_venue_call = next(i for i, e in enumerate(events) if e[0] in ("cancel_all", "submit_order"))
    assert events[first_venue_call] == ("cancel_all", "okx", None)
    assert {e[1] for e in events[:first_venue_call] if e[0] == "state"} == {"A", "B"}
    assert book.orders["l1"].state is OrderState.CANCELED
    assert [(i.strategy_id, i.side, i.size) for i in venue.submitted] == [
        ("A", Side.SELL, D(1)), ("B", Side.BUY, D(1)), ("A", Side.SELL, D(1)), ("A", Side.SELL, D("0.5"))]
    assert all(i.reduce_only and i.type is OrderType.MARKET for i in venue.submitted)
    assert book.position("A") == 0 and book.position("B", ETH) == 0
    assert result.state is KillState.DONE and result.phase is KillPhase.DONE
    assert result.orders_submitted == 4 and len(result.client_order_ids) == 4
    assert book.flag == "position drift", "the flag stays set until an operator clears it"
    assert book.states == {"A": "KILLED", "B": "KILLED"}
    assert await ks.progress() == result

    steps = await ks.steps()
    assert [s.ts_ms for s in steps] == sorted(s.ts_ms for s in steps)
    names = [(s.step, s.outcome) for s in steps if s.step != "settle"]
    assert names[:3] == [("request", StepOutcome.INFO), ("flag", StepOutcome.OK), ("cancel okx", StepOutcome.OK)]
    assert "l1" in next(s.detail for s in steps if s.step == "settle"), "the open order is waited for"
    assert names.count(("flatten A okx " + BTC, StepOutcome.OK)) == 3
    assert names[-3:] == [("verify", StepOutcome.INFO), ("mark killed", StepOutcome.OK), ("done", StepOutcome.DONE)]
    assert ks.running() == []


async def test_strategy_kill_winds_down_one_strategy_and_leaves_the_others_alone(
        book, venue, fake_redis, namespace, sim):
    book.qty = {("A", "okx", BTC): D(2), ("B", "okx", BTC): D(1)}
    book.orders["la"] = limit_order("la", "A")
    book.orders["lb"] = limit_order("lb", "B")
    strategies = FakeStrategies()
    ks = make(book, venue, fake_redis, namespace, sim, strategies=strategies)

    result = await ks.kill("rejection streak", strategy_id="A")

    assert result.state is KillState.DONE and result.strategy_id == "A" and result.scope == "strategy:A"
    assert book.state_history == [("A", "WINDING_DOWN"), ("A", "KILLED")]
    assert book.states["B"] == "RUNNING" and book.flag is None
    assert strategies.paused == [("A", "killed: rejection streak")]
    assert venue.calls[0] == ("cancel_all", "okx", "A")
    assert book.orders["la"].state is OrderState.CANCELED and book.orders["lb"].state is OrderState.LIVE
    assert book.position("A") == 0 and book.position("B") == 1
    assert {i.strategy_id for i in venue.submitted} == {"A"}
    assert await ks.progress() is None, "the global scope was never killed"


async def test_venue_failing_a_few_times_is_retried_with_growing_backoff(book, venue, client, namespace, sim):
    book.qty = {("A", "okx", BTC): D(1)}
    venue.fail["cancel_all"] = 3
    ks = make(book, venue, client, namespace, sim)

    result = await ks.kill("test")

    assert result.state is KillState.DONE and book.position("A") == 0
    assert [c[0] for c in venue.calls].count("cancel_all") == 4
    backoffs = sim.sleeps[:3]
    for delay, (lo, hi) in zip(backoffs, [(1, 2), (2, 4), (4, 8)]):
        assert lo <= delay <= hi
    assert backoffs == sorted(backoffs)
    assert sim.sleeps[3:] == [1] * len(sim.sleeps[3:]), "then the verify interval"
    failed = [s for s in await ks.steps() if s.outcome is StepOutcome.FAILED]
    assert [(s.step, s.attempt) for s in failed] == [("cancel okx", 1), ("cancel okx", 2), ("cancel okx", 3)]
    assert "503" in failed[0].detail
    assert result.failed_attempts == 3


async def test_venue_failing_forever_stalls_after_the_bounds_and_a_later_resume_finishes(
        book, venue, fake_redis, namespace, sim):
    book.qty = {("A", "okx", BTC): D(1)}
    venue.fail["cancel_all"] = -1
    ks = make(book, venue, fake_redis, namespace, sim, cfg=config(step_max_attempts=4))

    result = await ks.kill("test")  # does not raise

    assert result.state is KillState.STALLED
    assert "cancel okx failed 4 times in a row" in result.stalled_reason and "503" in result.stalled_reason
    assert len(venue.calls) == 4 and venue.submitted == []
    assert len(sim.sleeps) == 3
    assert book.flag == "test" and book.states["A"] == "WINDING_DOWN" and book.position("A") == 1
    assert (await ks.progress()).state is KillState.STALLED
    assert (await ks.steps())[-1].outcome is StepOutcome.STALLED

    venue.fail["cancel_all"] = 0  # the venue recovers
    assert await ks.resume_pending() == [], "an unchanged stall is not re-run on its own"
    assert len(venue.calls) == 4
    resumed = await ks.kill("test")  # the operator acts: the stalled kill runs again
    assert resumed.state is KillState.DONE and resumed.runs == 2 and resumed.stalled_reason == ""
    assert book.position("A") == 0 and book.states["A"] == "KILLED"
    assert await ks.resume_pending() == []


async def test_the_total_duration_bounds_a_kill_even_with_many_attempts_allowed(
        book, venue, fake_redis, namespace, sim):
    book.qty = {("A", "okx", BTC): D(1)}
    venue.fail["submit_order"] = -1
    ks = make(book, venue, fake_redis, namespace, sim,
              cfg=config(step_max_attempts=10_000, max_duration_secs=60, backoff_max_secs=4))

    result = await ks.kill("test")

    assert result.state is KillState.STALLED and result.stalled_reason.startswith("timed out after 60s")
    assert "A okx BTC-USDT-SWAP +1" in result.stalled_reason and "503" in result.stalled_reason
    assert sum(sim.sleeps) == pytest.approx(60)
    submissions = sum(1 for c in venue.calls if c[0] == "submit_order")
    assert 60 / 4 - 1 <= submissions <= 60, "one attempt per backoff, each backoff in [1s, 4s]"


async def test_auth_errors_are_not_retried(book, venue, fake_redis, namespace, sim):
    book.qty = {("A", "okx", BTC): D(1)}
    venue.fail["cancel_all"] = -1
    venue.error = VenueAuthError("bad key", venue="okx")
    result = await make(book, venue, fake_redis, namespace, sim).kill("test")
    assert result.state is KillState.STALLED and "not retryable" in result.stalled_reason
    assert len(venue.calls) == 1


async def test_nothing_touches_the_venue_until_the_flag_is_set(book, venue, fake_redis, namespace, sim):
    book.qty = {("A", "okx", BTC): D(1)}
    book.down = True
    result = await make(book, venue, fake_redis, namespace, sim, cfg=config(step_max_attempts=3)).kill("test")
    assert result.state is KillState.STALLED and "flag failed 3 times" in result.stalled_reason
    assert venue.calls == []


async def test_denied_and_rejected_wind_down_orders_are_retried(book, venue, fake_redis, namespace, sim):
    book.qty = {("A", "okx", BTC): D(1), ("B", "okx", BTC): D(-3)}  # venue net -2: A's sell is not reduce-only
    venue.deny_first = 2
    ks = make(book, venue, fake_redis, namespace, sim, cfg=config(allow_offsetting_orders=True))
    result = await ks.kill("test")
    assert result.state is KillState.DONE
    assert book.position("A") == 0 and book.position("B") == 0
    failed = [s.detail for s in await ks.steps() if s.outcome is StepOutcome.FAILED]
    assert sum("denied: market data stale" in d for d in failed) == 2


async def test_offsetting_positions_stall_with_the_reason_unless_allowed(book, venue, fake_redis, namespace, sim):
    book.qty = {("A", "okx", BTC): D(1), ("B", "okx", BTC): D(-1)}
    ks = make(book, venue, fake_redis, namespace, sim)
    result = await ks.kill("test")
    assert result.state is KillState.STALLED and "offset" in result.stalled_reason
    assert "allow_offsetting_orders" in result.stalled_reason and venue.submitted == []


async def test_the_scope_s_orders_and_applied_sizes_are_one_batched_read_per_look(book, venue, fake_redis, namespace,
                                                                                 sim):
    book.qty = {("A", "okx", BTC): D(1)}
    for n in range(6):
        book.orders[f"l{n}"] = limit_order(f"l{n}", "A")
    ks = make(book, venue, fake_redis, namespace, sim)

    result = await ks.kill("test", strategy_id="A")

    assert result.state is KillState.DONE and book.position("A") == 0
    assert book.reads["open_orders_with_applied"] >= 3  # cancel, flatten, verify: one batch each
    # Per-order reads only for the kill's own clips once they left the tracked set, never per tracked order.
    assert book.reads["applied_size"] <= len(venue.submitted) == 1


async def test_missing_fills_make_the_kill_wait_instead_of_closing_twice(book, venue, fake_redis, namespace, sim):
    """The incident: the venue reports the order filled, the fills never reach the store."""
    book.qty = {("A", "okx", BTC): D(1)}
    venue.apply_fills = False
    ks = make(book, venue, fake_redis, namespace, sim, cfg=config(max_duration_secs=30))

    result = await ks.kill("test")

    assert len(venue.submitted) == 1, "no second close while the first one's fills are missing"
    assert result.state is KillState.STALLED and "orders not settled: kill1" in result.stalled_reason
    waiting = [s for s in await ks.steps() if s.outcome is StepOutcome.WAITING]
    assert len(waiting) == 1 and "kill1" in waiting[0].detail

    book.apply_fill("kill1")  # the poller catches up
    [resumed] = await ks.resume_pending()
    assert resumed.state is KillState.DONE and len(venue.submitted) == 1 and book.position("A") == 0


@pytest.mark.parametrize("reachable", [False, None])
async def test_unreachable_strategy_actor_does_not_stop_the_kill(book, venue, fake_redis, namespace, sim, reachable):
    book.qty = {("A", "okx", BTC): D(1)}
    ks = make(book, venue, fake_redis, namespace, sim, strategies=FakeStrategies(reachable=reachable))
    result = await ks.kill("test", strategy_id="A")
    assert result.state is KillState.DONE
    pause = [s for s in await ks.steps("A") if s.step == "pause A"]
    assert pause[0].outcome is StepOutcome.INFO and "not reachable" in pause[0].detail


async def test_a_second_kill_joins_the_running_one_and_a_later_one_starts_over(
        book, venue, fake_redis, namespace, sim):
    book.qty = {("A", "okx", BTC): D(2)}
    venue.hold = asyncio.Event()
    ks = make(book, venue, fake_redis, namespace, sim)

    first = asyncio.create_task(ks.kill("first"))
    await asyncio.wait_for(venue.entered.wait(), 5)
    second = asyncio.create_task(ks.kill("second"))
    await asyncio.sleep(0)
    venue.hold.set()
    r1, r2 = await asyncio.wait_for(asyncio.gather(first, second), 5)

    assert r1 == r2 and r1.state is KillState.DONE and r1.reason == "first"
    assert len(venue.submitted) == 2 and book.position("A") == 0
    assert any("requested again while running: second" in s.detail for s in await ks.steps())

    again = await ks.kill("third")
    assert again.state is KillState.DONE and again.reason == "third" and again.runs == 1
    assert again.started_ms > r1.started_ms and again.orders_submitted == 0 and len(venue.submitted) == 2


async def test_a_restarted_executor_resumes_an_interrupted_kill(book, venue, client, namespace, sim):
    book.qty = {("A", "okx", BTC): D(3)}
    venue.hold = asyncio.Event()
    ks1 = make(book, venue, client, namespace, sim, owner="ks-1")
    task = asyncio.create_task(ks1.kill("drift"))
    await asyncio.wait_for(venue.entered.wait(), 5)
    await ks1.aclose()  # the host goes away mid-order
    assert task.cancelled()
    interrupted = await ks1.progress()
    assert interrupted.state is KillState.RUNNING and interrupted.phase is KillPhase.FLATTEN

    # The order that was in flight is at the venue; the poller settles it later.
    [coid] = [c for c, o in book.orders.items() if not o.state.is_terminal]
    book.orders[coid] = book.orders[coid].transition(OrderState.FILLED, now_ms=5000, filled_size=D(1))
    book.apply_fill(coid)

    venue2 = FakeVenue(book)
    ks2 = make(book, venue2, client, namespace, sim, owner="ks-2")
    [result] = await ks2.resume_pending()

    assert result.state is KillState.DONE and result.runs == 2 and result.reason == "drift"
    assert book.position("A") == 0
    assert [i.size for i in venue2.submitted] == [D(1), D(1)], "the in-flight order is not closed again"
    assert book.states["A"] == "KILLED"
    assert any(s.run == 2 and "resuming RUNNING kill" in s.detail for s in await ks2.steps())


async def test_a_crashed_executor_is_taken_over_after_its_lease_and_cannot_act_again(
        book, fake_redis, namespace, sim):
    book.qty = {("A", "okx", BTC): D(2)}
    venue1 = FakeVenue(book)
    venue1.hold = asyncio.Event()
    cfg = config(max_duration_secs=3600)
    ks1 = make(book, venue1, fake_redis, namespace, sim, cfg=cfg, owner="ks-1")
    hung = asyncio.create_task(ks1.kill("drift"))
    await asyncio.wait_for(venue1.entered.wait(), 5)  # ks1 hangs inside a submission

    venue2 = FakeVenue(book)
    ks2 = make(book, venue2, fake_redis, namespace, sim, cfg=cfg, owner="ks-2")
    takeover = asyncio.create_task(ks2.resume_pending())
    lease = RedisStore(fake_redis, namespace).keys.kill_lease
    for _ in range(10_000):
        await asyncio.sleep(0)
        if await fake_redis.hget(lease, "owner") == b"ks-2":
            break
    else:
        pytest.fail("ks-2 never took the lease over")
    assert sim.clock.monotonic() >= cfg.lease_secs, "not before ks-1's lease ran out"
    for _ in range(50):
        await asyncio.sleep(0)
    assert venue2.submitted == [], "ks-2 waits for the order ks-1 has in flight"

    venue1.hold.set()  # ks-1 wakes up: its order fills, then it finds the lease gone
    [result] = await asyncio.wait_for(takeover, 5)
    stale = await asyncio.wait_for(hung, 5)

    assert result.state is KillState.DONE and result.owner == "ks-2"
    assert len(venue1.submitted) == 1 and len(venue2.submitted) == 1 and book.position("A") == 0
    assert stale.state is KillState.RUNNING, "ks-1 stops without claiming an outcome"
    assert (await ks2.progress()).state is KillState.DONE, "ks-1 did not overwrite the record"
    assert any("lease lost" in s.detail for s in await ks2.steps())


async def test_while_another_executor_holds_the_lease_a_kill_protects_records_and_waits(
        book, venue, fake_redis, namespace, sim):
    book.qty = {("B", "okx", BTC): D(1)}
    ks = make(book, venue, fake_redis, namespace, sim, cfg=config(max_duration_secs=10), owner="ks-2")
    records = RedisStore(fake_redis, namespace)
    assert await records.acquire_kill_lease("ks-1", sim.clock.now_ms(), 30_000) is None  # alive elsewhere

    waited = await ks.kill("limits", strategy_id="B")

    assert book.states["B"] == "WINDING_DOWN", "trading stops at once, lease or not"
    assert venue.calls == [], "but only the lease holder acts on the venue"
    assert waited.state is KillState.RUNNING and await ks.progress("B") == waited
    details = [s.detail for s in await ks.steps("B")]
    assert any("ks-1 holds the kill lease" in d for d in details) and any("gave up" in d for d in details)

    await records.release_kill_lease("ks-1")
    [done] = await ks.resume_pending()
    assert done.state is KillState.DONE and book.position("B") == 0 and book.states["B"] == "KILLED"


async def test_market_orders_canceled_without_fills_count_against_the_bounds(book, venue, fake_redis, namespace, sim):
    book.qty = {("A", "okx", BTC): D(1)}
    venue.no_liquidity = True
    result = await make(book, venue, fake_redis, namespace, sim, cfg=config(step_max_attempts=3)).kill("test")
    assert result.state is KillState.STALLED and "canceled without a fill" in result.stalled_reason
    assert len(venue.submitted) == 3 and book.position("A") == 1


async def test_an_unreadable_kill_record_is_skipped_and_the_other_kills_resume(
        book, venue, fake_redis, namespace, sim):
    book.qty = {("A", "okx", BTC): D(1)}
    venue.fail["cancel_all"] = -1
    ks = make(book, venue, fake_redis, namespace, sim, cfg=config(step_max_attempts=2))
    assert (await ks.kill("test")).state is KillState.STALLED
    records = RedisStore(fake_redis, namespace)
    await records.save_kill_progress("strategy:Z", '{"scope": "strategy:Z"}', state="RUNNING", reason="x",
                                     updated_ms=1)
    venue.fail["cancel_all"] = 0
    book.qty = {("A", "okx", BTC): D(2)}  # the residual changed since the stall: resumed on its own

    [resumed] = await ks.resume_pending()  # does not raise

    assert resumed.scope == "global" and resumed.state is KillState.DONE and book.position("A") == 0
    with pytest.raises(StoreError, match="kill record of strategy:Z is unreadable"):
        await ks.progress("Z")
    fresh = await ks.kill("again", strategy_id="Z")  # a kill of that scope starts over
    assert fresh.state is KillState.DONE and fresh.runs == 1 and (await ks.progress("Z")) == fresh


async def test_a_stalled_kill_reruns_on_its_own_only_when_its_residual_changes(
        book, venue, fake_redis, namespace, sim):
    book.qty = {("A", "okx", BTC): D(1)}
    venue.fail["cancel_all"] = -1
    ks = make(book, venue, fake_redis, namespace, sim, cfg=config(step_max_attempts=2))
    stalled = await ks.kill("test")
    assert stalled.state is KillState.STALLED and stalled.remaining == ("A okx BTC-USDT-SWAP +1",)
    calls = len(venue.calls)

    for _ in range(3):
        assert await ks.resume_pending() == []
    assert len(venue.calls) == calls, "an unchanged stall does not touch the venue again at once"

    book.qty = {("A", "okx", BTC): D("0.4")}  # part of it was closed by hand: the residual changed
    [rerun] = await ks.resume_pending()
    assert rerun.state is KillState.STALLED and rerun.remaining == ("A okx BTC-USDT-SWAP +0.4",), \
        "the stall text says the current residual, not the one it stalled with"
    assert len(venue.calls) > calls


async def test_a_stalled_global_kill_reruns_when_its_flag_was_cleared_under_it(
        book, venue, fake_redis, namespace, sim):
    book.qty = {("A", "okx", BTC): D(1)}
    venue.fail["cancel_all"] = -1
    ks = make(book, venue, fake_redis, namespace, sim, cfg=config(step_max_attempts=2))
    assert (await ks.kill("test")).state is KillState.STALLED
    book.flag = None  # deleted by hand
    [rerun] = await ks.resume_pending()
    assert book.flag == "test", "the kill flag is set again: its positions are not flat"
    assert rerun.state is KillState.STALLED


async def test_a_global_kill_is_not_done_while_the_venue_holds_what_redis_does_not(
        book, venue, fake_redis, namespace, sim):
    """Redis says flat, the venue still holds +1 BTC (its fills never reached Redis): the kill
    waits for them and, if they never come, stalls saying what the venue holds."""
    book.qty = {("A", "okx", BTC): D(1)}
    venue.unbooked = {("okx", BTC): D(1)}
    ks = make(book, venue, fake_redis, namespace, sim, cfg=config(max_duration_secs=20))

    result = await ks.kill("test")

    assert book.position("A") == 0 and venue.position_reads >= 1
    assert result.state is KillState.STALLED, "never DONE while the venue is not flat"
    assert result.remaining == ("venue okx BTC-USDT-SWAP +1",) and "venue okx BTC-USDT-SWAP +1" in result.stalled_reason
    waiting = [s for s in await ks.steps() if s.step == "verify venues"]
    assert len(waiting) == 1 and "fills are missing from Redis" in waiting[0].detail
    assert book.states["A"] != "KILLED"
    assert await ks.resume_pending() == [], "what only the venue holds is not a change of the Redis residual"

    book.qty[("A", "okx", BTC)] = D(1)  # the poller books the missing fill: Redis sees the position now
    venue.unbooked = {}
    [done] = await ks.resume_pending()
    assert done.state is KillState.DONE and book.position("A") == 0 and book.states["A"] == "KILLED"


async def test_a_strategy_kill_does_not_judge_the_account_wide_venue_net(book, venue, fake_redis, namespace, sim):
    book.qty = {("A", "okx", BTC): D(1), ("B", "okx", BTC): D(2)}
    result = await make(book, venue, fake_redis, namespace, sim).kill("test", strategy_id="A")
    assert result.state is KillState.DONE and venue.position_reads == 0


async def test_an_unchanged_stall_is_rerun_on_its_own_with_a_doubling_backoff(book, venue, fake_redis, namespace, sim):
    """A kill that stalled in a venue outage is finished once the venue is back, nobody acting;
    but it is not re-run every few seconds forever: each stall waits twice as long, up to a cap."""
    book.qty = {("A", "okx", BTC): D(1)}
    venue.fail["cancel_all"] = -1
    cfg = config(step_max_attempts=2, stalled_retry_min_secs=5, stalled_retry_max_secs=12)
    ks = make(book, venue, fake_redis, namespace, sim, cfg=cfg)
    stalled = await ks.kill("test")
    assert stalled.state is KillState.STALLED and stalled.runs == 1

    waits = []
    for _ in range(3):
        waited = 0.0
        while not (rerun := await ks.resume_pending()):
            sim.clock.advance(0.5)
            waited += 0.5
            assert waited < 60
        waits.append(waited)
        assert rerun[0].state is KillState.STALLED
    assert waits[0] >= 5 - 1 and waits[1] >= 10 - 1 and 12 - 1 <= waits[2] <= 12 + 1, waits

    venue.fail["cancel_all"] = 0  # the venue is back
    while not (done := await ks.resume_pending()):
        sim.clock.advance(0.5)
    assert done[0].state is KillState.DONE and book.position("A") == 0

"""StrategyActor: hosts one pure strategy, feeds it bars, sends its intents.

The host owns no position state: before every decision it reads the
strategy's positions and in-flight orders from Redis (the single source of
truth), so a restarted host, a missed WS fill or a fill applied by the poller
are all seen the same way. Orders go to the venue gateway; the gateway writes
them to Redis before sending.

Before an intent goes out it passes the freshness gate, then
``risk.pre_trade.check`` on the inputs the backtester gives it too
(``pre_trade_inputs``): positions and in-flight orders of this strategy, or
of every strategy when a global limit is set; marks when a notional limit is
set (the host's own last ticker or the gateways' last prices in Redis,
whichever arrived last, unknown beyond ``RiskConfig.max_mark_age_secs``);
today's realized P&L when a loss limit is set (``risk.day_pnl``, the day
baselines the risk monitor shares). Whatever cannot be read or is too old
counts as unknown, and the check refuses with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Protocol

import ray

from tradetree.actors.gate_inputs import read_gate_inputs
from tradetree.actors.model_server import connect_model_server
from tradetree.core import (
    BarAggregator,
    Clock,
    ControlState,
    Fill,
    HealthReport,
    Mark,
    MarkBook,
    Order,
    OrderDenied,
    OrderIntent,
    OrderState,
    Position,
    RedisStore,
    StoreError,
    StrategyConfig,
    StrategyState,
    Ticker,
    TradetreeError,
    VenueConfig,
    WallClock,
)
from tradetree.ml import set_server_connector
from tradetree.risk import (
    DAILY_PNL_UNKNOWN,
    SUPERVISOR,
    PreTradeInputs,
    RiskConfig,
    RootLatch,
    StartPlan,
    candidate_baselines,
    check_freshness,
    check_pre_trade,
    choose_marks,
    daily_pnl_by_strategy,
    explain,
    host_probes,
    input_needs,
    loss_scope,
    mark_keys,
    mark_unknown_reason,
    pause_plan,
    pause_source,
    pending_by_instrument,
    start_plan,
    supervisor_may_release,
    utc_day,
)
from tradetree.strategies import StrategyContext, build_strategy
from tradetree.supervisor import ActorClient

__all__ = ["ORDER_ADMISSION_SECS", "ORDER_CALL_TIMEOUT_SECS", "order_call_timeout_secs", "OrderSink", "RayGatewaySink", "StrategyHost", "StrategyActor"]

log = logging.getLogger(__name__)


class OrderSink(Protocol):
    async def submit_order(self, intent: OrderIntent, not_after_ms: int | None = None) -> Order | OrderDenied: ...

    async def cancel_order(self, client_order_id: str) -> Order: ...


# How long an order may wait at the gateway (for its send lock) before it is sent; past it the
# gateway rejects it unsent ("expired before send"). The host's deadline is its clock plus this.
ORDER_ADMISSION_SECS = 10.0


def order_call_timeout_secs(http_timeout_secs: float) -> float:
    """How long a host waits for ``submit_order`` at a venue with that REST timeout.

    Once admitted, a submission records the order, places it over REST and, when the answer is
    lost, looks it up once: bounded by two REST timeouts. The call timeout exceeds admission plus
    both, with a margin for Redis and for the two clocks, so when it expires the order is either in
    Redis (the poller settles it and the next bar's context shows it) or will never be sent.
    """
    return ORDER_ADMISSION_SECS + 2 * http_timeout_secs + 5.0


# For a host built without its venue's REST timeout (tests): VenueConfig's default.
ORDER_CALL_TIMEOUT_SECS = order_call_timeout_secs(VenueConfig.model_fields["http_timeout_secs"].default)

# The states a host moves its strategy from (None: never recorded): never the kill switch's.
_HOST_STATES: frozenset[StrategyState | None] = frozenset({None, StrategyState.RUNNING, StrategyState.PAUSED})
_PAUSED: frozenset[StrategyState | None] = frozenset({StrategyState.PAUSED})


class RayGatewaySink:
    """Sends intents to the named gateway actor through ``ActorClient``.

    Every call has a timeout, and after a failure the gateway is looked up
    again, so one the supervisor re-created under the same name is found.
    Errors are ``core.errors`` ones: the gateway's own (e.g. ``StoreUnavailable``,
    ``DuplicateClientOrderId``) as raised, Ray's as ``BackendError``.

    A submission's timeout does not stop the gateway's call. Its contract with
    the host: the host passes an admission deadline (``not_after_ms``), the
    gateway never sends an order whose turn comes after it, and the call's
    timeout (``ORDER_CALL_TIMEOUT_SECS``) exceeds the deadline plus the
    gateway's bounded send and lookup. A ``CallTimeout`` from ``submit_order``
    therefore means the order is in Redis or will never be sent.
    """

    def __init__(self, gateway_name: str, namespace: str | None = None, *, client: ActorClient | None = None,
                 order_timeout_secs: float = ORDER_CALL_TIMEOUT_SECS) -> None:
        self.gateway_name = gateway_name
        self.namespace = namespace
        self._client = client or ActorClient(namespace)
        self._order_timeout_secs = order_timeout_secs

    async def submit_order(self, intent: OrderIntent, not_after_ms: int | None = None) -> Order | OrderDenied:
        return await self._client.call(self.gateway_name, "submit_order", intent, not_after_ms,
                                       timeout_secs=self._order_timeout_secs)

    async def cancel_order(self, client_order_id: str) -> Order:
        return await self._client.call(self.gateway_name, "cancel_order", client_order_id,
                                       timeout_secs=self._order_timeout_secs)

    async def subscribe(self, actor_name: str, inst_ids: list[str]) -> None:
        await self._client.call(self.gateway_name, "subscribe", actor_name, inst_ids)


class StrategyHost:
    """Plain logic of the strategy actor (testable without Ray)."""

    def __init__(
        self,
        config: StrategyConfig,
        *,
        redis_url: str,
        namespace: str,
        sink: OrderSink,
        bar_interval_ms: int = 1000,
        start_paused: bool = False,
        risk: RiskConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.risk = risk or RiskConfig()
        # A strategy may forecast through a served model; this host is what can reach one.
        set_server_connector(connect_model_server)
        self.strategy = build_strategy(config)
        self.redis_url = redis_url
        self.namespace = namespace
        self.sink = sink
        self.clock = clock or WallClock()
        # Arms the freshness gate's root check once a root heartbeat is seen (risk.RootLatch says why).
        self._root_latch = RootLatch()
        self.bars = BarAggregator(bar_interval_ms)
        self.start_paused = start_paused
        self.store: RedisStore | None = None
        self.control: ControlState | None = None
        self._lock = asyncio.Lock()
        self.last_ticker_ms = 0  # venue time of the newest ticker
        self.last_ticker_recv_ms: int | None = None  # our clock when it arrived (freshness)
        self._own_marks: dict[tuple[str, str], Mark] = {}  # last price of every ticker fed to us
        self.last_error = ""
        self.orders_sent = 0
        self.rejections = 0
        self.denials = 0
        self.last_denial: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return self.config.id

    async def start(self) -> None:
        """Connect to Redis and take up the state recorded there.

        KILLED and WINDING_DOWN are kept. A strategy paused for any reason
        other than the supervisor's start hold stays paused (only an operator
        resumes it). Otherwise it starts RUNNING, or PAUSED under the
        supervisor's hold when ``start_paused``.

        Raises:
            StoreUnavailable: Redis does not answer.
        """
        if self.store is None:
            self.store = await RedisStore.connect(self.redis_url, self.namespace)
            self.control = ControlState(self.store.client, self.namespace)
        assert self.control is not None  # set with the store
        now = self.clock.now_ms()
        current = await self.store.strategy_state(self.id)
        await self.store.heartbeat(f"strategy:{self.id}", now)
        for order in await self.store.open_orders(venue=self.config.venue, strategy_id=self.id):
            self.strategy.on_order_update(order)  # a restarted host's strategy learns its resting orders
        hold = await self.control.strategy_pause(self.id) if current is StrategyState.PAUSED else None
        plan = start_plan(current, hold, start_paused=self.start_paused)
        if plan is StartPlan.KEEP_UNEXPLAINED:
            await self.control.set_strategy_pause(self.id, "unknown", "paused before restart", now)
        elif plan is StartPlan.HOLD:
            await self.control.set_strategy_pause(self.id, SUPERVISOR, "held until the venue's probes pass", now)
            await self._transition(_HOST_STATES, StrategyState.PAUSED)
        elif plan is StartPlan.RUN:
            await self.control.clear_strategy_pause(self.id)
            await self._transition(_HOST_STATES, StrategyState.RUNNING)

    async def _transition(self, from_states: frozenset[StrategyState | None], to: StrategyState) -> bool:
        """Check-and-set of this strategy's state: the kill switch's WINDING_DOWN or KILLED,
        written after this host read the state, is never overwritten. True when it was set."""
        assert self.store is not None
        if await self.store.transition_strategy_state(self.id, from_states, to):
            return True
        log.warning("strategy %s not set %s: its state changed meanwhile", self.id, to.value)
        return False

    async def stop(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None
            self.control = None

    async def state(self) -> StrategyState:
        assert self.store is not None, "start() first"
        state = await self.store.strategy_state(self.id)
        return StrategyState.PAUSED if state is None else state

    async def pause(self, reason: str = "", source: str | None = None) -> None:
        """Pause (RUNNING -> PAUSED) and record why. WINDING_DOWN / KILLED are left alone.

        The supervisor's hold never masks another pause: a strategy paused by
        risk or an operator stays paused when the supervisor releases its hold.
        """
        assert self.store is not None and self.control is not None, "start() first"
        source = pause_source(reason, source)
        # Once the kill switch owns the strategy (WINDING_DOWN / KILLED) the plan does nothing.
        plan = pause_plan(await self.state(), source, await self.control.strategy_pause(self.id))
        if plan.record:
            await self.control.set_strategy_pause(self.id, source, reason, self.clock.now_ms())
        if plan.set_paused:
            log.warning("strategy %s paused (%s): %s", self.id, source, reason)
            await self._transition(frozenset({StrategyState.RUNNING}), StrategyState.PAUSED)

    async def resume(self) -> bool:
        """Release the supervisor's hold. Returns True if the strategy now runs.

        A pause from any other source stays: see ``operator_resume``.
        """
        assert self.store is not None and self.control is not None, "start() first"
        state = await self.state()
        if state is not StrategyState.PAUSED:
            return state is StrategyState.RUNNING
        hold = await self.control.strategy_pause(self.id)
        if not supervisor_may_release(hold):
            assert hold is not None
            log.warning("strategy %s stays paused (%s): %s", self.id, hold["source"], hold["reason"])
            return False
        await self.control.clear_strategy_pause(self.id)
        return await self._transition(_PAUSED, StrategyState.RUNNING)

    async def operator_resume(self) -> bool:
        """Clear any pause (the control API checks probes before calling this)."""
        assert self.store is not None and self.control is not None, "start() first"
        if await self.state() is not StrategyState.PAUSED:
            return False
        await self.control.clear_strategy_pause(self.id)
        return await self._transition(_PAUSED, StrategyState.RUNNING)

    async def context(self) -> StrategyContext:
        """The strategy's positions and in-flight orders, read from Redis."""
        return (await self._read_state())[0]

    async def on_ticker(self, ticker: Ticker) -> list[Order]:
        """Feed one ticker; on a closed bar, decide and send. Returns orders sent.

        Decisions are serialised: the next bar waits until this one's orders
        are recorded in Redis, so in-flight orders are always visible to it.
        Never raises into the caller (the gateway's fan-out): errors are
        logged and kept in ``last_error`` for the health probe.
        """
        self.last_ticker_ms = max(self.last_ticker_ms, ticker.ts_ms)
        self.last_ticker_recv_ms = self.clock.now_ms()
        self._own_marks[(ticker.venue, ticker.inst_id)] = Mark(
            price=ticker.last, ts_ms=ticker.ts_ms, recv_ms=self.last_ticker_recv_ms)
        if ticker.inst_id not in self.config.symbols:
            return []
        sent: list[Order] = []
        async with self._lock:
            try:
                for bar in self.bars.add(ticker):
                    sent.extend(await self._decide(bar))
                self.last_error = ""
            except (TradetreeError, OSError) as exc:  # the sink's Ray errors arrive translated (ActorClient)
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("strategy %s: %s", self.id, self.last_error)
        return sent

    async def _decide(self, bar) -> list[Order]:
        assert self.store is not None and self.control is not None
        await self.store.heartbeat(f"strategy:{self.id}", self.clock.now_ms())
        ctx, orders, positions = await self._read_state()
        intents = self.strategy.on_bar(bar, ctx)  # always fed, so indicators stay warm while paused
        for coid in self.strategy.cancels():
            try:
                self.strategy.on_order_update(await self.sink.cancel_order(coid))
            except TradetreeError as exc:  # already final at the venue, or the venue is down
                log.info("strategy %s: cancel %s: %s", self.id, coid, exc)
        sent = []
        for intent in intents:
            reasons = await self.pre_trade_reasons(intent, orders, positions)
            if reasons:
                self.denials += 1
                self.last_denial = tuple(reasons)
                log.info("strategy %s: %s denied: %s", self.id, intent.reason, "; ".join(reasons))
                break  # the rest of a plan (e.g. open after close) depends on this leg
            deadline = self.clock.now_ms() + int(ORDER_ADMISSION_SECS * 1000)
            result = await self.sink.submit_order(intent, not_after_ms=deadline)
            if isinstance(result, OrderDenied):
                self.denials += 1
                self.last_denial = result.reasons
                break
            self.orders_sent += 1
            if result.state is OrderState.REJECTED:
                self.strategy.on_order_update(result)
                self.rejections += 1
                log.warning("strategy %s: order rejected: %s", self.id, result.reject_reason)
                break
            sent.append(result)
            orders.append((result, Decimal(0)))  # the next leg's check counts it in flight
            self.strategy.on_order_update(result)
        return sent

    async def pre_trade_reasons(self, intent: OrderIntent, orders: list[tuple[Order, Decimal]],
                                positions: list[Position]) -> list[str]:
        """Freshness gate, then limits and the duplicate-close guard. Empty = allowed.

        ``orders`` / ``positions``: this strategy's in-flight orders on its venue
        with what the store applied for them, and its positions (as
        ``_read_state`` read them, orders first, plus the orders this bar sent).
        A reason saying a mark or today's P&L is unknown tells why.

        Raises:
            StoreError: positions or orders cannot be read (the caller sends nothing).
        """
        assert self.store is not None and self.control is not None
        now = self.clock.now_ms()
        gate = await read_gate_inputs(
            self.store, self.control, self.config.venue, self.id, self.last_ticker_recv_ms, now,
            root_latch=self._root_latch,
        )
        reasons = check_freshness(intent, gate, self.risk)
        if reasons:
            return reasons
        limits, why_unknown = await self.pre_trade_inputs(intent, orders, positions)
        return [explain(r, why_unknown) for r in check_pre_trade(intent, limits, self.risk)]

    async def pre_trade_inputs(
        self, intent: OrderIntent, orders: list[tuple[Order, Decimal]], positions: list[Position]
    ) -> tuple[PreTradeInputs, dict[str, str]]:
        """What ``pre_trade.check`` needs for ``intent``; and why what is missing is.

        - positions, in-flight orders and their applied sizes: this strategy's
          (``orders`` / ``positions``, as the caller read them), or every
          strategy's on every venue, read now, when ``RiskConfig.global_limits_set``;
        - marks (only with a notional limit) of the intent's instrument and of
          every instrument with a position or order in the limits' scope: the
          fresher of this host's last ticker and the gateway's mark in Redis,
          left out when older than ``max_mark_age_secs`` or unreadable;
        - daily P&L (only with a loss limit) over every strategy's positions
          when ``max_daily_loss_global`` is set, this strategy's otherwise;
          None when the day baselines cannot be read.

        Reduce-only intents only face the duplicate-close guard, which needs
        this strategy's own positions and orders: nothing is read. (The caller's
        reading suffices for it: orders were read before positions, and the
        orders sent since are in ``orders``.)
        The second value maps the text of a ``pre_trade`` "unknown" reason to
        why it is unknown.

        Raises:
            StoreError: positions or orders cannot be read.
        """
        assert self.store is not None
        cfg = self.risk
        now = self.clock.now_ms()
        needs = input_needs(intent, cfg)
        if needs.wide:  # every strategy's, read now: this bar's own orders are among them (recorded before sent)
            orders, positions = await self.store.exposure()
        in_flight = tuple(o for o, _ in orders)
        applied = {o.client_order_id: size for o, size in orders}
        why: dict[str, str] = {}
        marks: dict[tuple[str, str], Decimal] = {}
        daily_pnl: dict[str, Decimal] | None = {}
        if needs.marks:
            marks, missing = await self._marks(mark_keys(intent, positions, in_flight, cfg), now)
            for key, text in missing.items():
                why[mark_unknown_reason(key)] = text
        if needs.daily_pnl:
            scope = loss_scope(positions, cfg, self.id)
            try:
                baselines = await self.store.day_pnl_baselines(utc_day(now), candidate_baselines(scope))
                daily_pnl = daily_pnl_by_strategy(scope, baselines)
            except StoreError as exc:  # fail closed: the check refuses while today's P&L is unknown
                daily_pnl = None
                why[DAILY_PNL_UNKNOWN] = f"day baselines unreadable: {exc}"
        inputs = PreTradeInputs(positions=tuple(positions), in_flight=in_flight, applied_sizes=applied, marks=marks,
                                daily_pnl=daily_pnl)
        return inputs, why

    async def _marks(self, keys: set[tuple[str, str]], now_ms: int
                     ) -> tuple[dict[tuple[str, str], Decimal], dict[tuple[str, str], str]]:
        """Usable prices of ``keys`` and why the others are unknown (``risk.pre_trade_inputs.choose_marks``)."""
        assert self.store is not None
        recorded: dict[tuple[str, str], Mark] = {}
        failure = ""
        try:
            recorded = await MarkBook(self.store.client, self.namespace).read(keys)
        except StoreError as exc:
            failure = f"marks unreadable: {exc}"
        return choose_marks(keys, recorded, self._own_marks, now_ms, int(self.risk.max_mark_age_secs * 1000),
                            read_failure=failure)

    async def _read_state(self) -> tuple[StrategyContext, list[tuple[Order, Decimal]], list[Position]]:
        """The strategy's context, its tracked orders on its venue with their applied sizes, and its
        positions: orders first (``RedisStore.exposure``), so a fill applied meanwhile is never missed."""
        assert self.store is not None
        pairs, every = await self.store.exposure(venue=self.config.venue, strategy_id=self.id)
        positions = [p for p in every if p.strategy_id == self.id]
        ctx = StrategyContext(now_ms=self.clock.now_ms(),
                              positions={p.inst_id: p.qty for p in positions if p.venue == self.config.venue},
                              pending=pending_by_instrument(pairs))
        return ctx, pairs, positions

    def on_fill(self, fill: Fill) -> None:
        self.strategy.on_fill(fill)

    def on_order_update(self, order: Order) -> None:
        self.strategy.on_order_update(order)

    async def check_health(self) -> HealthReport:
        store_error: str | None = None
        state: StrategyState | None = None
        try:
            if self.store is None:
                raise StoreError("not started")
            await self.store.ping()
            state = await self.state()
        except TradetreeError as exc:
            store_error = str(exc)
        probes = host_probes(store_error, state, self.last_error)
        return HealthReport(component=f"strategy:{self.id}", ts_ms=self.clock.now_ms(), probes=probes)

    def stats(self) -> dict:
        return {
            "id": self.id,
            "venue": self.config.venue,
            "orders_sent": self.orders_sent,
            "rejections": self.rejections,
            "denials": self.denials,
            "last_denial": list(self.last_denial),
            "last_ticker_ms": self.last_ticker_ms,
            "last_error": self.last_error,
        }


@ray.remote(num_cpus=0, max_restarts=0)
class StrategyActor:
    """Ray shell around ``StrategyHost``. Its Ray name is the strategy id."""

    def __init__(self, config: StrategyConfig, *, gateway_name: str, redis_url: str, namespace: str,
                 ray_namespace: str | None = None, bar_interval_ms: int = 1000,
                 start_paused: bool = False, risk: RiskConfig | None = None,
                 venue_http_timeout_secs: float | None = None) -> None:
        timeout = (ORDER_CALL_TIMEOUT_SECS if venue_http_timeout_secs is None
                   else order_call_timeout_secs(venue_http_timeout_secs))
        self._sink = RayGatewaySink(gateway_name, ray_namespace, order_timeout_secs=timeout)
        self._host = StrategyHost(config, redis_url=redis_url, namespace=namespace, sink=self._sink,
                                  bar_interval_ms=bar_interval_ms, start_paused=start_paused, risk=risk)

    async def start(self) -> None:
        await self._host.start()
        await self._sink.subscribe(self._host.id, list(self._host.config.symbols))

    async def stop(self) -> None:
        await self._host.stop()

    async def on_ticker(self, ticker: Ticker) -> None:
        await self._host.on_ticker(ticker)

    def on_fill(self, fill: Fill) -> None:
        self._host.on_fill(fill)

    def on_order_update(self, order: Order) -> None:
        self._host.on_order_update(order)

    async def pause(self, reason: str = "", source: str | None = None) -> None:
        await self._host.pause(reason, source)

    async def resume(self) -> bool:
        return await self._host.resume()

    async def operator_resume(self) -> bool:
        return await self._host.operator_resume()

    async def check_health(self) -> HealthReport:
        return await self._host.check_health()

    def stats(self) -> dict:
        return self._host.stats()

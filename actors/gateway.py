"""VenueGateway: one venue's REST and WS connections, the order path, and the WS fill layer.

``VenueGateway`` is plain async Python (testable without Ray);
``VenueGatewayActor`` is its one-line-per-method Ray shell. The supervisor
gives it its name, namespace, lifetime and ``max_restarts=0`` via
``.options(...)``.

What the gateway guarantees:
- an order is written to Redis *before* it is sent; if Redis is down nothing
  is sent (``StoreUnavailable``);
- every fill pushed on the private ``orders`` channel is applied to the store
  tagged ``ws`` (idempotent there), including fills of orders tradetree does
  not know (the store books them to ``_unattributed``);
- order status from the WS only ever moves an order forward, and the WS path
  never untracks an order: only the poller does (the incident's lesson);
- subscribers are fed fire-and-forget; a slow or dead one never stalls the WS;
- the last ticker price of each instrument is recorded in Redis
  (``core.marks``) on the heartbeat timer, once per instrument with a new
  ticker since the previous write: the strategy hosts value exposure with it;
- a strategy's reduce-only order goes to the venue with ``reduceOnly`` only
  when the account's net position leaves room for it
  (``execution.venue_reduce_only``); the recorded order says what was sent
  (``Order.venue_reduce_only``). Account-level orders (``submit_account_order``,
  the kill switch's) keep the flag they come with. Orders are recorded one at
  a time, and one sent with the flag is placed before the next is recorded, so
  no order this gateway sends overtakes it at the venue (other orders of the
  venue wait for that one REST round trip);
- a second gate, independent of the strategy hosts' freshness gate: a strategy's order
  (``submit_order``) is refused (``OrderDenied``, nothing recorded, nothing sent) while the
  kill flag is set, its venue is paused or the strategy is not RUNNING, as Redis says at the
  moment its turn to be recorded comes (one pipeline per order; unreadable: refused). An
  account-level order (``submit_account_order``) passes the kill flag and pauses, but only
  for a strategy the kill switch winds down (WINDING_DOWN / KILLED, states only it writes):
  that path is its clips' (``execution.strategy_order_refusals`` / ``wind_down_refusals``);
- a strategy's close sent with ``reduceOnly`` that the venue refuses with 51205 although
  our books hold it valid and agree with the venue's position is sent once more without
  the flag, under the same client order id (the venue never had it, so at most one order
  exists for the close), and alerted; the first refusal is never recorded as a rejection,
  so it never counts toward the rejection breaker. A refused retry is an ordinary rejection
  (``execution.retry_refused_close``);
- a strategy's order may carry an admission deadline (``submit_order``'s
  ``not_after_ms``): one whose turn to be recorded and sent comes after it is
  recorded REJECTED and never sent, so a caller whose call timed out (after
  the deadline plus one bounded send and lookup) finds it in Redis or knows
  it was never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import ray

from tradetree.actors.alerter import AlerterClient
from tradetree.actors.gate_inputs import read_gateway_gate
from tradetree.actors.gateway_fanout import FanOut, LocalTarget, RayActorTarget
from tradetree.adapters.okx import (
    OkxRestClient,
    OkxWsClient,
    VenueOrderReport,
    apply_report,
    parse_order_fill,
    parse_order_report,
    parse_ticker,
)
from tradetree.core import (
    ALERTER_ID,
    Clock,
    ComponentState,
    ConfigError,
    DuplicateClientOrderId,
    Fill,
    FillLayer,
    HealthReport,
    Instrument,
    InvalidOrderTransition,
    Mark,
    MarkBook,
    Order,
    OrderDenied,
    OrderIntent,
    OrderNotFound,
    OrderRejected,
    OrderState,
    ProbeResult,
    RedisStore,
    StoreError,
    VenueAuthError,
    VenueConfig,
    VenueCredentials,
    VenueError,
    VenueProtocolError,
    WallClock,
    cancel_and_wait,
)
from tradetree.execution import (
    REDUCE_ONLY_UNAVAILABLE,
    RefusedCloseRetry,
    acknowledged,
    cancel_all_error,
    decide_venue_reduce_only,
    market_data_probe,
    retry_refused_close,
    strategy_order_refusals,
    ticker_args,
    wind_down_refusals,
    ws_probe,
)
from tradetree.risk import RootLatch

__all__ = ["VenueGateway", "VenueGatewayActor", "record_ack"]

log = logging.getLogger(__name__)

ORDERS_CHANNEL = {"channel": "orders", "instType": "ANY"}
_STOP_TIMEOUT_SECS = 5.0

# (severity, key, title, text): the Alerter's ``alert``, e.g. ``AlerterClient.alert``.
AlertSink = Callable[[str, str, str, str], Awaitable[None]]


async def record_ack(store: RedisStore, order: Order, venue_order_id: str, now_ms: int) -> tuple[Order, bool]:
    """Record the venue's acknowledgement of ``order`` (sent by us, recorded before): the stored
    order after it, and whether this call changed it.

    The stored order is read again first, since the WS may have moved it on already
    (``execution.acknowledged`` says what the ack then adds). Another writer (the poller, the
    WS) may also move it on between that read and the update: the store then refuses the update
    (``InvalidOrderTransition``), and the order it holds says more than the ack, so it is returned.
    The gateway and the reconciler's canary both record their acks here.

    Raises:
        StoreError: Redis could not be read or written.
    """
    current = await store.get_order(order.client_order_id) or order
    acked = acknowledged(current, venue_order_id, now_ms)
    if acked is None:
        return current, False
    try:
        return await store.update_order(acked), True
    except InvalidOrderTransition:  # moved on meanwhile: what the store holds is newer
        return await store.get_order(order.client_order_id) or current, False


class VenueGateway:
    """The gateway of one venue. ``start()`` before anything else; ``stop()`` at the end.

    ``dead_man_switch_secs`` (0 = off) arms the venue's cancel-all-after
    switch and re-arms it every ``dead_man_rearm_secs``: if this process dies
    or hangs, the venue cancels our open orders by itself. ``stop()`` leaves
    the switch armed on purpose (a stopped engine should not leave orders
    working); a restarted gateway re-arms it.

    ``alert_sink`` receives the gateway's alerts off the order path (None:
    logged only); an alert it fails to deliver is logged and counted.
    """

    def __init__(
        self,
        venue: VenueConfig,
        *,
        rest_url: str,
        ws_url: str,
        redis_url: str,
        credentials: VenueCredentials | None = None,
        namespace: str,
        clock: Clock | None = None,
        heartbeat_interval_secs: float = 1.0,
        market_data_stale_secs: float = 10.0,
        dead_man_switch_secs: int = 60,
        dead_man_rearm_secs: float = 15.0,
        ray_namespace: str | None = None,
        subscribers: dict[str, list[str]] | None = None,
        alert_sink: AlertSink | None = None,
    ) -> None:
        self.venue = venue
        self._alert_sink = alert_sink
        self._alert_tasks: set[asyncio.Task[None]] = set()
        # Strategy actors fed from the start: a restarted gateway feeds them again by itself.
        self._configured_subscribers = dict(subscribers or {})
        self.component = f"gateway:{venue.name}"
        self._rest_url = rest_url
        self._ws_url = ws_url.rstrip("/")
        self._credentials = credentials
        self._redis_url = redis_url
        self._namespace = namespace
        self._clock = clock or WallClock()
        # Arms the gate's root check once a root heartbeat is seen (risk.RootLatch says why).
        self._root_latch = RootLatch()
        self._heartbeat_interval_secs = heartbeat_interval_secs
        self._market_data_stale_secs = market_data_stale_secs
        self._dead_man_switch_secs = dead_man_switch_secs
        self._dead_man_rearm_secs = dead_man_rearm_secs
        self._ray_namespace = ray_namespace
        self.state = ComponentState.NEW
        self._store: RedisStore | None = None
        self._rest: OkxRestClient | None = None
        self._ws_public: OkxWsClient | None = None
        self._ws_private: OkxWsClient | None = None
        self._instruments: dict[str, Instrument] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._fanout = FanOut()
        self._order_lock = asyncio.Lock()
        # Every order is recorded under this lock, and an order sent with the venue's reduceOnly holds
        # it until the venue has answered: what its flag was decided on (every order recorded before
        # it) is then all that can reach the venue ahead of it.
        self._send_lock = asyncio.Lock()
        self._last_ticker_ms: dict[str, int] = {}
        self._new_marks: dict[str, Mark] = {}  # inst_id -> latest ticker not yet written to Redis
        self.counters: dict[str, int] = {
            "ws_fills_applied": 0,
            "ws_fills_duplicate": 0,
            "order_updates": 0,
            "stale_updates": 0,
            "unknown_orders": 0,
            "ws_garbled_rows": 0,
            "ws_apply_errors": 0,
            "heartbeat_errors": 0,
            "dead_man_errors": 0,
            "mark_errors": 0,
            "venue_reduce_only_sent": 0,  # strategies' reduce-only orders sent with the venue flag
            "venue_reduce_only_withheld": 0,  # ... sent without it: the account's net would refuse them
            "venue_reduce_only_unknown": 0,  # ... sent with it because Redis could not be read
            "venue_reduce_only_retried": 0,  # closes refused with 51205 while valid, sent again without the flag
            "venue_reduce_only_refusals_kept": 0,  # ... refused with 51205 and not retried (our books disagree)
            "gate_refused": 0,  # strategies' orders the gateway's gate refused
            "clips_refused": 0,  # account-level orders refused: not of a strategy the kill switch winds down
            "alert_errors": 0,
        }
        self.last_error = ""

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Connect Redis, load instruments, open WS public and private, start the heartbeat.

        On failure everything opened so far is closed again and the error raised.

        Raises:
            StoreUnavailable: Redis does not answer.
            VenueAuthError: the venue rejected the credentials (REST or WS login).
            VenueUnavailable: the venue does not answer.
            ConfigError: a configured instrument is not listed by the venue, or the venue's
                credentials are not in this process (``secrets_file`` / its env vars).
            RuntimeError: the gateway was already started.
        """
        if self.state is not ComponentState.NEW:
            raise RuntimeError(f"{self.component}: start() is allowed once, state is {self.state.value}")
        self.state = ComponentState.STARTING
        try:
            if self._credentials is None:
                # Read here, in this actor's process, from the sources the venue's config names:
                # keys never travel as Ray arguments.
                self._credentials = self.venue.resolve_credentials()
            self._store = await RedisStore.connect(self._redis_url, self._namespace, clock=self._clock)
            self._rest = OkxRestClient(self.venue, self._credentials, rest_url=self._rest_url, clock=self._clock)
            instruments = await self._rest.load_instruments()
            self._instruments = {i.inst_id: i for i in instruments}
            missing = sorted(set(self.venue.instruments) - set(self._instruments))
            if missing:
                raise ConfigError(f"venue {self.venue.name}: instruments {missing} are not listed by the venue")
            suffix = "?brokerId=9999" if self.venue.sandbox else ""  # OKX demo WS, as ccxt does
            self._ws_private = OkxWsClient(
                f"{self._ws_url}/private{suffix}", venue=self.venue, on_message=self._on_private,
                credentials=self._credentials, clock=self._clock,
            )
            await self._ws_private.subscribe([ORDERS_CHANNEL])
            await self._ws_private.start()
            self._ws_public = OkxWsClient(
                f"{self._ws_url}/public{suffix}", venue=self.venue, on_message=self._on_public, clock=self._clock,
            )
            await self._ws_public.subscribe(ticker_args(self.venue.instruments))
            await self._ws_public.start()
            self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name=f"{self.component} heartbeat"))
            if self._dead_man_switch_secs:
                await self._rest.cancel_all_after(self._dead_man_switch_secs)
                self._tasks.append(asyncio.create_task(self._dead_man_loop(), name=f"{self.component} dead-man"))
        except BaseException:
            await self._close_all()
            self.state = ComponentState.STOPPED
            raise
        self.state = ComponentState.RUNNING
        for actor_name, inst_ids in self._configured_subscribers.items():
            await self.subscribe(actor_name, list(inst_ids))
        log.info("%s: running with %d instruments", self.component, len(self._instruments))

    async def stop(self) -> None:
        """Close WS, REST and Redis connections. Cancels no order. Idempotent."""
        if self.state is ComponentState.STOPPED:
            return
        self.state = ComponentState.STOPPED
        await self._close_all()

    async def _close_all(self) -> None:
        self._closing = True
        await cancel_and_wait([*self._tasks, *self._alert_tasks], timeout_secs=_STOP_TIMEOUT_SECS,
                              owner=self.component)
        self._tasks.clear()
        self._alert_tasks.clear()
        for ws in (self._ws_public, self._ws_private):
            if ws is not None:
                await ws.stop()
        await self._fanout.close()
        if self._rest is not None:
            await self._rest.close()
        if self._store is not None:
            with contextlib.suppress(Exception):
                await self._store.close()

    def _running(self) -> tuple[RedisStore, OkxRestClient]:
        if self.state is not ComponentState.RUNNING or self._store is None or self._rest is None:
            raise RuntimeError(f"{self.component}: not running (state {self.state.value}); call start() first")
        return self._store, self._rest

    async def _heartbeat_loop(self) -> None:
        assert self._store is not None
        while not self._closing:
            try:
                await self._store.heartbeat(self.component, self._clock.now_ms())
            except StoreError as exc:
                self.counters["heartbeat_errors"] += 1
                self.last_error = f"heartbeat: {exc}"
                log.warning("%s: heartbeat failed: %s", self.component, exc)
            await self.flush_marks()
            await asyncio.sleep(self._heartbeat_interval_secs)

    async def flush_marks(self) -> None:
        """Write the instruments' latest ticker prices received since the last write. Never raises.

        A failed write is retried on the next beat unless a newer ticker replaced it.
        """
        if not self._new_marks or self._store is None:
            return
        marks, self._new_marks = self._new_marks, {}
        try:
            await MarkBook(self._store.client, self._namespace).write(self.venue.name, marks)
        except StoreError as exc:
            self.counters["mark_errors"] += 1
            self.last_error = f"marks: {exc}"
            log.warning("%s: recording marks failed: %s", self.component, exc)
            self._new_marks = {**marks, **self._new_marks}

    async def _dead_man_loop(self) -> None:
        assert self._rest is not None
        while not self._closing:
            await asyncio.sleep(self._dead_man_rearm_secs)
            try:
                await self._rest.cancel_all_after(self._dead_man_switch_secs)
            except VenueError as exc:
                self.counters["dead_man_errors"] += 1
                self.last_error = f"dead-man switch: {exc}"
                log.warning("%s: re-arming the dead-man switch failed: %s", self.component, exc)

    # -- health ----------------------------------------------------------------------

    async def check_health(self) -> HealthReport:
        """Probes: store, rest, ws_public, ws_private, market_data_fresh. Never raises.

        ``rest`` and ``market_data_fresh`` are readiness probes (``liveness=False``):
        they hold back what is released after the gateway, they never restart it.
        """
        now = self._clock.now_ms()
        if self.state is not ComponentState.RUNNING:
            probe = ProbeResult(name="running", ok=False, detail=f"state {self.state.value}")
            return HealthReport(component=self.component, ts_ms=now, probes=(probe,))
        probes = [await self._probe_store(), await self._probe_rest()]
        for name, ws in (("ws_public", self._ws_public), ("ws_private", self._ws_private)):
            probes.append(ws_probe(name, ws))
        probes.append(self._probe_market_data(now))
        return HealthReport(component=self.component, ts_ms=now, probes=tuple(probes))

    async def _probe_store(self) -> ProbeResult:
        assert self._store is not None
        try:
            await self._store.ping()
        except StoreError as exc:
            return ProbeResult(name="store", ok=False, detail=str(exc))
        return ProbeResult(name="store", ok=True)

    async def _probe_rest(self) -> ProbeResult:
        # Readiness, not liveness: a venue whose REST API is down is not fixed by restarting the
        # gateway, and a restart would drop the WS connections that may still deliver fills.
        assert self._rest is not None
        try:
            await self._rest.fetch_time()
        except VenueError as exc:
            return ProbeResult(name="rest", ok=False, liveness=False, detail=str(exc))
        return ProbeResult(name="rest", ok=True, liveness=False)

    def _probe_market_data(self, now_ms: int) -> ProbeResult:
        return market_data_probe(set(self.venue.instruments) | self._fanout.inst_ids, self._last_ticker_ms,
                                 now_ms, int(self._market_data_stale_secs * 1000))

    def stats(self) -> dict[str, Any]:
        """Counters for the control API and metrics."""
        ws = {
            name: {
                "state": c.state.value, "reconnects": c.reconnects, "last_message_ms": c.last_message_ms,
                "garbled": c.garbled_messages, "handler_errors": c.handler_errors,
                # (attempt, delay) of the latest reconnect waits, oldest first
                "backoff": [[attempt, delay] for attempt, delay in c.backoff_history],
            }
            for name, c in (("public", self._ws_public), ("private", self._ws_private)) if c is not None
        }
        return {"state": self.state.value, "counters": dict(self.counters), "ws": ws,
                "subscribers": self._fanout.stats(), "last_error": self.last_error}

    # -- market data and subscribers ----------------------------------------------------

    async def instruments(self) -> list[Instrument]:
        self._running()
        return sorted(self._instruments.values(), key=lambda i: i.inst_id)

    async def subscribe(self, actor_name: str, inst_ids: list[str], strategy_id: str | None = None) -> None:
        """Feed the Ray actor ``actor_name``: tickers of ``inst_ids``, and order updates and
        fills of strategy ``strategy_id`` (default: ``actor_name``, the strategy actor's name).

        Raises ValueError for an instrument the venue does not list.
        """
        target = RayActorTarget(actor_name, namespace=self._ray_namespace, clock=self._clock)
        await self._add_subscriber(target, inst_ids, strategy_id or actor_name)

    async def subscribe_local(self, obj: Any, inst_ids: list[str], strategy_id: str | None = None) -> None:
        """As ``subscribe`` for an in-process object; order events only when ``strategy_id`` is given."""
        await self._add_subscriber(LocalTarget(obj), inst_ids, strategy_id)

    async def _add_subscriber(self, target: Any, inst_ids: list[str], strategy_id: str | None) -> None:
        self._running()
        unknown = sorted(set(inst_ids) - set(self._instruments))
        if unknown:
            raise ValueError(f"{self.component}: unknown instruments {unknown}")
        self._fanout.add(target, inst_ids, strategy_id)
        assert self._ws_public is not None
        await self._ws_public.subscribe(ticker_args(inst_ids))

    async def _on_public(self, message: dict[str, Any]) -> None:
        if message["arg"].get("channel") != "tickers":
            return
        for row in message["data"]:
            try:
                ticker = parse_ticker(row, venue=self.venue.name)
            except VenueProtocolError as exc:
                self.counters["ws_garbled_rows"] += 1
                log.warning("%s: ticker row ignored: %s", self.component, exc)
                continue
            now = self._last_ticker_ms[ticker.inst_id] = self._clock.now_ms()
            self._new_marks[ticker.inst_id] = Mark(price=ticker.last, ts_ms=ticker.ts_ms, recv_ms=now)
            self._fanout.ticker(ticker)

    # -- the WS order and fill layer ------------------------------------------------------

    async def _on_private(self, message: dict[str, Any]) -> None:
        if message["arg"].get("channel") != "orders":
            return
        for row in message["data"]:
            await self._handle_order_row(row)

    async def _handle_order_row(self, row: Any) -> None:
        """Apply one ``orders`` row: its fill (if it carries one) first, then its status.

        The two are parsed and applied independently: a garbled status must not
        cost us a good fill, nor the reverse. Nothing here raises.
        """
        name = self.venue.name
        steps: tuple[tuple[Callable[[], Any], Callable[[Any], Awaitable[None]]], ...] = (
            (lambda: parse_order_fill(row, venue=name, layer=FillLayer.WS), self._apply_ws_fill),
            (lambda: parse_order_report(row, venue=name), self._apply_ws_report),
        )
        for parse, apply in steps:
            try:
                item = parse()
            except VenueProtocolError as exc:
                self.counters["ws_garbled_rows"] += 1
                log.warning("%s: orders row part ignored: %s", self.component, exc)
                continue
            if item is None:
                continue
            try:
                await apply(item)
            except Exception as exc:  # Redis trouble: the poller backs this layer up
                self.counters["ws_apply_errors"] += 1
                self.last_error = f"ws apply: {exc}"
                log.error("%s: applying a WS %s failed: %s", self.component, type(item).__name__, exc)

    async def _apply_ws_fill(self, fill: Fill) -> None:
        assert self._store is not None
        instrument = self._instruments.get(fill.inst_id)
        if instrument is None:
            raise VenueProtocolError(f"fill {fill.key} for unlisted instrument", venue=self.venue.name)
        result = await self._store.apply_fill(fill, instrument)
        if not result.applied:
            self.counters["ws_fills_duplicate"] += 1
            return
        self.counters["ws_fills_applied"] += 1
        self._fanout.fill(fill, result.strategy_id)

    async def _apply_ws_report(self, report: VenueOrderReport) -> None:
        await self._merge_report(report)

    async def _merge_report(self, report: VenueOrderReport) -> Order | None:
        """Move the stored order forward by ``report``; the stored order, or None if unknown/stale."""
        assert self._store is not None
        store = self._store
        async with self._order_lock:
            order = await store.get_order(report.client_order_id) if report.client_order_id else None
            if order is None:
                order = await store.find_order_by_venue_id(self.venue.name, report.venue_order_id)
            if order is None:
                self.counters["unknown_orders"] += 1
                log.info("%s: update for unknown order %s/%s", self.component,
                         report.client_order_id, report.venue_order_id)
                return None
            try:
                updated = apply_report(order, report, now_ms=self._clock.now_ms())
                if updated is None:
                    self.counters["stale_updates"] += 1
                    return None
                stored = await store.update_order(updated)
            except (InvalidOrderTransition, VenueProtocolError) as exc:
                self.counters["stale_updates"] += 1
                log.warning("%s: order %s: update skipped: %s", self.component, order.client_order_id, exc)
                return None
        self.counters["order_updates"] += 1
        self._fanout.order_update(stored)
        return stored

    # -- the order path ------------------------------------------------------------------------

    async def submit_order(self, intent: OrderIntent, not_after_ms: int | None = None) -> Order | OrderDenied:
        """Gate a strategy's order, record it in Redis, then send it; return it as known after the attempt.

        The gateway's own gate (``execution.strategy_order_refusals``) runs once
        the order's turn to be recorded comes, on Redis as it then is: the kill
        flag set, the venue paused or the strategy not RUNNING (or any of it
        unreadable) refuses it with an ``OrderDenied`` (``checked_by`` this
        gateway): nothing is recorded, nothing sent. It holds whatever the
        strategy host's gate let through. Redis not answering raises, as below.

        ``not_after_ms`` (this gateway's clock, epoch ms) is the caller's admission deadline:
        an order whose turn at the send lock comes after it is recorded REJECTED ("expired
        before send") and never reaches the venue. A caller that stops waiting for this call
        some time after its deadline (its own call timeout, longer than the deadline plus one
        send and one lookup) thus knows the order is then either in Redis or never sent, and
        may act on what Redis shows without ordering the same exposure twice.

        A reduce-only intent (may only reduce its strategy's position, checked
        pre-trade by the caller) is sent with the venue's ``reduceOnly`` only
        when the account's net position in Redis leaves room for it, else
        without (``execution.venue_reduce_only``); when Redis cannot be read
        for that, with it (the venue may refuse; that is safe). The recorded
        order's ``venue_reduce_only`` says which. One the venue refuses with
        51205 is sent once more without the flag when our books hold it valid
        and agree with the venue (``execution.retry_refused_close``), and the
        gateway alerts; the refusal is not recorded as a rejection.

        Returns ``OrderDenied`` when the gate refused it; else the order LIVE (or
        further) when acknowledged, REJECTED (with ``reject_reason``) when the venue
        refused it or its deadline passed before it was sent, or PENDING_NEW when the
        outcome could not be learned (it stays tracked; the poller settles it).

        Raises:
            StoreUnavailable / StoreError: the order could not be recorded; nothing was sent.
            DuplicateClientOrderId: an order with its client order id is already recorded; nothing was sent.
            VenueAuthError: credentials rejected (the order is recorded REJECTED).
            ValueError: the intent is for another venue.
        """
        return await self._submit(intent, account_level=False, not_after_ms=not_after_ms)

    async def submit_account_order(self, intent: OrderIntent) -> Order | OrderDenied:
        """As ``submit_order`` for the kill switch's wind-down clips, sized against the account's net
        position by the kill switch: ``reduceOnly`` is sent exactly as ``intent.reduce_only``, and the
        kill flag and venue pauses do not hold it (they exist to let exactly these through).

        Only an order of a strategy the kill switch winds down (WINDING_DOWN or KILLED in Redis,
        states only the kill switch writes) passes (``execution.wind_down_refusals``); any other is
        refused with an ``OrderDenied``, nothing recorded or sent (``StoreUnavailable`` while Redis
        does not answer).
        """
        return await self._submit(intent, account_level=True)

    async def _submit(self, intent: OrderIntent, *, account_level: bool,
                      not_after_ms: int | None = None) -> Order | OrderDenied:
        store, rest = self._running()
        if intent.venue != self.venue.name:
            raise ValueError(f"{self.component}: intent for venue {intent.venue!r}")
        order = Order.from_intent(intent, now_ms=self._clock.now_ms())
        listed = intent.inst_id in self._instruments
        outcome: str | VenueError | None = None
        lock = self._send_lock
        await lock.acquire()
        held = True
        try:
            # Checked once the lock is ours: waiting for it is what can outlast the caller's patience.
            expired = not_after_ms is not None and self._clock.now_ms() > not_after_ms
            if not expired:
                # Also once the lock is ours: a kill flag or pause set while the order waited holds it.
                denied = await self._gate(store, intent, account_level=account_level)
                if denied is not None:
                    return denied
            send = listed and not expired
            if intent.reduce_only and not account_level and not expired:
                order = await self._with_venue_reduce_only(store, order)
            else:
                order = order.model_copy(update={"venue_reduce_only": intent.reduce_only})
            await self._record(store, order)
            if not (order.venue_reduce_only and send):
                lock.release()  # nothing to protect: the venue cannot refuse it for the account's net
                held = False
            if send:
                outcome = await self._place(rest, order)
                if (not account_level and order.venue_reduce_only and isinstance(outcome, OrderRejected)
                        and outcome.code == REDUCE_ONLY_UNAVAILABLE):
                    # Still under the lock: none of our orders moves the net while this is decided and resent.
                    order, outcome = await self._retry_refused_close(store, rest, order, outcome)
        finally:
            if held:
                lock.release()
        if expired:  # never sent: its caller may have stopped waiting and gone on without it
            return await self._reject(order, "expired before send")
        if outcome is None:  # never sent
            return await self._reject(order, f"instrument {intent.inst_id} is not listed by {self.venue.name}")
        if isinstance(outcome, str):  # the venue order id came back
            return await self._acknowledge(order, outcome)
        if isinstance(outcome, OrderRejected):  # the venue refused this order
            return await self._reject(order, str(outcome))
        if isinstance(outcome, VenueAuthError):  # ... or our credentials: reject it, and raise
            await self._reject(order, f"credentials rejected: {outcome}")
            raise outcome
        # unavailable, timeout, garbled ack: the outcome is unknown
        log.warning("%s: order %s outcome unknown: %s", self.component, order.client_order_id, outcome)
        return await self._resolve_unknown(order)

    async def _gate(self, store: RedisStore, intent: OrderIntent, *, account_level: bool) -> OrderDenied | None:
        """The gateway's gate on Redis as it is now: None to go on, else the denial.

        Raises:
            StoreUnavailable: Redis does not answer (nothing is recorded or sent).
        """
        inputs = await read_gateway_gate(store.client, self._namespace, self.venue.name, intent.strategy_id,
                                         now_ms=self._clock.now_ms(), root_latch=self._root_latch)
        if account_level:
            reasons = wind_down_refusals(intent, inputs)
        else:
            reasons = strategy_order_refusals(intent, inputs)
        if not reasons:
            return None
        self.counters["clips_refused" if account_level else "gate_refused"] += 1
        log.warning("%s: %s order of %s refused: %s", self.component,
                    "account-level" if account_level else "strategy", intent.strategy_id, "; ".join(reasons))
        return OrderDenied(intent=intent, reasons=tuple(reasons), ts_ms=self._clock.now_ms(),
                           checked_by=self.component)

    async def _retry_refused_close(self, store: RedisStore, rest: OkxRestClient, order: Order,
                                   refusal: OrderRejected) -> tuple[Order, str | VenueError]:
        """``order`` (sent with the venue's flag, refused with 51205) and the outcome to report: the
        refusal, or the outcome of sending it once more without the flag (``retry_refused_close``).

        The retry keeps the client order id: the venue never accepted the first attempt, so
        it cannot hold two orders for the close, and Redis keeps one order, never a REJECTED
        one for the refused attempt (which would count toward the rejection breaker). Redis
        records the dropped flag before the retry is sent; if it cannot, nothing is resent.
        """
        decision = await self._refused_close_decision(store, rest, order)
        where = f"{order.strategy_id}'s reduce-only {order.side.value} {order.size} on {order.venue}:{order.inst_id}"
        if not decision.retry:
            self.counters["venue_reduce_only_refusals_kept"] += 1
            log.warning("%s: order %s (%s) refused with %s, not retried: %s", self.component,
                        order.client_order_id, where, REDUCE_ONLY_UNAVAILABLE, decision.reason)
            return order, refusal
        unflagged = order.model_copy(update={"venue_reduce_only": False,
                                             "updated_ms": max(self._clock.now_ms(), order.updated_ms)})
        try:
            async with self._order_lock:
                unflagged = await store.update_order(unflagged)
        except StoreError as exc:
            log.error("%s: order %s: dropping the venue flag could not be recorded (%s); not retried",
                      self.component, order.client_order_id, exc)
            return order, refusal
        self.counters["venue_reduce_only_retried"] += 1
        text = (f"order {order.client_order_id} ({where}) was refused by the venue with {refusal}; "
                f"{decision.reason}. Sent once more without the venue's reduce-only. If this repeats, "
                f"check what else trades {order.inst_id} on this account.")
        log.warning("%s: %s", self.component, text)
        self._alert("warning", f"{self.component}:reduce_only_refused:{order.strategy_id}",
                    f"Close refused by {order.venue} (51205), retried without reduce-only", text)
        return unflagged, await self._place(rest, unflagged)

    async def _refused_close_decision(self, store: RedisStore, rest: OkxRestClient, order: Order) -> RefusedCloseRetry:
        try:
            # Redis first, then the venue: every fill the venue makes in between is of an order Redis tracks.
            tracked, positions = await store.exposure(venue=self.venue.name)
            venue_net = (await rest.fetch_positions()).get(order.inst_id, Decimal(0))
        except Exception as exc:  # fail closed: a refusal our books cannot be checked against stays one
            return RefusedCloseRetry(False, f"books or the venue's position unreadable: {type(exc).__name__}: {exc}")
        return retry_refused_close(order, venue_net, positions, tracked)

    def _alert(self, severity: str, key: str, title: str, text: str) -> None:
        """Hand an alert to the sink off the order path. Never raises."""
        if self._alert_sink is None:
            return
        task = asyncio.create_task(self._deliver_alert(severity, key, title, text), name=f"{self.component} alert")
        self._alert_tasks.add(task)
        task.add_done_callback(self._alert_tasks.discard)

    async def _deliver_alert(self, severity: str, key: str, title: str, text: str) -> None:
        assert self._alert_sink is not None
        try:
            await self._alert_sink(severity, key, title, text)
        except Exception as exc:  # logged already (the text above); the gateway goes on
            self.counters["alert_errors"] += 1
            log.warning("%s: alert %s not delivered: %s: %s", self.component, key, type(exc).__name__, exc)

    @staticmethod
    async def _place(rest: OkxRestClient, order: Order) -> str | VenueError:
        """The venue order id, or the venue error the attempt ended in (other errors raise)."""
        try:
            return await rest.create_order(order)
        except VenueError as exc:
            return exc

    @staticmethod
    async def _record(store: RedisStore, order: Order) -> None:
        if not await store.record_order(order):
            raise DuplicateClientOrderId(f"client order id {order.client_order_id} is already recorded")

    async def _with_venue_reduce_only(self, store: RedisStore, order: Order) -> Order:
        """``order`` with ``venue_reduce_only`` decided from every strategy's state in Redis. Never raises."""
        try:
            # Orders before positions (``RedisStore.exposure``): a same-side fill the WS layer applies
            # between the reads counts twice, never zero times, which would leave room the venue's net
            # no longer has (51205). No order is recorded meanwhile (``_send_lock``).
            tracked, positions = await store.exposure(venue=self.venue.name)
            same_side = [(o, size) for o, size in tracked if o.inst_id == order.inst_id and o.side is order.side]
            in_flight = [o for o, _ in same_side]
            applied = {o.client_order_id: size for o, size in same_side}
        except Exception as exc:  # Redis down or a garbled record: fail closed, keep the venue's guard
            self.counters["venue_reduce_only_unknown"] += 1
            log.warning("%s: order %s: account position unknown (%s); sent reduce-only",
                        self.component, order.client_order_id, exc)
            return order.model_copy(update={"venue_reduce_only": True})
        decision = decide_venue_reduce_only(order, positions, in_flight, applied)
        if decision.send:
            self.counters["venue_reduce_only_sent"] += 1
        else:
            self.counters["venue_reduce_only_withheld"] += 1
            log.info("%s: order %s of %s sent without the venue's reduce-only: %s", self.component,
                     order.client_order_id, order.strategy_id, decision.reason)
        return order.model_copy(update={"venue_reduce_only": decision.send})

    async def _acknowledge(self, order: Order, venue_order_id: str) -> Order:
        assert self._store is not None
        try:
            async with self._order_lock:
                stored, changed = await record_ack(self._store, order, venue_order_id, self._clock.now_ms())
        except StoreError as exc:
            # The order is at the venue; Redis holds it as PENDING_NEW and the poller will catch up.
            self.last_error = f"ack of {order.client_order_id}: {exc}"
            log.error("%s: recording the ack of %s failed: %s", self.component, order.client_order_id, exc)
            return order.transition(OrderState.LIVE, now_ms=self._clock.now_ms(), venue_order_id=venue_order_id)
        if changed:
            self._fanout.order_update(stored)
        return stored

    async def _reject(self, order: Order, reason: str) -> Order:
        assert self._store is not None
        rejected = order.transition(OrderState.REJECTED, now_ms=max(self._clock.now_ms(), order.updated_ms),
                                    reject_reason=reason)
        async with self._order_lock:
            stored = await self._store.update_order(rejected)
        log.info("%s: order %s rejected: %s", self.component, order.client_order_id, reason)
        self._fanout.order_update(stored)
        return stored

    async def _resolve_unknown(self, order: Order) -> Order:
        assert self._store is not None and self._rest is not None
        try:
            report = await self._rest.fetch_order(order)
        except VenueError as exc:
            log.warning("%s: order %s still unknown (%s); left PENDING_NEW for the poller",
                        self.component, order.client_order_id, exc)
            return await self._store.get_order(order.client_order_id) or order
        merged = await self._merge_report(report)
        return merged or await self._store.get_order(order.client_order_id) or order

    async def cancel_order(self, client_order_id: str) -> Order:
        """Cancel a recorded order; return it as the venue then reports it.

        A terminal order is returned as is. If the venue no longer has the
        order open, its final state is fetched instead.

        Raises:
            OrderNotFound: tradetree never recorded ``client_order_id``.
            VenueUnavailable / VenueAuthError: the cancel request failed.
        """
        store, rest = self._running()
        order = await store.get_order(client_order_id)
        if order is None:
            raise OrderNotFound(f"{self.component}: no recorded order {client_order_id}", venue=self.venue.name)
        if order.state.is_terminal:
            return order
        try:
            await rest.cancel_order(order)
        except OrderNotFound:
            pass  # already final at the venue (or never placed): the fetch below tells which
        try:
            report = await rest.fetch_order(order)
        except VenueError as exc:
            log.warning("%s: state after cancel of %s unknown: %s", self.component, client_order_id, exc)
            return await store.get_order(client_order_id) or order
        return await self._merge_report(report) or await store.get_order(client_order_id) or order

    async def cancel_all(self, strategy_id: str | None = None) -> int:
        """Cancel, via REST, every non-terminal order Redis tracks on this venue (of one strategy).

        Every order is attempted. Returns how many cancels the venue accepted;
        orders the venue no longer has open are skipped.

        Raises:
            VenueError: at least one cancel failed for another reason (the
                message counts them); the others were still attempted.
        """
        store, rest = self._running()
        orders = [o for o in await store.open_orders(venue=self.venue.name, strategy_id=strategy_id)
                  if not o.state.is_terminal]
        accepted, failures = 0, []
        for order in orders:
            try:
                await rest.cancel_order(order)
                accepted += 1
            except OrderNotFound:
                continue
            except VenueError as exc:
                failures.append(exc)
        error = cancel_all_error(self.component, self.venue.name, failures, len(orders), accepted)
        if error is not None:
            raise error
        return accepted

    async def venue_positions(self) -> dict[str, str]:
        """The account's net per instrument as the venue reports it now (REST), flat ones left out;
        sizes as text (exact across Ray). The kill switch's last check: the venue, not Redis.

        Raises:
            VenueError: the venue did not answer.
        """
        _, rest = self._running()
        return {inst: str(qty) for inst, qty in (await rest.fetch_positions()).items()}


class _VenueGatewayShell:
    """Ray shell: builds a ``VenueGateway`` and delegates to it, one line per method.

    ``alerter_name`` (default ``ALERTER_ID``; None = log only) is looked up in
    ``ray_namespace`` when an alert is sent.
    """

    def __init__(self, venue: VenueConfig, *, alerter_name: str | None = ALERTER_ID, **kwargs: Any) -> None:
        sink = AlerterClient(alerter_name, kwargs.get("ray_namespace")).alert if alerter_name else None
        self._gateway = VenueGateway(venue, alert_sink=sink, **kwargs)

    async def start(self) -> None:
        await self._gateway.start()

    async def stop(self) -> None:
        await self._gateway.stop()

    async def check_health(self) -> HealthReport:
        return await self._gateway.check_health()

    async def instruments(self) -> list[Instrument]:
        return await self._gateway.instruments()

    async def subscribe(self, actor_name: str, inst_ids: list[str], strategy_id: str | None = None) -> None:
        await self._gateway.subscribe(actor_name, inst_ids, strategy_id)

    async def submit_order(self, intent: OrderIntent, not_after_ms: int | None = None) -> Order | OrderDenied:
        return await self._gateway.submit_order(intent, not_after_ms)

    async def submit_account_order(self, intent: OrderIntent) -> Order | OrderDenied:
        return await self._gateway.submit_account_order(intent)

    async def cancel_order(self, client_order_id: str) -> Order:
        return await self._gateway.cancel_order(client_order_id)

    async def cancel_all(self, strategy_id: str | None = None) -> int:
        return await self._gateway.cancel_all(strategy_id)

    async def venue_positions(self) -> dict[str, str]:
        return await self._gateway.venue_positions()

    async def stats(self) -> dict[str, Any]:
        return self._gateway.stats()


VenueGatewayActor = ray.remote(num_cpus=0, max_restarts=0)(_VenueGatewayShell)

"""The kill switch: stop trading (everything, or one strategy) and wind the positions down.

A kill first makes sure nothing new is traded -- the global kill flag, or the
strategy's state ``WINDING_DOWN`` -- and only then touches the venue: it
cancels the scope's open orders, sends reduce-only **market** orders (at most
``max_clip_size`` each) until every position of the scope is zero, and checks
that it stays flat. A killed strategy's positions are wound down, never
abandoned. The freshness gate lets reduce-only orders through the kill flag
only for WINDING_DOWN strategies, so a global kill also puts every strategy
(and ``_unattributed``, when it holds a position) in WINDING_DOWN; the
strategies it wound down are KILLED when it is done, and the kill flag stays
set until an operator clears it.

The incident this answers had a kill switch stuck in an infinite retry loop,
so everything here is bounded: a failing step is retried with exponential
backoff and jitter at most ``step_max_attempts`` times, a run lasts at most
``max_duration_secs``, and every loop iteration sleeps, so the number of calls
is bounded even when the clock is simulated. When a bound is hit the kill is
left ``STALLED`` with the reason, in Redis, for anyone to see; the next
``kill()`` or ``resume_pending()`` retries it. No exception escapes into the
host (the RiskMonitor actor).

The parts:

- ``KillSwitchConfig`` and ``backoff_delay``: the bounds.
- ``plan_wind_down``: the pure planner. From the positions, the scope's
  orders and what the store has applied for them, the next commands.
- ``KillSwitch``: the executor (plain async, hosted by the RiskMonitor). It
  records every step in Redis (``{ns}:ctl:kill:<scope>`` holds the progress,
  ``{ns}:ctl:kill_log:<scope>`` the audit stream of steps), so a restarted
  executor resumes an unfinished kill where it stood.
- Ports: ``VenuePort`` (the gateways: ``RayVenuePort``) and
  ``StrategyControlPort`` (pausing a strategy actor: ``RayStrategyPort``).

No double close: a position gets its next clip only when no order of its
strategy on that instrument is unsettled (still working, or terminal with
fills the store has not applied yet). Two kills in one executor never act at
the same time, and executors in different processes exclude each other with a
lease in Redis (``{ns}:ctl:kill_lease``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import random
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence, Set
from decimal import Decimal
from typing import Any, Protocol

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tradetree.core.clock import Clock, WallClock
from tradetree.core.errors import (
    StoreError,
    TradetreeError,
    VenueAuthError,
    VenueUnavailable,
)
from tradetree.core.redis_calls import redis_call
from tradetree.core.redis_keys import RedisKeys, escape_component
from tradetree.core.types import Order, OrderDenied, OrderIntent, OrderState, OrderType, Position, Side

__all__ = [
    "GLOBAL_SCOPE",
    "AwaitOrders",
    "CancelOrders",
    "KillJournal",
    "KillPhase",
    "KillProgress",
    "KillState",
    "KillStep",
    "KillStore",
    "KillSwitch",
    "KillSwitchConfig",
    "OffsetPosition",
    "RayStrategyPort",
    "RayVenuePort",
    "StepOutcome",
    "StrategyControlPort",
    "SubmitClip",
    "VenuePort",
    "WindDownPlan",
    "backoff_delay",
    "gateway_actor_name",
    "kill_scope",
    "order_is_settled",
    "plan_wind_down",
]

log = logging.getLogger(__name__)

_ZERO = Decimal(0)
_FROZEN = ConfigDict(frozen=True, extra="forbid")

GLOBAL_SCOPE = "global"
# Strategy states as the store and actors.strategy_host.StrategyState spell them.
_WINDING_DOWN = "WINDING_DOWN"
_KILLED = "KILLED"
_LOG_MAXLEN = 10_000


# -- configuration ---------------------------------------------------------------------------


class KillSwitchConfig(BaseModel):
    """Bounds and sizes of a wind-down.

    Attributes:
        max_clip_size: largest wind-down order, in venue units (contracts for
            swaps), for instruments without an entry in ``max_clip_size_by_inst``.
            No default: what is a safe market order depends on what you trade.
        max_clip_size_by_inst: per-instrument clip, keyed ``venue:inst_id``.
        step_max_attempts: consecutive failures of one step (a cancel on one
            venue, a clip of one position, setting the flag) before the kill
            is left STALLED.
        backoff_min_secs / backoff_max_secs: retry delays; attempt ``n`` waits
            between ``min * 2**(n-1)`` and ``min * 2**n``, capped at ``max``.
        max_duration_secs: how long one run (a ``kill()`` or a resume) may
            take before the kill is left STALLED.
        verify_interval_secs: pause between looking at the state again while
            orders settle, and before confirming flat.
        call_timeout_secs: a venue or store call not answered within this
            fails (and is retried like any failure).
        lease_secs: validity of the executor lease; renewed before every call.
        allow_offsetting_orders: when strategies hold opposite positions on
            the same venue instrument, flattening one of them in Redis needs an
            order that is not reduce-only at the venue. False leaves such
            positions alone and the kill STALLED with the reason; True sends
            them as plain market orders.
    """

    model_config = _FROZEN

    max_clip_size: Decimal = Field(gt=0)
    max_clip_size_by_inst: dict[str, Decimal] = Field(default_factory=dict)
    step_max_attempts: int = Field(default=6, ge=1)
    backoff_min_secs: float = Field(default=0.5, gt=0)
    backoff_max_secs: float = Field(default=30.0, gt=0)
    max_duration_secs: float = Field(default=600.0, gt=0)
    verify_interval_secs: float = Field(default=1.0, gt=0)
    call_timeout_secs: float = Field(default=15.0, gt=0)
    lease_secs: float = Field(default=60.0, gt=0)
    allow_offsetting_orders: bool = False

    @field_validator("max_clip_size_by_inst")
    @classmethod
    def _clips_positive(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        bad = sorted(k for k, size in v.items() if size <= 0)
        if bad:
            raise ValueError(f"clip sizes must be positive: {', '.join(bad)}")
        return v

    @model_validator(mode="after")
    def _bounds_consistent(self) -> KillSwitchConfig:
        if self.backoff_min_secs > self.backoff_max_secs:
            raise ValueError("backoff_min_secs must not exceed backoff_max_secs")
        # The lease is renewed before every call and after every sleep: it must outlive both.
        longest_gap = self.call_timeout_secs + max(self.backoff_max_secs, self.verify_interval_secs)
        if self.lease_secs <= longest_gap:
            raise ValueError(
                f"lease_secs ({self.lease_secs}) must exceed call_timeout_secs plus the longest "
                f"sleep ({longest_gap})"
            )
        return self

    def clip_size(self, venue: str, inst_id: str) -> Decimal:
        return self.max_clip_size_by_inst.get(f"{venue}:{inst_id}", self.max_clip_size)


def backoff_delay(attempt: int, config: KillSwitchConfig, rng: random.Random) -> float:
    """Delay before retrying after the ``attempt``-th consecutive failure (1-based).

    Exponential with jitter, never below ``backoff_min_secs`` nor above
    ``backoff_max_secs``: uniform in ``[c/2, c]`` where
    ``c = min(max, min * 2**attempt)`` (and at least ``min``).
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    ceiling = min(config.backoff_max_secs, config.backoff_min_secs * 2.0 ** min(attempt, 60))
    floor = max(config.backoff_min_secs, ceiling / 2)
    return rng.uniform(floor, ceiling)


# -- the pure planner -------------------------------------------------------------------------


class CancelOrders(BaseModel):
    """Command: cancel every open order of the scope on one venue."""

    model_config = _FROZEN

    venue: str
    strategy_id: str | None  # None: every strategy (global kill)
    why: str

    @property
    def step(self) -> str:
        return f"cancel {self.venue}"


class SubmitClip(BaseModel):
    """Command: send one wind-down market order for one position."""

    model_config = _FROZEN

    intent: OrderIntent
    position_qty: Decimal

    @property
    def step(self) -> str:
        i = self.intent
        return f"flatten {i.strategy_id} {i.venue} {i.inst_id}"


class AwaitOrders(BaseModel):
    """A position that gets no order until these orders of it have settled."""

    model_config = _FROZEN

    strategy_id: str
    venue: str
    inst_id: str
    client_order_ids: tuple[str, ...]


class OffsetPosition(BaseModel):
    """A position that no reduce-only order can flatten: the venue's net position
    on the instrument (all strategies) is flat or on the other side."""

    model_config = _FROZEN

    strategy_id: str
    venue: str
    inst_id: str
    qty: Decimal
    venue_net: Decimal


class WindDownPlan(BaseModel):
    """What to do next. Commands run in order: cancels first, then clips."""

    model_config = _FROZEN

    actions: tuple[CancelOrders | SubmitClip, ...] = ()
    waiting: tuple[AwaitOrders, ...] = ()
    blocked: tuple[OffsetPosition, ...] = ()
    remaining: tuple[Position, ...] = ()  # positions of the scope that are not flat

    @property
    def flat(self) -> bool:
        """Every position of the scope is zero, no order of it is unsettled, every venue swept."""
        return not (self.actions or self.waiting or self.blocked or self.remaining)


def order_is_settled(order: Order, applied_size: Decimal) -> bool:
    """True when the order can no longer change its position: terminal, and every
    fill its status reports has been applied to the store.

    A terminal order whose fills have not all been applied still counts as
    unsettled: the incident was exactly an order reported filled whose fills
    never arrived, and closing the position again on top of it doubles it.
    """
    return order.state.is_terminal and applied_size >= order.filled_size


def _sign(qty: Decimal) -> int:
    return 1 if qty > 0 else -1


def plan_wind_down(
    *,
    strategy_id: str | None,
    positions: Sequence[Position],
    orders: Sequence[Order],
    applied: Mapping[str, Decimal],
    venues: Iterable[str],
    swept: Set[str],
    config: KillSwitchConfig,
) -> WindDownPlan:
    """The next steps of a wind-down, from the state alone (pure, deterministic).

    Args:
        strategy_id: the scope; None for a global kill.
        positions: every position in the store, of every strategy (the
            venue's net per instrument decides what can be reduce-only).
        orders: orders that may be unsettled (the store's tracked orders and
            the ones this kill sent); others' and settled ones are ignored.
        applied: client order id -> size the store has applied for it.
        venues: venues to sweep even if the store shows nothing there (the
            global kill sweeps every gateway).
        swept: venues whose cancel-all already succeeded in this run.

    Rules: a venue is swept (cancel-all) once before any clip is sent there;
    orders still working after the sweep (not market orders, which end by
    themselves) are cancelled again; a position gets a clip only when none of
    its orders is unsettled; a clip is a market order of at most the clip
    size, reduce-only, and never larger than what is left of the venue's net
    position on that side, so the clips of one plan cannot flip the venue.
    """
    in_scope = (lambda sid: True) if strategy_id is None else (lambda sid: sid == strategy_id)
    scoped = [p for p in positions if in_scope(p.strategy_id) and p.qty != 0]
    scoped.sort(key=lambda p: (p.strategy_id, p.venue, p.inst_id))
    unsettled: dict[str, Order] = {}
    for o in orders:
        if in_scope(o.strategy_id) and not order_is_settled(o, applied.get(o.client_order_id, _ZERO)):
            unsettled[o.client_order_id] = o

    actions: list[CancelOrders | SubmitClip] = []
    to_sweep = set(venues) | {p.venue for p in scoped} | {o.venue for o in unsettled.values()}
    for venue in sorted(to_sweep - set(swept)):
        actions.append(CancelOrders(venue=venue, strategy_id=strategy_id,
                                    why="sweep: cancel every open order of the scope"))
    working: dict[str, list[str]] = defaultdict(list)
    for o in unsettled.values():
        if o.venue in swept and not o.state.is_terminal and o.type is not OrderType.MARKET:
            working[o.venue].append(o.client_order_id)
    for venue in sorted(working):
        actions.append(CancelOrders(venue=venue, strategy_id=strategy_id,
                                    why="still open after cancel: " + ", ".join(sorted(working[venue]))))

    pending: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for o in unsettled.values():
        pending[(o.strategy_id, o.venue, o.inst_id)].append(o.client_order_id)
    waiting = tuple(
        AwaitOrders(strategy_id=k[0], venue=k[1], inst_id=k[2], client_order_ids=tuple(sorted(c)))
        for k, c in sorted(pending.items())
    )

    net: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for p in positions:
        net[(p.venue, p.inst_id)] += p.qty
    ready = [p for p in scoped if p.venue in swept and (p.strategy_id, p.venue, p.inst_id) not in pending]

    def clip(p: Position, reduce_only: bool) -> SubmitClip | None:
        key = (p.venue, p.inst_id)
        size = min(abs(p.qty), config.clip_size(p.venue, p.inst_id))
        if reduce_only:
            if net[key] == 0 or _sign(net[key]) != _sign(p.qty):
                return None
            size = min(size, abs(net[key]))
        net[key] -= _sign(p.qty) * size
        intent = OrderIntent(
            strategy_id=p.strategy_id, venue=p.venue, inst_id=p.inst_id,
            side=Side.SELL if p.qty > 0 else Side.BUY, type=OrderType.MARKET, size=size,
            reduce_only=reduce_only,
            reason="kill switch wind-down" + ("" if strategy_id is None else f" of {strategy_id}"),
        )
        return SubmitClip(intent=intent, position_qty=p.qty)

    # Reduce-only clips first: they only shrink the venue's position. Positions
    # on the other side of the venue's net come after, when the net allows.
    leftovers = []
    for p in ready:
        c = clip(p, reduce_only=True)
        if c is None:
            leftovers.append(p)
        else:
            actions.append(c)
    blocked = []
    for p in leftovers:
        c = clip(p, reduce_only=True)
        if c is None and config.allow_offsetting_orders:
            c = clip(p, reduce_only=False)
        if c is None:
            blocked.append(OffsetPosition(strategy_id=p.strategy_id, venue=p.venue, inst_id=p.inst_id,
                                          qty=p.qty, venue_net=net[(p.venue, p.inst_id)]))
        else:
            actions.append(c)
    return WindDownPlan(actions=tuple(actions), waiting=waiting, blocked=tuple(blocked),
                        remaining=tuple(scoped))


# -- ports ------------------------------------------------------------------------------------


class KillStore(Protocol):
    """What the kill switch reads and writes in the store (``core.store.RedisStore``)."""

    async def positions(self, strategy_id: str | None = None) -> list[Position]: ...

    async def open_orders(self, venue: str | None = None, strategy_id: str | None = None) -> list[Order]: ...

    async def get_order(self, client_order_id: str) -> Order | None: ...

    async def applied_size(self, client_order_id: str) -> Decimal: ...

    async def strategy_states(self) -> Mapping[str, str]: ...

    async def set_strategy_state(self, strategy_id: str, state: str) -> None: ...

    async def set_kill_flag(self, reason: str, ts_ms: int) -> None: ...


class VenuePort(Protocol):
    """The venue gateways, as the kill switch needs them.

    Calls raise ``core.errors`` exceptions: ``VenueUnavailable`` (retryable,
    also when the gateway cannot be reached), ``VenueAuthError`` (not
    retried), other ``VenueError`` or ``StoreError`` (retried).
    """

    def venues(self) -> Sequence[str]: ...

    async def cancel_all(self, venue: str, strategy_id: str | None = None) -> int: ...

    async def submit_order(self, intent: OrderIntent) -> Order | OrderDenied: ...


class StrategyControlPort(Protocol):
    """Pauses a strategy's actor. Returning False (as ``actors.risk_monitor.RayStrategyPauser``
    does for an unreachable actor) or raising means it was not paused."""

    async def pause(self, strategy_id: str, reason: str) -> bool | None: ...


def gateway_actor_name(venue: str) -> str:
    """The Ray name of a venue's gateway actor."""
    return f"VenueGateway[{venue}]"


class _RayActors:
    """Named-actor handles, re-resolved after an actor dies or is restarted."""

    def __init__(self, ray_namespace: str | None) -> None:
        self._ray_namespace = ray_namespace
        self._handles: dict[str, Any] = {}

    async def call(self, name: str, method: str, *args: Any, venue: str = "") -> Any:
        import ray  # the planner and the executor stay importable and testable without Ray

        try:
            handle = self._handles.get(name)
            if handle is None:
                handle = self._handles[name] = ray.get_actor(name, namespace=self._ray_namespace)
            return await getattr(handle, method).remote(*args)
        except ValueError as exc:  # no actor by that name (yet): being restarted
            self._handles.pop(name, None)
            raise VenueUnavailable(f"actor {name} not found: {exc}", venue=venue) from None
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, TradetreeError):
                raise cause from None
            raise VenueUnavailable(f"{name}.{method} failed: {cause or exc}", venue=venue) from None
        except ray.exceptions.RayError as exc:  # the actor died, or Ray could not reach it
            self._handles.pop(name, None)
            raise VenueUnavailable(f"{name}.{method}: {type(exc).__name__}: {exc}", venue=venue) from None


class RayVenuePort:
    """``VenuePort`` over the ``VenueGateway[<venue>]`` Ray actors.

    ``gateways`` maps venue -> actor name, or lists venues whose actors follow
    ``gateway_actor_name``. Errors the gateway raises come back as they are;
    a missing, dead or unreachable actor raises ``VenueUnavailable``.
    """

    def __init__(self, gateways: Mapping[str, str] | Iterable[str], *, ray_namespace: str | None = None) -> None:
        if isinstance(gateways, Mapping):
            self._names = dict(gateways)
        else:
            self._names = {v: gateway_actor_name(v) for v in gateways}
        self._actors = _RayActors(ray_namespace)

    def venues(self) -> Sequence[str]:
        return tuple(sorted(self._names))

    def _name(self, venue: str) -> str:
        return self._names.get(venue) or gateway_actor_name(venue)

    async def cancel_all(self, venue: str, strategy_id: str | None = None) -> int:
        return await self._actors.call(self._name(venue), "cancel_all", strategy_id, venue=venue)

    async def submit_order(self, intent: OrderIntent) -> Order | OrderDenied:
        # Account-level: the clips are sized against the account's net, so the venue gets reduceOnly as planned.
        return await self._actors.call(self._name(intent.venue), "submit_account_order", intent, venue=intent.venue)


class RayStrategyPort:
    """``StrategyControlPort`` over the strategy actors (named by strategy id)."""

    def __init__(self, *, ray_namespace: str | None = None) -> None:
        self._actors = _RayActors(ray_namespace)

    async def pause(self, strategy_id: str, reason: str) -> bool:
        """Raises ``VenueUnavailable`` when the actor is missing, dead or unreachable."""
        await self._actors.call(strategy_id, "pause", reason)
        return True


# -- progress records -------------------------------------------------------------------------


class KillState(str, enum.Enum):
    RUNNING = "RUNNING"  # being executed, or interrupted by a restart (resume_pending continues it)
    STALLED = "STALLED"  # a bound was hit; stalled_reason says which; kill()/resume_pending retries
    DONE = "DONE"  # flat and verified


class KillPhase(str, enum.Enum):
    FLAG = "flag"  # stopping new trading: kill flag / WINDING_DOWN
    CANCEL = "cancel"
    FLATTEN = "flatten"
    VERIFY = "verify"
    DONE = "done"


class StepOutcome(str, enum.Enum):
    OK = "ok"
    FAILED = "failed"
    WAITING = "waiting"
    INFO = "info"
    STALLED = "stalled"
    DONE = "done"


class KillProgress(BaseModel):
    """One kill as recorded in ``{ns}:ctl:kill:<scope>``."""

    model_config = _FROZEN

    scope: str
    strategy_id: str | None
    reason: str
    state: KillState
    phase: KillPhase
    started_ms: int
    updated_ms: int
    finished_ms: int | None = None
    runs: int = 1  # the first run plus every resume
    failed_attempts: int = 0  # in the current run
    orders_submitted: int = 0
    client_order_ids: tuple[str, ...] = ()  # wind-down orders this kill sent
    strategies: tuple[str, ...] = ()  # strategies this kill put in WINDING_DOWN (KILLED when done)
    remaining: tuple[str, ...] = ()  # "strategy venue inst_id qty" of positions not yet flat
    waiting_on: tuple[str, ...] = ()  # client order ids not yet settled
    stalled_reason: str = ""
    last_error: str = ""
    owner: str = ""  # the executor that ran it last


class KillStep(BaseModel):
    """One entry of the audit stream ``{ns}:ctl:kill_log:<scope>``."""

    model_config = _FROZEN

    ts_ms: int
    run: int
    step: str
    outcome: StepOutcome
    attempt: int = 0
    detail: str = ""


def kill_scope(strategy_id: str | None) -> str:
    """``global`` or ``strategy:<id>`` (the id escaped as in ``core.redis_keys``)."""
    return GLOBAL_SCOPE if strategy_id is None else f"strategy:{escape_component(strategy_id)}"


_LEASE_LUA = """
local owner = redis.call('HGET', KEYS[1], 'owner')
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires_ms') or '0')
if (not owner) or owner == ARGV[1] or expires <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'expires_ms', ARGV[3])
  return ''
end
return owner
"""

_RELEASE_LUA = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class KillJournal:
    """Progress, audit stream and lease of kills, under ``{ns}:ctl:``.

    Keys: ``kill:<scope>`` (hash: ``json`` = KillProgress, plus ``state`` and
    ``reason`` for redis-cli readers), ``kill_log:<scope>`` (stream of
    KillStep, capped at about 10,000 entries), ``kills`` (set of scopes),
    ``kill_lease`` (hash: owner, expires_ms).

    Raises ``StoreUnavailable`` when Redis does not answer, ``StoreError`` on
    any other Redis error.
    """

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self._client = client
        self._prefix = f"{RedisKeys(namespace).namespace}:ctl:"

    def progress_key(self, scope: str) -> str:
        return f"{self._prefix}kill:{scope}"

    def log_key(self, scope: str) -> str:
        return f"{self._prefix}kill_log:{scope}"

    @property
    def index_key(self) -> str:
        return self._prefix + "kills"

    @property
    def lease_key(self) -> str:
        return self._prefix + "kill_lease"

    async def _do(self, awaitable: Awaitable[Any]) -> Any:
        return await redis_call(awaitable, "kill journal")

    async def save(self, progress: KillProgress) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self.progress_key(progress.scope), mapping={
                "json": progress.model_dump_json(), "state": progress.state.value,
                "reason": progress.reason, "updated_ms": str(progress.updated_ms),
            })
            pipe.sadd(self.index_key, progress.scope)
            await self._do(pipe.execute())

    async def load(self, scope: str) -> KillProgress | None:
        raw = await self._do(self._client.hget(self.progress_key(scope), "json"))
        return KillProgress.model_validate_json(_text(raw)) if raw is not None else None

    async def scopes(self) -> list[str]:
        return sorted(_text(s) for s in await self._do(self._client.smembers(self.index_key)))

    async def append(self, scope: str, step: KillStep) -> None:
        await self._do(self._client.xadd(self.log_key(scope), {"json": step.model_dump_json()},
                                         maxlen=_LOG_MAXLEN, approximate=True))

    async def steps(self, scope: str, count: int | None = None) -> list[KillStep]:
        """The latest ``count`` steps (all when None), oldest first."""
        if count is None:
            raw = await self._do(self._client.xrange(self.log_key(scope)))
        else:
            raw = list(reversed(await self._do(self._client.xrevrange(self.log_key(scope), count=count))))
        return [KillStep.model_validate_json(_text(fields[b"json"] if b"json" in fields else fields["json"]))
                for _, fields in raw]

    async def acquire_lease(self, owner: str, now_ms: int, lease_ms: int) -> str | None:
        """Take or renew the lease. None when ``owner`` holds it now, else the holder's id."""
        holder = await self._do(self._client.eval(
            _LEASE_LUA, 1, self.lease_key, owner, str(now_ms), str(now_ms + lease_ms)))
        holder = _text(holder) if holder is not None else ""
        return holder or None

    async def release_lease(self, owner: str) -> None:
        await self._do(self._client.eval(_RELEASE_LUA, 1, self.lease_key, owner))


# -- the executor -----------------------------------------------------------------------------


class _Stop(Exception):
    """Ends a run: ``progress`` is what the caller gets back."""

    def __init__(self, progress: KillProgress) -> None:
        super().__init__(progress.state.value)
        self.progress = progress


class _StepRefused(Exception):
    """A wind-down order was denied by a pre-trade check or rejected by the venue (retried)."""


class _Run:
    """Mutable state of one run; ``progress`` is its latest snapshot."""

    def __init__(self, progress: KillProgress, deadline: float) -> None:
        self.progress = progress
        self.deadline = deadline
        self.lease_held = False
        self.lease_lost = False  # held, then taken over by another executor: this run stops
        self.protected = False  # the flag / WINDING_DOWN step succeeded
        self.failures: dict[str, int] = {}  # step -> consecutive failures
        self.failed_now: list[str] = []  # steps that failed in this iteration
        self.swept: set[str] = set()
        self.own_orders: dict[str, Order] = {}  # unsettled orders this kill sent, as last seen
        self.recheck: list[str] = []  # orders of earlier runs to look up once
        self.flat_seen = False
        self.waiting_logged: tuple[str, ...] = ()
        self.lease_wait_logged = False

    @property
    def scope(self) -> str:
        return self.progress.scope

    @property
    def strategy_id(self) -> str | None:
        return self.progress.strategy_id

    def update(self, now_ms: int, **changes: Any) -> None:
        self.progress = self.progress.model_copy(update={"updated_ms": now_ms, **changes})


_FAILED = object()


class KillSwitch:
    """Runs kills and wind-downs; hosted by the RiskMonitor (no Ray actor of its own).

    ``kill()`` and ``resume_pending()`` never raise (``CancelledError`` aside,
    when the caller or ``aclose()`` cancels): every failure ends in a
    recorded, visible STALLED state. One run per scope at a time; a second
    ``kill()`` of a running scope joins it. Runs of different scopes
    interleave but never act at the same time; an executor records progress
    and acts only while it holds the lease.

    Args:
        store: position truth (``core.store.RedisStore``).
        client, namespace: where the journal lives (the store's Redis).
        venues: the gateways.
        config: bounds and clip sizes.
        strategies: pauses the actor of a killed strategy (best effort;
            None skips it).
        clock, sleep, rng: injected for simulated time and seeded jitter.
        owner_id: this executor's id in the lease (unique per process).
    """

    def __init__(
        self,
        store: KillStore,
        client: aioredis.Redis,
        namespace: str,
        venues: VenuePort,
        config: KillSwitchConfig,
        *,
        strategies: StrategyControlPort | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
        owner_id: str | None = None,
    ) -> None:
        self._store = store
        self._journal = KillJournal(client, namespace)
        self._venues = venues
        self._strategies = strategies
        self.config = config
        self._clock: Clock = clock or WallClock()
        self._sleep = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self.owner_id = owner_id or f"killswitch-{uuid.uuid4().hex[:12]}"
        self._runs: dict[str, asyncio.Task[KillProgress]] = {}
        self._act_lock = asyncio.Lock()

    @property
    def journal(self) -> KillJournal:
        return self._journal

    # -- public API ---------------------------------------------------------------------------

    async def kill(self, reason: str, strategy_id: str | None = None) -> KillProgress:
        """Kill everything (``strategy_id=None``) or one strategy and wind down; return the outcome.

        Before touching the venue: the global kill sets the kill flag, then
        every strategy not already KILLED (and every one holding a position)
        to WINDING_DOWN -- the freshness gate admits reduce-only orders only
        in that state; a one-strategy kill sets that strategy WINDING_DOWN and
        pauses its actor if reachable. Then: cancel, flatten, verify. When
        flat, the wound-down strategies are KILLED; the kill flag stays set
        until an operator clears it.

        Returns when the kill is DONE or STALLED (or still RUNNING under
        another executor's lease, after ``max_duration_secs`` of waiting).
        A kill of a scope this executor is running joins that run; one left
        unfinished in Redis (STALLED, or RUNNING after a restart) is resumed;
        a DONE one starts a new episode.
        """
        return await self._join_or_start(kill_scope(strategy_id), strategy_id, reason, requested=True)

    async def resume_pending(self) -> list[KillProgress]:
        """Continue every kill recorded RUNNING or STALLED; return their outcomes.

        Call it when the host starts and then periodically: a STALLED kill is
        retried each time (each run bounded), and a global one sets the kill
        flag again if it was cleared meanwhile (its positions are not flat
        yet). Returns [] when Redis cannot be read (logged).
        """
        try:
            recorded = [await self._journal.load(s) for s in await self._journal.scopes()]
        except StoreError as exc:
            log.error("kill switch: cannot read pending kills: %s", exc)
            return []
        pending = [p for p in recorded if p is not None and p.state in (KillState.RUNNING, KillState.STALLED)]
        return list(await asyncio.gather(
            *(self._join_or_start(p.scope, p.strategy_id, p.reason, requested=False) for p in pending)))

    async def progress(self, strategy_id: str | None = None) -> KillProgress | None:
        """The recorded progress of the kill of a scope (None if it was never killed).

        Raises:
            StoreUnavailable / StoreError: Redis could not be read.
        """
        return await self._journal.load(kill_scope(strategy_id))

    async def steps(self, strategy_id: str | None = None, count: int | None = None) -> list[KillStep]:
        """The audit trail of a scope, oldest first (the latest ``count`` steps).

        Raises:
            StoreUnavailable / StoreError: Redis could not be read.
        """
        return await self._journal.steps(kill_scope(strategy_id), count)

    def running(self) -> list[str]:
        """Scopes with a run in progress in this executor."""
        return sorted(s for s, t in self._runs.items() if not t.done())

    async def aclose(self) -> None:
        """Stop this executor's runs (they stay RUNNING in Redis, for ``resume_pending``)."""
        tasks = [t for t in self._runs.values() if not t.done()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self._release_lease()

    # -- runs ---------------------------------------------------------------------------------

    async def _join_or_start(self, scope: str, strategy_id: str | None, reason: str, *,
                             requested: bool) -> KillProgress:
        task = self._runs.get(scope)
        if task is not None and not task.done():
            if requested:
                await self._append(scope, 0, "request", StepOutcome.INFO,
                                   f"kill requested again while running: {reason}")
        else:
            task = asyncio.create_task(self._run_guarded(scope, strategy_id, reason, requested),
                                       name=f"kill:{scope}")
            self._runs[scope] = task
            task.add_done_callback(lambda t, s=scope: self._runs.pop(s) if self._runs.get(s) is t else None)
        return await asyncio.shield(task)

    async def _run_guarded(self, scope: str, strategy_id: str | None, reason: str,
                           requested: bool) -> KillProgress:
        now = self._clock.now_ms()
        run = _Run(KillProgress(scope=scope, strategy_id=strategy_id, reason=reason, state=KillState.RUNNING,
                                phase=KillPhase.FLAG, started_ms=now, updated_ms=now, owner=self.owner_id),
                   deadline=self._clock.monotonic() + self.config.max_duration_secs)
        try:
            await self._begin(run, requested)
            await self._drive(run)
        except _Stop as stop:
            return stop.progress
        except Exception as exc:  # a bug must neither kill the host nor leave the kill invisible
            log.exception("kill switch: %s failed unexpectedly", scope)
            try:
                await self._stall(run, f"internal error: {type(exc).__name__}: {exc}")
            except _Stop as stop:
                return stop.progress
        finally:
            if all(t.done() or t is asyncio.current_task() for t in self._runs.values()):
                await self._release_lease()
        raise AssertionError("a run ends with _Stop")  # pragma: no cover

    async def _begin(self, run: _Run, requested: bool) -> None:
        try:
            existing = await self._journal.load(run.scope)
        except StoreError as exc:
            log.error("kill switch: cannot read progress of %s: %s", run.scope, exc)
            existing = None
        if existing is None or (requested and existing.state is KillState.DONE):
            note = f"kill requested: {run.progress.reason}"
        else:
            run.progress = existing.model_copy(update={
                "state": KillState.RUNNING, "runs": existing.runs + 1, "failed_attempts": 0,
                "stalled_reason": "", "updated_ms": run.progress.updated_ms, "finished_ms": None,
                "owner": self.owner_id,
            })
            run.recheck = list(existing.client_order_ids)
            note = (f"kill requested again ({run.progress.reason}): resuming" if requested
                    else f"resuming {existing.state.value} kill")
        log.warning("kill switch: %s: %s", run.scope, note)
        if run.progress.runs == 1:
            # A new kill is recorded even when another executor holds the lease, so that
            # whoever holds it next finds it (nobody is running a kill that has no record).
            try:
                await asyncio.wait_for(self._journal.save(run.progress), timeout=self.config.call_timeout_secs)
            except (StoreError, TimeoutError) as exc:
                log.error("kill switch: %s: could not record the kill request: %s", run.scope, exc)
        await self._record(run, "request", StepOutcome.INFO, note)

    async def _drive(self, run: _Run) -> None:
        """Loop until DONE or STALLED (raises ``_Stop``). Every iteration sleeps."""
        cfg = self.config
        # Iterations are bounded by max_duration because each one sleeps; the cap also
        # bounds them if an injected sleep does not advance the clock.
        cap = math.ceil(cfg.max_duration_secs / min(cfg.verify_interval_secs, cfg.backoff_min_secs))
        for _ in range(cap + cfg.step_max_attempts + 10):
            if self._clock.monotonic() >= run.deadline:
                await self._out_of_time(run)
            run.failed_now = []
            if not run.protected:
                run.protected, _ = await self._attempt(run, "flag", self._protect(run))
                if run.protected and run.strategy_id is not None:
                    await self._pause_actor(run)
            if run.protected:
                async with self._act_lock:
                    if await self._hold_lease(run):
                        await self._iterate(run)
            await self._pause_between(run)
        await self._stall(run, "iteration limit reached: the injected sleep does not advance the clock")

    async def _pause_between(self, run: _Run) -> None:
        if run.failed_now:
            delay = backoff_delay(max(run.failures.get(s, 1) for s in run.failed_now), self.config, self._rng)
        else:
            delay = self.config.verify_interval_secs
        delay = min(delay, run.deadline - self._clock.monotonic())
        if delay > 0:
            await self._sleep(delay)

    async def _out_of_time(self, run: _Run) -> None:
        limit = f"{self.config.max_duration_secs:g}s"
        if run.protected and not run.lease_held:
            # Another executor holds the lease and runs the kill: leave its record alone.
            await self._append(run.scope, run.progress.runs, "lease", StepOutcome.INFO,
                               f"{self.owner_id} gave up waiting for the lease after {limit}")
            try:
                recorded = await self._journal.load(run.scope)
            except StoreError:
                recorded = None
            raise _Stop(recorded or run.progress)
        p = run.progress
        outstanding = [f"not flat: {'; '.join(p.remaining)}"] if p.remaining else []
        if p.waiting_on:
            outstanding.append(f"orders not settled: {', '.join(p.waiting_on)}")
        if p.last_error:
            outstanding.append(f"last error: {p.last_error}")
        await self._stall(run, f"timed out after {limit} in phase {p.phase.value}"
                          + "".join(f"; {o}" for o in outstanding))

    # -- steps --------------------------------------------------------------------------------

    async def _protect(self, run: _Run) -> str:
        """Stop new trading before touching the venue: the kill flag, or WINDING_DOWN."""
        now = self._clock.now_ms()
        if run.strategy_id is not None:
            await self._store.set_strategy_state(run.strategy_id, _WINDING_DOWN)
            run.update(now, strategies=(run.strategy_id,))
            return f"strategy {run.strategy_id} WINDING_DOWN"
        await self._store.set_kill_flag(run.progress.reason, now)
        states = await self._store.strategy_states()
        holders = {p.strategy_id for p in await self._store.positions() if p.qty != 0}
        targets = sorted({s for s, state in states.items() if state != _KILLED} | holders)
        for sid in targets:
            await self._store.set_strategy_state(sid, _WINDING_DOWN)
        run.update(now, strategies=tuple(sorted({*run.progress.strategies, *targets})))
        return "kill flag set; WINDING_DOWN: " + (", ".join(targets) or "no strategies")

    async def _pause_actor(self, run: _Run) -> None:
        assert run.strategy_id is not None
        if self._strategies is None:
            return
        step = f"pause {run.strategy_id}"
        try:
            paused = await asyncio.wait_for(
                self._strategies.pause(run.strategy_id, f"killed: {run.progress.reason}"),
                timeout=self.config.call_timeout_secs)
            why = "the port says so" if paused is False else ""
        except Exception as exc:  # best effort: WINDING_DOWN in Redis is what stops it
            why = f"{type(exc).__name__}: {exc}"
        if why:
            await self._record(run, step, StepOutcome.INFO,
                               f"strategy actor not reachable ({why}); WINDING_DOWN in Redis stops it")
        else:
            await self._record(run, step, StepOutcome.OK, "strategy actor paused")

    async def _hold_lease(self, run: _Run) -> bool:
        """Take or renew the lease. False when another executor holds it (or Redis failed,
        which counts as a failed attempt). Raises ``_Stop`` when the lease was lost."""
        if not run.lease_lost:
            now = self._clock.now_ms()
            ok, holder = await self._attempt(
                run, "lease", self._journal.acquire_lease(self.owner_id, now, int(self.config.lease_secs * 1000)),
                quiet=True)
            if not ok:
                return False
            if holder is None:
                run.lease_held = True
                return True
            if run.lease_held:  # our lease ran out and another executor took the kill over
                run.lease_held, run.lease_lost = False, True
        if run.lease_lost:
            await self._append(run.scope, run.progress.runs, "lease", StepOutcome.INFO,
                               f"lease lost to another executor; {self.owner_id} stops this run")
            raise _Stop(run.progress)
        if not run.lease_wait_logged:
            run.lease_wait_logged = True
            await self._append(run.scope, run.progress.runs, "lease", StepOutcome.WAITING,
                               f"executor {holder} holds the kill lease")
        return False

    async def _release_lease(self) -> None:
        try:
            await self._journal.release_lease(self.owner_id)
        except StoreError as exc:
            log.warning("kill switch: releasing the lease failed (it expires by itself): %s", exc)

    async def _iterate(self, run: _Run) -> None:
        """Look, plan, act once. Raises ``_Stop`` when DONE or STALLED."""
        ok, observed = await self._attempt(run, "observe", self._observe(run), quiet=True)
        if not ok:
            return
        positions, orders, applied = observed
        plan = plan_wind_down(
            strategy_id=run.strategy_id, positions=positions, orders=orders, applied=applied,
            venues=self._venues.venues() if run.strategy_id is None else (),
            swept=run.swept, config=self.config,
        )
        waiting_on = tuple(c for w in plan.waiting for c in w.client_order_ids)
        run.update(self._clock.now_ms(), waiting_on=waiting_on, remaining=tuple(
            f"{p.strategy_id} {p.venue} {p.inst_id} {p.qty:+}" for p in plan.remaining))
        if plan.flat:
            await self._confirm_flat(run)
            return
        run.flat_seen = False
        if not plan.actions and not plan.waiting:
            offsets = "; ".join(f"{b.strategy_id} {b.venue} {b.inst_id} {b.qty:+} (venue net {b.venue_net:+})"
                                for b in plan.blocked)
            await self._stall(run, "positions offset by other strategies on the same instrument cannot be "
                                   f"closed with reduce-only orders: {offsets}; flatten them by hand or set "
                                   "allow_offsetting_orders")
        if waiting_on != run.waiting_logged:
            run.waiting_logged = waiting_on
            if waiting_on:
                await self._record(run, "settle", StepOutcome.WAITING,
                                   "waiting for orders to settle: " + ", ".join(waiting_on))
        for action in plan.actions:
            if not await self._hold_lease(run):
                break
            phase = KillPhase.CANCEL if isinstance(action, CancelOrders) else KillPhase.FLATTEN
            if phase is not run.progress.phase:
                run.update(self._clock.now_ms(), phase=phase)
                await self._save(run)
            if isinstance(action, CancelOrders):
                ok, _ = await self._attempt(run, action.step, self._cancel(action))
                if ok:
                    run.swept.add(action.venue)
            else:
                await self._clip(run, action)
        await self._save(run)

    async def _observe(self, run: _Run) -> tuple[list[Position], list[Order], dict[str, Decimal]]:
        positions = await self._store.positions()
        orders = {o.client_order_id: o for o in await self._store.open_orders(strategy_id=run.strategy_id)}
        for coid in run.recheck:  # orders an earlier run sent: those not settled are waited for
            if coid not in orders and (order := await self._store.get_order(coid)) is not None:
                run.own_orders[coid] = order
        run.recheck = []
        for coid, last_seen in run.own_orders.items():
            if coid not in orders:
                orders[coid] = await self._store.get_order(coid) or last_seen
        applied = {coid: await self._store.applied_size(coid) for coid in orders}
        run.own_orders = {c: orders[c] for c in run.own_orders if not order_is_settled(orders[c], applied[c])}
        return positions, list(orders.values()), applied

    async def _cancel(self, action: CancelOrders) -> str:
        count = await self._venues.cancel_all(action.venue, action.strategy_id)
        return f"{action.why}: {count} cancel(s) accepted"

    async def _clip(self, run: _Run, action: SubmitClip) -> None:
        intent = action.intent
        if intent.strategy_id not in run.progress.strategies:
            # A position of a strategy the flag step did not see (a late fill): wind it down first.
            ok, _ = await self._attempt(run, f"wind down {intent.strategy_id}",
                                        self._store.set_strategy_state(intent.strategy_id, _WINDING_DOWN))
            if not ok:
                return
            run.update(self._clock.now_ms(), strategies=tuple(sorted({*run.progress.strategies, intent.strategy_id})))
        detail = (f"{intent.side.value} {intent.size} market{' reduce-only' if intent.reduce_only else ''} "
                  f"(position {action.position_qty:+})")
        await self._attempt(run, action.step, self._submit(run, intent), detail=detail)

    async def _submit(self, run: _Run, intent: OrderIntent) -> str:
        result = await self._venues.submit_order(intent)
        if isinstance(result, OrderDenied):
            raise _StepRefused("denied: " + "; ".join(result.reasons))
        run.own_orders[result.client_order_id] = result
        run.update(self._clock.now_ms(), orders_submitted=run.progress.orders_submitted + 1,
                   client_order_ids=(*run.progress.client_order_ids, result.client_order_id))
        if result.state is OrderState.REJECTED:
            raise _StepRefused(f"order {result.client_order_id} rejected: {result.reject_reason}")
        if result.state is OrderState.CANCELED and result.filled_size == 0:
            # No liquidity took it: count it against the step, or a thin book would be hit every interval.
            raise _StepRefused(f"order {result.client_order_id} canceled without a fill")
        return f"{intent.side.value} {intent.size}: order {result.client_order_id} {result.state.value}"

    async def _confirm_flat(self, run: _Run) -> None:
        if not run.flat_seen:
            run.flat_seen = True
            run.update(self._clock.now_ms(), phase=KillPhase.VERIFY)
            await self._record(run, "verify", StepOutcome.INFO,
                               f"flat; confirming after {self.config.verify_interval_secs:g}s")
            return
        ok, _ = await self._attempt(run, "mark killed", self._mark_killed(run))
        if not ok:
            return
        now = self._clock.now_ms()
        run.update(now, state=KillState.DONE, phase=KillPhase.DONE, finished_ms=now, last_error="")
        what = ("the kill flag stays set until an operator clears it" if run.strategy_id is None
                else f"strategy {run.strategy_id} KILLED")
        log.warning("kill switch: %s done: flat; %s", run.scope, what)
        await self._record(run, "done", StepOutcome.DONE, f"flat and verified; {what}")
        raise _Stop(run.progress)

    async def _mark_killed(self, run: _Run) -> str:
        for sid in run.progress.strategies:
            await self._store.set_strategy_state(sid, _KILLED)
        return "KILLED: " + (", ".join(run.progress.strategies) or "no strategies")

    # -- attempts, stalls, records ------------------------------------------------------------

    async def _attempt(self, run: _Run, step: str, call: Awaitable[Any], *, detail: str = "",
                       quiet: bool = False) -> tuple[bool, Any]:
        """Run one step under the call timeout and record its outcome: ``(ok, result)``.

        A failure counts against the step; raises ``_Stop`` (STALLED) when the
        step is not retryable or has failed ``step_max_attempts`` times in a
        row. ``quiet`` steps record failures only.
        """
        retryable = True
        try:
            result = await asyncio.wait_for(call, timeout=self.config.call_timeout_secs)
        except TimeoutError:
            error = f"no answer within {self.config.call_timeout_secs:g}s"
        except VenueAuthError as exc:
            error, retryable = f"VenueAuthError: {exc}", False
        except (TradetreeError, _StepRefused) as exc:
            error = f"{type(exc).__name__}: {exc}"
        except (ValueError, TypeError) as exc:  # a broken contract (bad state, wrong venue): not transient
            error, retryable = f"{type(exc).__name__}: {exc}", False
        else:
            run.failures.pop(step, None)
            if not quiet:
                await self._record(run, step, StepOutcome.OK, result if isinstance(result, str) else detail)
            return True, result
        attempt = run.failures.get(step, 0) + 1
        run.failures[step] = attempt
        run.failed_now.append(step)
        run.update(self._clock.now_ms(), failed_attempts=run.progress.failed_attempts + 1,
                   last_error=f"{step}: {error}")
        log.warning("kill switch: %s: %s failed (attempt %d): %s", run.scope, step, attempt, error)
        await self._record(run, step, StepOutcome.FAILED, f"{detail}: {error}" if detail else error,
                           attempt=attempt)
        if not retryable:
            await self._stall(run, f"{step}: not retryable: {error}")
        if attempt >= self.config.step_max_attempts:
            await self._stall(run, f"{step} failed {attempt} times in a row; last: {error}")
        return False, _FAILED

    async def _stall(self, run: _Run, reason: str) -> None:
        run.update(self._clock.now_ms(), state=KillState.STALLED, stalled_reason=reason)
        log.error("kill switch: %s STALLED: %s", run.scope, reason)
        await self._record(run, "stalled", StepOutcome.STALLED, reason)
        raise _Stop(run.progress)

    async def _record(self, run: _Run, step: str, outcome: StepOutcome, detail: str, *,
                      attempt: int = 0) -> None:
        await self._append(run.scope, run.progress.runs, step, outcome, detail, attempt=attempt)
        await self._save(run)

    async def _append(self, scope: str, run_no: int, step: str, outcome: StepOutcome, detail: str, *,
                      attempt: int = 0) -> None:
        entry = KillStep(ts_ms=self._clock.now_ms(), run=run_no, step=step, outcome=outcome,
                         attempt=attempt, detail=detail)
        try:
            await asyncio.wait_for(self._journal.append(scope, entry), timeout=self.config.call_timeout_secs)
        except (StoreError, TimeoutError) as exc:
            # Redis being down fails the steps too; the in-memory progress still holds.
            log.error("kill switch: %s: could not record step %s (%s): %s", scope, step, outcome.value, exc)

    async def _save(self, run: _Run) -> None:
        """Write the progress, only while holding the lease (taken or renewed here): an
        executor waiting for the lease, or one that lost it, must not overwrite the
        record of the executor running the kill."""
        if run.lease_lost:
            return
        try:
            holder = await asyncio.wait_for(
                self._journal.acquire_lease(self.owner_id, self._clock.now_ms(), int(self.config.lease_secs * 1000)),
                timeout=self.config.call_timeout_secs)
            if holder is not None:
                run.lease_lost, run.lease_held = run.lease_held, False
                return
            run.lease_held = True
            await asyncio.wait_for(self._journal.save(run.progress), timeout=self.config.call_timeout_secs)
        except (StoreError, TimeoutError) as exc:
            log.error("kill switch: %s: could not record progress: %s", run.scope, exc)

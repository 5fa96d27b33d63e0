"""The kill switch's pure part: its bounds, the wind-down planner and the kill records.

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
so everything is bounded: a failing step is retried with exponential backoff
and jitter at most ``step_max_attempts`` times, a run lasts at most
``max_duration_secs``, and every loop iteration sleeps, so the number of calls
is bounded even when the clock is simulated. When a bound is hit the kill is
left ``STALLED`` with the reason, recorded for anyone to see; the next
``kill()`` or ``resume_pending()`` retries it.

Here (pure, no I/O):

- ``KillSwitchConfig`` and ``backoff_delay``: the bounds.
- ``plan_wind_down``: from the positions, the scope's orders and what the
  store has applied for them, the next commands.
- ``KillProgress`` / ``KillStep``: what is recorded of a kill and its steps.
- ``risk.kill_run``: the executor's other decisions (resume or start, retry
  or stall, how long to sleep, whether a clip counts as done).

Elsewhere: the executor that carries the plans out is
``actors.kill_switch.KillSwitch`` (hosted by the RiskMonitor actor), its
records are kept by ``core.store.RedisStore`` (``{ns}:ctl:kill:<scope>``,
``{ns}:ctl:kill_log:<scope>``, the lease ``{ns}:ctl:kill_lease``), and the
Ray port to the gateways is ``actors.kill_switch_ray``.

No double close: a position gets its next clip only when no order of its
strategy on that instrument is unsettled (still working, or terminal with
fills the store has not applied yet).
"""

from __future__ import annotations

import enum
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence, Set
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tradetree.core import BackoffPolicy, Order, OrderIntent, OrderType, Position, Side, escape_component

__all__ = [
    "GLOBAL_SCOPE",
    "AwaitOrders",
    "CancelOrders",
    "KillPhase",
    "KillProgress",
    "KillState",
    "KillStep",
    "KillSwitchConfig",
    "OffsetPosition",
    "StepOutcome",
    "SubmitClip",
    "WindDownPlan",
    "backoff_delay",
    "kill_scope",
    "order_is_settled",
    "plan_wind_down",
]

_ZERO = Decimal(0)
_FROZEN = ConfigDict(frozen=True, extra="forbid")

GLOBAL_SCOPE = "global"


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
        stalled_retry_min_secs / stalled_retry_max_secs: a STALLED kill whose
            residual has not changed is re-run on its own after ``min`` seconds,
            then after twice as long each time it stalls again, up to ``max``; a
            changed residual re-runs it at once, an operator's ``kill`` too.
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
    stalled_retry_min_secs: float = Field(default=5.0, gt=0)
    stalled_retry_max_secs: float = Field(default=300.0, gt=0)
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

    def backoff_policy(self) -> BackoffPolicy:
        """The retry delays as the shared ``core.backoff`` policy (0-based: attempt ``n`` is its ``n - 1``).

        Equal jitter with ``base = 2 * min`` and ``floor = min``: the 0-based
        ceiling ``2 * min * 2**(n-1)`` is the ``min * 2**n`` of the 1-based
        ``n``-th failure, so the delays are the ones this switch always had.
        """
        return BackoffPolicy(base_secs=2 * self.backoff_min_secs, cap_secs=self.backoff_max_secs, jitter="equal",
                             floor_secs=self.backoff_min_secs)


def backoff_delay(attempt: int, config: KillSwitchConfig, rng: random.Random) -> float:
    """Delay before retrying after the ``attempt``-th consecutive failure (1-based).

    Exponential with jitter, never below ``backoff_min_secs`` nor above
    ``backoff_max_secs``: uniform in ``[c/2, c]`` where
    ``c = min(max, min * 2**attempt)`` (and at least ``min``); one ``rng`` draw.

    Raises:
        ValueError: ``attempt`` < 1.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    return config.backoff_policy().delay(attempt - 1, rng)


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
    """``global`` or ``strategy:<id>`` (the id escaped by ``core.types.escape_component``, as in key names)."""
    return GLOBAL_SCOPE if strategy_id is None else f"strategy:{escape_component(strategy_id)}"

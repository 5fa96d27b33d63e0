"""The canary round trip: proving the WS fill path works again while a venue is paused.

When the fill-health layer pauses a venue (fills stopped arriving on the WS,
or order status and applied fills disagree), nothing trades on it, so "fills
arrive on the WS again" could never be observed and the pause could only be
lifted blind. The canary makes fills happen on purpose: the reconciler records
in Redis (strategy ``_canary``) and sends through its *own* REST client the
smallest market order on one instrument, then a reduce-only market order back
(net zero; two taker fees are the cost), and watches which layer delivered
the fills. Delivered by the WS: the WS fill path works, the reconciler lifts
the pause it set. Delivered only by the poller: the WS is still broken, the
venue stays paused and the next round trip waits longer (backoff).

This module holds the decisions, pure; ``actors.reconciler`` does the I/O:

- ``canary_active``, ``canary_instrument``, ``canary_size``: configuration
  resolved against the venue (what is traded, and whether at all);
- ``first_leg_side``, ``leftover_close``: order sides that keep the way back
  reduce-only on a net-mode account, and how a leg left over by an interrupted
  round trip is closed;
- ``judge``: the verdict from the layers that delivered the fills;
  ``legs_complete`` and ``describe_fills`` what it is judged on and how it reads;
- ``CanaryState``: the one state machine of when the next round trip is due
  (interval, doubling backoff), held by the reconciler's canary loop;
- ``plan_canary_tick`` and ``unsettled_canary``: whether a tick runs a round
  trip, waits, or settles an earlier one first.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from tradetree.core import BackoffPolicy, FillLayer, Instrument, InstrumentKind, Order, Position, Side, VenueConfig
from tradetree.execution.reconciliation import ReconcilerConfig

__all__ = [
    "CANARY_STRATEGY_ID",
    "CANARY_ORDER_PREFIX",
    "CanaryVerdict",
    "CanaryOutcome",
    "CanaryState",
    "CanaryStep",
    "CanaryStepKind",
    "LeftoverClose",
    "describe_fills",
    "leftover_positions",
    "legs_complete",
    "plan_canary_tick",
    "unsettled_canary",
    "canary_active",
    "canary_instrument",
    "canary_size",
    "first_leg_side",
    "leftover_close",
    "judge",
]

CANARY_STRATEGY_ID = "_canary"  # positions and orders of the round trips are booked here
CANARY_ORDER_PREFIX = "ttcanary"  # client order ids of canary orders start with this

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class CanaryVerdict(str, enum.Enum):
    WS = "ws"  # every canary fill was applied, and the WS delivered (at least) that many fills
    NOT_WS = "not_ws"  # the fills were applied, but by poll/health: the WS did not deliver them
    INCOMPLETE = "incomplete"  # not every fill the venue reported was applied within the deadline
    FAILED = "failed"  # the round trip could not be carried out (rejected, venue or Redis error)


class CanaryOutcome(BaseModel):
    """One round trip, for stats, alerts and tests.

    ``trade_layers`` maps each canary trade id to the layer whose delivery
    applied it first; ``ws_delivered`` is how many fills the WS delivered
    (duplicates included) while the round trip ran. ``resumed``: the
    reconciler lifted its venue pause after it.
    """

    model_config = _FROZEN

    started_ms: int
    finished_ms: int
    inst_id: str = ""
    size: Decimal = Decimal(0)
    first_side: Side | None = None
    client_order_ids: tuple[str, ...] = ()
    venue_filled: tuple[Decimal, ...] = ()
    trade_layers: dict[str, FillLayer] = Field(default_factory=dict)
    ws_delivered: int = 0
    verdict: CanaryVerdict
    detail: str = ""
    resumed: bool = False


def canary_active(config: ReconcilerConfig, venue: VenueConfig) -> bool:
    """Whether the reconciler of ``venue`` runs canaries: ``canary_enabled``, or when it is
    None, whether the venue is the embedded simulator (no configured ``rest_url``)."""
    if config.canary_enabled is not None:
        return config.canary_enabled
    return venue.uses_embedded_simulator


def canary_instrument(config: ReconcilerConfig, venue: VenueConfig,
                      instruments: Mapping[str, Instrument]) -> Instrument:
    """The instrument the canary trades: ``canary_inst_id``, else the venue's first
    configured swap.

    Raises:
        ValueError: it is not listed by the venue, or not a swap (a spot
            account has no position a reduce-only order could reduce, so the
            way back could not be made safe), or no configured swap exists.
    """
    wanted = config.canary_inst_id
    if wanted is None:
        swaps = [i for i in venue.instruments if i in instruments and instruments[i].kind is InstrumentKind.SWAP]
        if not swaps:
            raise ValueError(f"venue {venue.name}: no configured swap for the canary (set canary_inst_id)")
        wanted = swaps[0]
    instrument = instruments.get(wanted)
    if instrument is None:
        raise ValueError(f"venue {venue.name}: canary instrument {wanted} is not listed")
    if instrument.kind is not InstrumentKind.SWAP:
        raise ValueError(f"venue {venue.name}: canary instrument {wanted} is not a swap")
    return instrument


def canary_size(config: ReconcilerConfig, instrument: Instrument) -> Decimal:
    """The size of the first leg: ``canary_size`` or the instrument's minimum.

    Raises:
        ValueError: the size is below the minimum or not a whole number of lots.
    """
    size = config.canary_size if config.canary_size is not None else instrument.min_size
    if size < instrument.min_size:
        raise ValueError(f"canary size {size} is below the minimum {instrument.min_size} of {instrument.inst_id}")
    if instrument.lot_size > 0 and size % instrument.lot_size != 0:
        raise ValueError(f"canary size {size} is not a multiple of the lot {instrument.lot_size}")
    return size


def first_leg_side(venue_net_qty: Decimal) -> Side:
    """The first leg opens in the direction of the account's net position (buy when flat).

    On a net-mode account a reduce-only order must reduce the *net* position:
    opening with it makes the way back (the other side, reduce-only) always
    acceptable; opening against a short would make a reduce-only buy back
    grow the short, which the venue refuses.
    """
    return Side.SELL if venue_net_qty < 0 else Side.BUY


class LeftoverClose(BaseModel):
    """The order that flattens a ``_canary`` position left by an interrupted round trip."""

    model_config = _FROZEN

    side: Side
    size: Decimal
    reduce_only: bool


def leftover_close(canary_qty: Decimal, venue_net_qty: Decimal) -> LeftoverClose | None:
    """How to close a ``_canary`` position of ``canary_qty`` (None: it is flat).

    Reduce-only when the account's net position is on the same side and at
    least as large (then reducing it is exactly closing ours); otherwise a
    plain order, which still only undoes the canary's own exposure.
    """
    if canary_qty == 0:
        return None
    side = Side.SELL if canary_qty > 0 else Side.BUY
    same_side = (venue_net_qty > 0) == (canary_qty > 0) and venue_net_qty != 0
    return LeftoverClose(side=side, size=abs(canary_qty), reduce_only=same_side and abs(venue_net_qty) >= abs(canary_qty))


def judge(expected_trades: int, trade_layers: Mapping[str, FillLayer], ws_delivered: int, *,
          all_applied: bool) -> CanaryVerdict:
    """The verdict of a round trip.

    ``expected_trades``: how many canary trades were applied (``trade_layers``
    has their first layers); ``all_applied``: the applied fills add up to the
    venue's filled size on every leg; ``ws_delivered``: fills the WS delivered
    during the round trip, duplicates included (the poller may apply a fill a
    moment before the WS delivers it: that delivery still proves the WS).
    """
    if not all_applied or expected_trades == 0:
        return CanaryVerdict.INCOMPLETE
    by_ws = sum(1 for layer in trade_layers.values() if layer is FillLayer.WS)
    if by_ws >= expected_trades or ws_delivered >= expected_trades:
        return CanaryVerdict.WS
    return CanaryVerdict.NOT_WS


@dataclass(frozen=True)
class CanaryState:
    """The canary's schedule as a value: when the next round trip is due (monotonic seconds) and
    the backoff. Every transition returns a new state; the canary loop holds the current one.

    ``armed(now)`` when the venue is seen paused (the first round trip is due
    ``interval_secs`` later; arming again changes nothing); ``disarmed()`` when
    it is not (the backoff starts over next time); ``after(now, verdict)``
    after each round trip: a WS verdict keeps the base interval, any other
    doubles it up to ``max_interval_secs``.
    """

    base_interval_secs: float
    max_interval_secs: float
    next_at: float | None = None
    failures_in_row: int = 0

    @classmethod
    def initial(cls, interval_secs: float, max_interval_secs: float) -> CanaryState:
        """Raises ValueError: a non-positive interval, or a maximum below the interval."""
        if interval_secs <= 0 or max_interval_secs < interval_secs:
            raise ValueError("canary intervals must be positive and the maximum at least the interval")
        return cls(interval_secs, max_interval_secs)

    @property
    def backoff(self) -> BackoffPolicy:
        """The doubling as the shared policy: after ``k`` failures in a row the interval is its ``ceiling(k)``."""
        return BackoffPolicy(base_secs=self.base_interval_secs, cap_secs=self.max_interval_secs)

    @property
    def interval_secs(self) -> float:
        """The wait before the next round trip: the base interval doubled per failure in a row, capped."""
        return self.backoff.ceiling(self.failures_in_row)

    @property
    def is_armed(self) -> bool:
        return self.next_at is not None

    def armed(self, now: float) -> CanaryState:
        return self if self.next_at is not None else replace(self, next_at=now + self.interval_secs)

    def disarmed(self) -> CanaryState:
        return replace(self, next_at=None, failures_in_row=0)

    def due(self, now: float) -> bool:
        return self.next_at is not None and now >= self.next_at

    def after(self, now: float, verdict: CanaryVerdict) -> CanaryState:
        failures = 0 if verdict is CanaryVerdict.WS else self.failures_in_row + 1
        state = replace(self, failures_in_row=failures)
        return replace(state, next_at=now + state.interval_secs)


class CanaryStepKind(str, enum.Enum):
    IDLE = "idle"  # the venue holds no fill-health pause: nothing to prove (the schedule is disarmed)
    NOT_DUE = "not_due"  # armed, the next round trip is not due yet
    BLOCKED = "blocked"  # due, but it must not run now (``reason`` says why)
    PROCEED = "proceed"  # due and allowed: settle earlier canary orders, then run a round trip


@dataclass(frozen=True)
class CanaryStep:
    kind: CanaryStepKind
    state: CanaryState
    reason: str = ""


def plan_canary_tick(state: CanaryState, *, now: float, fill_health_paused: bool, kill_flag: str | None,
                     poll_healthy: bool) -> CanaryStep:
    """One tick of the canary: what to do now, and the schedule after it.

    A round trip only runs while the venue holds a ``fill_health`` pause, when
    it is due, the kill flag is not set (no new exposure, not even net zero),
    and the REST poll is healthy (a canary's fills are judged by which layer
    applied them: without a working poller, a missing WS delivery would go
    unseen as missing).
    """
    if not fill_health_paused:
        return CanaryStep(CanaryStepKind.IDLE, state.disarmed())
    state = state.armed(now)
    if not state.due(now):
        return CanaryStep(CanaryStepKind.NOT_DUE, state)
    if kill_flag is not None:
        return CanaryStep(CanaryStepKind.BLOCKED, state, f"kill flag set: {kill_flag}")
    if not poll_healthy:
        return CanaryStep(CanaryStepKind.BLOCKED, state,
                          "the REST poll is not healthy: the canary's fills could not be judged")
    return CanaryStep(CanaryStepKind.PROCEED, state)


def unsettled_canary(orders: Iterable[tuple[Order, Decimal]]) -> str:
    """Why a round trip must wait for an earlier canary order (empty: none is still settling).

    ``orders``: the tracked ``_canary`` orders with their applied sizes; each
    must be final with its fills applied before a leftover position can be
    told from fills still on their way.
    """
    for order, applied in orders:
        if not order.state.is_terminal or applied != order.filled_size:
            return f"earlier canary order {order.client_order_id} still settling ({order.state.value})"
    return ""


def leftover_positions(positions: Iterable[Position], venue: str) -> list[Position]:
    """The ``_canary`` positions of ``venue`` an interrupted round trip left open (non-zero)."""
    return [p for p in positions if p.venue == venue and p.qty != 0]


def legs_complete(applied: Iterable[Decimal], venue_filled: Iterable[Decimal]) -> bool:
    """Every leg's applied fills add up to what the venue filled."""
    return all(a == f for a, f in zip(applied, venue_filled, strict=True))


def describe_fills(trade_layers: Mapping[str, FillLayer], ws_delivered: int) -> str:
    """The detail line of a round trip whose legs were sent."""
    layers = ", ".join(sorted({layer.value for layer in trade_layers.values()})) or "no layer"
    return f"{len(trade_layers)} canary fill(s) applied by {layers}; the WS delivered {ws_delivered} fill(s) meanwhile"

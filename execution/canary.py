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
- ``CanarySchedule``: when the next round trip is due (interval, backoff).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from tradetree.core.config import VenueConfig
from tradetree.core.types import FillLayer, Instrument, InstrumentKind, Side
from tradetree.execution.reconciliation import ReconcilerConfig

__all__ = [
    "CANARY_STRATEGY_ID",
    "CANARY_ORDER_PREFIX",
    "CanaryVerdict",
    "CanaryOutcome",
    "CanarySchedule",
    "LeftoverClose",
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


class CanarySchedule:
    """When the next round trip is due, in monotonic seconds.

    ``arm(now)`` when the venue is seen paused (the first round trip is due
    ``interval_secs`` later; arming again changes nothing); ``disarm()`` when
    it is not (the backoff starts over next time); ``record(now, verdict)``
    after each round trip: a WS verdict keeps the base interval, any other
    doubles it up to ``max_interval_secs``.

    Raises:
        ValueError: a non-positive interval, or a maximum below the interval.
    """

    def __init__(self, interval_secs: float, max_interval_secs: float) -> None:
        if interval_secs <= 0 or max_interval_secs < interval_secs:
            raise ValueError("canary intervals must be positive and the maximum at least the interval")
        self.base_interval_secs = interval_secs
        self.max_interval_secs = max_interval_secs
        self.interval_secs = interval_secs
        self.next_at: float | None = None
        self.failures_in_row = 0

    @property
    def armed(self) -> bool:
        return self.next_at is not None

    def arm(self, now: float) -> None:
        if self.next_at is None:
            self.next_at = now + self.interval_secs

    def disarm(self) -> None:
        self.next_at = None
        self.interval_secs = self.base_interval_secs
        self.failures_in_row = 0

    def due(self, now: float) -> bool:
        return self.next_at is not None and now >= self.next_at

    def record(self, now: float, verdict: CanaryVerdict) -> None:
        if verdict is CanaryVerdict.WS:
            self.failures_in_row = 0
            self.interval_secs = self.base_interval_secs
        else:
            self.failures_in_row += 1
            self.interval_secs = min(self.interval_secs * 2, self.max_interval_secs)
        self.next_at = now + self.interval_secs

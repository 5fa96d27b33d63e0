"""Position drift: the venue's net positions against what Redis says tradetree holds.

Pure logic, no I/O. For one venue and each instrument, *expected* is the sum
over every strategy of the Redis position (the ``_unattributed`` bucket
included) plus the fills known to be in flight (an order's venue status says
more is filled than its applied fills add up to; the fill-health layer owns
that gap). *Drift* is venue minus expected.

Reads of the two sides cannot be simultaneous, and a busy venue fills
between them: a fill executed after Redis was read but before the venue was
(or executed before and still on its way over the WS) looks like drift. Two
rules keep such fills from pausing a venue:

- **Bracketing.** Redis is read before and again right after the venue; a
  venue quantity between the two expected quantities is what Redis held at
  some instant of the venue's read, hence no drift (``unexplained`` is 0).
- **Persistence.** A drift counts only when the same unexplained quantity is
  beyond ``tolerance`` at two consecutive checks (a check apart, seconds;
  a fill in transit takes milliseconds; two different transits rarely leave
  the same amount).

A confirmed drift is reported once (``confirmed``) and stays ``drifting``
while beyond tolerance, whatever its amount; when it falls back within
tolerance it is reported once as ``resolved``.

Only instruments the venue reports positions for can be compared (swaps on
OKX): the caller leaves spot holdings out of ``expected``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from tradetree.core import Instrument, InstrumentKind, Order, Position
from tradetree.execution.discrepancy_keys import DRIFT, discrepancy_subject

__all__ = [
    "DriftInputs",
    "DriftOutcome",
    "RedisSide",
    "drift_inputs",
    "drift_outcome",
    "reports_positions",
    "stale_drift_keys",
    "InstrumentDrift",
    "DriftCheck",
    "DriftDetector",
    "expected_positions",
    "in_flight_fills",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class InstrumentDrift(BaseModel):
    """One instrument at one check (quantities in venue units, signed)."""

    model_config = _FROZEN

    inst_id: str
    venue_qty: Decimal
    redis_qty: Decimal
    in_flight_qty: Decimal = Decimal(0)
    # Redis + in flight read again right after the venue; None when not read.
    expected_after: Decimal | None = None

    @property
    def expected_qty(self) -> Decimal:
        return self.redis_qty + self.in_flight_qty

    @property
    def drift(self) -> Decimal:
        return self.venue_qty - self.expected_qty

    @property
    def unexplained(self) -> Decimal:
        """The drift no Redis read around the venue's explains: 0 when the venue's quantity lies
        between the expected quantities before and after it, else the distance to the nearer one."""
        if self.expected_after is None:
            return self.drift
        low, high = sorted((self.expected_qty, self.expected_after))
        if self.venue_qty < low:
            return self.venue_qty - low
        if self.venue_qty > high:
            return self.venue_qty - high
        return Decimal(0)

    def describe(self) -> str:
        flight = f" + in flight {self.in_flight_qty}" if self.in_flight_qty else ""
        after = (f" (then {self.expected_after})"
                 if self.expected_after is not None and self.expected_after != self.expected_qty else "")
        return (f"{self.inst_id}: venue {self.venue_qty}, Redis {self.redis_qty}{flight}{after}, "
                f"drift {self.unexplained}")


class DriftCheck(BaseModel):
    """The outcome of one check.

    ``instruments`` every compared instrument; ``suspected`` beyond tolerance
    at this check only; ``confirmed`` newly confirmed (the same unexplained
    drift beyond tolerance at this and the previous check); ``drifting`` every instrument confirmed and
    still beyond tolerance (including the new ones); ``resolved`` confirmed
    before and within tolerance now.
    """

    model_config = _FROZEN

    instruments: tuple[InstrumentDrift, ...] = ()
    suspected: tuple[str, ...] = ()
    confirmed: tuple[InstrumentDrift, ...] = ()
    drifting: tuple[str, ...] = ()
    resolved: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.drifting


def expected_positions(
    positions: Iterable[Position], venue: str, *, include: Callable[[str], bool] | None = None
) -> dict[str, Decimal]:
    """Net Redis quantity per instrument of ``venue``, summed over strategies.

    ``include`` (inst_id -> bool) restricts it to instruments the venue reports
    positions for.
    """
    total: dict[str, Decimal] = {}
    for position in positions:
        if position.venue != venue or (include is not None and not include(position.inst_id)):
            continue
        total[position.inst_id] = total.get(position.inst_id, Decimal(0)) + position.qty
    return total


def in_flight_fills(orders: Iterable[tuple[Order, Decimal]]) -> dict[str, Decimal]:
    """Signed quantity per instrument that the venue has filled and Redis has not applied yet.

    ``orders``: tracked orders (their ``filled_size`` is the venue's) paired
    with their applied sizes; only positive shortfalls count (over-applied
    orders are the fill-health monitor's concern, not an excuse for drift).
    """
    flight: dict[str, Decimal] = {}
    for order, applied in orders:
        missing = order.filled_size - applied
        if missing > 0:
            flight[order.inst_id] = flight.get(order.inst_id, Decimal(0)) + order.side.sign * missing
    return flight


class DriftDetector:
    """Drift state of one venue across checks.

    Raises:
        ValueError: ``tolerance`` is negative.
    """

    def __init__(self, venue: str, *, tolerance: Decimal = Decimal(0)) -> None:
        if tolerance < 0:
            raise ValueError("drift tolerance must not be negative")
        self.venue = venue
        self.tolerance = tolerance
        self._previous_beyond: dict[str, Decimal] = {}  # inst_id -> unexplained drift at the last check
        self._confirmed: set[str] = set()
        self.checks = 0
        self.confirmed_total = 0

    @property
    def drifting(self) -> tuple[str, ...]:
        """Instruments whose drift is confirmed and not resolved yet."""
        return tuple(sorted(self._confirmed))

    def check(
        self,
        venue_positions: Mapping[str, Decimal],
        expected: Mapping[str, Decimal],
        *,
        in_flight: Mapping[str, Decimal] | None = None,
        expected_after: Mapping[str, Decimal] | None = None,
    ) -> DriftCheck:
        """Compare one complete snapshot of both sides and update the state.

        ``venue_positions`` and ``expected`` (Redis, read before the venue) map
        inst_id to signed quantity; an instrument missing on one side is flat
        there. ``in_flight`` is added to ``expected``. ``expected_after`` is
        Redis plus in flight read again right after the venue (see the module
        doc); None when it was not read. Call it only with a complete read of
        both sides: a failed read is no check at all (it neither confirms nor
        resolves anything).
        """
        flight = in_flight or {}
        names = sorted(set(venue_positions) | set(expected) | set(expected_after or {}))
        rows = tuple(
            InstrumentDrift(
                inst_id=name,
                venue_qty=venue_positions.get(name, Decimal(0)),
                redis_qty=expected.get(name, Decimal(0)),
                in_flight_qty=flight.get(name, Decimal(0)),
                expected_after=None if expected_after is None else expected_after.get(name, Decimal(0)),
            )
            for name in names
        )
        beyond = {row.inst_id: row.unexplained for row in rows if abs(row.unexplained) > self.tolerance}
        newly = [row for row in rows if row.inst_id in beyond and row.inst_id not in self._confirmed
                 and self._previous_beyond.get(row.inst_id) == beyond[row.inst_id]]
        resolved = tuple(sorted(self._confirmed - beyond.keys()))
        self._confirmed = (self._confirmed & beyond.keys()) | {row.inst_id for row in newly}
        self._previous_beyond = beyond
        self.checks += 1
        self.confirmed_total += len(newly)
        return DriftCheck(
            instruments=rows,
            suspected=tuple(sorted(beyond.keys() - self._confirmed)),
            confirmed=tuple(newly),
            drifting=self.drifting,
            resolved=resolved,
        )


# -- one check, end to end -------------------------------------------------------------------------


class DriftOutcome(BaseModel):
    """What one drift check found. ``ok``: both sides were read (and acting on them succeeded)."""

    model_config = _FROZEN

    started_ms: int
    ok: bool
    instruments: dict[str, dict[str, str]] = Field(default_factory=dict)  # inst -> venue/redis/in_flight/drift
    suspected: tuple[str, ...] = ()
    confirmed: tuple[str, ...] = ()
    drifting: tuple[str, ...] = ()
    resolved: tuple[str, ...] = ()
    error: str = ""


def reports_positions(inst_id: str, instruments: Mapping[str, Instrument], venue_positions: Mapping[str, Decimal]) -> bool:
    """Whether the venue reports a position for ``inst_id``: a swap does, spot does not; an
    instrument the venue did not list counts when the venue reported a position for it."""
    instrument = instruments.get(inst_id)
    if instrument is not None:
        return instrument.kind is InstrumentKind.SWAP
    return inst_id in venue_positions


@dataclass(frozen=True)
class RedisSide:
    """One read of the Redis side: every position, and the venue's tracked orders with applied sizes."""

    positions: tuple[Position, ...]
    orders: tuple[tuple[Order, Decimal], ...]


@dataclass(frozen=True)
class DriftInputs:
    """``DriftDetector.check``'s arguments besides the venue's positions."""

    expected: dict[str, Decimal]
    in_flight: dict[str, Decimal]
    expected_after: dict[str, Decimal]


def drift_inputs(venue: str, before: RedisSide, after: RedisSide, instruments: Mapping[str, Instrument],
                 venue_positions: Mapping[str, Decimal]) -> DriftInputs:
    """Expected positions (Redis read ``before`` the venue) with their fills in flight, and the
    bracket's other end (Redis plus in flight read ``after``), over the instruments the venue
    reports positions for."""

    def include(inst_id: str) -> bool:
        return reports_positions(inst_id, instruments, venue_positions)

    expected = expected_positions(before.positions, venue, include=include)
    flight = {k: v for k, v in in_flight_fills(before.orders).items() if include(k)}
    expected_after = expected_positions(after.positions, venue, include=include)
    for inst_id, qty in in_flight_fills(after.orders).items():
        if include(inst_id):
            expected_after[inst_id] = expected_after.get(inst_id, Decimal(0)) + qty
    return DriftInputs(expected=expected, in_flight=flight, expected_after=expected_after)


def stale_drift_keys(open_keys: Iterable[str], check: DriftCheck) -> list[str]:
    """The ``drift:*`` discrepancies to close: their instrument is within tolerance now.

    Ones opened before a restart included: the detector's memory is in-process, Redis's is not.
    """
    beyond = set(check.suspected) | set(check.drifting)
    return [k for k in open_keys if (inst := discrepancy_subject(k, DRIFT)) is not None and inst not in beyond]


def drift_outcome(started_ms: int, check: DriftCheck, error: str = "") -> DriftOutcome:
    """The outcome of a check that read both sides; ``error``: acting on it failed."""
    return DriftOutcome(
        started_ms=started_ms, ok=not error, error=error,
        instruments={
            row.inst_id: {"venue": str(row.venue_qty), "redis": str(row.redis_qty),
                          "in_flight": str(row.in_flight_qty), "drift": str(row.unexplained)}
            for row in check.instruments
        },
        suspected=check.suspected, confirmed=tuple(r.inst_id for r in check.confirmed),
        drifting=check.drifting, resolved=check.resolved,
    )

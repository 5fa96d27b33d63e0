"""Risk rules the monitor runs: pure, clock-free, fed with events and snapshots.

Each rule turns what it is fed into ``Trip``s: the breaker to open, the
strategy to pause (``None`` = every strategy) and why. A rule trips once per
episode (a latch) and is re-armed by the condition clearing (an accepted
order, a loss back within the limit) or by ``rearm`` when an operator clears
the breaker. Time only comes in with the events (``updated_ms``), so the
rules run the same live, on replayed events and in tests.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from tradetree.core import Order, OrderState, Position, Side, StrategyState, position_id
from tradetree.risk.config import RiskConfig, instrument_key
from tradetree.risk.pre_trade import fmt_decimal

__all__ = [
    "GLOBAL_LOSS",
    "GLOBAL_NOTIONAL",
    "ExposureMonitor",
    "FlipDetector",
    "LossMonitor",
    "RejectionStreak",
    "Trip",
    "breaker_alert",
    "daily_pnl_by_strategy",
    "pause_targets",
    "paused_summary",
    "position_net_pnl",
    "rejection_streak_of",
    "strategy_breaker",
]

_ZERO = Decimal(0)
GLOBAL_LOSS = "global:loss"
GLOBAL_NOTIONAL = "global:notional"
_ACCEPTED = frozenset({OrderState.LIVE, OrderState.PARTIALLY_FILLED, OrderState.FILLED})


def strategy_breaker(strategy_id: str, kind: str) -> str:
    """Breaker name of one strategy: ``strategy:{id}:{kind}``."""
    return f"strategy:{strategy_id}:{kind}"


class Trip(BaseModel):
    """A rule fired: open ``breaker``, pause ``strategy_id`` (None = all), say ``reason``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    breaker: str
    strategy_id: str | None
    reason: str


class _Latch:
    """Trip-once memory keyed by breaker name."""

    def __init__(self) -> None:
        self.tripped: set[str] = set()

    def update(self, name: str, breached: bool) -> bool:
        """True exactly when ``breached`` turns on for ``name``; a clear condition re-arms it."""
        if not breached:
            self.tripped.discard(name)
            return False
        if name in self.tripped:
            return False
        self.tripped.add(name)
        return True

    def rearm(self, name: str) -> None:
        self.tripped.discard(name)


# -- consecutive rejections ---------------------------------------------------------


class RejectionStreak:
    """Consecutive venue rejections per strategy, from order events.

    A REJECTED order adds one (each client order id counts once, however
    often its rejection is written); an order the venue accepted (LIVE,
    PARTIALLY_FILLED, FILLED, or CANCELED after filling some) resets the
    strategy's count and re-arms it. The ``limit``-th consecutive rejection
    trips ``strategy:{id}:rejections`` once; more rejections do not trip
    again until a reset.

    Raises:
        ValueError: ``limit`` < 1.
    """

    def __init__(self, limit: int = 5, *, remember_order_ids: int = 10_000) -> None:
        if limit < 1:
            raise ValueError(f"rejection streak limit must be >= 1, got {limit}")
        self.limit = limit
        self._counts: dict[str, int] = {}
        self._tripped: set[str] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember_order_ids

    def count(self, strategy_id: str) -> int:
        return self._counts.get(strategy_id, 0)

    def on_order(self, order: Order) -> Trip | None:
        sid = order.strategy_id
        if order.state is OrderState.REJECTED:
            if order.client_order_id in self._seen:
                return None
            self._seen[order.client_order_id] = None
            if len(self._seen) > self._remember:
                self._seen.popitem(last=False)
            n = self._counts[sid] = self._counts.get(sid, 0) + 1
            if n >= self.limit and sid not in self._tripped:
                self._tripped.add(sid)
                last = f"; last: {order.reject_reason}" if order.reject_reason else ""
                return Trip(breaker=strategy_breaker(sid, "rejections"), strategy_id=sid,
                            reason=f"{n} consecutive venue rejections{last}")
            return None
        if order.state in _ACCEPTED or (order.state is OrderState.CANCELED and order.filled_size > 0):
            self._counts.pop(sid, None)
            self._tripped.discard(sid)
        return None

    def rearm(self, strategy_id: str) -> None:
        """Forget the strategy's streak (an operator cleared its breaker)."""
        self._counts.pop(strategy_id, None)
        self._tripped.discard(strategy_id)

    def snapshot(self) -> dict[str, dict[str, object]]:
        """JSON-able state, to persist with the event cursor."""
        sids = sorted(set(self._counts) | self._tripped)
        return {s: {"count": self._counts.get(s, 0), "tripped": s in self._tripped} for s in sids}

    def restore(self, snapshot: Mapping[str, Mapping[str, Any]]) -> None:
        """Take up a ``snapshot()`` (after a restart). Replaces the current state."""
        self._counts = {s: int(v.get("count", 0)) for s, v in snapshot.items() if int(v.get("count", 0))}
        self._tripped = {s for s, v in snapshot.items() if v.get("tripped")}


# -- unintended flips -------------------------------------------------------------------


def _sign(qty: Decimal) -> int:
    return (qty > 0) - (qty < 0)


class FlipDetector:
    """Sign changes of a position that no order of the strategy explains.

    Fed the order events (``on_order``) and position snapshots
    (``on_position``, in the order the monitor reads them: events first).
    A position whose sign is opposite to its last non-zero sign (directly,
    or through flat) is a flip; it is intended when the strategy's
    non-reduce-only orders on the new side, not rejected, add up to at
    least the new position (the close-then-open pair of
    ``orders_toward_target``). A terminal order explains flips only within
    ``window_ms`` of ending, judged at the position's ``updated_ms`` or at
    ``now_ms`` (the monitor's clock, which also stamps orders' ``updated_ms``)
    when that is earlier. The position's time is the last fill's venue
    timestamp: a venue clock running ahead of ours (the simulator's
    ``time_scale``, or skew) must not age every order out of the window and
    make every flip look unintended.
    Reduce-only orders never explain a flip: a reduce-only order that flips
    a position is exactly the duplicate close this detects.

    The first snapshot of a position sets its sign without a verdict.
    """

    def __init__(self, window_ms: int = 300_000) -> None:
        self.window_ms = window_ms
        self._last_sign: dict[tuple[str, str, str], int] = {}
        self._orders: dict[tuple[str, str, str], dict[str, Order]] = {}

    def on_order(self, order: Order) -> None:
        if order.reduce_only:
            return
        key = (order.strategy_id, order.venue, order.inst_id)
        book = self._orders.setdefault(key, {})
        never_filled = order.state is OrderState.REJECTED or (
            order.state is OrderState.CANCELED and order.filled_size == 0
        )
        if never_filled:
            book.pop(order.client_order_id, None)
            return
        current = book.get(order.client_order_id)
        if current is None or order.updated_ms >= current.updated_ms:
            book[order.client_order_id] = order

    def _prune(self, key: tuple[str, str, str], now_ms: int) -> None:
        book = self._orders.get(key)
        if not book:
            return
        for coid in [c for c, o in book.items()
                     if o.state.is_terminal and o.updated_ms < now_ms - self.window_ms]:
            del book[coid]

    def on_position(self, position: Position, now_ms: int | None = None) -> Trip | None:
        key = (position.strategy_id, position.venue, position.inst_id)
        self._prune(key, position.updated_ms if now_ms is None else min(now_ms, position.updated_ms))
        sign = _sign(position.qty)
        if sign == 0:
            return None
        previous = self._last_sign.get(key)
        self._last_sign[key] = sign
        if previous is None or previous == sign:
            return None
        new_side = Side.BUY if sign > 0 else Side.SELL
        opening = sum(
            (o.size for o in self._orders.get(key, {}).values() if o.side is new_side), _ZERO
        )
        if opening >= abs(position.qty):
            return None
        old, new = ("long", "short") if previous > 0 else ("short", "long")
        return Trip(
            breaker=strategy_breaker(position.strategy_id, "flip"),
            strategy_id=position.strategy_id,
            reason=(
                f"position on {instrument_key(position.venue, position.inst_id)} flipped from "
                f"{old} to {new} ({fmt_decimal(position.qty)}); the strategy's opening "
                f"{new_side.value} orders explain only {fmt_decimal(opening)}"
            ),
        )


# -- daily loss -------------------------------------------------------------------------


def position_net_pnl(position: Position) -> Decimal:
    """Realized P&L net of fees, cumulative over the position's life."""
    return position.realized_pnl - position.fees


def daily_pnl_by_strategy(
    positions: Iterable[Position], baselines: Mapping[str, Decimal]
) -> dict[str, Decimal]:
    """Realized P&L today per strategy.

    ``baselines`` maps a position id (``core.types.position_id``) to its
    ``position_net_pnl`` at the day's first observation; a position
    without a baseline made nothing yet today.
    """
    out: dict[str, Decimal] = {}
    for p in positions:
        net = position_net_pnl(p)
        base = baselines.get(position_id(p.strategy_id, p.venue, p.inst_id), net)
        out[p.strategy_id] = out.get(p.strategy_id, _ZERO) + (net - base)
    return out


class LossMonitor:
    """Daily loss at or beyond a limit trips ``strategy:{id}:loss`` or ``global:loss``.

    Fed today's P&L per strategy; trips once while the loss stays beyond the
    limit, re-arms when it is back within (a new day starts from zero).
    """

    def __init__(self, limit_per_strategy: Decimal | None, limit_global: Decimal | None) -> None:
        self.limit_per_strategy = limit_per_strategy
        self.limit_global = limit_global
        self._latch = _Latch()

    def update(self, pnl_today: Mapping[str, Decimal]) -> list[Trip]:
        trips = []
        limit = self.limit_per_strategy
        if limit is not None:
            for sid in sorted(pnl_today):
                pnl = pnl_today[sid]
                name = strategy_breaker(sid, "loss")
                if self._latch.update(name, pnl <= -limit):
                    trips.append(Trip(breaker=name, strategy_id=sid, reason=(
                        f"daily loss {fmt_decimal(-pnl)} reached the limit {fmt_decimal(limit)}")))
        limit = self.limit_global
        if limit is not None:
            total = sum(pnl_today.values(), _ZERO)
            if self._latch.update(GLOBAL_LOSS, total <= -limit):
                trips.append(Trip(breaker=GLOBAL_LOSS, strategy_id=None, reason=(
                    f"global daily loss {fmt_decimal(-total)} reached the limit {fmt_decimal(limit)}")))
        return trips

    def rearm(self, breaker: str) -> None:
        self._latch.rearm(breaker)


# -- position and notional limits ---------------------------------------------------------


class ExposureMonitor:
    """Positions beyond the configured position and notional limits.

    Notional here is entry notional, ``|qty| * avg_price * contract value``:
    the monitor reads Redis only and has no market data. A strategy with a
    position in an instrument whose contract value is not configured has an
    unknown notional, which trips its notional breaker (fail closed) when a
    notional limit is set. Breakers: ``strategy:{id}:position``,
    ``strategy:{id}:notional``, ``global:notional``; one trip per episode.
    """

    def __init__(self, cfg: RiskConfig) -> None:
        self.cfg = cfg
        self._latch = _Latch()

    def update(self, positions: Iterable[Position]) -> list[Trip]:
        cfg = self.cfg
        over_position: dict[str, list[str]] = {}
        notional: dict[str, Decimal] = {}
        unknown: dict[str, list[str]] = {}
        for p in positions:
            sid = p.strategy_id
            over_position.setdefault(sid, [])
            notional.setdefault(sid, _ZERO)
            if p.qty == 0:
                continue
            limit = cfg.position_limit(p.venue, p.inst_id)
            if limit is not None and abs(p.qty) > limit:
                over_position[sid].append(
                    f"{instrument_key(p.venue, p.inst_id)} {fmt_decimal(p.qty)} (limit {fmt_decimal(limit)})")
            cv = cfg.contract_value(p.venue, p.inst_id)
            if cv is None:
                unknown.setdefault(sid, []).append(instrument_key(p.venue, p.inst_id))
            else:
                notional[sid] += abs(p.qty) * p.avg_price * cv
        trips = []
        for sid in sorted(over_position):
            name = strategy_breaker(sid, "position")
            if self._latch.update(name, bool(over_position[sid])):
                trips.append(Trip(breaker=name, strategy_id=sid,
                                  reason="position limit exceeded: " + ", ".join(over_position[sid])))
        if cfg.max_strategy_notional is not None:
            for sid in sorted(notional):
                name = strategy_breaker(sid, "notional")
                breached = sid in unknown or notional[sid] > cfg.max_strategy_notional
                if self._latch.update(name, breached):
                    trips.append(Trip(breaker=name, strategy_id=sid, reason=self._why(
                        f"strategy {sid}", notional[sid], cfg.max_strategy_notional, unknown.get(sid))))
        if cfg.max_global_notional is not None:
            total = sum(notional.values(), _ZERO)
            missing = sorted({i for items in unknown.values() for i in items})
            if self._latch.update(GLOBAL_NOTIONAL, bool(missing) or total > cfg.max_global_notional):
                trips.append(Trip(breaker=GLOBAL_NOTIONAL, strategy_id=None, reason=self._why(
                    "global", total, cfg.max_global_notional, missing)))
        return trips

    @staticmethod
    def _why(label: str, value: Decimal, limit: Decimal, missing: list[str] | None) -> str:
        if missing:
            return (f"{label} notional unknown: no contract value configured for "
                    + ", ".join(sorted(set(missing))))
        return f"{label} entry notional {fmt_decimal(value)} exceeds the limit {fmt_decimal(limit)}"

    def rearm(self, breaker: str) -> None:
        self._latch.rearm(breaker)


# -- what the monitor does with a trip --------------------------------------------------------


def pause_targets(trip: Trip, states: Mapping[str, str]) -> list[str]:
    """Strategies a trip pauses: its own; for a global trip every RUNNING one in ``states``, sorted.

    Only RUNNING ones: a WINDING_DOWN or KILLED strategy keeps its state, so a
    breaker never stops a kill switch's wind-down.
    """
    if trip.strategy_id is not None:
        return [trip.strategy_id]
    return sorted(s for s, state in states.items() if state == StrategyState.RUNNING)


def rejection_streak_of(breaker: str) -> str | None:
    """The strategy whose rejection streak ``breaker`` (``strategy:{id}:rejections``) is; else None."""
    prefix, _, rest = breaker.partition(":")
    if prefix == "strategy" and rest.endswith(":rejections"):
        return rest[: -len(":rejections")]
    return None


def paused_summary(paused: Iterable[str]) -> str:
    """Who a trip paused, for the alert and the log."""
    return ", ".join(paused) or "none was RUNNING"


def breaker_alert(trip: Trip, paused: Iterable[str]) -> tuple[str, str, str]:
    """``(key, title, text)`` of the one alert a newly opened breaker sends.

    Keyed by the breaker, so the alerter's de-duplication folds repeats of the
    same breaker together.
    """
    return (trip.breaker, f"Breaker {trip.breaker} opened",
            f"{trip.reason}. Strategies paused: {paused_summary(paused)}.")

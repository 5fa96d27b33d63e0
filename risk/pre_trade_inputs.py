"""What a strategy host decides about the inputs of ``pre_trade.check``, apart from reading them.

The host (``actors.strategy_host``) reads positions, in-flight orders with
their applied sizes, marks and day baselines from Redis; these functions
decide what it reads and put what it read together, so the backtester and
the tests can assemble the same inputs without Redis:

- ``pending_by_instrument``: the signed size of orders not yet reflected in
  positions (the strategy's ``StrategyContext.pending``);
- ``InputNeeds``: which inputs an intent needs at all (a reduce-only close
  only faces the duplicate-close guard);
- ``mark_keys`` / ``choose_marks``: the instruments whose prices the notional
  limits need, and the usable price of each (the fresher of the host's own
  ticker and the gateway's recorded mark) or why it is unknown;
- ``loss_scope``: the positions today's P&L is computed over;
- ``explain``: a "... unknown" reason with why its input is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from tradetree.core import Mark, Order, OrderIntent, Position, Side, fresher, usable_marks
from tradetree.risk.config import RiskConfig, instrument_key
from tradetree.risk.pre_trade import in_flight_size

__all__ = [
    "DAILY_PNL_UNKNOWN",
    "InputNeeds",
    "choose_marks",
    "explain",
    "input_needs",
    "loss_scope",
    "mark_keys",
    "mark_unknown_reason",
    "pending_by_instrument",
]

MarkKey = tuple[str, str]

_ZERO = Decimal(0)

# The text of pre_trade's reason when today's P&L is unknown (the key ``explain`` looks up).
DAILY_PNL_UNKNOWN = "daily P&L unknown: loss limits cannot be checked"


def pending_by_instrument(orders: Iterable[tuple[Order, Decimal]]) -> dict[str, Decimal]:
    """Signed size of orders not yet reflected in positions, per instrument.

    ``orders``: each order with what the store has applied for it. An order
    contributes its ``pre_trade.in_flight_size``: the unfilled rest of a live
    order, and the unapplied part of a filled or canceled one. The second
    part is the incident guard: an order the venue says is filled, whose
    fills never arrived, still counts, so the strategy does not order the
    same exposure again.
    """
    out: dict[str, Decimal] = {}
    for order, applied in orders:
        rest = in_flight_size(order, applied)
        if rest > 0:
            out[order.inst_id] = out.get(order.inst_id, _ZERO) + (rest if order.side is Side.BUY else -rest)
    return out


@dataclass(frozen=True)
class InputNeeds:
    """What ``pre_trade.check`` needs read for one intent.

    ``wide``: every strategy's positions and orders on every venue (a global
    limit applies), else the intent's strategy's; ``marks``: prices (a
    notional limit applies); ``daily_pnl``: today's P&L (a loss limit applies).
    """

    wide: bool
    marks: bool
    daily_pnl: bool


def input_needs(intent: OrderIntent, cfg: RiskConfig) -> InputNeeds:
    """What to read for ``intent``: a reduce-only intent needs only its strategy's own state."""
    opening = not intent.reduce_only
    loss_limits = cfg.max_daily_loss_per_strategy is not None or cfg.max_daily_loss_global is not None
    return InputNeeds(wide=opening and cfg.global_limits_set, marks=opening and cfg.notional_limits_set,
                      daily_pnl=opening and loss_limits)


def mark_keys(intent: OrderIntent, positions: Iterable[Position], orders: Iterable[Order],
              cfg: RiskConfig) -> set[MarkKey]:
    """Instruments whose price the notional limits set in ``cfg`` may need for ``intent``:
    its own, and those of open positions and orders in a limit's scope."""

    def in_scope(strategy_id: str) -> bool:
        return cfg.max_global_notional is not None or (
            cfg.max_strategy_notional is not None and strategy_id == intent.strategy_id)

    keys = {(intent.venue, intent.inst_id)}
    keys |= {(p.venue, p.inst_id) for p in positions if p.qty != 0 and in_scope(p.strategy_id)}
    keys |= {(o.venue, o.inst_id) for o in orders if in_scope(o.strategy_id)}
    return keys


def choose_marks(
    keys: Iterable[MarkKey], recorded: Mapping[MarkKey, Mark], own: Mapping[MarkKey, Mark], now_ms: int,
    max_age_ms: int, *, read_failure: str = "",
) -> tuple[dict[MarkKey, Decimal], dict[MarkKey, str]]:
    """Usable prices of ``keys`` and why the others are unknown (see ``core.marks.usable_marks``).

    Each key's mark is the fresher of the ``recorded`` one (the gateways') and
    the host's ``own``. ``read_failure`` (non-empty when the recorded marks
    could not be read) is the reason given for a key that has no mark at all.
    """
    wanted = set(keys)
    merged = {}
    for key in wanted:
        mark = fresher(recorded.get(key), own.get(key))
        if mark is not None:
            merged[key] = mark
    prices, missing = usable_marks(merged, wanted, now_ms, max_age_ms)
    if read_failure:
        missing = {k: read_failure if k not in merged else w for k, w in missing.items()}
    return prices, missing


def mark_unknown_reason(key: MarkKey) -> str:
    """The text of pre_trade's reason when ``key`` has no usable mark (the key ``explain`` looks up)."""
    return f"notional unknown: {instrument_key(*key)} has no mark price"


def loss_scope(positions: Iterable[Position], cfg: RiskConfig, strategy_id: str) -> list[Position]:
    """Positions today's P&L is computed over: every strategy's with a global loss limit, else the strategy's."""
    return [p for p in positions if cfg.max_daily_loss_global is not None or p.strategy_id == strategy_id]


def explain(reason: str, why_unknown: Mapping[str, str]) -> str:
    """``reason`` with why its input is unknown appended, when known."""
    why = why_unknown.get(reason)
    return f"{reason} ({why})" if why else reason

"""The strategy contract: market events and fills in, order intents out.

A strategy is plain Python. It never talks to a venue, Redis or Ray: the
strategy host (paper and live) and the backtester call the same methods with
the same inputs, which is what makes backtest, paper and live agree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import namedtuple
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from tradetree.core import (
    Bar,
    ConfigError,
    Fill,
    Order,
    OrderIntent,
    OrderType,
    Side,
    StrategyConfig,
    format_validation_error,
)

__all__ = ["StrategyParams", "StrategyContext", "Strategy", "orders_toward_target"]

_ZERO = Decimal(0)
_tuple_new = tuple.__new__

# Strategy.intent's unvalidated construction (see there): a pydantic model's per-instance slots.
_SET_DICT = BaseModel.__dict__["__dict__"].__set__
_SET_FIELDS_SET = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
_SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__
_new = object.__new__
_INTENT_FIELDS = frozenset(OrderIntent.model_fields)
# Strategy.intent re-checks by hand exactly the rules OrderIntent validates today. A validator added
# there must be added to that check too: fail at import rather than skip it silently.
_decorators = OrderIntent.__pydantic_decorators__
if (set(_decorators.field_validators) != {"_price_positive"} or _decorators.model_validators
        or _decorators.validators or _decorators.root_validators):
    raise RuntimeError("OrderIntent's validators changed: update Strategy.intent's unvalidated path")


class StrategyParams(BaseModel):
    """Base of every strategy's parameter model: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class _ContextFields(BaseModel):
    """The validation behind :class:`StrategyContext`'s constructor (its fields and rules)."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="StrategyContext")

    now_ms: int
    positions: dict[str, Decimal] = {}
    pending: dict[str, Decimal] = {}


# Named StrategyContext so its repr reads as the class strategies see.
_CONTEXT_BASE = namedtuple("StrategyContext", ("now_ms", "positions", "pending"))  # type: ignore[name-match]
_UNSET: Any = object()


class StrategyContext(_CONTEXT_BASE):
    """What the host knows when it asks the strategy for a decision.

    ``positions`` are the strategy's own positions from Redis (venue units);
    ``pending`` is, per instrument, the signed size of its orders not yet
    reflected in those positions (live orders, and filled orders whose fills
    have not all been applied), so a strategy never orders the same exposure
    twice while a fill is in flight.

    Immutable. The constructor validates like the pydantic model this used to
    be (``now_ms`` an int, both maps ``str -> Decimal``, copied; a
    ``ValidationError`` otherwise), and ``model_dump`` / ``model_validate``
    still work. It is a named tuple underneath because the backtester makes one
    per bar: building a frozen pydantic model cost more than the typical
    strategy's whole ``on_bar``. The backtester builds its contexts with
    :meth:`unvalidated` from values it made itself.
    """

    __slots__ = ()

    def __new__(cls, now_ms: int = _UNSET, positions: dict[str, Decimal] = _UNSET,
                pending: dict[str, Decimal] = _UNSET, **unknown: object) -> StrategyContext:
        given = {k: v for k, v in (("now_ms", now_ms), ("positions", positions), ("pending", pending))
                 if v is not _UNSET}
        f = _ContextFields(**given, **unknown)  # unknown keys: refused (extra="forbid")
        return _tuple_new(cls, (f.now_ms, f.positions, f.pending))

    @classmethod
    def unvalidated(cls, now_ms: int, positions: dict[str, Decimal], pending: dict[str, Decimal]) -> StrategyContext:
        """A context of exactly these values (not validated, not copied): for callers that made them."""
        return _tuple_new(cls, (now_ms, positions, pending))

    @classmethod
    def model_validate(cls, obj: object) -> StrategyContext:
        """A context from a mapping of its fields (validated), or ``obj`` itself if it is one."""
        if isinstance(obj, cls):
            return obj
        if not isinstance(obj, Mapping):
            _ContextFields.model_validate(obj)  # raises the ValidationError pydantic gives
        return cls(**obj)  # type: ignore[arg-type]

    def model_dump(self) -> dict[str, object]:
        """The fields as a dict (the maps copied)."""
        return {"now_ms": self.now_ms, "positions": dict(self.positions), "pending": dict(self.pending)}

    def exposure(self, inst_id: str) -> Decimal:
        return self.positions.get(inst_id, _ZERO) + self.pending.get(inst_id, _ZERO)


class Strategy(ABC):
    """Base class. Subclasses set ``Params`` and implement ``on_bar``.

    Construction validates ``config.params`` against ``Params`` and raises
    ``ConfigError`` naming the strategy and the field.
    """

    Params: ClassVar[type[StrategyParams]] = StrategyParams

    def __init__(self, config: StrategyConfig) -> None:
        self.config = config
        self.id = config.id
        self.venue = config.venue
        self.symbols = config.symbols
        try:
            self.params = self.Params.model_validate(config.params)
        except ValidationError as exc:
            raise ConfigError(
                format_validation_error(exc, source=f"strategy {config.id} params")
            ) from None

    @abstractmethod
    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent]:
        """A bar closed for one of ``symbols``. Return the orders to place now."""

    def on_fill(self, fill: Fill) -> None:  # noqa: B027 - optional hook
        """One of this strategy's fills was applied. Default: nothing to do."""

    def on_order_update(self, order: Order) -> None:  # noqa: B027 - optional hook
        """One of this strategy's orders changed state. Default: nothing to do."""

    def cancels(self) -> list[str]:
        """Client order ids the host should cancel now (each returned once). Default: none.

        Strategies that rest orders (quoting) use this to requote; the host
        carries cancels out even while the strategy is paused, since a cancel
        only removes risk.
        """
        return []

    def intent(self, inst_id: str, side: Side, size: Decimal, *, reason: str,
               reduce_only: bool = False, order_type: OrderType = OrderType.MARKET,
               price: Decimal | None = None) -> OrderIntent:
        if (type(size) is Decimal and size.is_finite() and size > 0 and type(side) is Side
                and type(order_type) is OrderType and type(inst_id) is str and type(reason) is str
                and type(reduce_only) is bool and type(self.id) is str and type(self.venue) is str
                and (price is None or (type(price) is Decimal and price.is_finite() and price > 0))):
            # Every value already has the type validation would give it and passes its constraints,
            # and validation would keep these very objects: build the model without re-validating
            # (the same object, equal to the validated one; backtests make one per order).
            intent = _new(OrderIntent)
            _SET_DICT(intent, {
                "strategy_id": self.id, "venue": self.venue, "inst_id": inst_id, "side": side,
                "type": order_type, "size": size, "price": price, "reduce_only": reduce_only, "reason": reason,
            })
            _SET_FIELDS_SET(intent, _INTENT_FIELDS)
            _SET_EXTRA(intent, None)
            _SET_PRIVATE(intent, None)
            return intent
        return OrderIntent(  # anything else: validated (coerced, or refused with a ValidationError)
            strategy_id=self.id, venue=self.venue, inst_id=inst_id, side=side, type=order_type,
            size=size, price=price, reduce_only=reduce_only, reason=reason,
        )


def orders_toward_target(
    strategy: Strategy, inst_id: str, target: Decimal, ctx: StrategyContext, *, reason: str
) -> list[OrderIntent]:
    """Market orders that move the strategy's exposure on ``inst_id`` to ``target``.

    A move that crosses zero is split into a reduce-only close and an opening
    order, so a close can never accidentally open the other side.
    """
    current = ctx.exposure(inst_id)
    delta = target - current
    if delta == 0:
        return []
    side = Side.BUY if delta > 0 else Side.SELL
    if current != 0 and (target == 0 or (current > 0) != (target > 0)):
        close = strategy.intent(inst_id, side, abs(current), reason=f"{reason}: close", reduce_only=True)
        if target == 0:
            return [close]
        return [close, strategy.intent(inst_id, side, abs(target), reason=f"{reason}: open")]
    return [strategy.intent(inst_id, side, abs(delta), reason=reason)]

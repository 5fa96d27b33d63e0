"""The strategy contract: market events and fills in, order intents out.

A strategy is plain Python. It never talks to a venue, Redis or Ray: the
strategy host (paper and live) and the backtester call the same methods with
the same inputs, which is what makes backtest, paper and live agree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from decimal import Decimal
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from core.config import StrategyConfig, format_validation_error
from core.errors import ConfigError
from core.types import Bar, Fill, Order, OrderIntent, OrderType, Side

__all__ = ["StrategyParams", "StrategyContext", "Strategy", "orders_toward_target"]


class StrategyParams(BaseModel):
    """Base of every strategy's parameter model: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class StrategyContext(BaseModel):
    """What the host knows when it asks the strategy for a decision.

    ``positions`` are the strategy's own positions from Redis (venue units);
    ``pending`` is, per instrument, the signed size of its orders not yet
    reflected in those positions (live orders, and filled orders whose fills
    have not all been applied), so a strategy never orders the same exposure
    twice while a fill is in flight.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    now_ms: int
    positions: dict[str, Decimal] = {}
    pending: dict[str, Decimal] = {}

    def exposure(self, inst_id: str) -> Decimal:
        return self.positions.get(inst_id, Decimal(0)) + self.pending.get(inst_id, Decimal(0))


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
        return OrderIntent(
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

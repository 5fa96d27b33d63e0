"""SingleVenueMarketMaking: two-sided post-only quotes around a fair price.

Cancels. ``OrderIntent`` can only place orders, so a requote is two-phase:
the strategy names the quotes it wants gone through ``quotes_to_cancel()``
(client order ids) and places new quotes only once every quote it knows of
has reached a terminal state. There is therefore never more than one quote
per side resting, and the inventory limit holds even if both sides fill.

Host contract (the strategy host and the backtester):

1. Deliver every update of this strategy's orders to ``on_order_update``,
   including the first one after submission (acknowledged or rejected). At
   (re)start, replay the strategy's open orders from Redis through it: the
   strategy adopts quotes it did not place and cancels them on its first
   requote.
2. After each ``on_bar``, call ``quotes_to_cancel()`` and cancel those ids
   (also while the strategy is paused: a cancel only lowers risk). Canceling
   an id that is already done is harmless; the strategy asks again after
   ``ack_timeout_ms`` for a quote still reported live.
3. Intents the host does not submit (paused, killed, denied, the rest of a
   batch after a rejection) are forgotten by the strategy after
   ``ack_timeout_ms`` without an update for them. While it waits it places
   nothing, and it never places quotes while ``ctx.pending`` shows orders or
   unapplied fills on the instrument that it does not track.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal

from pydantic import Field, model_validator

from tradetree.core import Bar, Order, OrderIntent, OrderType, Side, StrategyConfig
from tradetree.strategies.base import Strategy, StrategyContext, StrategyParams
from tradetree.strategies.indicators import EMA

__all__ = ["SingleVenueMarketMaking", "SingleVenueMarketMakingParams"]

_BPS = Decimal(10_000)
_FINISHED_MEMORY = 1024  # terminal client order ids remembered, to ignore late updates


class SingleVenueMarketMakingParams(StrategyParams):
    fair_price: Literal["mid", "close", "ema"] = "mid"  # mid = (high + low) / 2 of the bar
    ema_bars: int = Field(default=10, ge=1)  # EMA of closes, when fair_price is "ema"
    half_spread_bps: float = Field(gt=0)
    # shift of both quotes, in bps of fair, at max_inventory (linear in inventory)
    skew_bps: float = Field(default=0.0, ge=0)
    requote_bps: float = Field(gt=0)  # fair move (from the quoted fair) that triggers a requote
    quote_size: Decimal = Field(gt=0)  # venue units per quote
    max_inventory: Decimal = Field(gt=0)  # |inventory| a filled quote may never exceed
    tick_size: Decimal = Field(gt=0)
    ack_timeout_ms: int = Field(default=5_000, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> SingleVenueMarketMakingParams:
        if self.skew_bps >= self.half_spread_bps:
            raise ValueError("skew_bps must be below half_spread_bps (quotes stay on their side of fair)")
        if self.quote_size > self.max_inventory:
            raise ValueError("quote_size must not exceed max_inventory")
        return self


@dataclass(frozen=True)
class _Placed:
    """A quote intent handed to the host whose order the strategy has not seen yet."""

    side: Side
    price: Decimal
    size: Decimal
    at_ms: int


def _floor_to(price: Decimal, tick: Decimal) -> Decimal:
    return (price / tick).to_integral_value(rounding=ROUND_FLOOR) * tick


def _ceil_to(price: Decimal, tick: Decimal) -> Decimal:
    return (price / tick).to_integral_value(rounding=ROUND_CEILING) * tick


class SingleVenueMarketMaking(Strategy):
    """Quote a post-only bid and ask of ``quote_size`` on the first symbol.

    On each closed bar (after ``ema_bars`` bars when quoting around the EMA):

    - fair = the bar's (high + low) / 2, its close, or the EMA of closes.
    - Quotes: shift = -skew_bps x inventory / max_inventory (bps; long
      inventory lowers both quotes, so the ask gets hit sooner and the bid
      later); bid = fair x (1 + (shift - half_spread_bps) / 1e4) rounded
      down to ``tick_size``, ask = fair x (1 + (shift + half_spread_bps) / 1e4)
      rounded up. Inventory is the strategy's exposure when quoting.
    - Inventory limit: the bid is not placed if a full fill would take
      inventory above ``max_inventory``; the ask not if below
      ``-max_inventory``.
    - Requote when the fair price has moved more than ``requote_bps`` from
      the fair the quotes were placed at, when the applied position differs
      from the inventory they were placed at (a fill: the skew must move), or
      when the set of resting quotes is not the one placed (one ended: filled,
      canceled or rejected; or an order it did not place turned up). A requote
      first cancels every known quote (``quotes_to_cancel()``); the new quotes
      follow on the first bar at which none is left (see the module doc).
    """

    Params = SingleVenueMarketMakingParams

    def __init__(self, config: StrategyConfig) -> None:
        super().__init__(config)
        self.params: SingleVenueMarketMakingParams
        self.inst_id = config.symbols[0]
        self._ema = EMA(self.params.ema_bars)
        self._live: dict[str, Order] = {}  # our non-terminal quotes, by client order id
        self._placed: list[_Placed] = []
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._cancel_asked_ms: dict[str, int] = {}
        self._to_cancel: list[str] = []
        self._quoted_fair: Decimal | None = None
        self._quoted_position: Decimal | None = None
        self._quoted_count = 0  # how many quotes the current set had when placed
        self.last_fair: Decimal | None = None

    # -- what the host asks ---------------------------------------------------------------------

    def quotes_to_cancel(self) -> list[str]:
        """Client order ids the host should cancel now; each request is returned once."""
        out, self._to_cancel = self._to_cancel, []
        return out

    def cancels(self) -> list[str]:
        return self.quotes_to_cancel()

    @property
    def live_quotes(self) -> tuple[Order, ...]:
        """The quotes this strategy knows to be resting (not yet terminal)."""
        return tuple(self._live.values())

    @property
    def awaiting_acks(self) -> int:
        """Quote intents handed out whose orders have not been reported yet."""
        return len(self._placed)

    def on_order_update(self, order: Order) -> None:
        if order.strategy_id != self.id or order.inst_id != self.inst_id:
            return
        coid = order.client_order_id
        if coid in self._finished:
            return  # a late, stale update for a quote already done
        if coid not in self._live:
            self._match_placed(order)
        if order.state.is_terminal:
            self._live.pop(coid, None)
            self._cancel_asked_ms.pop(coid, None)
            self._finished[coid] = None
            if len(self._finished) > _FINISHED_MEMORY:
                self._finished.popitem(last=False)
        else:
            self._live[coid] = order

    def _match_placed(self, order: Order) -> None:
        for i, placed in enumerate(self._placed):
            if (placed.side, placed.price, placed.size) == (order.side, order.price, order.size):
                del self._placed[i]
                return

    # -- pricing --------------------------------------------------------------------------------

    def quote_prices(self, fair: Decimal, inventory: Decimal) -> tuple[Decimal, Decimal]:
        """(bid, ask) for ``fair`` at ``inventory``, on the tick grid, bid < ask."""
        p = self.params
        shift = -Decimal(str(p.skew_bps)) * inventory / p.max_inventory
        half = Decimal(str(p.half_spread_bps))
        bid = _floor_to(fair * (1 + (shift - half) / _BPS), p.tick_size)
        ask = _ceil_to(fair * (1 + (shift + half) / _BPS), p.tick_size)
        return bid, ask

    def _fair(self, bar: Bar) -> Decimal | None:
        mode = self.params.fair_price
        if mode == "ema":
            value = self._ema.update(float(bar.close))
            return Decimal(repr(value)) if self._ema.ready else None
        if mode == "close":
            return bar.close
        return (bar.high + bar.low) / 2

    # -- decisions ------------------------------------------------------------------------------

    def _requote_needed(self, fair: Decimal, position: Decimal) -> bool:
        if self._quoted_fair is None:
            return True
        moved_bps = abs(fair - self._quoted_fair) / self._quoted_fair * _BPS
        if moved_bps > Decimal(str(self.params.requote_bps)):
            return True
        if position != self._quoted_position:
            return True
        # a quote ended, or one we did not place turned up: the set is not what we quoted
        return len(self._live) + len(self._placed) != self._quoted_count

    def _ask_cancels(self, now_ms: int) -> None:
        for coid in self._live:
            asked = self._cancel_asked_ms.get(coid)
            if asked is None or now_ms - asked >= self.params.ack_timeout_ms:
                self._cancel_asked_ms[coid] = now_ms
                self._to_cancel.append(coid)

    def on_bar(self, bar: Bar, ctx: StrategyContext) -> list[OrderIntent]:
        if bar.inst_id != self.inst_id or bar.low <= 0:
            return []  # a non-positive price is a garbled feed, not a market
        fair = self._fair(bar)
        self.last_fair = fair
        now = ctx.now_ms
        # intents the host never submitted would block quoting forever: forget them in time
        self._placed = [q for q in self._placed if now - q.at_ms < self.params.ack_timeout_ms]
        if fair is None:
            return []
        position = ctx.positions.get(self.inst_id, Decimal(0))
        if self._live or self._placed:
            if self._requote_needed(fair, position):
                self._ask_cancels(now)
            return []
        self._quoted_fair = None
        if ctx.pending.get(self.inst_id, Decimal(0)) != 0:
            return []  # orders or fills in flight that we do not track: inventory is not settled
        return self._place(fair, ctx.exposure(self.inst_id), now)

    def _place(self, fair: Decimal, inventory: Decimal, now_ms: int) -> list[OrderIntent]:
        p = self.params
        bid, ask = self.quote_prices(fair, inventory)
        intents = []
        if inventory + p.quote_size <= p.max_inventory and bid > 0:
            intents.append(self.intent(
                self.inst_id, Side.BUY, p.quote_size, order_type=OrderType.POST_ONLY, price=bid,
                reason=f"quote bid fair={fair:.8g} inv={inventory}"))
        if inventory - p.quote_size >= -p.max_inventory:
            intents.append(self.intent(
                self.inst_id, Side.SELL, p.quote_size, order_type=OrderType.POST_ONLY, price=ask,
                reason=f"quote ask fair={fair:.8g} inv={inventory}"))
        self._placed = [_Placed(i.side, i.price, i.size, now_ms) for i in intents if i.price is not None]
        self._quoted_fair = fair
        self._quoted_position = inventory
        self._quoted_count = len(intents)
        return intents

"""Domain types shared by every layer: instruments, intents, orders, fills, positions.

Prices and sizes are ``Decimal``; sizes are in the venue's native unit
(base currency for spot, contracts for swaps; ``Instrument.contract_value``
converts contracts to base). All models are pydantic v2 and pickle cleanly,
so they cross Ray actor boundaries as they are.
"""

from __future__ import annotations

import enum
import secrets
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tradetree.core.errors import InvalidOrderTransition

__all__ = [
    "InstrumentKind",
    "Instrument",
    "Side",
    "OrderType",
    "OrderState",
    "StrategyState",
    "FillLayer",
    "Liquidity",
    "OrderIntent",
    "Order",
    "Fill",
    "Position",
    "new_client_order_id",
    "escape_component",
    "position_id",
    "TERMINAL_STATES",
    "Ticker",
    "Bar",
    "ProbeResult",
    "HealthReport",
    "OrderDenied",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")

# Order.transition's copy: the per-instance slots of a pydantic model, set through their descriptors.
_SET_DICT = BaseModel.__dict__["__dict__"].__set__
_SET_FIELDS_SET = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
_SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__
_new = object.__new__
_TRANSITION_FIELDS = frozenset({"state", "updated_ms"})


class InstrumentKind(str, enum.Enum):
    SPOT = "spot"
    SWAP = "swap"  # linear perpetual, net position mode


class Instrument(BaseModel):
    """A tradable instrument on one venue."""

    model_config = _FROZEN

    venue: str
    inst_id: str  # venue spelling, e.g. "BTC-USDT-SWAP"
    kind: InstrumentKind
    base: str
    quote: str
    settle: str | None = None  # swaps: settlement currency
    contract_value: Decimal = Decimal(1)  # base units per contract (1 for spot)
    tick_size: Decimal
    lot_size: Decimal
    min_size: Decimal

    @property
    def ccxt_symbol(self) -> str:
        """The unified ccxt symbol: ``BTC/USDT`` or ``BTC/USDT:USDT``."""
        if self.kind is InstrumentKind.SWAP:
            return f"{self.base}/{self.quote}:{self.settle or self.quote}"
        return f"{self.base}/{self.quote}"


class Side(str, enum.Enum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(str, enum.Enum):
    MARKET = "market"
    LIMIT = "limit"
    POST_ONLY = "post_only"


class OrderState(str, enum.Enum):
    PENDING_NEW = "pending_new"  # written to Redis, not yet acknowledged by the venue
    LIVE = "live"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({OrderState.FILLED, OrderState.CANCELED, OrderState.REJECTED})

# A fast market order can be filled (or canceled by IOC rules) before the
# acknowledgement arrives, so PENDING_NEW may jump straight to any later state.
_ALLOWED: dict[OrderState, frozenset[OrderState]] = {
    OrderState.PENDING_NEW: frozenset(
        {
            OrderState.LIVE,
            OrderState.PARTIALLY_FILLED,
            OrderState.FILLED,
            OrderState.CANCELED,
            OrderState.REJECTED,
        }
    ),
    OrderState.LIVE: frozenset(
        {OrderState.PARTIALLY_FILLED, OrderState.FILLED, OrderState.CANCELED}
    ),
    OrderState.PARTIALLY_FILLED: frozenset(
        {OrderState.PARTIALLY_FILLED, OrderState.FILLED, OrderState.CANCELED}
    ),
    OrderState.FILLED: frozenset(),
    OrderState.CANCELED: frozenset(),
    OrderState.REJECTED: frozenset(),
}


class StrategyState(enum.StrEnum):
    """A strategy's trading state, kept in Redis so any restarted actor resumes it.

    RUNNING trades; PAUSED sends nothing new (a restarted strategy comes back
    PAUSED); WINDING_DOWN closes its positions with reduce-only orders; KILLED
    is final for the version. A ``StrEnum`` so that ``str()`` and f-strings give
    the stored text: readers that used to get strings (metrics labels, status
    views) print the same.
    """

    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    WINDING_DOWN = "WINDING_DOWN"
    KILLED = "KILLED"


class FillLayer(str, enum.Enum):
    """Which defense layer delivered a fill to the store."""

    WS = "ws"
    POLL = "poll"
    HEALTH = "health"


class Liquidity(str, enum.Enum):
    MAKER = "maker"
    TAKER = "taker"


def new_client_order_id(prefix: str = "tt") -> str:
    """A fresh client order id: 32 lowercase alphanumerics (OKX allows 1-32)."""
    return (prefix + secrets.token_hex(16))[:32]


def escape_component(value: str) -> str:
    """One id component with ``%`` -> ``%25`` and ``:`` -> ``%3A``, so that it contains no ``:``.

    Joined ids (``position_id``, the kill scopes, Redis key names) use ``:`` as
    the separator; escaping keeps a colon inside an id from making two
    different tuples the same id. Ids without ``%`` or ``:`` (every id OKX and
    Binance produce) come back verbatim.
    """
    return value.replace("%", "%25").replace(":", "%3A")


def position_id(strategy_id: str, venue: str, inst_id: str) -> str:
    """The id of a strategy's position on a venue instrument: ``strategy:venue:inst``, each part escaped.

    The store keys positions by it and risk keeps its day baselines by it.
    """
    return ":".join(escape_component(c) for c in (strategy_id, venue, inst_id))


class OrderIntent(BaseModel):
    """What a strategy wants: the input to pre-trade checks and the gateway."""

    model_config = _FROZEN

    strategy_id: str
    venue: str
    inst_id: str
    side: Side
    type: OrderType = OrderType.MARKET
    size: Decimal = Field(gt=0)
    price: Decimal | None = None
    reduce_only: bool = False
    reason: str = ""

    @field_validator("price")
    @classmethod
    def _price_positive(cls, v: Decimal | None) -> Decimal | None:
        if v is not None and v <= 0:
            raise ValueError("price must be positive")
        return v


class Order(BaseModel):
    """An order as tradetree tracks it. ``client_order_id`` is the idempotency key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_order_id: str
    strategy_id: str
    venue: str
    inst_id: str
    side: Side
    type: OrderType
    size: Decimal
    price: Decimal | None = None
    reduce_only: bool = False  # may only reduce this strategy's position (checked pre-trade)
    # What was sent to the venue as ``reduceOnly``; None: not decided, ``reduce_only`` is sent.
    # The gateway withholds it when the account's net position would make the venue refuse a
    # correct close (see execution.venue_reduce_only).
    venue_reduce_only: bool | None = None
    state: OrderState = OrderState.PENDING_NEW
    venue_order_id: str | None = None
    filled_size: Decimal = Decimal(0)  # as reported by the venue's order status
    avg_fill_price: Decimal | None = None
    created_ms: int
    updated_ms: int
    reject_reason: str = ""

    @classmethod
    def from_intent(
        cls, intent: OrderIntent, *, now_ms: int, client_order_id: str | None = None
    ) -> Order:
        return cls(
            client_order_id=client_order_id or new_client_order_id(),
            strategy_id=intent.strategy_id,
            venue=intent.venue,
            inst_id=intent.inst_id,
            side=intent.side,
            type=intent.type,
            size=intent.size,
            price=intent.price,
            reduce_only=intent.reduce_only,
            created_ms=now_ms,
            updated_ms=now_ms,
        )

    def transition(self, new_state: OrderState, *, now_ms: int, **changes: object) -> Order:
        """Return a copy in ``new_state`` with ``changes`` applied.

        Re-entering the current state is allowed (venues repeat themselves).

        Raises:
            InvalidOrderTransition: the state machine forbids ``state -> new_state``.
        """
        if new_state is not self.state and new_state not in _ALLOWED[self.state]:
            raise InvalidOrderTransition(
                f"order {self.client_order_id}: {self.state.value} -> {new_state.value} "
                "is not allowed"
            )
        if self.__pydantic_private__ is not None or self.__pydantic_extra__ is not None:
            return self.model_copy(update={"state": new_state, "updated_ms": now_ms, **changes})
        # What model_copy(update=...) does for a model without extras or private attributes, without
        # its generic overhead (orders change state on every fill; the backtester makes many):
        # a shallow copy of the values with the update applied, not validated.
        values = self.__dict__.copy()
        values["state"] = new_state
        values["updated_ms"] = now_ms
        fields_set = self.__pydantic_fields_set__ | _TRANSITION_FIELDS
        if changes:
            values.update(changes)
            fields_set = fields_set | changes.keys()
        copied = _new(type(self))
        _SET_DICT(copied, values)
        _SET_FIELDS_SET(copied, fields_set)
        _SET_EXTRA(copied, None)
        _SET_PRIVATE(copied, None)
        return copied

    @property
    def remaining_size(self) -> Decimal:
        return max(self.size - self.filled_size, Decimal(0))


class Fill(BaseModel):
    """One execution of one of our orders, as reported by the venue.

    ``fee`` is positive when paid, negative for a rebate, in ``fee_ccy``.
    Identity is ``(venue, inst_id, trade_id)``: venues number trades per
    instrument, so the instrument is part of the key.
    """

    model_config = _FROZEN

    venue: str
    inst_id: str
    trade_id: str = Field(min_length=1)
    client_order_id: str | None = None
    venue_order_id: str | None = None
    side: Side
    price: Decimal = Field(gt=0)
    size: Decimal = Field(gt=0)
    fee: Decimal = Decimal(0)
    fee_ccy: str = ""
    liquidity: Liquidity | None = None
    ts_ms: int
    layer: FillLayer

    @property
    def key(self) -> str:
        return f"{self.venue}:{self.inst_id}:{self.trade_id}"


class Position(BaseModel):
    """Net position of one strategy on one venue instrument (venue units)."""

    model_config = _FROZEN

    strategy_id: str
    venue: str
    inst_id: str
    qty: Decimal = Decimal(0)  # signed: + long, - short
    avg_price: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)  # quote ccy, before fees
    fees: Decimal = Decimal(0)  # quote-ccy fees paid
    fill_count: int = 0
    updated_ms: int = 0

    @property
    def side(self) -> Literal["long", "short", "flat"]:
        if self.qty > 0:
            return "long"
        if self.qty < 0:
            return "short"
        return "flat"


class Ticker(BaseModel):
    """Top of book and last trade for one instrument, as pushed by a venue."""

    model_config = _FROZEN

    venue: str
    inst_id: str
    ts_ms: int
    last: Decimal
    bid: Decimal | None = None
    ask: Decimal | None = None

    @property
    def mid(self) -> Decimal:
        if self.bid is not None and self.ask is not None:
            return (self.bid + self.ask) / 2
        return self.last


class Bar(BaseModel):
    """An OHLCV candle. ``ts_ms`` is the bar's open time."""

    model_config = _FROZEN

    venue: str
    inst_id: str
    ts_ms: int
    interval_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = Decimal(0)


class ProbeResult(BaseModel):
    """One health probe: did the mechanism it checks work, and why not.

    ``liveness=False`` marks a readiness probe: it reports on something the
    component watches but cannot fix by being restarted (fills not flowing on
    the venue's WS, positions drifting, the venue's REST down). It gates the
    release of what depends on it, never a restart of the component itself:
    restarting the reconciler because the venue stopped sending fills would
    only switch off the layer that is catching them.
    """

    model_config = _FROZEN

    name: str
    ok: bool
    detail: str = ""
    liveness: bool = True


class HealthReport(BaseModel):
    """What ``check_health()`` of every actor returns. Healthy iff all probes pass."""

    model_config = _FROZEN

    component: str
    ts_ms: int
    probes: tuple[ProbeResult, ...] = ()

    @property
    def healthy(self) -> bool:
        """Every probe passes: ready for dependents to be released onto it."""
        return all(p.ok for p in self.probes)

    @property
    def live(self) -> bool:
        """Every liveness probe passes: no reason to restart the component."""
        return all(p.ok for p in self.probes if p.liveness)

    def failing(self) -> list[ProbeResult]:
        return [p for p in self.probes if not p.ok]


class OrderDenied(BaseModel):
    """A pre-trade check refused an intent. An event, not an exception: nothing was sent
    and nothing was written as an order."""

    model_config = _FROZEN

    intent: OrderIntent
    reasons: tuple[str, ...]
    ts_ms: int
    checked_by: str = ""  # "strategy_host", "gateway", ...

"""Whether a strategy's reduce-only order goes to the venue with ``reduceOnly`` (pure).

Two different guards share the name. ``Order.reduce_only`` means "may only
reduce THIS strategy's position": the pre-trade duplicate-close guard
(``risk.pre_trade.duplicate_close_reasons``) enforces it against the
strategy's own position and in-flight orders in Redis. The venue's
``reduceOnly`` works on the ACCOUNT's net position of the instrument (OKX and
the simulator run swaps in net position mode): when other strategies hold the
other side, the account's net can be flat or on the close's own side, and the
venue refuses a correct close (51205, "Reduce-Only is not available"); enough
of those trip the rejection breaker while the strategy still holds its
position.

The venue flag is still worth sending whenever the venue would accept it: on
an instrument the strategy has to itself it is a second guard against our own
state being wrong (the incident: a missed fill, a second close, the opposite
side opened). So :func:`decide_venue_reduce_only` sends it exactly when the account's net, as
Redis knows it, leaves room for the order in the worst case, and withholds it
otherwise (the strategy-level guard has already passed).

Account-level orders (the kill switch's wind-down clips, which it sizes
against the account's net itself) do not come through here: they always keep
the venue flag they were planned with.

The decision cannot race with this gateway's own orders: the gateway records
every order under one send lock and holds it while a flagged order is at the
venue, so every order that could reach the venue before it is in Redis when
the flag is decided. What can still move the venue's net meanwhile is sent
outside that lock (the reconciler's canary, a manual trade). When the venue
then refuses a close with 51205, :func:`retry_refused_close` decides whether
it goes once more without the flag: only when our books hold the close valid
and agree with the venue, so a close of a position that exists only in our
books is still refused (the guard), and one refused by a race is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from tradetree.core import Order, OrderIntent, Position, Side
from tradetree.risk import PreTradeInputs, duplicate_close_reasons, fmt_decimal, in_flight_size

__all__ = [
    "REDUCE_ONLY_UNAVAILABLE",
    "RefusedCloseRetry",
    "VenueReduceOnly",
    "decide_venue_reduce_only",
    "retry_refused_close",
]

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class VenueReduceOnly:
    """The decision and its grounds.

    Attributes:
        send: send ``reduceOnly: true`` to the venue.
        reason: why, for the log (empty for an order that is not reduce-only).
        net: the account's net position of the instrument (Redis, every strategy).
        room: what of that net is left for this order to reduce, in the
            order's closing direction, after the other in-flight orders on the
            same side (negative: the net is on the order's own side).
    """

    send: bool
    reason: str = ""
    net: Decimal = _ZERO
    room: Decimal = _ZERO


def decide_venue_reduce_only(
    order: Order,
    positions: Iterable[Position],
    in_flight: Iterable[Order],
    applied_sizes: Mapping[str, Decimal],
) -> VenueReduceOnly:
    """Whether ``order`` is sent to the venue with ``reduceOnly``.

    Args:
        order: the order about to be sent (its ``reduce_only`` is the
            strategy-level meaning, already checked pre-trade).
        positions: every strategy's positions from Redis (any venue; those
            of ``order``'s venue and instrument are summed into the net).
        in_flight: the tracked orders (any venue, ``order`` itself may be
            among them and is skipped).
        applied_sizes: client order id -> size the store has applied for it;
            a missing entry counts as nothing applied.

    Returns ``send=False`` for an order that is not reduce-only. For a
    reduce-only one, ``send=True`` exactly when ``room >= order.size``, where
    ``room`` is the net on the side the order reduces (a sell reduces a long
    net, a buy a short one) minus what every other in-flight order on the
    order's side may still take from it (``risk.pre_trade.in_flight_size``:
    what it may still fill, or filled but not yet applied). Every same-side
    order counts, reduce-only or not: any of them may fill first, and one
    filled at the venue whose fill Redis has not applied yet has already taken
    its share. Opposite-side orders that would add to the net are not counted
    on. The result is the worst case: when it says send, the venue accepts
    the order as long as Redis is right about the positions; when Redis is
    wrong, the venue refuses, which is the guard. Never raises.
    """
    if not order.reduce_only:
        return VenueReduceOnly(send=False)
    where = (order.venue, order.inst_id)
    net = sum((p.qty for p in positions if (p.venue, p.inst_id) == where), _ZERO)
    direction = -order.side.sign  # a sell (sign -1) reduces a long net: room = +net
    taken = sum(
        (
            in_flight_size(o, applied_sizes.get(o.client_order_id, _ZERO))
            for o in in_flight
            if (o.venue, o.inst_id) == where and o.side is order.side
            and o.client_order_id != order.client_order_id
        ),
        _ZERO,
    )
    room = direction * net - taken
    send = room >= order.size
    needs = "long" if order.side is Side.SELL else "short"
    reason = (
        f"account net {fmt_decimal(net)} on {order.venue}:{order.inst_id}, {fmt_decimal(taken)} taken by other "
        f"{order.side.value} orders in flight: {'room' if send else 'no room'} for a reduce-only "
        f"{order.side.value} {fmt_decimal(order.size)} (needs a {needs} net of at least "
        f"{fmt_decimal(order.size + taken)})"
    )
    return VenueReduceOnly(send=send, reason=reason, net=net, room=room)


# -- when the venue refuses the flag anyway -----------------------------------------------------

# OKX's sCode for a reduce-only order the account's net position does not allow.
REDUCE_ONLY_UNAVAILABLE = "51205"


@dataclass(frozen=True, slots=True)
class RefusedCloseRetry:
    """Whether a close the venue refused with 51205 is sent once more without ``reduceOnly``.

    Attributes:
        retry: send it again, without the venue's flag.
        reason: why, for the log and the alert.
    """

    retry: bool
    reason: str


def retry_refused_close(
    order: Order,
    venue_net: Decimal,
    positions: Iterable[Position],
    tracked: Iterable[tuple[Order, Decimal]],
) -> RefusedCloseRetry:
    """Whether ``order``, refused by the venue with 51205, is retried once without the venue flag.

    The flag was sent because the account's net in Redis left room for the
    close (``decide_venue_reduce_only``); the venue saw another net. That is
    either a race (an order sent outside this gateway's send lock, such as
    the reconciler's canary, moved the venue's net before the close arrived)
    or our books are wrong (the incident: a fill we never saw), and the flag
    exists to catch the second. So the close is retried only when both hold:

    - our books say it is a valid close: the strategy's position in Redis
      is on the other side and covers the order plus its other reduce-only
      orders in flight on that side (``risk.duplicate_close_reasons``);
    - our books agree with the venue: ``venue_net`` (read from the venue
      after ``positions`` and ``tracked`` were read from Redis) lies between
      the account's net in Redis minus everything tracked sells may still
      take from it and that net plus what tracked buys may still add
      (``risk.in_flight_size``: unfilled, or filled and not yet applied).
      Reading Redis first means every fill the venue has made since is of a
      tracked order, so a consistent account always passes; a position our
      books lack or invent does not.

    Args:
        order: the refused order (itself not counted among ``tracked``: the venue never had it).
        venue_net: the venue's net position of the order's instrument, in contracts.
        positions: every strategy's positions from Redis.
        tracked: the store's tracked orders with the size applied for each.

    Never raises; an order that is not a reduce-only one sent with the flag is never retried.
    """
    if not (order.reduce_only and order.venue_reduce_only):
        return RefusedCloseRetry(False, "not a reduce-only order sent with the venue's flag")
    where = (order.venue, order.inst_id)
    positions = [p for p in positions if (p.venue, p.inst_id) == where]
    others = [(o, size) for o, size in tracked
              if (o.venue, o.inst_id) == where and o.client_order_id != order.client_order_id]
    intent = OrderIntent(strategy_id=order.strategy_id, venue=order.venue, inst_id=order.inst_id, side=order.side,
                         type=order.type, size=order.size, price=order.price, reduce_only=True)
    invalid = duplicate_close_reasons(intent, PreTradeInputs(
        positions=tuple(positions), in_flight=tuple(o for o, _ in others),
        applied_sizes={o.client_order_id: size for o, size in others}))
    if invalid:
        return RefusedCloseRetry(False, f"our books do not hold the close valid: {'; '.join(invalid)}")
    net = sum((p.qty for p in positions), _ZERO)
    buys = sum((in_flight_size(o, size) for o, size in others if o.side is Side.BUY), _ZERO)
    sells = sum((in_flight_size(o, size) for o, size in others if o.side is Side.SELL), _ZERO)
    low, high = net - sells, net + buys
    books = (f"account net {fmt_decimal(net)} in Redis ({fmt_decimal(buys)} bought, {fmt_decimal(sells)} sold "
             f"by orders in flight at most), {fmt_decimal(venue_net)} at the venue")
    if not low <= venue_net <= high:
        return RefusedCloseRetry(False, f"our books disagree with the venue: {books}")
    return RefusedCloseRetry(True, f"a valid close by our books, which agree with the venue: {books}")

"""The venue-flag decision reads a view that a concurrent fill cannot make too generous.

The decision reads several keys one after another (tracked orders, what was
applied for each, positions) while the WS layer applies other strategies'
fills. A same-side fill landing between two reads must never vanish from
both: read positions first and it is missing from them, and by the time the
tracked orders are read it is applied (no longer "in flight"), so the close
looks to have room the venue's net no longer has: 51205 at the venue.
"""

from __future__ import annotations

from decimal import Decimal

from tests.actors.test_gateway_venue_reduce_only import SWAP, close, gateway, hold, sent_reduce_only
from tradetree.core.types import Fill, FillLayer, Order, OrderState, OrderType, Side

__all__ = ["gateway"]  # the fixture, shared with the gateway's other reduce-only tests


def _land_after_first_read(monkeypatch, store, fill: Fill) -> list[str]:
    """Apply ``fill`` right after the first of the decision's reads returns, whichever it is."""
    reads: list[str] = []
    for name in ("positions", "open_orders", "applied_size"):
        real = getattr(store, name)

        def hooked(*args, _real=real, _name=name, **kwargs):
            async def call():
                result = await _real(*args, **kwargs)
                reads.append(_name)
                if len(reads) == 1:
                    assert (await store.apply_fill(fill, SWAP)).applied
                return result
            return call()

        monkeypatch.setattr(store, name, hooked)
    return reads


async def test_a_same_side_fill_landing_between_reads_is_never_taken_for_room(gateway, monkeypatch):
    store = gateway._store
    await hold(gateway, "A", "1")  # the account is long 1: A's close of 1 has room, until B's sell fills
    b = Order(client_order_id="b-sell", strategy_id="B", venue="okx", inst_id=SWAP.inst_id, side=Side.SELL,
              type=OrderType.MARKET, size=Decimal(1), created_ms=1, updated_ms=1)
    assert await store.record_order(b)
    await store.update_order(b.transition(OrderState.LIVE, now_ms=2, venue_order_id="77"))
    b_fill = Fill(venue="okx", inst_id=SWAP.inst_id, trade_id="tb", client_order_id=b.client_order_id,
                  side=Side.SELL, price=Decimal(60000), size=Decimal(1), ts_ms=3, layer=FillLayer.WS)
    reads = _land_after_first_read(monkeypatch, store, b_fill)

    order = await gateway.submit_order(close("A", Side.SELL, "1"))

    assert reads, "the decision read nothing from the store"
    # The venue's net is flat once B's sell filled: a reduceOnly sell would be refused (51205).
    assert sent_reduce_only(gateway, order) is False and order.venue_reduce_only is False
    assert gateway.counters["venue_reduce_only_withheld"] == 1

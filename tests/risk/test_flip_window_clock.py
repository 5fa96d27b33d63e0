"""FlipDetector with a venue clock ahead of ours: positions carry the venue's fill time, orders ours."""

from decimal import Decimal

from tradetree.core.types import Order, OrderState, OrderType, Position, Side
from tradetree.risk.rules import FlipDetector

INST = "BTC-USDT-SWAP"
OURS_MS = 1_700_000_000_000
VENUE_AHEAD_MS = 2 * 3_600_000  # the simulator at time_scale 60 is hours ahead after a few minutes


def _pos(qty: str, ms: int) -> Position:
    return Position(strategy_id="S1", venue="okx", inst_id=INST, qty=Decimal(qty), updated_ms=ms)


def _filled(coid: str, side: Side, ms: int) -> Order:
    return Order(client_order_id=coid, strategy_id="S1", venue="okx", inst_id=INST, side=side,
                 type=OrderType.MARKET, size=Decimal("1"), state=OrderState.FILLED, filled_size=Decimal("1"),
                 created_ms=ms, updated_ms=ms)


def test_an_intended_reversal_is_not_a_flip_when_the_venue_clock_runs_ahead():
    flips = FlipDetector(window_ms=300_000)
    assert flips.on_position(_pos("-1", OURS_MS + VENUE_AHEAD_MS), OURS_MS) is None
    flips.on_order(_filled("close", Side.BUY, OURS_MS + 1_000))
    flips.on_order(_filled("open", Side.BUY, OURS_MS + 1_000))
    assert flips.on_position(_pos("1", OURS_MS + VENUE_AHEAD_MS + 60_000), OURS_MS + 2_000) is None


def test_the_window_still_ages_orders_out_on_our_clock():
    flips = FlipDetector(window_ms=300_000)
    flips.on_position(_pos("-1", OURS_MS + VENUE_AHEAD_MS), OURS_MS)
    flips.on_order(_filled("open", Side.BUY, OURS_MS))
    trip = flips.on_position(_pos("1", OURS_MS + VENUE_AHEAD_MS + 60_000), OURS_MS + 400_000)
    assert trip is not None and "explain only 0" in trip.reason


def test_without_our_clock_the_venue_time_decides_as_before():
    flips = FlipDetector(window_ms=300_000)
    flips.on_position(_pos("-1", OURS_MS + VENUE_AHEAD_MS))
    flips.on_order(_filled("open", Side.BUY, OURS_MS + 1_000))
    assert flips.on_position(_pos("1", OURS_MS + VENUE_AHEAD_MS + 60_000)) is not None

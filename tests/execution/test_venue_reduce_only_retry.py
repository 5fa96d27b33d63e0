"""When a close the venue refused with 51205 is sent once more without ``reduceOnly`` (pure)."""

from __future__ import annotations

from decimal import Decimal

from tests.execution.test_venue_reduce_only import order, pos
from tradetree.core.types import OrderState, Side
from tradetree.execution.venue_reduce_only import retry_refused_close

D = Decimal


def flagged(strategy: str, side: Side, size: str, **kw):
    return order(strategy, side, size, coid="close1", **kw).model_copy(update={"venue_reduce_only": True})


def test_a_valid_close_refused_by_a_race_is_retried():
    # Redis: A long 2, B short 1 (net +1); the venue went flat: a canary sell of 1 was in flight.
    canary = order("_canary", Side.SELL, "1", reduce_only=False)
    close = flagged("A", Side.SELL, "1")
    d = retry_refused_close(close, D(0), [pos("A", "2"), pos("B", "-1")], [(close, D(0)), (canary, D(0))])
    assert d.retry, d.reason
    assert "account net 1 in Redis (0 bought, 1 sold by orders in flight at most), 0 at the venue" in d.reason


def test_books_that_agree_exactly_are_retried():
    close = flagged("A", Side.SELL, "1")
    assert retry_refused_close(close, D(1), [pos("A", "1")], [(close, D(0))]).retry


def test_a_position_only_our_books_hold_is_not_retried():
    # Redis says A is long 1 (a fill the venue never made); the venue is flat: the flag did its job.
    close = flagged("A", Side.SELL, "1")
    d = retry_refused_close(close, D(0), [pos("A", "1")], [(close, D(0))])
    assert not d.retry and d.reason.startswith("our books disagree with the venue")


def test_a_venue_position_beyond_what_orders_in_flight_explain_is_not_retried():
    buy = order("B", Side.BUY, "1", reduce_only=False)
    close = flagged("A", Side.SELL, "1")
    books = [pos("A", "1"), pos("B", "-1")]
    assert retry_refused_close(close, D(1), books, [(close, D(0)), (buy, D(0))]).retry  # B's buy filled
    assert not retry_refused_close(close, D(2), books, [(close, D(0)), (buy, D(0))]).retry
    # Filled and applied in full: B's buy is in the net and explains nothing more.
    done = buy.transition(OrderState.FILLED, now_ms=3, filled_size=D(1))
    applied = [pos("A", "1"), pos("B", "0")]
    assert retry_refused_close(close, D(1), applied, [(close, D(0)), (done, D(1))]).retry
    assert not retry_refused_close(close, D(2), applied, [(close, D(0)), (done, D(1))]).retry


def test_a_close_our_books_do_not_hold_valid_is_not_retried():
    other_close = order("A", Side.SELL, "1", coid="close0")
    close = flagged("A", Side.SELL, "1")
    d = retry_refused_close(close, D(1), [pos("A", "1")], [(close, D(0)), (other_close, D(0))])
    assert not d.retry and d.reason.startswith("our books do not hold the close valid: duplicate close")
    d = retry_refused_close(flagged("A", Side.BUY, "1"), D(1), [pos("A", "1")], [])
    assert not d.retry and "would add to the 1 position" in d.reason
    assert not retry_refused_close(flagged("A", Side.SELL, "1"), D(0), [], []).retry  # no position at all


def test_only_reduce_only_orders_sent_with_the_flag_are_retried():
    unflagged = order("A", Side.SELL, "1").model_copy(update={"venue_reduce_only": False})
    assert not retry_refused_close(unflagged, D(1), [pos("A", "1")], []).retry
    plain = order("A", Side.SELL, "1", reduce_only=False).model_copy(update={"venue_reduce_only": True})
    assert not retry_refused_close(plain, D(1), [pos("A", "1")], []).retry


def test_other_instruments_and_venues_do_not_count():
    close = flagged("A", Side.SELL, "1")
    books = [pos("A", "1"), pos("A", "5", inst_id="ETH-USDT-SWAP"), pos("B", "-3", venue="other")]
    assert retry_refused_close(close, D(1), books, [(close, D(0))]).retry

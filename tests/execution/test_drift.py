"""DriftDetector: venue positions vs the sum of Redis positions, confirmed over two checks."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradetree.core.types import Instrument, InstrumentKind, Order, OrderState, OrderType, Position, Side
from tradetree.execution.drift import (
    DriftCheck,
    DriftDetector,
    InstrumentDrift,
    RedisSide,
    drift_inputs,
    drift_outcome,
    expected_positions,
    in_flight_fills,
    reports_positions,
    stale_drift_keys,
)

D = Decimal
BTC, ETH = "BTC-USDT-SWAP", "ETH-USDT-SWAP"


def pos(strategy: str, inst_id: str, qty: str, venue: str = "okx") -> Position:
    return Position(strategy_id=strategy, venue=venue, inst_id=inst_id, qty=D(qty))


def test_expected_positions_sums_strategies_of_the_venue_only():
    positions = [pos("a", BTC, "2"), pos("b", BTC, "-0.5"), pos("_unattributed", BTC, "1"),
                 pos("a", ETH, "3"), pos("a", BTC, "7", venue="binance"), pos("a", "BTC-USDT", "0.1")]
    assert expected_positions(positions, "okx") == {BTC: D("2.5"), ETH: D(3), "BTC-USDT": D("0.1")}
    only_swaps = expected_positions(positions, "okx", include=lambda i: i.endswith("-SWAP"))
    assert only_swaps == {BTC: D("2.5"), ETH: D(3)}


def test_in_flight_counts_only_missing_fills_with_their_side():
    orders = [(tracked(BTC, Side.BUY, "2"), D(1)), (tracked(BTC, Side.SELL, "3"), D(0)),
              (tracked(ETH, Side.BUY, "1"), D(2)), (tracked(ETH, Side.BUY, "1"), D(1))]
    assert in_flight_fills(orders) == {BTC: D(-2)}


def test_rejects_negative_tolerance():
    with pytest.raises(ValueError):
        DriftDetector("okx", tolerance=D("-1"))


def test_matching_positions_are_clean():
    det = DriftDetector("okx")
    for _ in range(3):
        check = det.check({BTC: D(2)}, {BTC: D(2), ETH: D(0)})
        assert check.clean and check.suspected == () and check.confirmed == ()


def test_drift_in_one_check_only_is_a_fill_in_transit():
    det = DriftDetector("okx")
    first = det.check({BTC: D(3)}, {BTC: D(2)})
    assert first.suspected == (BTC,) and first.confirmed == () and first.clean
    second = det.check({BTC: D(3)}, {BTC: D(3)})  # the fill arrived
    assert second.clean and second.suspected == () and second.resolved == ()
    assert det.confirmed_total == 0


def test_drift_persisting_over_two_consecutive_checks_is_confirmed_once():
    det = DriftDetector("okx")
    det.check({BTC: D(3)}, {BTC: D(2)})
    second = det.check({BTC: D(3)}, {BTC: D(2)})
    (row,) = second.confirmed
    assert row.inst_id == BTC and row.drift == 1 and second.drifting == (BTC,)
    assert "drift 1" in row.describe()
    third = det.check({BTC: D(3)}, {BTC: D(2)})
    assert third.confirmed == () and third.drifting == (BTC,)
    fixed = det.check({BTC: D(3)}, {BTC: D(3)})
    assert fixed.resolved == (BTC,) and fixed.clean and det.drifting == ()


def test_non_consecutive_drifts_are_not_confirmed():
    det = DriftDetector("okx")
    for venue_qty in ("3", "2", "3", "2", "3"):
        assert det.check({BTC: D(venue_qty)}, {BTC: D(2)}).confirmed == ()


def test_in_flight_fills_explain_a_difference():
    det = DriftDetector("okx")
    for _ in range(3):
        check = det.check({BTC: D(3)}, {BTC: D(2)}, in_flight={BTC: D(1)})
        assert check.clean and check.suspected == ()


def test_tolerance_is_exclusive_of_its_bound():
    det = DriftDetector("okx", tolerance=D("0.5"))
    det.check({BTC: D("2.5")}, {BTC: D(2)})
    assert det.check({BTC: D("2.5")}, {BTC: D(2)}).clean
    det.check({BTC: D("2.51")}, {BTC: D(2)})
    assert det.check({BTC: D("2.51")}, {BTC: D(2)}).drifting == (BTC,)


def test_position_only_on_one_side_is_drift():
    det = DriftDetector("okx")
    det.check({}, {ETH: D(-1)})
    check = det.check({}, {ETH: D(-1)})
    assert [r.inst_id for r in check.confirmed] == [ETH]
    assert check.confirmed[0].venue_qty == 0 and check.confirmed[0].drift == 1
    det2 = DriftDetector("okx")
    det2.check({BTC: D(1)}, {})
    assert det2.check({BTC: D(1)}, {}).drifting == (BTC,)


def test_instrument_drift_arithmetic():
    row = InstrumentDrift(inst_id=BTC, venue_qty=D(5), redis_qty=D(3), in_flight_qty=D(1))
    assert row.expected_qty == 4 and row.drift == 1


def test_a_fill_made_while_the_venue_was_read_is_bracketed():
    """Redis read before the venue lags it by a fill the venue made meanwhile; the read right after
    holds it: the venue lies between the two, so nothing is suspected, check after check."""
    det = DriftDetector("okx")
    for _ in range(3):
        check = det.check({BTC: D(0)}, {BTC: D(1)}, expected_after={BTC: D(0)})
        assert check.clean and check.suspected == ()
        (row,) = check.instruments
        assert row.drift == -1 and row.unexplained == 0


def test_outside_the_bracket_the_nearer_read_is_the_drift():
    row = InstrumentDrift(inst_id=BTC, venue_qty=D(5), redis_qty=D(1), expected_after=D(3))
    assert row.unexplained == 2 and "then 3" in row.describe() and "drift 2" in row.describe()
    row = InstrumentDrift(inst_id=BTC, venue_qty=D(-2), redis_qty=D(1), expected_after=D(3))
    assert row.unexplained == -3


def test_transits_of_different_sizes_at_consecutive_checks_are_not_confirmed():
    """A busy venue: each check catches a different fill on its way over the WS."""
    det = DriftDetector("okx")
    for venue_qty in ("3", "1", "4", "0"):  # expected 2: drift +1, -1, +2, -2
        check = det.check({BTC: D(venue_qty)}, {BTC: D(2)}, expected_after={BTC: D(2)})
        assert check.confirmed == () and check.suspected == (BTC,)


def test_a_missing_fill_is_confirmed_even_while_other_fills_come_and_go():
    det = DriftDetector("okx")
    det.check({BTC: D(3)}, {BTC: D(2)}, expected_after={BTC: D(2)})  # a fill never applied: +1
    det.check({BTC: D(4)}, {BTC: D(2)}, expected_after={BTC: D(2)})  # plus one in transit: +2
    check = det.check({BTC: D(4)}, {BTC: D(3)}, expected_after={BTC: D(3)})  # that one arrived: +1 again
    assert check.confirmed == ()  # +2 then +1: not the same amount twice in a row yet
    check = det.check({BTC: D(4)}, {BTC: D(3)}, expected_after={BTC: D(3)})
    assert [r.unexplained for r in check.confirmed] == [1] and check.drifting == (BTC,)
    # once confirmed it stays drifting whatever the amount, until within tolerance
    assert det.check({BTC: D(6)}, {BTC: D(3)}, expected_after={BTC: D(3)}).drifting == (BTC,)
    assert det.check({BTC: D(3)}, {BTC: D(3)}, expected_after={BTC: D(3)}).resolved == (BTC,)


# -- one check end to end ---------------------------------------------------------------------------

SWAP = Instrument(venue="okx", inst_id="BTC-USDT-SWAP", kind=InstrumentKind.SWAP, base="BTC", quote="USDT",
                  settle="USDT", tick_size=D("0.1"), lot_size=D("0.01"), min_size=D("0.01"))
SPOT = Instrument(venue="okx", inst_id="BTC-USDT", kind=InstrumentKind.SPOT, base="BTC", quote="USDT",
                  tick_size=D("0.1"), lot_size=D("0.01"), min_size=D("0.01"))


def tracked(inst_id: str, side: Side, filled: str) -> Order:
    return Order(client_order_id=f"{inst_id}-{side.value}", strategy_id="s1", venue="okx", inst_id=inst_id, side=side,
                 type=OrderType.MARKET, size=D(5), state=OrderState.PARTIALLY_FILLED, venue_order_id="v",
                 filled_size=D(filled), created_ms=1, updated_ms=1)


def test_in_flight_fills_read_side_filled_and_applied_of_the_orders():
    assert in_flight_fills([(tracked("X", Side.SELL, "2"), D("0.5"))]) == {"X": D("-1.5")}


def test_only_instruments_the_venue_reports_positions_for_are_compared():
    instruments = {SWAP.inst_id: SWAP, SPOT.inst_id: SPOT}
    assert reports_positions(SWAP.inst_id, instruments, {})
    assert not reports_positions(SPOT.inst_id, instruments, {SPOT.inst_id: D(1)})
    assert reports_positions("ETH-USDT-SWAP", instruments, {"ETH-USDT-SWAP": D(1)})  # unlisted, yet reported
    assert not reports_positions("ETH-USDT-SWAP", instruments, {})


def test_inputs_bracket_the_venue_read_with_fills_in_flight_and_leave_spot_out():
    instruments = {SWAP.inst_id: SWAP, SPOT.inst_id: SPOT}
    before = RedisSide(
        positions=(pos("a", SWAP.inst_id, "1"), pos("b", SWAP.inst_id, "2"), pos("a", SPOT.inst_id, "7"),
                   pos("a", SWAP.inst_id, "9", venue="binance")),
        orders=((tracked(SWAP.inst_id, Side.BUY, "1"), D(0)), (tracked(SPOT.inst_id, Side.BUY, "1"), D(0))),
    )
    after = RedisSide(positions=(pos("a", SWAP.inst_id, "4"),), orders=((tracked(SWAP.inst_id, Side.BUY, "3"), D(1)),))
    inputs = drift_inputs("okx", before, after, instruments, {SWAP.inst_id: D(4)})
    assert inputs.expected == {SWAP.inst_id: D(3)}
    assert inputs.in_flight == {SWAP.inst_id: D(1)}
    assert inputs.expected_after == {SWAP.inst_id: D(6)}


def test_drift_discrepancies_close_once_their_instrument_is_within_tolerance():
    check = DriftCheck(suspected=("A",), drifting=("B",))
    assert stale_drift_keys(["drift:A", "drift:B", "drift:C", "fill_gap:c1"], check) == ["drift:C"]


def test_the_outcome_lists_each_instrument_and_says_whether_acting_failed():
    row = InstrumentDrift(inst_id="A", venue_qty=D(2), redis_qty=D(1))
    check = DriftCheck(instruments=(row,), suspected=("A",), confirmed=(row,), drifting=("A",))
    outcome = drift_outcome(5, check)
    assert outcome.ok and outcome.confirmed == ("A",) and outcome.drifting == ("A",)
    assert outcome.instruments == {"A": {"venue": "2", "redis": "1", "in_flight": "0", "drift": "1"}}
    failed = drift_outcome(5, check, "acting on drift: redis down")
    assert not failed.ok and failed.error == "acting on drift: redis down"

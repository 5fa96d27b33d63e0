"""Discrepancy keys: built by one pair of functions, read by one."""

from __future__ import annotations

from tradetree.execution import DRIFT, FILL_GAP, discrepancy_subject, drift_key, fill_gap_key


def test_a_key_names_its_subject_for_its_own_kind_only():
    assert drift_key("BTC-USDT-SWAP") == "drift:BTC-USDT-SWAP"
    assert fill_gap_key("c1") == "fill_gap:c1"
    assert discrepancy_subject(drift_key("BTC-USDT-SWAP"), DRIFT) == "BTC-USDT-SWAP"
    assert discrepancy_subject(fill_gap_key("c:1"), FILL_GAP) == "c:1"
    assert discrepancy_subject(fill_gap_key("c1"), DRIFT) is None
    assert discrepancy_subject("fill_gap_persists:c1", FILL_GAP) is None
    assert discrepancy_subject("unknown (Redis down)", DRIFT) is None

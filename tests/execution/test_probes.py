"""The reconciler's probe verdicts and their one set of thresholds."""

from __future__ import annotations

from decimal import Decimal

from tradetree.execution.fill_health import FillGap, WsFlowStatus
from tradetree.execution.poll_plan import PollOutcome
from tradetree.execution.probes import (
    drift_fresh_ms,
    fills_flowing_probe,
    fills_flowing_problems,
    no_drift_probe,
    poll_fresh_ms,
    poll_fresh_probe,
    poll_recent,
    rest_probe,
    store_probe,
    timers_probe,
    timers_stuck_ms,
)
from tradetree.execution.reconciliation import ReconcilerConfig

CFG = ReconcilerConfig(poll_interval_secs=2.0, drift_interval_secs=5.0)
NOW = 1_000_000
FLOWING = WsFlowStatus(flowing=True)


def poll(started_ms: int, ok: bool = True, errors: tuple[str, ...] = ()) -> PollOutcome:
    return PollOutcome(started_ms=started_ms, ok=ok, errors=errors)


def gap(coid: str) -> FillGap:
    return FillGap(client_order_id=coid, inst_id="BTC-USDT-SWAP", venue_filled=Decimal(2), applied=Decimal(1),
                   age_secs=7.4, episode=True)


def test_thresholds_are_three_intervals_of_the_checks_own_timer():
    assert poll_fresh_ms(CFG) == 6_000
    assert drift_fresh_ms(CFG) == 15_000
    assert timers_stuck_ms(CFG, http_timeout_secs=10.0) == 26_000


def test_the_canary_and_the_rest_probe_agree_on_a_recent_poll():
    for started, ok in ((NOW - 6_000, True), (NOW - 6_001, True), (NOW, False)):
        last = poll(started, ok)
        assert poll_recent(last, NOW, CFG) == rest_probe(last, NOW, CFG).ok
    assert not poll_recent(None, NOW, CFG)


def test_rest_probe_says_why():
    assert rest_probe(None, NOW, CFG).detail == "no poll cycle yet"
    assert rest_probe(poll(NOW, ok=False, errors=("a", "b")), NOW, CFG).detail == "last poll failed: a; b"
    assert rest_probe(poll(NOW - 7_000), NOW, CFG).detail == "last poll cycle 7000 ms ago"
    probe = rest_probe(poll(NOW - 1_000), NOW, CFG)
    assert probe.ok and not probe.liveness


def test_store_and_timers_are_liveness_probes():
    assert store_probe(None).ok and store_probe(None).liveness
    assert store_probe("refused").detail == "refused" and not store_probe("refused").ok
    assert timers_probe(["poll"], None, NOW, CFG, 10.0).detail == "stopped: poll"
    assert not timers_probe([], poll(NOW - 26_001), NOW, CFG, 10.0).ok
    ok = timers_probe([], poll(NOW - 26_000), NOW, CFG, 10.0)
    assert ok.ok and ok.liveness
    assert timers_probe([], None, NOW, CFG, 10.0).ok  # no cycle yet is the rest probe's business


def test_poll_fresh_probe_reads_the_verification_time():
    assert poll_fresh_probe(None, NOW, CFG).detail == "never verified"
    assert poll_fresh_probe(NOW - 6_000, NOW, CFG).ok
    assert poll_fresh_probe(NOW - 6_001, NOW, CFG).detail == "verified 6001 ms ago"
    failed = poll_fresh_probe(NOW, NOW, CFG, error="timeout")
    assert not failed.ok and failed.detail == "timeout"


def test_fills_flowing_counts_gaps_open_discrepancies_and_the_ws_flow():
    assert fills_flowing_problems([], FLOWING, [], health_checked=True) == []
    assert fills_flowing_problems([], FLOWING, [], health_checked=False) == ["no fill-health check yet"]
    problems = fills_flowing_problems(
        [gap("c1")], WsFlowStatus(flowing=False, detail="ws silent"),
        ["fill_gap:c1", "fill_gap:c2", "drift:X", "unknown (redis down)"], health_checked=True,
    )
    # c1 is named by its gap, not again by its discrepancy; a discrepancy a predecessor opened counts
    assert problems == ["c1: applied 1 of 2 for 7s", "open discrepancy fill_gap:c2",
                        "open discrepancy unknown (redis down)", "ws silent"]
    assert len(fills_flowing_problems([gap(f"c{i}") for i in range(9)], FLOWING, [], health_checked=True)) == 5
    assert fills_flowing_probe(["a", "b"]).detail == "a; b" and fills_flowing_probe([]).ok


def test_no_drift_needs_no_drift_in_process_or_redis_and_a_fresh_check():
    assert no_drift_probe(["X"], [], NOW, NOW, CFG).detail == "drift on X"
    assert no_drift_probe([], ["drift:Y", "fill_gap:c1"], NOW, NOW, CFG).detail == "drift on Y"
    assert not no_drift_probe([], ["unknown (down)"], NOW, NOW, CFG).ok
    assert no_drift_probe([], [], None, NOW, CFG).detail == "no drift check yet"
    assert no_drift_probe([], [], NOW - 15_001, NOW, CFG).detail == "last drift check 15001 ms ago"
    assert no_drift_probe([], [], NOW - 15_000, NOW, CFG).ok

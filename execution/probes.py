"""The fill reconciler's health probes as verdicts over a snapshot, pure.

A probe checks the mechanism, not only the process: "the last poll cycle was
clean and recent", "Redis says the venue was verified recently", "fills flow
on the WS", "no drift". The thresholds live here once:

- a poll cycle (and the venue's verification) is fresh for
  ``FRESH_INTERVALS`` poll intervals (``poll_fresh_ms``); the canary uses the
  same rule (``poll_recent``) before it judges fills by the poller;
- a drift check is fresh for ``FRESH_INTERVALS`` drift intervals;
- the timers are stuck when no poll cycle started for ``FRESH_INTERVALS`` poll
  intervals plus two HTTP timeouts (a cycle may wait on two requests in a row).

Every probe except ``store`` and ``timers`` is a readiness probe
(``liveness=False``): restarting the reconciler cannot fix a venue.
Open discrepancies in Redis count, so a fresh incarnation reports what its
predecessor saw instead of turning green by forgetting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tradetree.core import ProbeResult
from tradetree.execution.discrepancy_keys import DRIFT, FILL_GAP, discrepancy_subject, fill_gap_key
from tradetree.execution.fill_health import FillGap, WsFlowStatus
from tradetree.execution.poll_plan import PollOutcome
from tradetree.execution.reconciliation import ReconcilerConfig

__all__ = [
    "FRESH_INTERVALS",
    "poll_fresh_ms",
    "drift_fresh_ms",
    "timers_stuck_ms",
    "poll_recent",
    "store_probe",
    "timers_probe",
    "rest_probe",
    "poll_fresh_probe",
    "fills_flowing_problems",
    "fills_flowing_probe",
    "no_drift_probe",
]

FRESH_INTERVALS = 3  # intervals of its own timer after which a check's result is stale
_MAX_GAPS_NAMED = 5  # overdue gaps named in a probe's detail (the rest are counted by stats)


def poll_fresh_ms(config: ReconcilerConfig) -> int:
    return int(FRESH_INTERVALS * config.poll_interval_secs * 1000)


def drift_fresh_ms(config: ReconcilerConfig) -> int:
    return int(FRESH_INTERVALS * config.drift_interval_secs * 1000)


def timers_stuck_ms(config: ReconcilerConfig, http_timeout_secs: float) -> int:
    return int((FRESH_INTERVALS * config.poll_interval_secs + 2 * http_timeout_secs) * 1000)


def poll_recent(last: PollOutcome | None, now_ms: int, config: ReconcilerConfig) -> bool:
    """The last poll cycle was clean and started within the freshness window."""
    return last is not None and last.ok and now_ms - last.started_ms <= poll_fresh_ms(config)


def store_probe(error: str | None) -> ProbeResult:
    """``error``: why Redis did not answer a ping (None: it did)."""
    return ProbeResult(name="store", ok=error is None, detail=error or "")


def timers_probe(dead: Sequence[str], last: PollOutcome | None, now_ms: int, config: ReconcilerConfig,
                 http_timeout_secs: float) -> ProbeResult:
    """Liveness of the timers themselves: ``dead`` names the loops that ended."""
    if dead:
        return ProbeResult(name="timers", ok=False, detail=f"stopped: {', '.join(dead)}")
    if last is not None and now_ms - last.started_ms > timers_stuck_ms(config, http_timeout_secs):
        return ProbeResult(name="timers", ok=False, detail=f"no poll cycle started for {now_ms - last.started_ms} ms")
    return ProbeResult(name="timers", ok=True)


def rest_probe(last: PollOutcome | None, now_ms: int, config: ReconcilerConfig) -> ProbeResult:
    """The last poll cycle succeeded and is fresh (``poll_recent``); the detail says which it is not."""
    if poll_recent(last, now_ms, config):
        return ProbeResult(name="rest", liveness=False, ok=True)
    if last is None:
        detail = "no poll cycle yet"
    elif not last.ok:
        detail = f"last poll failed: {'; '.join(last.errors)}"[:500]
    else:
        detail = f"last poll cycle {now_ms - last.started_ms} ms ago"
    return ProbeResult(name="rest", liveness=False, ok=False, detail=detail)


def poll_fresh_probe(verified_ms: int | None, now_ms: int, config: ReconcilerConfig, *,
                     error: str | None = None) -> ProbeResult:
    """Redis says the venue was verified (``verified_ms``) within the freshness window.

    ``error``: why Redis could not be read (then the probe fails with it).
    """
    if error is not None:
        return ProbeResult(name="poll_fresh", liveness=False, ok=False, detail=error)
    if verified_ms is None:
        return ProbeResult(name="poll_fresh", liveness=False, ok=False, detail="never verified")
    age = now_ms - verified_ms
    ok = age <= poll_fresh_ms(config)
    return ProbeResult(name="poll_fresh", liveness=False, ok=ok, detail="" if ok else f"verified {age} ms ago")


def fills_flowing_problems(overdue: Sequence[FillGap], flow: WsFlowStatus, open_keys: Iterable[str], *,
                           health_checked: bool) -> list[str]:
    """Why the ``fills_flowing_ws`` probe fails (empty: it passes).

    ``overdue``: the monitor's gaps older than the alert threshold; ``open_keys``:
    the venue's open discrepancies in Redis (an ``unknown (...)`` key when they
    could not be read); ``health_checked``: a fill-health check completed.
    """
    problems = [f"{g.client_order_id}: applied {g.applied} of {g.venue_filled} for {g.age_secs:.0f}s"
                for g in overdue[:_MAX_GAPS_NAMED]]
    watched = {fill_gap_key(g.client_order_id) for g in overdue}
    problems += [f"open discrepancy {k}" for k in open_keys
                 if (discrepancy_subject(k, FILL_GAP) is not None and k not in watched) or k.startswith("unknown")]
    if not flow.flowing:
        problems.append(flow.detail)
    if not health_checked:
        problems.append("no fill-health check yet")
    return problems


def fills_flowing_probe(problems: Sequence[str]) -> ProbeResult:
    return ProbeResult(name="fills_flowing_ws", liveness=False, ok=not problems, detail="; ".join(problems))


def no_drift_probe(drifting: Iterable[str], open_keys: Iterable[str], last_drift_ok_ms: int | None, now_ms: int,
                   config: ReconcilerConfig) -> ProbeResult:
    """No confirmed drift (in process, or as a ``drift:*`` discrepancy in Redis) and a fresh drift check."""
    drifting = set(drifting)
    drift_keys = [k for k in open_keys if discrepancy_subject(k, DRIFT) is not None or k.startswith("unknown")]
    if drifting or drift_keys:
        names = sorted(drifting | {discrepancy_subject(k, DRIFT) or k for k in drift_keys})
        return ProbeResult(name="no_drift", liveness=False, ok=False, detail=f"drift on {', '.join(names)}")
    if last_drift_ok_ms is None:
        return ProbeResult(name="no_drift", liveness=False, ok=False, detail="no drift check yet")
    if now_ms - last_drift_ok_ms > drift_fresh_ms(config):
        return ProbeResult(name="no_drift", liveness=False, ok=False,
                           detail=f"last drift check {now_ms - last_drift_ok_ms} ms ago")
    return ProbeResult(name="no_drift", liveness=False, ok=True)

"""Which of the poller's findings are worth an alert now, pure.

An alert that repeats at every cycle a condition persists is noise an
operator learns to ignore; one that never comes back after a blind spot is a
hole. The rules:

- ``dedup_anomalies``: an order anomaly is alerted when it appears or its
  text changes, not at every cycle it persists; a cycle whose lookup of the
  order failed is no all-clear (the anomaly stays remembered).
- ``step_poll_health``: a REST poll outage is alerted once, when
  ``alert_cycles`` cycles in a row failed, and its end once, at the first
  clean cycle after it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from tradetree.execution.reconciliation import OrderDecision

__all__ = [
    "AnomalyAlerts",
    "PollHealth",
    "PollHealthAlert",
    "PollHealthStep",
    "dedup_anomalies",
    "step_poll_health",
]


@dataclass(frozen=True)
class AnomalyAlerts:
    """``fresh``: anomalies to alert now; ``remembered``: what the next cycle compares with."""

    fresh: dict[str, str]
    remembered: dict[str, str]


def dedup_anomalies(
    remembered: Mapping[str, str], anomalies: Mapping[str, str], decisions: Mapping[str, str]
) -> AnomalyAlerts:
    """Split this cycle's ``anomalies`` (order id -> problem) into the ones to alert.

    ``remembered``: the previous call's ``remembered``; ``decisions``: this
    cycle's decision per order (``OrderDecision`` values).
    """
    fresh = {c: p for c, p in anomalies.items() if remembered.get(c) != p}
    unseen = {c: p for c, p in remembered.items() if decisions.get(c) == OrderDecision.LOOKUP_FAILED.value}
    return AnomalyAlerts(fresh=fresh, remembered={**unseen, **anomalies})


class PollHealthAlert(str, enum.Enum):
    NONE = "none"
    FAILING = "failing"  # the outage reached the threshold: alert it
    RECOVERED = "recovered"  # a clean cycle ended an alerted outage: say so


@dataclass(frozen=True)
class PollHealth:
    """Failed poll cycles in a row, and whether this outage was alerted."""

    failures_in_row: int = 0
    alerted: bool = False


@dataclass(frozen=True)
class PollHealthStep:
    """``state``: the next ``PollHealth``; ``failures``: the cycles failed in the outage it alerts about."""

    state: PollHealth
    alert: PollHealthAlert
    failures: int


def step_poll_health(state: PollHealth, ok: bool, alert_cycles: int) -> PollHealthStep:
    """The poll-health state after a cycle (``ok``: it was clean), and the alert it calls for."""
    if ok:
        alert = PollHealthAlert.RECOVERED if state.alerted else PollHealthAlert.NONE
        return PollHealthStep(PollHealth(), alert, state.failures_in_row)
    failures = state.failures_in_row + 1
    if not state.alerted and failures >= alert_cycles:
        return PollHealthStep(PollHealth(failures, True), PollHealthAlert.FAILING, failures)
    return PollHealthStep(PollHealth(failures, state.alerted), PollHealthAlert.NONE, failures)

"""Is the tree supervised? The verdict on the root supervisor's heartbeat, for every gate and the monitor.

The root supervisor refreshes the field ``core.ROOT_HEARTBEAT_KEY`` of the
heartbeats hash with its wall-clock ms about every second. While that
heartbeat is missing or older than ``ROOT_HEARTBEAT_STALE_SECS`` nobody
would restart a crashed child: every child fails closed on opening risk
(the strategy hosts' freshness gate and the gateway's gate refuse orders that
are not reduce-only), and the risk monitor alerts once.

- ``root_unsupervised_reason``: the refusal text, or None while the root is alive;
- ``RootLatch``: the process-local "a root heartbeat exists in this namespace"
  latch that arms the check (see its docstring for why);
- ``RootAlarm`` / ``root_alarm_step``: the risk monitor's de-duplicated
  alert on the verdict (one critical alert when it goes stale, one info
  alert on recovery).

Pure: no I/O; the callers read the heartbeat and the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from tradetree.core import ROOT_HEARTBEAT_STALE_SECS, ROOT_ID

__all__ = [
    "ROOT_ALERT_KEY",
    "RootAlarm",
    "RootAlert",
    "RootLatch",
    "parse_heartbeat_ms",
    "root_alarm_step",
    "root_heartbeat_age_secs",
    "root_unsupervised_reason",
]

# The alert key of the "tree unsupervised" alert and of its recovery (the alerter de-duplicates by key).
ROOT_ALERT_KEY = "risk_monitor:tree_unsupervised"


def parse_heartbeat_ms(raw: str | bytes | None) -> int | None:
    """A stored heartbeat field as ms; None when absent or not an integer (judged as no heartbeat:
    a garbled root heartbeat refuses opening risk like a missing one, and never closing it)."""
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def root_heartbeat_age_secs(root_heartbeat_ms: int | None, now_ms: int) -> float | None:
    """Age of the root's heartbeat at ``now_ms`` in seconds (never negative); None when there is none."""
    if root_heartbeat_ms is None:
        return None
    return max(0, now_ms - root_heartbeat_ms) / 1000


def root_unsupervised_reason(root_heartbeat_ms: int | None, now_ms: int,
                             stale_secs: float = ROOT_HEARTBEAT_STALE_SECS) -> str | None:
    """Why the tree counts as unsupervised at ``now_ms``, or None while its root is alive.

    ``root_heartbeat_ms``: the root's last heartbeat (wall-clock ms), None when
    none is recorded (or it could not be parsed). Stale when older than
    ``stale_secs``; a heartbeat slightly ahead of ``now_ms`` (clocks of two
    hosts) counts as fresh.

    A missing heartbeat counts as unsupervised (fail closed). That does not
    block start-up, because the callers only apply this verdict once the
    check is armed (``RootLatch``): strategies start PAUSED and the root
    writes its heartbeat before it releases any of them, so a reader that
    is asked for a verdict with the heartbeat missing, after it has seen
    one, is looking at a root that vanished (or a field someone deleted).
    Never raises.
    """
    if root_heartbeat_ms is None:
        return f"tree unsupervised: no {ROOT_ID} heartbeat in Redis (stale after {stale_secs:g}s)"
    age_ms = now_ms - root_heartbeat_ms
    if age_ms > stale_secs * 1000:
        return f"tree unsupervised: {ROOT_ID} heartbeat {age_ms / 1000:.1f}s old (stale after {stale_secs:g}s)"
    return None


class RootLatch:
    """Arms the root check once a root heartbeat has been seen by this reader; it never disarms.

    Why a latch: a tree started without a root that heartbeats (every test
    that builds hosts or gateways by hand, or a tree from before the root
    wrote one) would otherwise have all its strategy orders refused. A root
    writes its heartbeat before it releases any strategy, and a stopped or
    lost root leaves its last (then stale) value in the hash; so once the
    field exists it stays, and a reader that starts (or restarts) while the
    root is gone still sees the stale value and arms at once. The check is
    then still fail closed where it matters: a later missing or stale
    heartbeat refuses.
    """

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = False

    def observe(self, present: bool) -> bool:
        """Take in whether the heartbeat field is present in Redis now; returns whether the check is armed."""
        self.seen = self.seen or present
        return self.seen


@dataclass(frozen=True, slots=True)
class RootAlert:
    """One alert to send: ``severity``, ``key``, ``title``, ``text`` (as ``AlertSink.alert`` takes them)."""

    severity: str
    key: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class RootAlarm:
    """The risk monitor's memory of the verdict: ``since_ms`` is when the tree went unsupervised (its
    root's last heartbeat, or when the monitor noticed one missing); None while it is supervised."""

    since_ms: int | None = None


def _hms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S UTC")


def root_alarm_step(alarm: RootAlarm, root_heartbeat_ms: int | None, now_ms: int, *, armed: bool,
                    stale_secs: float = ROOT_HEARTBEAT_STALE_SECS) -> tuple[RootAlarm, RootAlert | None]:
    """The alarm after one look at the root's heartbeat, and the alert to send (None: nothing new).

    One critical alert when the tree goes unsupervised, one info alert when
    a root heartbeats again; nothing while it stays as it was, so the loop
    can call this every pass. Not ``armed`` (no root heartbeat seen yet,
    ``RootLatch``): no verdict, the alarm is kept as it is.
    """
    if not armed:
        return alarm, None
    reason = root_unsupervised_reason(root_heartbeat_ms, now_ms, stale_secs)
    if reason is not None and alarm.since_ms is None:
        since = root_heartbeat_ms if root_heartbeat_ms is not None else now_ms
        text = (f"tree unsupervised since {_hms(since)}: strategies refused new risk; the root is being "
                f"re-created by Ray / run tradetree status. ({reason})")
        return RootAlarm(since_ms=since), RootAlert("critical", ROOT_ALERT_KEY, "Tree unsupervised", text)
    if reason is None and alarm.since_ms is not None:
        assert root_heartbeat_ms is not None  # a fresh verdict needs a heartbeat
        down_secs = max(0, root_heartbeat_ms - alarm.since_ms) / 1000
        text = (f"{ROOT_ID} heartbeats again (unsupervised since {_hms(alarm.since_ms)}, about "
                f"{down_secs:.0f}s): strategies may open risk again")
        return RootAlarm(), RootAlert("info", ROOT_ALERT_KEY + ":recovered", "Tree supervised again", text)
    return alarm, None

"""Restart policy: the pure decisions a supervisor makes, with the clock injected.

Nothing here touches Ray or does I/O, so every rule is unit-tested with a
``ManualClock`` and a seeded ``random.Random``:

- ``should_restart``: restart type x exit reason.
- ``RestartIntensity``: N restarts within T seconds (sliding window of
  monotonic timestamps); one more means escalate.
- ``Backoff``: exponential backoff with jitter, reset after a stable run.
- ``ProbeFailureCounter``: consecutive failing probes against a threshold.
- ``heartbeat_is_stale``: a child's heartbeat is too old (hung).
- ``ChildLifecycle``: the per-child state machine; a forbidden transition
  raises ``InvalidLifecycleTransition`` naming the rule.
"""

from __future__ import annotations

import enum
import random
from collections import deque

from tradetree.core import Clock, TradetreeError
from tradetree.supervisor.spec import BackoffSpec, RestartType

__all__ = [
    "ExitReason",
    "should_restart",
    "RestartIntensity",
    "Backoff",
    "ProbeFailureCounter",
    "heartbeat_is_stale",
    "jittered_secs",
    "ChildState",
    "ChildLifecycle",
    "InvalidLifecycleTransition",
]


class ExitReason(str, enum.Enum):
    """Why a child's incarnation ended."""

    NORMAL = "normal"  # the child exited on purpose (clean stop)
    DIED = "died"  # Ray reports the actor dead (crash, ray.kill, lost node)
    UNHEALTHY = "unhealthy"  # consecutive failing probes reached the threshold
    HUNG = "hung"  # its heartbeat went stale
    START_FAILED = "start_failed"  # create/start failed or probes not green by the startup timeout

    @property
    def abnormal(self) -> bool:
        return self is not ExitReason.NORMAL


def should_restart(restart: RestartType, reason: ExitReason) -> bool:
    """PERMANENT: always; TRANSIENT: only after an abnormal exit; TEMPORARY: never."""
    if restart is RestartType.PERMANENT:
        return True
    if restart is RestartType.TRANSIENT:
        return reason.abnormal
    return False


class RestartIntensity:
    """At most ``intensity`` restarts within any ``period_secs`` window.

    ``record()`` notes a restart now and returns False when that restart makes
    ``intensity + 1`` within the window: the supervisor must escalate instead
    of restarting. With ``intensity=0`` every restart escalates.
    """

    def __init__(self, intensity: int, period_secs: float, clock: Clock) -> None:
        if intensity < 0 or period_secs <= 0:
            raise ValueError("intensity must be >= 0 and period_secs > 0")
        self._intensity = intensity
        self._period = period_secs
        self._clock = clock
        self._stamps: deque[float] = deque()
        self._groups: dict[str, float] = {}

    def _expire(self, now: float) -> None:
        while self._stamps and now - self._stamps[0] >= self._period:
            self._stamps.popleft()

    def record(self, group: str | None = None) -> bool:
        """Note one restart. True: go ahead; False: limit exceeded, escalate.

        Restarts with the same ``group`` within the window count once: every child lost with one
        node is one failure (the node), not one per child, so a node loss alone cannot escalate.
        """
        now = self._clock.monotonic()
        self._expire(now)
        self._groups = {g: t for g, t in self._groups.items() if now - t < self._period}
        if group is not None:
            if group in self._groups:
                return len(self._stamps) <= self._intensity
            self._groups[group] = now
        self._stamps.append(now)
        return len(self._stamps) <= self._intensity

    def count(self) -> int:
        """Restarts within the current window."""
        self._expire(self._clock.monotonic())
        return len(self._stamps)

    def reset(self) -> None:
        self._stamps.clear()
        self._groups.clear()


class Backoff:
    """Successive restart delays for one child, from a seeded RNG."""

    def __init__(self, spec: BackoffSpec, rng: random.Random) -> None:
        self._spec = spec
        self._rng = rng
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """How many delays were handed out since the last reset."""
        return self._attempt

    def next_delay_secs(self) -> float:
        delay = self._spec.policy().delay(self._attempt, self._rng)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        self._attempt = 0

    def note_uptime(self, ran_for_secs: float) -> None:
        """A child failed after running ``ran_for_secs``: a long run resets the backoff."""
        if ran_for_secs >= self._spec.reset_after_secs:
            self.reset()


class ProbeFailureCounter:
    """Consecutive failed probes; a passing probe resets the count."""

    def __init__(self, threshold: int) -> None:
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        self._threshold = threshold
        self._consecutive = 0

    @property
    def consecutive(self) -> int:
        return self._consecutive

    def record(self, ok: bool) -> bool:
        """Note one probe outcome. True when the failures reached the threshold."""
        if ok:
            self._consecutive = 0
            return False
        self._consecutive += 1
        return self._consecutive >= self._threshold

    def reset(self) -> None:
        self._consecutive = 0


def heartbeat_is_stale(
    last_ms: int | None, now_ms: int, stale_secs: float, since_ms: int
) -> bool:
    """Is a child hung?

    ``since_ms`` is when the current incarnation was created: a heartbeat older
    than that (from a previous incarnation) or none at all counts from
    ``since_ms``, which gives a fresh child ``stale_secs`` to write its first one.
    """
    effective = max(last_ms or 0, since_ms)
    return now_ms - effective > stale_secs * 1000


def jittered_secs(period_secs: float, rng: random.Random, fraction: float = 0.1) -> float:
    """``period_secs`` scaled by a random factor in ``[1 - fraction, 1 + fraction]``."""
    return period_secs * (1.0 + fraction * (2.0 * rng.random() - 1.0))


class InvalidLifecycleTransition(TradetreeError):
    """A child lifecycle change the state machine does not allow."""


class ChildState(str, enum.Enum):
    STOPPED = "stopped"  # not running and not scheduled to run (initial state too)
    STARTING = "starting"  # actor created, start() in progress
    PROBING = "probing"  # started; waiting for its probes to pass (the gate)
    PAUSED = "paused"  # probes passed; held paused until release_after children are green
    RUNNING = "running"  # at work
    UNHEALTHY = "unhealthy"  # failing probes or stale heartbeat; being taken down
    DEAD = "dead"  # Ray reports it dead (or it exited)
    BACKOFF = "backoff"  # waiting before the next start
    ESCALATED = "escalated"  # its supervisor exceeded restart intensity

    @property
    def is_up(self) -> bool:
        """An incarnation that passed its startup gate and is being monitored."""
        return self in (ChildState.RUNNING, ChildState.PAUSED)


_S = ChildState
_DOWN = frozenset({_S.UNHEALTHY, _S.DEAD, _S.STOPPED, _S.ESCALATED})
_TRANSITIONS: dict[ChildState, frozenset[ChildState]] = {
    _S.STOPPED: frozenset({_S.STARTING, _S.ESCALATED}),
    _S.STARTING: frozenset({_S.PROBING}) | _DOWN,
    _S.PROBING: frozenset({_S.RUNNING, _S.PAUSED}) | _DOWN,
    _S.PAUSED: frozenset({_S.RUNNING}) | _DOWN,
    _S.RUNNING: _DOWN,
    _S.UNHEALTHY: frozenset({_S.BACKOFF, _S.STARTING, _S.STOPPED, _S.ESCALATED}),
    _S.DEAD: frozenset({_S.BACKOFF, _S.STARTING, _S.STOPPED, _S.ESCALATED}),
    _S.BACKOFF: frozenset({_S.STARTING, _S.STOPPED, _S.ESCALATED}),
    _S.ESCALATED: frozenset({_S.STARTING, _S.STOPPED}),
}


class ChildLifecycle:
    """The state of one child.

    STOPPED -> STARTING -> PROBING -> RUNNING (or PAUSED -> RUNNING), then on
    failure UNHEALTHY/DEAD -> BACKOFF -> STARTING ...; any state can go to
    STOPPED (or ESCALATED) except through a running start. Re-entering the
    current state is a no-op.
    """

    def __init__(self) -> None:
        self._state = ChildState.STOPPED

    @property
    def state(self) -> ChildState:
        return self._state

    def can(self, new: ChildState) -> bool:
        return new is self._state or new in _TRANSITIONS[self._state]

    def to(self, new: ChildState) -> ChildState:
        """Move to ``new`` and return the previous state.

        Raises:
            InvalidLifecycleTransition: ``state -> new`` is not allowed.
        """
        if not self.can(new):
            allowed = ", ".join(sorted(s.value for s in _TRANSITIONS[self._state]))
            raise InvalidLifecycleTransition(
                f"child lifecycle: {self._state.value} -> {new.value} is not allowed "
                f"(from {self._state.value} only: {allowed})"
            )
        old, self._state = self._state, new
        return old

"""Who may move a strategy between RUNNING and PAUSED, as pure functions over what Redis holds.

A strategy's state is in Redis (``StrategyState``) with, when PAUSED, the
pause record of who paused it (``{"source": ..., "reason": ...}``).
``actors.strategy_host`` reads both, asks these functions, and writes what
they decide. The rules:

- WINDING_DOWN and KILLED belong to the kill switch: no start, pause or
  resume of the host changes them.
- The supervisor's start hold (source ``supervisor``) never masks another
  pause: a strategy paused by risk or an operator stays paused when the
  supervisor releases its hold, and a restarted host keeps such a pause.
- A strategy found PAUSED without a record (its host died before writing
  one) is kept paused under source ``unknown``: only an operator resumes it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tradetree.core import ProbeResult, StrategyState

__all__ = [
    "SUPERVISOR",
    "PausePlan",
    "StartPlan",
    "host_probes",
    "kill_switch_owns",
    "pause_plan",
    "pause_source",
    "start_plan",
    "supervisor_may_release",
    "unreadable_states",
]

SUPERVISOR = "supervisor"

PauseRecord = Mapping[str, Any]


def kill_switch_owns(state: StrategyState | None) -> bool:
    """WINDING_DOWN and KILLED are the kill switch's: the host leaves them as they are."""
    return state in (StrategyState.KILLED, StrategyState.WINDING_DOWN)


class StartPlan(enum.Enum):
    """What a starting host does with the state it finds."""

    KEEP = "keep"  # WINDING_DOWN / KILLED, or paused by someone other than the supervisor
    KEEP_UNEXPLAINED = "keep_unexplained"  # PAUSED with no record of why: record it as ``unknown``, keep it
    HOLD = "hold"  # PAUSED under the supervisor's start hold
    RUN = "run"  # RUNNING, the supervisor's hold cleared


def start_plan(current: StrategyState | None, hold: PauseRecord | None, *, start_paused: bool) -> StartPlan:
    """The state a host starts in, given the ``current`` state in Redis (None: never recorded),
    its pause record ``hold`` (only looked at when PAUSED) and whether the supervisor holds it."""
    if kill_switch_owns(current):
        return StartPlan.KEEP
    if current is StrategyState.PAUSED:
        if hold is None:
            return StartPlan.KEEP_UNEXPLAINED
        if hold["source"] != SUPERVISOR:
            return StartPlan.KEEP
    return StartPlan.HOLD if start_paused else StartPlan.RUN


def pause_source(reason: str, source: str | None) -> str:
    """Who is pausing: ``source`` when given, else ``supervisor`` for its ``"supervisor ..."`` reasons."""
    return source or (SUPERVISOR if reason.startswith(f"{SUPERVISOR} ") else "other")


@dataclass(frozen=True)
class PausePlan:
    """``record``: write this pause as the strategy's pause record; ``set_paused``: RUNNING -> PAUSED."""

    record: bool
    set_paused: bool


def pause_plan(state: StrategyState, source: str, existing: PauseRecord | None) -> PausePlan:
    """What a pause from ``source`` does to a strategy in ``state`` with pause record ``existing``.

    The supervisor's pause does not overwrite another source's record.
    """
    if kill_switch_owns(state):
        return PausePlan(record=False, set_paused=False)
    masks_other = source == SUPERVISOR and existing is not None and existing["source"] != SUPERVISOR
    return PausePlan(record=not masks_other, set_paused=state is StrategyState.RUNNING)


def supervisor_may_release(hold: PauseRecord | None) -> bool:
    """The supervisor may resume a PAUSED strategy only from its own hold (or no record at all)."""
    return hold is None or hold["source"] == SUPERVISOR


def unreadable_states(states: Mapping[str, str]) -> dict[str, str]:
    """The entries of ``states`` (stored texts, as ``RedisStore.strategy_states(strict=False)``
    returns them) that are not a ``StrategyState``: strategy id -> the text."""
    return {sid: text for sid, text in states.items() if text not in StrategyState._value2member_map_}


def host_probes(store_error: str | None, state: StrategyState | None, last_error: str) -> tuple[ProbeResult, ...]:
    """The host's health probes: ``store`` (with the state read, unless ``store_error`` says why not)
    and ``decisions`` (the last bar's decision raised ``last_error``, empty when it did not)."""
    probes = []
    if store_error is None:
        probes.append(ProbeResult(name="store", ok=True))
        probes.append(ProbeResult(name="state", ok=True, detail=state.value if state is not None else ""))
    else:
        probes.append(ProbeResult(name="store", ok=False, detail=store_error))
    probes.append(ProbeResult(name="decisions", ok=not last_error, detail=last_error))
    return tuple(probes)

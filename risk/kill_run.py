"""The decisions of one kill run, apart from the executor that acts on them (pure).

``actors.kill_switch.KillSwitch`` loops: protect, look, ``plan_wind_down``,
act, sleep. Every choice it makes on the way is a function here, over the
progress record, the plan or the outcome of a call:

- ``start_run``: a new episode, or resume the recorded one (and which orders
  of earlier runs to look up again).
- ``pending_kills``: which recorded kills a restarted host continues.
- ``classify_failure`` and ``stall_reason``: whether a failed step is retried
  or ends the run STALLED.
- ``next_delay`` and ``iteration_cap``: how long to sleep between iterations,
  and the hard cap on iterations when the clock does not move.
- ``lease_verdict``: hold, wait for, or stop after losing the executor lease.
- ``clip_refusal``: whether a wind-down order's answer counts as a failure.
- ``global_kill_targets``, ``stuck_reason``, ``timeout_reason``: who a global
  kill winds down, and the text of the two stalls that are not step failures.

Invariants: nothing here sleeps, reads a clock or touches Redis, Ray or a
venue; the only randomness is the injected ``rng`` of ``next_delay``.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tradetree.core import Order, OrderState, Position, StrategyState, TradetreeError, VenueAuthError
from tradetree.risk.kill_switch import (
    CancelOrders,
    KillPhase,
    KillProgress,
    KillState,
    KillSwitchConfig,
    SubmitClip,
    WindDownPlan,
    backoff_delay,
)

__all__ = [
    "LeaseVerdict",
    "RunStart",
    "StepFailure",
    "StepRefused",
    "action_phase",
    "classify_failure",
    "clip_refusal",
    "done_note",
    "global_kill_targets",
    "iteration_cap",
    "lease_verdict",
    "next_delay",
    "pending_kills",
    "plan_progress",
    "stall_reason",
    "start_run",
    "stuck_reason",
    "timeout_reason",
]

class StepRefused(Exception):
    """A wind-down order was denied by a pre-trade check or rejected by the venue (retried)."""


@dataclass(frozen=True)
class RunStart:
    """How a run begins: the progress it carries on, the note it records, orders to look up,
    and whether it is a new episode (recorded at once, lease or not)."""

    progress: KillProgress
    note: str
    recheck: tuple[str, ...] = ()
    new_episode: bool = False


def start_run(fresh: KillProgress, existing: KillProgress | None, *, requested: bool) -> RunStart:
    """Start a new episode from ``fresh``, or resume ``existing`` (the recorded kill of the scope).

    A new episode when nothing is recorded, or when a kill is requested on a
    DONE one; otherwise the record is resumed as RUNNING under ``fresh.owner``,
    with its run count up by one and its failures and stall reason cleared,
    and the orders it sent are looked up again (those not settled are waited for).
    """
    if existing is None or (requested and existing.state is KillState.DONE):
        return RunStart(progress=fresh, note=f"kill requested: {fresh.reason}", new_episode=True)
    progress = existing.model_copy(update={
        "state": KillState.RUNNING, "runs": existing.runs + 1, "failed_attempts": 0,
        "stalled_reason": "", "updated_ms": fresh.updated_ms, "finished_ms": None,
        "owner": fresh.owner,
    })
    note = (f"kill requested again ({progress.reason}): resuming" if requested
            else f"resuming {existing.state.value} kill")
    return RunStart(progress=progress, note=note, recheck=existing.client_order_ids)


# ``KillProgress.remaining`` entries of what a venue holds that Redis does not (a global kill's check).
VENUE_RESIDUAL_PREFIX = "venue "


def pending_kills(recorded: Iterable[KillProgress | None],
                  residuals: Mapping[str, tuple[str, ...]] | None = None,
                  kill_flag_set: bool = True, *, now_ms: int | None = None,
                  config: KillSwitchConfig | None = None) -> list[KillProgress]:
    """The recorded kills a host continues on its own.

    RUNNING ones (interrupted) always. A STALLED one at once when something
    changed since it stalled: its scope's residual (``residuals[scope]``, as
    ``scope_residual`` gives it) is not what it stalled with (a fill arrived,
    someone closed the position by hand), or it is the global kill and the kill
    flag was cleared under it. An unchanged stall is re-run only with a backoff
    (``stalled_retry_min_secs``, doubling with each run, up to
    ``stalled_retry_max_secs``): re-running it every few seconds repeated the
    same failure forever, and never re-running it would leave a kill that
    stalled in a short venue outage unfinished while nobody watches. The
    operator's ``kill`` (the same scope again) re-runs it at once.
    ``residuals=None`` retries every STALLED kill (a caller that cannot read
    positions).
    """
    out = []
    for p in recorded:
        if p is None or p.state not in (KillState.RUNNING, KillState.STALLED):
            continue
        if p.state is KillState.STALLED and residuals is not None:
            # What the venue held is not in Redis: only a change of the Redis residual counts.
            booked = tuple(sorted(r for r in p.remaining if not r.startswith(VENUE_RESIDUAL_PREFIX)))
            changed = tuple(sorted(residuals.get(p.scope, ()))) != booked
            flag_lost = p.strategy_id is None and not kill_flag_set
            if not (changed or flag_lost or stalled_retry_due(p, now_ms, config)):
                continue
        out.append(p)
    return out


def stalled_retry_due(progress: KillProgress, now_ms: int | None, config: KillSwitchConfig | None) -> bool:
    """Whether an unchanged STALLED kill's backoff has run out (False without a clock or config)."""
    if now_ms is None or config is None:
        return False
    delay = min(config.stalled_retry_max_secs, config.stalled_retry_min_secs * 2 ** max(0, progress.runs - 1))
    return now_ms - progress.updated_ms >= delay * 1000


def scope_residual(positions: Iterable[Position], strategy_id: str | None) -> tuple[str, ...]:
    """The positions of a kill's scope that are not flat, as ``KillProgress.remaining`` records them."""
    scoped = sorted((p for p in positions if p.qty != 0 and (strategy_id is None or p.strategy_id == strategy_id)),
                    key=lambda p: (p.strategy_id, p.venue, p.inst_id))
    return tuple(f"{p.strategy_id} {p.venue} {p.inst_id} {p.qty:+}" for p in scoped)


@dataclass(frozen=True)
class StepFailure:
    error: str
    retryable: bool


def classify_failure(exc: BaseException, call_timeout_secs: float) -> StepFailure | None:
    """What a step's exception means for the run; None for one that is a bug (let it propagate).

    Retried: no answer within the call timeout, any ``TradetreeError`` (the
    venue or the store failed), a refused clip (``StepRefused``). Not retried:
    ``VenueAuthError`` (credentials do not come back by retrying), ``ValueError``
    / ``TypeError`` (a broken contract: a bad state, a wrong venue).
    """
    if isinstance(exc, TimeoutError):
        return StepFailure(f"no answer within {call_timeout_secs:g}s", True)
    if isinstance(exc, VenueAuthError):
        return StepFailure(f"VenueAuthError: {exc}", False)
    if isinstance(exc, TradetreeError | StepRefused):
        return StepFailure(f"{type(exc).__name__}: {exc}", True)
    if isinstance(exc, ValueError | TypeError):
        return StepFailure(f"{type(exc).__name__}: {exc}", False)
    return None


def stall_reason(step: str, attempt: int, failure: StepFailure, config: KillSwitchConfig) -> str | None:
    """Why the ``attempt``-th consecutive failure of ``step`` ends the run; None to retry."""
    if not failure.retryable:
        return f"{step}: not retryable: {failure.error}"
    if attempt >= config.step_max_attempts:
        return f"{step} failed {attempt} times in a row; last: {failure.error}"
    return None


def next_delay(failed_attempts: Sequence[int], config: KillSwitchConfig, rng: random.Random,
               time_left_secs: float) -> float:
    """Seconds to sleep after an iteration; not above ``time_left_secs`` (sleep only when > 0).

    ``failed_attempts``: the consecutive-failure count of each step that failed
    in the iteration. Backoff for the worst of them; the verify interval when
    none failed.
    """
    if failed_attempts:
        delay = backoff_delay(max(failed_attempts), config, rng)
    else:
        delay = config.verify_interval_secs
    return min(delay, time_left_secs)


def iteration_cap(config: KillSwitchConfig) -> int:
    """Iterations a run may take at most.

    ``max_duration_secs`` already bounds them because each one sleeps; the cap
    also bounds them if an injected sleep does not advance the clock.
    """
    shortest_sleep = min(config.verify_interval_secs, config.backoff_min_secs)
    return math.ceil(config.max_duration_secs / shortest_sleep) + config.step_max_attempts + 10


class LeaseVerdict(str, enum.Enum):
    HELD = "held"  # act
    WAITING = "waiting"  # another executor holds it: protect, record, do not act
    LOST = "lost"  # we held it and another executor took the kill over: stop this run


def lease_verdict(holder: str | None, held_before: bool) -> LeaseVerdict:
    """From the store's answer to taking the lease (None: ours now, else the holder)."""
    if holder is None:
        return LeaseVerdict.HELD
    return LeaseVerdict.LOST if held_before else LeaseVerdict.WAITING


def clip_refusal(result: Order) -> str | None:
    """Why a wind-down order the venue answered counts as a failed attempt; None when it was taken.

    Rejected by the venue, or canceled without a fill: no liquidity took it, and
    counting it keeps a thin book from being hit every interval. (A clip denied
    by a pre-trade check is a failed attempt too; it never reaches the venue.)
    """
    if result.state is OrderState.REJECTED:
        return f"order {result.client_order_id} rejected: {result.reject_reason}"
    if result.state is OrderState.CANCELED and result.filled_size == 0:
        return f"order {result.client_order_id} canceled without a fill"
    return None


def global_kill_targets(states: Mapping[str, str], positions: Iterable[Position]) -> list[str]:
    """Strategies a global kill puts in WINDING_DOWN: every one not KILLED (one whose stored
    state is unreadable too), and every one holding a position (``_unattributed`` too), so
    the gate admits their reduce-only clips."""
    holders = {p.strategy_id for p in positions if p.qty != 0}
    return sorted({s for s, state in states.items() if state != StrategyState.KILLED} | holders)


def plan_progress(plan: WindDownPlan) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(waiting_on, remaining)`` as ``KillProgress`` records them."""
    waiting_on = tuple(c for w in plan.waiting for c in w.client_order_ids)
    return waiting_on, scope_residual(plan.remaining, None)


def stuck_reason(plan: WindDownPlan) -> str | None:
    """Why a plan that is not flat can make no progress (nothing to do, nothing to wait for):
    positions offset by other strategies. None when the plan has actions or waits."""
    if plan.actions or plan.waiting:
        return None
    offsets = "; ".join(f"{b.strategy_id} {b.venue} {b.inst_id} {b.qty:+} (venue net {b.venue_net:+})"
                        for b in plan.blocked)
    return ("positions offset by other strategies on the same instrument cannot be "
            f"closed with reduce-only orders: {offsets}; flatten them by hand or set "
            "allow_offsetting_orders")


def action_phase(action: CancelOrders | SubmitClip) -> KillPhase:
    return KillPhase.CANCEL if isinstance(action, CancelOrders) else KillPhase.FLATTEN


def timeout_reason(progress: KillProgress, max_duration_secs: float) -> str:
    """The stall reason of a run that used up ``max_duration_secs``, with what was outstanding."""
    outstanding = [f"not flat: {'; '.join(progress.remaining)}"] if progress.remaining else []
    if progress.waiting_on:
        outstanding.append(f"orders not settled: {', '.join(progress.waiting_on)}")
    if progress.last_error:
        outstanding.append(f"last error: {progress.last_error}")
    return (f"timed out after {max_duration_secs:g}s in phase {progress.phase.value}"
            + "".join(f"; {o}" for o in outstanding))


def done_note(strategy_id: str | None) -> str:
    """What a finished kill leaves behind, for the log and the last step."""
    return ("the kill flag stays set until an operator clears it" if strategy_id is None
            else f"strategy {strategy_id} KILLED")

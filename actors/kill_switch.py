"""The kill switch's executor: carries out the wind-down that ``risk.kill_switch`` plans.

Hosted by the RiskMonitor actor (``actors.risk_monitor``), no Ray actor of its
own. Each iteration reads a snapshot (positions, the scope's orders, what the
store applied for them), asks ``risk.kill_switch.plan_wind_down`` what to do,
and carries out the commands; every other choice on the way (resume or start,
retry or stall, how long to sleep, lease held or lost) is a function of
``risk.kill_run``. What is left here is I/O and the bookkeeping of one run.

Every step is recorded in the store (``RedisStore.save_kill_progress`` /
``append_kill_step``, through ``KillJournal``), so a restarted executor
resumes an unfinished kill where it stood. Two kills in one executor never
act at the same time, and executors in different processes exclude each
other with a lease in the store (``RedisStore.acquire_kill_lease``).

The ports: ``KillStore`` (position truth), ``KillRecords`` (the journal's
storage), ``VenuePort`` (the gateways, over Ray in ``actors.kill_switch_ray``)
and ``StrategyControlPort`` (pausing a strategy actor, over Ray by
``actors.risk_monitor.RayStrategyPauser``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from tradetree.core import (
    Clock,
    Order,
    OrderDenied,
    OrderIntent,
    Position,
    StoreError,
    StrategyState,
    WallClock,
)
from tradetree.risk import (
    VENUE_RESIDUAL_PREFIX,
    CancelOrders,
    KillPhase,
    KillProgress,
    KillState,
    KillStep,
    KillSwitchConfig,
    LeaseVerdict,
    StepOutcome,
    StepRefused,
    SubmitClip,
    action_phase,
    classify_failure,
    clip_refusal,
    done_note,
    global_kill_targets,
    iteration_cap,
    kill_scope,
    lease_verdict,
    next_delay,
    order_is_settled,
    pending_kills,
    plan_progress,
    plan_wind_down,
    scope_residual,
    stall_reason,
    start_run,
    stuck_reason,
    timeout_reason,
    unreadable_states,
)

__all__ = [
    "KillJournal",
    "KillRecords",
    "KillStore",
    "KillSwitch",
    "StrategyControlPort",
    "VenuePort",
]

log = logging.getLogger(__name__)


# -- ports ------------------------------------------------------------------------------------


class KillStore(Protocol):
    """What the kill switch reads and writes in the store (``core.store.RedisStore``)."""

    async def positions(self, strategy_id: str | None = None) -> list[Position]: ...

    async def exposure(self, venue: str | None = None, strategy_id: str | None = None
                       ) -> tuple[list[tuple[Order, Decimal]], list[Position]]: ...

    async def get_order(self, client_order_id: str) -> Order | None: ...

    async def applied_size(self, client_order_id: str) -> Decimal: ...

    async def strategy_states(self, *, strict: Literal[False]) -> Mapping[str, str]: ...

    async def set_strategy_state(self, strategy_id: str, state: StrategyState) -> None: ...

    async def set_kill_flag(self, reason: str, ts_ms: int) -> None: ...

    async def kill_flag(self) -> str | None: ...


class KillRecords(Protocol):
    """Where the journal keeps kills as text (``core.store.RedisStore``).

    Raises ``StoreUnavailable`` when the store does not answer, ``StoreError``
    on any other store error.
    """

    async def save_kill_progress(self, scope: str, progress_json: str, *, state: str, reason: str,
                                 updated_ms: int) -> None: ...

    async def kill_progress(self, scope: str) -> str | None: ...

    async def kill_scopes(self) -> list[str]: ...

    async def append_kill_step(self, scope: str, step_json: str) -> None: ...

    async def kill_steps(self, scope: str, count: int | None = None) -> list[str]: ...

    async def acquire_kill_lease(self, owner: str, now_ms: int, lease_ms: int) -> str | None: ...

    async def release_kill_lease(self, owner: str) -> None: ...


class VenuePort(Protocol):
    """The venue gateways, as the kill switch needs them.

    Calls raise ``core.errors`` exceptions: ``VenueUnavailable`` (retryable,
    also when the gateway cannot be reached), ``VenueAuthError`` (not
    retried), other ``VenueError`` or ``StoreError`` (retried).
    """

    def venues(self) -> Sequence[str]: ...

    async def cancel_all(self, venue: str, strategy_id: str | None = None) -> int: ...

    async def submit_order(self, intent: OrderIntent) -> Order | OrderDenied: ...

    async def venue_positions(self, venue: str) -> Mapping[str, Decimal]:
        """The account's net per instrument at the venue, as the venue reports it now."""
        ...


class StrategyControlPort(Protocol):
    """Pauses a strategy's actor. Returning False (as ``actors.risk_monitor.RayStrategyPauser``
    does for an unreachable actor) or raising means it was not paused."""

    async def pause(self, strategy_id: str, reason: str) -> bool | None: ...


# -- the journal ------------------------------------------------------------------------------


class KillJournal:
    """Progress, audit trail and lease of kills, typed over ``KillRecords``.

    Raises ``StoreUnavailable`` when the store does not answer, ``StoreError``
    on any other store error.
    """

    def __init__(self, records: KillRecords) -> None:
        self._records = records

    async def save(self, progress: KillProgress) -> None:
        await self._records.save_kill_progress(
            progress.scope, progress.model_dump_json(), state=progress.state.value,
            reason=progress.reason, updated_ms=progress.updated_ms)

    async def load(self, scope: str) -> KillProgress | None:
        """Raises ``StoreError`` also for a record that is not a ``KillProgress`` (naming the scope)."""
        raw = await self._records.kill_progress(scope)
        if raw is None:
            return None
        try:
            return KillProgress.model_validate_json(raw)
        except ValidationError as exc:
            raise StoreError(f"kill record of {scope} is unreadable: {exc}") from None

    async def scopes(self) -> list[str]:
        return await self._records.kill_scopes()

    async def append(self, scope: str, step: KillStep) -> None:
        await self._records.append_kill_step(scope, step.model_dump_json())

    async def steps(self, scope: str, count: int | None = None) -> list[KillStep]:
        """The latest ``count`` steps (all when None), oldest first."""
        return [KillStep.model_validate_json(raw) for raw in await self._records.kill_steps(scope, count)]

    async def acquire_lease(self, owner: str, now_ms: int, lease_ms: int) -> str | None:
        """Take or renew the lease. None when ``owner`` holds it now, else the holder's id."""
        return await self._records.acquire_kill_lease(owner, now_ms, lease_ms)

    async def release_lease(self, owner: str) -> None:
        await self._records.release_kill_lease(owner)


# -- the executor -----------------------------------------------------------------------------


class _Stop(Exception):
    """Ends a run: ``progress`` is what the caller gets back."""

    def __init__(self, progress: KillProgress) -> None:
        super().__init__(progress.state.value)
        self.progress = progress


class _Run:
    """Mutable state of one run; ``progress`` is its latest snapshot."""

    def __init__(self, progress: KillProgress, deadline: float) -> None:
        self.progress = progress
        self.deadline = deadline
        self.lease_held = False
        self.lease_lost = False  # held, then taken over by another executor: this run stops
        self.protected = False  # the flag / WINDING_DOWN step succeeded
        self.failures: dict[str, int] = {}  # step -> consecutive failures
        self.failed_now: list[str] = []  # steps that failed in this iteration
        self.swept: set[str] = set()
        self.own_orders: dict[str, Order] = {}  # unsettled orders this kill sent, as last seen
        self.recheck: tuple[str, ...] = ()  # orders of earlier runs to look up once
        self.flat_seen = False
        self.waiting_logged: tuple[str, ...] = ()
        self.venue_logged: tuple[str, ...] = ()
        self.lease_wait_logged = False

    @property
    def scope(self) -> str:
        return self.progress.scope

    @property
    def strategy_id(self) -> str | None:
        return self.progress.strategy_id

    def update(self, now_ms: int, **changes: Any) -> None:
        self.progress = self.progress.model_copy(update={"updated_ms": now_ms, **changes})


_FAILED = object()


class KillSwitch:
    """Runs kills and wind-downs; hosted by the RiskMonitor (no Ray actor of its own).

    ``kill()`` and ``resume_pending()`` never raise (``CancelledError`` aside,
    when the caller or ``aclose()`` cancels): every failure ends in a
    recorded, visible STALLED state. One run per scope at a time; a second
    ``kill()`` of a running scope joins it. Runs of different scopes
    interleave but never act at the same time; an executor records progress
    and acts only while it holds the lease.

    Args:
        store: position truth (``core.store.RedisStore``).
        records: where the journal lives (``core.store.RedisStore``; the
            same store in production).
        venues: the gateways.
        config: bounds and clip sizes.
        strategies: pauses the actor of a killed strategy (best effort;
            None skips it).
        clock, sleep, rng: injected for simulated time and seeded jitter.
        owner_id: this executor's id in the lease (unique per process).
    """

    def __init__(
        self,
        store: KillStore,
        records: KillRecords,
        venues: VenuePort,
        config: KillSwitchConfig,
        *,
        strategies: StrategyControlPort | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
        owner_id: str | None = None,
    ) -> None:
        self._store = store
        self._journal = KillJournal(records)
        self._venues = venues
        self._strategies = strategies
        self.config = config
        self._clock: Clock = clock or WallClock()
        self._sleep = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self.owner_id = owner_id or f"killswitch-{uuid.uuid4().hex[:12]}"
        self._runs: dict[str, asyncio.Task[KillProgress]] = {}
        self._act_lock = asyncio.Lock()

    # -- public API ---------------------------------------------------------------------------

    async def kill(self, reason: str, strategy_id: str | None = None) -> KillProgress:
        """Kill everything (``strategy_id=None``) or one strategy and wind down; return the outcome.

        Before touching the venue: the global kill sets the kill flag, then
        every strategy not already KILLED (and every one holding a position)
        to WINDING_DOWN -- the freshness gate admits reduce-only orders only
        in that state; a one-strategy kill sets that strategy WINDING_DOWN and
        pauses its actor if reachable. Then: cancel, flatten, verify. When
        flat, the wound-down strategies are KILLED; the kill flag stays set
        until an operator clears it.

        Returns when the kill is DONE or STALLED (or still RUNNING under
        another executor's lease, after ``max_duration_secs`` of waiting).
        A kill of a scope this executor is running joins that run; one left
        unfinished in Redis (STALLED, or RUNNING after a restart) is resumed;
        a DONE one starts a new episode.
        """
        return await self._join_or_start(kill_scope(strategy_id), strategy_id, reason, requested=True)

    async def resume_pending(self) -> list[KillProgress]:
        """Continue every kill recorded RUNNING or STALLED; return their outcomes.

        Call it when the host starts and then periodically: a STALLED kill is
        retried each time (each run bounded), and a global one sets the kill
        flag again if it was cleared meanwhile (its positions are not flat
        yet). Returns [] when Redis cannot be read; a scope whose record cannot
        be read or parsed is skipped (both logged), the others are continued.
        """
        try:
            scopes = await self._journal.scopes()
        except StoreError as exc:
            log.error("kill switch: cannot read pending kills: %s", exc)
            return []
        recorded = []
        for scope in scopes:
            try:
                recorded.append(await self._journal.load(scope))
            except StoreError as exc:
                log.error("kill switch: skipping the kill of %s: %s", scope, exc)
        residuals: dict[str, tuple[str, ...]] | None = None
        kill_flag_set = True
        if any(p is not None and p.state is KillState.STALLED for p in recorded):
            try:
                positions = await self._store.positions()
                residuals = {p.scope: scope_residual(positions, p.strategy_id) for p in recorded if p is not None}
                kill_flag_set = await self._store.kill_flag() is not None
            except StoreError as exc:  # unknown residual: retry the stalls, as before
                log.error("kill switch: cannot read positions to judge stalled kills: %s", exc)
        return list(await asyncio.gather(*(self._join_or_start(p.scope, p.strategy_id, p.reason, requested=False)
                                           for p in pending_kills(recorded, residuals, kill_flag_set,
                                                                  now_ms=self._clock.now_ms(), config=self.config))))

    async def recorded(self) -> list[KillProgress]:
        """Every kill recorded in Redis (any state), by scope; unreadable ones are skipped (logged).

        Raises:
            StoreUnavailable / StoreError: the index of kills could not be read.
        """
        out = []
        for scope in await self._journal.scopes():
            try:
                progress = await self._journal.load(scope)
            except StoreError as exc:
                log.error("kill switch: the kill of %s is unreadable: %s", scope, exc)
                continue
            if progress is not None:
                out.append(progress)
        return out

    async def progress(self, strategy_id: str | None = None) -> KillProgress | None:
        """The recorded progress of the kill of a scope (None if it was never killed).

        Raises:
            StoreUnavailable / StoreError: Redis could not be read.
        """
        return await self._journal.load(kill_scope(strategy_id))

    async def steps(self, strategy_id: str | None = None, count: int | None = None) -> list[KillStep]:
        """The audit trail of a scope, oldest first (the latest ``count`` steps).

        Raises:
            StoreUnavailable / StoreError: Redis could not be read.
        """
        return await self._journal.steps(kill_scope(strategy_id), count)

    def running(self) -> list[str]:
        """Scopes with a run in progress in this executor."""
        return sorted(s for s, t in self._runs.items() if not t.done())

    async def aclose(self) -> None:
        """Stop this executor's runs (they stay RUNNING in Redis, for ``resume_pending``)."""
        tasks = [t for t in self._runs.values() if not t.done()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self._release_lease()

    # -- runs ---------------------------------------------------------------------------------

    async def _join_or_start(self, scope: str, strategy_id: str | None, reason: str, *,
                             requested: bool) -> KillProgress:
        task = self._runs.get(scope)
        if task is not None and not task.done():
            if requested:
                await self._append(scope, 0, "request", StepOutcome.INFO,
                                   f"kill requested again while running: {reason}")
        else:
            task = asyncio.create_task(self._run_guarded(scope, strategy_id, reason, requested),
                                       name=f"kill:{scope}")
            self._runs[scope] = task
            task.add_done_callback(functools.partial(self._forget, scope))
        return await asyncio.shield(task)

    def _forget(self, scope: str, task: asyncio.Task[KillProgress]) -> None:
        # Only the run that ended: a newer run of the scope may have taken its place.
        if self._runs.get(scope) is task:
            self._runs.pop(scope)

    async def _run_guarded(self, scope: str, strategy_id: str | None, reason: str,
                           requested: bool) -> KillProgress:
        now = self._clock.now_ms()
        run = _Run(KillProgress(scope=scope, strategy_id=strategy_id, reason=reason, state=KillState.RUNNING,
                                phase=KillPhase.FLAG, started_ms=now, updated_ms=now, owner=self.owner_id),
                   deadline=self._clock.monotonic() + self.config.max_duration_secs)
        try:
            await self._begin(run, requested)
            await self._drive(run)
        except _Stop as stop:
            return stop.progress
        except Exception as exc:  # a bug must neither kill the host nor leave the kill invisible
            log.exception("kill switch: %s failed unexpectedly", scope)
            try:
                await self._stall(run, f"internal error: {type(exc).__name__}: {exc}")
            except _Stop as stop:
                return stop.progress
        finally:
            if all(t.done() or t is asyncio.current_task() for t in self._runs.values()):
                await self._release_lease()
        raise AssertionError("a run ends with _Stop")  # pragma: no cover

    async def _begin(self, run: _Run, requested: bool) -> None:
        try:
            existing = await self._journal.load(run.scope)
        except StoreError as exc:
            log.error("kill switch: cannot read progress of %s: %s", run.scope, exc)
            existing = None
        start = start_run(run.progress, existing, requested=requested)
        run.progress, run.recheck, note = start.progress, start.recheck, start.note
        log.warning("kill switch: %s: %s", run.scope, note)
        if start.new_episode:
            # A new kill is recorded even when another executor holds the lease, so that
            # whoever holds it next finds it (nobody is running a kill that has no record).
            try:
                await asyncio.wait_for(self._journal.save(run.progress), timeout=self.config.call_timeout_secs)
            except (StoreError, TimeoutError) as exc:
                log.error("kill switch: %s: could not record the kill request: %s", run.scope, exc)
        await self._record(run, "request", StepOutcome.INFO, note)

    async def _drive(self, run: _Run) -> None:
        """Loop until DONE or STALLED (raises ``_Stop``). Every iteration sleeps."""
        for _ in range(iteration_cap(self.config)):
            if self._clock.monotonic() >= run.deadline:
                await self._out_of_time(run)
            run.failed_now = []
            if not run.protected:
                run.protected, _ = await self._attempt(run, "flag", self._protect(run))
                if run.protected and run.strategy_id is not None:
                    await self._pause_actor(run)
            if run.protected:
                async with self._act_lock:
                    if await self._hold_lease(run):
                        await self._iterate(run)
            await self._pause_between(run)
        await self._stall(run, "iteration limit reached: the injected sleep does not advance the clock")

    async def _pause_between(self, run: _Run) -> None:
        delay = next_delay([run.failures.get(s, 1) for s in run.failed_now], self.config, self._rng,
                           run.deadline - self._clock.monotonic())
        if delay > 0:
            await self._sleep(delay)

    async def _out_of_time(self, run: _Run) -> None:
        limit = f"{self.config.max_duration_secs:g}s"
        if run.protected and not run.lease_held:
            # Another executor holds the lease and runs the kill: leave its record alone.
            await self._append(run.scope, run.progress.runs, "lease", StepOutcome.INFO,
                               f"{self.owner_id} gave up waiting for the lease after {limit}")
            try:
                recorded = await self._journal.load(run.scope)
            except StoreError:
                recorded = None
            raise _Stop(recorded or run.progress)
        await self._stall(run, timeout_reason(run.progress, self.config.max_duration_secs))

    # -- steps --------------------------------------------------------------------------------

    async def _protect(self, run: _Run) -> str:
        """Stop new trading before touching the venue: the kill flag, or WINDING_DOWN."""
        if run.strategy_id is not None:
            await self._wind_down(run, (run.strategy_id,))
            return f"strategy {run.strategy_id} WINDING_DOWN"
        await self._store.set_kill_flag(run.progress.reason, self._clock.now_ms())
        # Leniently: one garbled entry must not keep every other strategy from winding down.
        states = await self._store.strategy_states(strict=False)
        bad = unreadable_states(states)
        if bad:
            listed = ", ".join(f"{sid} {text!r}" for sid, text in sorted(bad.items()))
            log.error("kill switch: %s: unreadable strategy states, wound down like the others: %s", run.scope, listed)
            await self._append(run.scope, run.progress.runs, "flag", StepOutcome.INFO,
                               f"unreadable strategy states, wound down like the others: {listed}")
        targets = global_kill_targets(states, await self._store.positions())
        await self._wind_down(run, targets)
        return "kill flag set; WINDING_DOWN: " + (", ".join(targets) or "no strategies")

    async def _wind_down(self, run: _Run, strategy_ids: Sequence[str]) -> None:
        """Set ``strategy_ids`` WINDING_DOWN and count them among the kill's (KILLED when done)."""
        for sid in strategy_ids:
            await self._store.set_strategy_state(sid, StrategyState.WINDING_DOWN)
        run.update(self._clock.now_ms(), strategies=tuple(sorted({*run.progress.strategies, *strategy_ids})))

    async def _pause_actor(self, run: _Run) -> None:
        assert run.strategy_id is not None
        if self._strategies is None:
            return
        step = f"pause {run.strategy_id}"
        try:
            paused = await asyncio.wait_for(
                self._strategies.pause(run.strategy_id, f"killed: {run.progress.reason}"),
                timeout=self.config.call_timeout_secs)
            why = "the port says so" if paused is False else ""
        except Exception as exc:  # best effort: WINDING_DOWN in Redis is what stops it
            why = f"{type(exc).__name__}: {exc}"
        if why:
            await self._record(run, step, StepOutcome.INFO,
                               f"strategy actor not reachable ({why}); WINDING_DOWN in Redis stops it")
        else:
            await self._record(run, step, StepOutcome.OK, "strategy actor paused")

    async def _hold_lease(self, run: _Run) -> bool:
        """Take or renew the lease. False when another executor holds it (or Redis failed,
        which counts as a failed attempt). Raises ``_Stop`` when the lease was lost."""
        if not run.lease_lost:
            now = self._clock.now_ms()
            ok, holder = await self._attempt(
                run, "lease", self._journal.acquire_lease(self.owner_id, now, int(self.config.lease_secs * 1000)),
                quiet=True)
            if not ok:
                return False
            verdict = lease_verdict(holder, run.lease_held)
            if verdict is LeaseVerdict.HELD:
                run.lease_held = True
                return True
            if verdict is LeaseVerdict.LOST:
                run.lease_held, run.lease_lost = False, True
        if run.lease_lost:
            await self._append(run.scope, run.progress.runs, "lease", StepOutcome.INFO,
                               f"lease lost to another executor; {self.owner_id} stops this run")
            raise _Stop(run.progress)
        if not run.lease_wait_logged:
            run.lease_wait_logged = True
            await self._append(run.scope, run.progress.runs, "lease", StepOutcome.WAITING,
                               f"executor {holder} holds the kill lease")
        return False

    async def _release_lease(self) -> None:
        try:
            await self._journal.release_lease(self.owner_id)
        except StoreError as exc:
            log.warning("kill switch: releasing the lease failed (it expires by itself): %s", exc)

    async def _iterate(self, run: _Run) -> None:
        """Look, plan, act once. Raises ``_Stop`` when DONE or STALLED."""
        ok, observed = await self._attempt(run, "observe", self._observe(run), quiet=True)
        if not ok:
            return
        positions, orders, applied = observed
        plan = plan_wind_down(
            strategy_id=run.strategy_id, positions=positions, orders=orders, applied=applied,
            venues=self._venues.venues() if run.strategy_id is None else (),
            swept=run.swept, config=self.config,
        )
        waiting_on, remaining = plan_progress(plan)
        run.update(self._clock.now_ms(), waiting_on=waiting_on, remaining=remaining)
        if plan.flat:
            await self._confirm_flat(run)
            return
        run.flat_seen = False
        stuck = stuck_reason(plan)
        if stuck is not None:
            await self._stall(run, stuck)
        if waiting_on != run.waiting_logged:
            run.waiting_logged = waiting_on
            if waiting_on:
                await self._record(run, "settle", StepOutcome.WAITING,
                                   "waiting for orders to settle: " + ", ".join(waiting_on))
        for action in plan.actions:
            if not await self._hold_lease(run):
                break
            phase = action_phase(action)
            if phase is not run.progress.phase:
                run.update(self._clock.now_ms(), phase=phase)
                await self._save(run)
            if isinstance(action, CancelOrders):
                ok, _ = await self._attempt(run, action.step, self._cancel(action))
                if ok:
                    run.swept.add(action.venue)
            else:
                await self._clip(run, action)
        await self._save(run)

    async def _observe(self, run: _Run) -> tuple[list[Position], list[Order], dict[str, Decimal]]:
        # One batched read for the tracked orders, then positions (``RedisStore.exposure``: a fill
        # applied in between never counts zero times); only this kill's own untracked orders cost a read each.
        tracked, positions = await self._store.exposure(strategy_id=run.strategy_id)
        orders = {o.client_order_id: o for o, _ in tracked}
        applied = {o.client_order_id: size for o, size in tracked}
        for coid in run.recheck:  # orders an earlier run sent: those not settled are waited for
            if coid not in orders and (order := await self._store.get_order(coid)) is not None:
                run.own_orders[coid] = orders[coid] = order
                applied[coid] = await self._store.applied_size(coid)
        run.recheck = ()
        for coid, last_seen in run.own_orders.items():
            if coid not in orders:
                orders[coid] = await self._store.get_order(coid) or last_seen
                applied[coid] = await self._store.applied_size(coid)
        run.own_orders = {c: orders[c] for c in run.own_orders if not order_is_settled(orders[c], applied[c])}
        return positions, list(orders.values()), applied

    async def _cancel(self, action: CancelOrders) -> str:
        count = await self._venues.cancel_all(action.venue, action.strategy_id)
        return f"{action.why}: {count} cancel(s) accepted"

    async def _clip(self, run: _Run, action: SubmitClip) -> None:
        intent = action.intent
        if intent.strategy_id not in run.progress.strategies:
            # A position of a strategy the flag step did not see (a late fill): wind it down first.
            ok, _ = await self._attempt(run, f"wind down {intent.strategy_id}",
                                        self._wind_down(run, (intent.strategy_id,)))
            if not ok:
                return
        detail = (f"{intent.side.value} {intent.size} market{' reduce-only' if intent.reduce_only else ''} "
                  f"(position {action.position_qty:+})")
        await self._attempt(run, action.step, self._submit(run, intent), detail=detail)

    async def _submit(self, run: _Run, intent: OrderIntent) -> str:
        result = await self._venues.submit_order(intent)
        if isinstance(result, OrderDenied):  # refused by a pre-trade check: nothing was sent
            raise StepRefused("denied: " + "; ".join(result.reasons))
        refused = clip_refusal(result)
        # A rejected or unfilled order was still sent: it is counted and looked after like any other.
        run.own_orders[result.client_order_id] = result
        run.update(self._clock.now_ms(), orders_submitted=run.progress.orders_submitted + 1,
                   client_order_ids=(*run.progress.client_order_ids, result.client_order_id))
        if refused is not None:
            raise StepRefused(refused)
        return f"{intent.side.value} {intent.size}: order {result.client_order_id} {result.state.value}"

    async def _confirm_flat(self, run: _Run) -> None:
        if not run.flat_seen:
            run.flat_seen = True
            run.update(self._clock.now_ms(), phase=KillPhase.VERIFY)
            await self._record(run, "verify", StepOutcome.INFO,
                               f"flat; confirming after {self.config.verify_interval_secs:g}s")
            return
        if run.strategy_id is None and not await self._venues_flat(run):
            return
        ok, _ = await self._attempt(run, "mark killed", self._mark_killed(run))
        if not ok:
            return
        now = self._clock.now_ms()
        run.update(now, state=KillState.DONE, phase=KillPhase.DONE, finished_ms=now, last_error="")
        what = done_note(run.strategy_id)
        log.warning("kill switch: %s done: flat; %s", run.scope, what)
        await self._record(run, "done", StepOutcome.DONE, f"flat and verified; {what}")
        raise _Stop(run.progress)

    async def _venues_flat(self, run: _Run) -> bool:
        """A global kill is done only when the venues agree: Redis flat while a venue still holds a
        position means fills are missing from Redis (the incident). Then the kill waits for them
        (the poller or a reconcile brings them, and they are wound down), and if they never come it
        stalls saying what the venue holds, not that it is flat."""
        ok, held = await self._attempt(run, "verify venues", self._venue_residual(), quiet=True)
        if not ok:
            run.flat_seen = False
            return False
        if not held:
            return True
        run.flat_seen = False
        run.update(self._clock.now_ms(), remaining=held)
        if held != run.venue_logged:
            run.venue_logged = held
            await self._record(run, "verify venues", StepOutcome.WAITING,
                               "Redis is flat but the venue holds " + "; ".join(held)
                               + ": fills are missing from Redis; waiting for them to be polled")
        await self._save(run)
        return False

    async def _venue_residual(self) -> tuple[str, ...]:
        held = []
        for venue in self._venues.venues():
            for inst_id, qty in sorted((await self._venues.venue_positions(venue)).items()):
                if Decimal(qty) != 0:
                    held.append(f"{VENUE_RESIDUAL_PREFIX}{venue} {inst_id} {Decimal(qty):+}")
        return tuple(held)

    async def _mark_killed(self, run: _Run) -> str:
        for sid in run.progress.strategies:
            await self._store.set_strategy_state(sid, StrategyState.KILLED)
        return "KILLED: " + (", ".join(run.progress.strategies) or "no strategies")

    # -- attempts, stalls, records ------------------------------------------------------------

    async def _attempt(self, run: _Run, step: str, call: Awaitable[Any], *, detail: str = "",
                       quiet: bool = False) -> tuple[bool, Any]:
        """Run one step under the call timeout and record its outcome: ``(ok, result)``.

        A failure counts against the step; raises ``_Stop`` (STALLED) when the
        step is not retryable or has failed ``step_max_attempts`` times in a
        row. ``quiet`` steps record failures only.
        """
        try:
            result = await asyncio.wait_for(call, timeout=self.config.call_timeout_secs)
        except Exception as exc:
            failure = classify_failure(exc, self.config.call_timeout_secs)
            if failure is None:
                raise  # a bug: _run_guarded stalls the kill with it
        else:
            run.failures.pop(step, None)
            if not quiet:
                await self._record(run, step, StepOutcome.OK, result if isinstance(result, str) else detail)
            return True, result
        error = failure.error
        attempt = run.failures.get(step, 0) + 1
        run.failures[step] = attempt
        run.failed_now.append(step)
        run.update(self._clock.now_ms(), failed_attempts=run.progress.failed_attempts + 1,
                   last_error=f"{step}: {error}")
        log.warning("kill switch: %s: %s failed (attempt %d): %s", run.scope, step, attempt, error)
        await self._record(run, step, StepOutcome.FAILED, f"{detail}: {error}" if detail else error,
                           attempt=attempt)
        reason = stall_reason(step, attempt, failure, self.config)
        if reason is not None:
            await self._stall(run, reason)
        return False, _FAILED

    async def _stall(self, run: _Run, reason: str) -> None:
        run.update(self._clock.now_ms(), state=KillState.STALLED, stalled_reason=reason)
        log.error("kill switch: %s STALLED: %s", run.scope, reason)
        await self._record(run, "stalled", StepOutcome.STALLED, reason)
        raise _Stop(run.progress)

    async def _record(self, run: _Run, step: str, outcome: StepOutcome, detail: str, *,
                      attempt: int = 0) -> None:
        await self._append(run.scope, run.progress.runs, step, outcome, detail, attempt=attempt)
        await self._save(run)

    async def _append(self, scope: str, run_no: int, step: str, outcome: StepOutcome, detail: str, *,
                      attempt: int = 0) -> None:
        entry = KillStep(ts_ms=self._clock.now_ms(), run=run_no, step=step, outcome=outcome,
                         attempt=attempt, detail=detail)
        try:
            await asyncio.wait_for(self._journal.append(scope, entry), timeout=self.config.call_timeout_secs)
        except (StoreError, TimeoutError) as exc:
            # Redis being down fails the steps too; the in-memory progress still holds.
            log.error("kill switch: %s: could not record step %s (%s): %s", scope, step, outcome.value, exc)

    async def _save(self, run: _Run) -> None:
        """Write the progress, only while holding the lease (taken or renewed here): an
        executor waiting for the lease, or one that lost it, must not overwrite the
        record of the executor running the kill."""
        if run.lease_lost:
            return
        try:
            holder = await asyncio.wait_for(
                self._journal.acquire_lease(self.owner_id, self._clock.now_ms(), int(self.config.lease_secs * 1000)),
                timeout=self.config.call_timeout_secs)
            verdict = lease_verdict(holder, run.lease_held)
            if verdict is not LeaseVerdict.HELD:
                run.lease_lost, run.lease_held = verdict is LeaseVerdict.LOST, False
                return
            run.lease_held = True
            await asyncio.wait_for(self._journal.save(run.progress), timeout=self.config.call_timeout_secs)
        except (StoreError, TimeoutError) as exc:
            log.error("kill switch: %s: could not record progress: %s", run.scope, exc)

"""The Python control API: what an operator (or the CLI) does to a running tree.

    from tradetree.control import attach, connect
    ctl, record = attach(load_engine_config("configs/paper.yaml"))   # finds the running engine
    ctl = connect("10.0.0.5:6379", namespace="tradetree")           # or a Ray address, as printed
    ctl.status(); ctl.positions()
    ctl.pause("MeanReversion_v10_BTC"); ctl.resume("MeanReversion_v10_BTC")
    ctl.kill("manual stop")                   # or kill(reason, strategy=...)
    ctl.reconcile("okx"); ctl.restart("VenueGateway[okx]"); ctl.alerts()

Everything goes through the named actors of the tree (``supervisor.ActorClient``), so
the API works from any process attached to the cluster. ``resume`` and
``restart`` refuse, naming the failing probe, until the probes they depend on
pass: a strategy is never released onto a broken fill pipeline.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import socket
import time
from typing import Any

import ray

from tradetree.core import (
    ALERTER_ID,
    RISK_MONITOR_ID,
    ROOT_ID,
    ActorNotFound,
    BackendError,
    CallFailed,
    ControlError,
    EngineRecord,
    ProbesFailing,
    RedisStore,
    Refused,
    TradetreeError,
    gateway_id,
    read_engine_record,
    read_local_record,
    reconciler_id,
    redact_url,
)
from tradetree.supervisor import ActorClient, attach_ray, tree_status

__all__ = ["ControlError", "ProbesFailing", "Control", "connect", "attach", "find_engine", "redis_url_for"]

log = logging.getLogger(__name__)

_TIMEOUT_SECS = 30.0
_ATTACH_TIMEOUT_SECS = 30.0
_READY_POLL_SECS = 0.25
# restart_child's wait beyond the child's own stop and start bounds (the kill after a stop, the calls)
_RESTART_MARGIN_SECS = 30.0


def connect(address: str | None = None, namespace: str = "tradetree", *, auth_mode: str | None = None,
            timeout_secs: float = _ATTACH_TIMEOUT_SECS) -> Control:
    """Attach to the cluster running the tree (``namespace`` = the engine config's ``name``).

    ``address`` is the Ray (GCS) address ``host:port`` the tree's engine
    records (``tradetree run`` prints it; ``attach(config)`` finds it). There
    is no guessing: with several Ray clusters on a host, "auto" picks any of
    them. ``address=None`` is only for a process already attached (``ray.init``
    done). Ray's token authentication is handled: ``auth_mode="token"`` (what
    the engine records) or a token found locally (``~/.ray/auth_token``,
    ``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH``) turns it on for this process.

    Raises:
        ControlError: no address; nothing answers there; the token is missing;
            Ray did not accept the connection within ``timeout_secs``. The
            message says what was tried.
    """
    if not ray.is_initialized():
        if not address:
            raise ControlError("no Ray address to attach to: pass --config of the running engine (its record "
                               "names the cluster) or --address host:port (printed by `tradetree run`)")
        attach_ray(address, namespace, timeout_secs=timeout_secs, auth_mode=auth_mode)
    return Control(namespace)


def attach(config: Any, *, timeout_secs: float = _ATTACH_TIMEOUT_SECS) -> tuple[Control, EngineRecord]:
    """Attach to the engine running from ``config`` (an ``EngineConfig``): find its record, then ``connect``.

    Raises:
        ControlError: no engine of that config is running (the message says where it looked).
    """
    record = find_engine(config)
    return connect(record.ray_address, record.ray_namespace, auth_mode=record.ray_auth_mode,
                   timeout_secs=timeout_secs), record


def find_engine(config: Any) -> EngineRecord:
    """The record of the running engine of ``config``: its state dir's ``engine.json`` first
    (local mode, embedded Redis), else ``{namespace}:engine`` in the config's Redis.

    Raises:
        ControlError: neither has one (or the Redis named cannot be read); the message says what was tried.
    """
    tried = []
    local = read_local_record(config.state_dir)
    if local is not None and local.redis_namespace == config.redis.namespace:
        return local
    tried.append(f"no engine runs from state dir {config.state_dir}/")
    url = _redis_url(config, local)
    if url is None:
        raise ControlError("no running engine found: " + "; ".join(tried) + ", and the config names no Redis "
                           "(redis.url or $REDIS_URL). Start it with `tradetree run`, or pass --address.")
    try:
        record = asyncio.run(_read_record(url, config.redis.namespace, config.redis.socket_timeout_secs))
    except TradetreeError as exc:
        raise ControlError("no running engine found: " + "; ".join(tried) + f"; its Redis could not be read "
                           f"({redact_url(url)}): {exc}") from None
    if record is None:
        raise ControlError("no running engine found: " + "; ".join(tried) + f"; no engine record in Redis "
                           f"{redact_url(url)} namespace {config.redis.namespace!r}. Is it running? "
                           "Or pass --address.")
    return record


def redis_url_for(config: Any) -> str | None:
    """The Redis a running engine of ``config`` uses: the config's (or ``$REDIS_URL``), else the
    embedded one its state dir records (None: neither; nothing is started to find out)."""
    return _redis_url(config, read_local_record(config.state_dir))


def _redis_url(config: Any, local: EngineRecord | None) -> str | None:
    return config.redis.url_here() or (local.embedded_redis_url if local is not None else None)


async def _read_record(url: str, namespace: str, timeout_secs: float) -> EngineRecord | None:
    store = await RedisStore.connect(url, namespace, socket_timeout_secs=timeout_secs)
    try:
        return await read_engine_record(store.client, namespace)
    finally:
        await store.close()


class Control:
    """Operator actions on the tree in Ray namespace ``namespace``."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._actors = ActorClient(namespace)

    # -- plumbing ----------------------------------------------------------------

    def _call(self, name: str, method: str, *args: Any, timeout_secs: float = _TIMEOUT_SECS, **kwargs: Any) -> Any:
        """``name.method(...)``; a project error the method raised comes through as is.

        Raises:
            ControlError: no such actor, it raised something else, or it did not answer.
        """
        try:
            return self._actors.call_sync(name, method, *args, timeout_secs=timeout_secs, **kwargs)
        except ActorNotFound:
            raise ControlError(f"no actor named {name!r} in namespace {self.namespace!r}") from None
        except CallFailed as exc:
            raise ControlError(f"{name}.{method} failed: {exc}") from None
        except BackendError as exc:
            raise ControlError(f"{name}.{method} did not answer: {type(exc).__name__}: {exc}") from None

    def _strategy_venue(self, strategy: str) -> str:
        status = tree_status(self.namespace, root_id=ROOT_ID)
        if strategy not in status or status[strategy].get("supervisor"):
            raise ControlError(f"unknown strategy {strategy!r}")
        stats = self._call(strategy, "stats")
        return stats.get("venue", "okx")

    def _failing_probes(self, names: list[str]) -> list[str]:
        failing = []
        for name in names:
            try:
                report = self._call(name, "check_health", timeout_secs=10)
            except ControlError as exc:
                failing.append(f"{name}: unreachable ({exc})")
                continue
            failing += [f"{name}: {p.name}: {p.detail}" for p in report.failing()]
        return failing

    # -- read --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The tree (state, restarts, failing probes per actor), strategy states, breakers, kill state."""
        out: dict[str, Any] = {"actors": tree_status(self.namespace, root_id=ROOT_ID)}
        try:
            out["breakers"] = self._call(RISK_MONITOR_ID, "breakers")
            out["kill"] = self._call(RISK_MONITOR_ID, "kill_progress")
            out["snapshot"] = self._call(RISK_MONITOR_ID, "snapshot")
        except ControlError as exc:
            out["risk_monitor_error"] = str(exc)
        return out

    def positions(self) -> list[dict[str, Any]]:
        """Positions in Redis, per strategy, venue and instrument (read through the RiskMonitor)."""
        return self._call(RISK_MONITOR_ID, "positions")

    def alerts(self, n: int = 50) -> list[dict[str, Any]]:
        """The most recent alerts, oldest first."""
        return [a if isinstance(a, dict) else a.model_dump(mode="json") for a in self._call(ALERTER_ID, "recent", n)]

    # -- act ---------------------------------------------------------------------

    def pause(self, strategy: str, reason: str = "operator") -> None:
        """Pause a strategy. It stays paused until ``resume`` (a supervisor release does not lift it)."""
        self._call(strategy, "pause", reason, "operator")

    def resume(self, strategy: str, why: str = "operator") -> str:
        """Resume a paused strategy once its venue's pipeline is healthy; return what was done.

        Never lifts a venue pause (that is ``release_venue``): a strategy on a
        paused venue is refused, naming the pause and the verb that lifts it.
        A strategy that already runs is left alone and says so.

        Raises:
            ProbesFailing: the strategy, its venue's gateway or reconciler, or
                the risk monitor has a failing probe (named in the message);
                a breaker for it is open; or its venue is paused.
            ControlError: it is KILLED or WINDING_DOWN (``clear_kill`` first).
        """
        venue = self._strategy_venue(strategy)
        snap = self._call(RISK_MONITOR_ID, "snapshot")  # one read for the state and the venue's pause
        state = str(snap.get("strategies", {}).get(strategy, "UNKNOWN"))
        if state == "RUNNING":
            self._audit("resume", strategy, why, "noop", "already RUNNING")
            return f"{strategy} already RUNNING: nothing done"
        failing = self._failing_probes([strategy, gateway_id(venue), reconciler_id(venue), RISK_MONITOR_ID])
        breakers = self._call(RISK_MONITOR_ID, "breakers")
        failing += [f"breaker {name}: {info.get('reason', '')} (tradetree reset-breaker {name})"
                    for name, info in breakers.items()
                    if name.startswith(f"strategy:{strategy}:") or name.startswith("global:")]
        pause = (snap.get("venues", {}).get(venue) or {}).get("venue_pause")
        if pause:
            failing.append(f"venue {venue} paused: {pause} (lift it with `tradetree release-venue {venue}`)")
        if failing:
            self._audit("resume", strategy, why, "refused", "; ".join(failing))
            raise ProbesFailing(f"resume {strategy} refused: " + "; ".join(failing), reasons=failing)
        if not self._call(strategy, "operator_resume"):
            self._audit("resume", strategy, why, "refused", f"state {state}")
            raise ControlError(f"{strategy} is {state}, not PAUSED: KILLED and WINDING_DOWN are not resumed "
                               "(after a kill: `tradetree clear-kill`, then resume)")
        self._audit("resume", strategy, why, "done", f"was {state}")
        return f"{strategy} resumed (was {state})"

    def release_venue(self, venue: str, why: str = "operator") -> list[str]:
        """Lift every pause of ``venue`` (fill-gap, drift, operator) once its gateway's and
        reconciler's probes pass; strategies stay as they are. Returns the pause sources lifted.

        Raises:
            ProbesFailing: a probe fails (named); nothing was lifted.
        """
        failing = self._failing_probes([gateway_id(venue), reconciler_id(venue)])
        if failing:
            self._audit("release-venue", venue, why, "refused", "; ".join(failing))
            raise ProbesFailing(f"release-venue {venue} refused: " + "; ".join(failing), reasons=failing)
        try:
            lifted = self._call(reconciler_id(venue), "release_venue")
        except TradetreeError as exc:
            reasons = exc.reasons if isinstance(exc, Refused) else (str(exc),)
            self._audit("release-venue", venue, why, "refused", "; ".join(reasons))
            raise ProbesFailing(f"release-venue {venue} refused: {exc}", reasons=reasons) from None
        self._audit("release-venue", venue, why, "done" if lifted else "noop",
                    f"lifted: {', '.join(lifted)}" if lifted else "it was not paused")
        return list(lifted)

    def clear_kill(self, why: str) -> dict[str, Any]:
        """Clear the kill flag once the wind-down is over and every probe passes; strategies the
        kill left KILLED become PAUSED (``resume`` each). Returns what was done.

        Raises:
            ProbesFailing: a probe of the risk monitor or a venue's gateway or reconciler
                fails, or a kill is still RUNNING or STALLED (named); nothing changed.
        """
        failing = self._failing_probes([RISK_MONITOR_ID, *self._venue_actors()])
        if failing:
            self._audit("clear-kill", "global", why, "refused", "; ".join(failing))
            raise ProbesFailing("clear-kill refused: " + "; ".join(failing), reasons=failing)
        try:
            return self._call(RISK_MONITOR_ID, "clear_kill", self.who, why)
        except Refused as exc:  # the risk monitor audited it
            raise ProbesFailing(str(exc), reasons=exc.reasons) from None

    def reset_breaker(self, name: str, why: str) -> bool:
        """Close breaker ``name`` once the risk monitor's probes pass (strategies it paused stay
        PAUSED: ``resume`` them). True if it was open.

        Raises:
            ProbesFailing: a risk monitor probe fails; nothing changed.
        """
        failing = self._failing_probes([RISK_MONITOR_ID])
        if failing:
            self._audit("reset-breaker", name, why, "refused", "; ".join(failing))
            raise ProbesFailing(f"reset-breaker {name} refused: " + "; ".join(failing), reasons=failing)
        return bool(self._call(RISK_MONITOR_ID, "reset_breaker", name, self.who, why))

    def operator_log(self, n: int = 50) -> list[dict[str, Any]]:
        """The latest operator actions, oldest first: ts_ms, action, target, who, why, outcome, detail."""
        return self._call(RISK_MONITOR_ID, "operator_actions", n)

    @property
    def who(self) -> str:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return f"{user}@{socket.gethostname()}"

    def _audit(self, action: str, target: str, why: str, outcome: str, detail: str = "") -> None:
        try:
            self._call(RISK_MONITOR_ID, "record_operator_action", action, target, self.who, why, outcome, detail)
        except TradetreeError as exc:  # say so: an unaudited action must not look audited
            log.error("operator action %s %s (%s) not audited: %s", action, target, outcome, exc)

    def _venue_actors(self) -> list[str]:
        status = tree_status(self.namespace, root_id=ROOT_ID)
        return sorted(a for a in status if a.startswith(("VenueGateway[", "FillReconciler[")))

    def kill(self, reason: str, strategy: str | None = None, wait: bool = False) -> dict[str, Any]:
        """Kill everything (or one strategy): flag first, cancel, wind down. Returns the progress record."""
        return self._call(RISK_MONITOR_ID, "kill", reason, strategy, wait,
                          timeout_secs=_TIMEOUT_SECS if not wait else 900)

    def kill_progress(self, strategy: str | None = None) -> dict[str, Any] | None:
        return self._call(RISK_MONITOR_ID, "kill_progress", strategy)

    def reconcile(self, venue: str) -> dict[str, Any]:
        """Run one full reconciliation of ``venue`` now and return what it changed."""
        report = self._call(reconciler_id(venue), "reconcile_now", timeout_secs=60)
        return report.model_dump(mode="json") if hasattr(report, "model_dump") else report

    def restart(self, child: str, ready_timeout_secs: float = 15.0) -> None:
        """Restart one actor of the tree through its supervisor; return once it is green.

        The supervisor puts the fresh child back to work once its liveness
        probes pass; what depends on it is released only once every probe
        passes. This waits for both, so a restart that returns means the
        child is fully back.

        Raises:
            ProbesFailing: the fresh child did not pass its start gate (its
                supervisor keeps restarting it by policy), or it runs but a
                probe still fails after ``ready_timeout_secs`` (what depends on
                it stays held); the message names the probes.
            ControlError: no such child, or its supervisor did not answer.
        """
        status = tree_status(self.namespace, root_id=ROOT_ID)
        if child not in status or status[child].get("parent") is None:
            raise ControlError(f"unknown child {child!r} (the root cannot be restarted from here)")
        info = status[child]
        # A nested supervisor's start bound is the sum of its children's: no fixed cap fits every child.
        bound = info["shutdown_timeout_secs"] + info["startup_timeout_secs"] + _RESTART_MARGIN_SECS
        try:
            self._call(info["parent"], "restart_child", child, timeout_secs=bound)
        except ControlError:
            raise
        except TradetreeError as exc:
            reasons = exc.reasons if isinstance(exc, Refused) else (str(exc),)
            raise ProbesFailing(f"restart {child} refused: {exc}", reasons=reasons) from None
        deadline = time.monotonic() + ready_timeout_secs
        while failing := self._failing_probes([child]):
            if time.monotonic() >= deadline:
                raise ProbesFailing(f"restart {child}: restarted, but not green after {ready_timeout_secs:g}s: "
                                    + "; ".join(failing), reasons=failing)
            time.sleep(_READY_POLL_SECS)

    @property
    def root(self) -> str:
        return ROOT_ID

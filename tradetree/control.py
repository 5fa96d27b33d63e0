"""The Python control API: what an operator (or the CLI) does to a running tree.

    from tradetree.control import connect
    ctl = connect(namespace="tradetree")      # address=None: the local Ray cluster
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
    ProbesFailing,
    Refused,
    TradetreeError,
    gateway_id,
    reconciler_id,
)
from tradetree.supervisor import ActorClient, tree_status

__all__ = ["ControlError", "ProbesFailing", "Control", "connect"]

_TIMEOUT_SECS = 30.0
_READY_POLL_SECS = 0.25
# restart_child's wait beyond the child's own stop and start bounds (the kill after a stop, the calls)
_RESTART_MARGIN_SECS = 30.0


def connect(address: str | None = None, namespace: str = "tradetree") -> Control:
    """Attach to the cluster running the tree (``namespace`` = the engine config's ``name``).

    ``address=None`` attaches to a local cluster started by ``tradetree run``
    ("auto"); give ``ray://host:10001`` or ``host:6379`` for a remote one.
    """
    if not ray.is_initialized():
        ray.init(address=address or "auto", namespace=namespace, log_to_driver=False, configure_logging=False)
    return Control(namespace)


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

    def resume(self, strategy: str) -> None:
        """Resume a paused strategy once its venue's pipeline is healthy.

        Raises:
            ProbesFailing: the strategy, its venue's gateway or reconciler, or
                the risk monitor has a failing probe (named in the message);
                or a breaker for it is open.
        """
        venue = self._strategy_venue(strategy)
        failing = self._failing_probes([strategy, gateway_id(venue), reconciler_id(venue), RISK_MONITOR_ID])
        breakers = self._call(RISK_MONITOR_ID, "breakers")
        failing += [f"breaker {name}: {info.get('reason', '')}" for name, info in breakers.items()
                    if name.startswith(f"strategy:{strategy}:") or name.startswith("global:")]
        if failing:
            raise ProbesFailing(f"resume {strategy} refused: " + "; ".join(failing), reasons=failing)
        self._call(reconciler_id(venue), "release_venue")
        if not self._call(strategy, "operator_resume"):
            raise ControlError(f"{strategy} was not paused (KILLED and WINDING_DOWN are not resumed)")

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

"""The supervision ids (and Ray actor names) of the tree's members.

One place for them, because the tree wiring names the actors, and the kill
switch, the metrics exporter, the control API and the CLI find them again by
the same names (``ray.get_actor``).
"""

from __future__ import annotations

__all__ = [
    "ROOT_ID",
    "STRATEGY_SUPERVISOR_ID",
    "ALERTER_ID",
    "RISK_MONITOR_ID",
    "METRICS_EXPORTER_ID",
    "gateway_id",
    "venue_supervisor_id",
    "reconciler_id",
    "model_server_id",
    "SERVICE_SUPERVISOR_ID",
    "supervisor_heartbeat_key",
    "ROOT_HEARTBEAT_KEY",
    "ROOT_HEARTBEAT_STALE_SECS",
]

ROOT_ID = "RootSupervisor"
STRATEGY_SUPERVISOR_ID = "StrategySupervisor"
ALERTER_ID = "Alerter"
RISK_MONITOR_ID = "RiskMonitor"
METRICS_EXPORTER_ID = "MetricsExporter"
# Children that never trade (alerter, metrics exporter) live under their own supervisor, so their
# crashes cannot count toward the restart intensity that puts trading into SAFE MODE.
SERVICE_SUPERVISOR_ID = "ServiceSupervisor"


def supervisor_heartbeat_key(supervisor_id: str) -> str:
    """The field of the heartbeats hash a running supervisor refreshes every monitor pass."""
    return f"supervisor:{supervisor_id}"


# While the root's heartbeat is older than this, the tree is unsupervised: every child fails closed
# (no new risk) until a root runs again. Ray re-creates a root lost with its node in well under it.
ROOT_HEARTBEAT_KEY = supervisor_heartbeat_key(ROOT_ID)
ROOT_HEARTBEAT_STALE_SECS = 10.0


def gateway_id(venue: str) -> str:
    return f"VenueGateway[{venue}]"


def venue_supervisor_id(venue: str) -> str:
    return f"VenueSupervisor[{venue}]"


def reconciler_id(venue: str) -> str:
    return f"FillReconciler[{venue}]"


def model_server_id(name: str) -> str:
    """The supervision id (and Ray actor name) of the tree's server of model ``name``."""
    return f"ModelServer[{name}]"

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
]

ROOT_ID = "RootSupervisor"
STRATEGY_SUPERVISOR_ID = "StrategySupervisor"
ALERTER_ID = "Alerter"
RISK_MONITOR_ID = "RiskMonitor"
METRICS_EXPORTER_ID = "MetricsExporter"


def gateway_id(venue: str) -> str:
    return f"VenueGateway[{venue}]"


def venue_supervisor_id(venue: str) -> str:
    return f"VenueSupervisor[{venue}]"


def reconciler_id(venue: str) -> str:
    return f"FillReconciler[{venue}]"


def model_server_id(name: str) -> str:
    """The supervision id (and Ray actor name) of the tree's server of model ``name``."""
    return f"ModelServer[{name}]"

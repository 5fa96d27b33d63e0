"""Observability that never trades: the Prometheus collector and the observers' configuration.

Pure: the collector turns a status snapshot into metric families and does no
I/O; the actors that gather snapshots and send alerts live in ``actors``.
"""

# The folder sits at the repository root but installs as tradetree.telemetry; loading it
# under a second name would give every class and module-level state two copies.
if __name__ != "tradetree.telemetry":
    raise ImportError(f"import tradetree.telemetry, not {__name__}")

from tradetree.telemetry.alerts import (
    AlertPolicyState,
    AlertSource,
    AlertVerdict,
    Severity,
    SlackMessage,
    SlackTarget,
    classify_alert,
    decide,
    format_message,
    operator_action,
    redact,
    resolve_slack_target,
    slack_message,
)
from tradetree.telemetry.config import AlerterConfig, MetricsConfig
from tradetree.telemetry.gather import (
    REDIS,
    TREE,
    actor_ids,
    assemble_snapshot,
    exporter_probes,
    metrics_url,
    venue_marks_view,
)
from tradetree.telemetry.metrics import MODEL_SERVER_STATE_LABELS, TreeCollector, build_registry

__all__ = ["AlerterConfig", "MetricsConfig", "TreeCollector", "build_registry", "MODEL_SERVER_STATE_LABELS",
    "AlertPolicyState",
    "AlertSource",
    "AlertVerdict",
    "REDIS",
    "Severity",
    "SlackMessage",
    "SlackTarget",
    "TREE",
    "actor_ids",
    "assemble_snapshot",
    "classify_alert",
    "decide",
    "exporter_probes",
    "format_message",
    "metrics_url",
    "operator_action",
    "redact",
    "resolve_slack_target",
    "slack_message",
    "venue_marks_view",
]

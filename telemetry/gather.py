"""What the metrics exporter decides about a snapshot, apart from reading its parts.

``actors.metrics_exporter`` reads the tree, each actor's ``stats()`` and a
Redis view, each part bounded and isolated; these functions say which actors
to read and put what was read into the snapshot ``telemetry.metrics`` renders:

- ``actor_ids``: every actor named in the components map, in a stable order;
- ``assemble_snapshot``: a part that could not be read (None) is left out and
  its component marked down, the others are kept;
- ``venue_marks_view``: one venue's recorded marks, as the snapshot shows them;
- ``metrics_url`` / ``exporter_probes``: where the endpoint is, and the
  exporter's health verdict (``refresh`` liveness, ``http`` readiness only:
  metrics must never stop the engine from trading).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tradetree.core import Mark, ProbeResult

__all__ = ["REDIS", "TREE", "actor_ids", "assemble_snapshot", "exporter_probes", "metrics_url", "venue_marks_view"]

TREE, REDIS = "tree", "redis"


def actor_ids(components: Mapping[str, Any]) -> list[str]:
    """Every actor id named in a components map, in a stable order: gateways, reconcilers,
    strategies, the risk monitor and the alerter, model servers."""
    ids = [*(components.get("gateways") or {}).values(), *(components.get("reconcilers") or {}).values(),
           *(components.get("strategies") or {})]
    ids += [components[k] for k in ("risk_monitor", "alerter") if components.get(k)]
    ids += list((components.get("model_servers") or {}).values())
    return ids


def assemble_snapshot(*, ts_ms: int, gather_secs: float, components: Mapping[str, Any],
                      values: Mapping[str, Any], scrape_errors: Mapping[str, int]) -> dict[str, Any]:
    """The snapshot from the parts read: ``values`` maps ``TREE``, ``REDIS`` and each of
    ``actor_ids(components)`` to what was read, None for a part that failed or timed out."""
    ids = actor_ids(components)
    return {
        "ts_ms": ts_ms,
        "gather_secs": gather_secs,
        "components": components,
        "tree": values.get(TREE),
        "redis": values.get(REDIS),
        "stats": {actor_id: values[actor_id] for actor_id in ids if values.get(actor_id) is not None},
        "up": {name: value is not None for name, value in values.items()},
        "scrape_errors": dict(scrape_errors),
    }


def venue_marks_view(marks: Mapping[tuple[str, str], Mark], venue: str) -> dict[str, dict[str, Any]]:
    """``venue``'s marks as ``inst_id -> {"price": text, "recv_ms": int}``."""
    return {inst: {"price": str(m.price), "recv_ms": m.recv_ms} for (v, inst), m in marks.items() if v == venue}


def metrics_url(address: tuple[str, int] | None) -> str | None:
    """The ``/metrics`` URL of a bound ``(host, port)`` (an IPv6 host bracketed), None when not bound."""
    if address is None:
        return None
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    return f"http://{host}:{address[1]}/metrics"


def exporter_probes(*, loop_running: bool, snapshot_ts_ms: int | None, url: str | None,
                    bind_error: str) -> tuple[ProbeResult, ProbeResult]:
    """``refresh`` (liveness: the refresh loop runs) and ``http`` (readiness: the endpoint is bound,
    else ``bind_error`` or "not started")."""
    detail = "no snapshot yet" if snapshot_ts_ms is None else f"last snapshot at {snapshot_ts_ms} ms"
    refresh = ProbeResult(name="refresh", ok=loop_running, detail=detail if loop_running else "refresh loop not running")
    http = ProbeResult(name="http", ok=url is not None, liveness=False,
                       detail=f"serving {url}" if url else (bind_error or "not started"))
    return refresh, http

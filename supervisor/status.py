"""A running tree's status, read by walking its supervisors through Ray."""

from __future__ import annotations

from typing import Any

from tradetree.core import TradetreeError
from tradetree.supervisor.actor_client import ActorClient

__all__ = ["tree_status"]


def tree_status(ray_namespace: str, *, root_id: str, timeout_secs: float = 5.0) -> dict[str, dict[str, Any]]:
    """Every actor of the tree, flattened: ``{id: {state, restarts, supervisor, parent, detail}}``.

    A child (every actor but the root) also has its ``startup_timeout_secs`` and
    ``shutdown_timeout_secs`` from its spec.

    Walks from the root through the nested supervisors. A supervisor that
    cannot be reached shows as UNREACHABLE (its children are then unknown).
    """
    out: dict[str, dict[str, Any]] = {}
    actors = ActorClient(ray_namespace, timeout_secs=timeout_secs)

    def visit(sup_id: str, parent: str | None) -> None:
        try:
            status = actors.call_sync(sup_id, "status")
        except TradetreeError as exc:
            out[sup_id] = {"state": "UNREACHABLE", "restarts": 0, "supervisor": True, "parent": parent,
                           "detail": f"{type(exc).__name__}: {exc}"[:200]}
            return
        out.setdefault(sup_id, {"restarts": 0, "parent": parent})
        out[sup_id].update(state=status["state"], supervisor=True, node_id=status.get("node_id"),
                           detail=status.get("escalation_reason") or status.get("heartbeat_error") or "")
        for child_id, info in status["children"].items():
            failing = "; ".join(f"{p['name']}: {p['detail']}" for p in info["failing_probes"])
            out[child_id] = {
                "state": info["state"], "restarts": info["restarts"], "supervisor": info["supervisor"],
                "parent": sup_id, "detail": failing or info.get("last_probe_error") or "",
                "startup_timeout_secs": info["startup_timeout_secs"],
                "shutdown_timeout_secs": info["shutdown_timeout_secs"],
                "node_id": info.get("node_id"),
            }
            if info["supervisor"]:
                visit(child_id, sup_id)

    visit(root_id, None)
    return out

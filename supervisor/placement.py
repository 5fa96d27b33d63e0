"""Where a child runs: the declared placement and the pure choice of a node.

Ray alone places every ``num_cpus=0`` actor wherever it likes: a venue's
gateway and its reconciler (the two independent fill paths) can share a node
and die together, and a restart after a node loss can land back on the dying
node, which Ray still lists alive until its health checks run out. So the
supervisor chooses the node itself (``choose_node``, no I/O) and pins the
actor to it; Ray still enforces the resources.

Rules, in order:

- Only alive nodes that carry every ``node_labels`` pair and have at least the
  requested ``resources`` (totals) are candidates.
- A node without CPUs (a head started with ``--num-cpus=0``, as KubeRay and
  the cluster launcher advise) is only a candidate when no node has CPUs:
  that is the operator saying "no work here".
- Nodes the supervisor suspects (its own reachability check failed after a
  child there died) are never chosen. If nothing else fits, ``NoNodeFits`` is
  raised and the bring-up fails: the restart policy retries after its backoff,
  by which time Ray has declared the node dead or it answers again.
- Among candidates: fewest ``spread_from`` siblings on the node (soft
  anti-affinity), then not a node of the supervisor or its ancestors, then fewest of the
  supervisor's children, then the node id (deterministic: two starts of one
  config on one cluster give one layout).
- With a single alive node and no constraint, nothing is pinned (``None``):
  local mode keeps Ray's own placement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from tradetree.core import SupervisorError

__all__ = ["Placement", "NodeView", "NoNodeFits", "choose_node"]


class NoNodeFits(SupervisorError):
    """No alive, unsuspected node satisfies a child's placement."""


class Placement(BaseModel):
    """A child's declared placement (all optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Ray resources the actor needs (custom ones included, e.g. {"venue_okx": 1}).
    resources: dict[str, float] = Field(default_factory=dict)
    # Hard: only nodes whose Ray labels carry every pair (``ray start --labels``).
    node_labels: dict[str, str] = Field(default_factory=dict)
    # Soft anti-affinity: prefer a node that holds none of these sibling ids.
    spread_from: tuple[str, ...] = ()

    @property
    def constrained(self) -> bool:
        return bool(self.resources or self.node_labels)


@dataclass(frozen=True)
class NodeView:
    """What placement needs to know of one Ray node."""

    node_id: str
    alive: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    resources: Mapping[str, float] = field(default_factory=dict)


def _fits(node: NodeView, placement: Placement) -> bool:
    if any(node.labels.get(k) != v for k, v in placement.node_labels.items()):
        return False
    return all(node.resources.get(k, 0.0) >= v for k, v in placement.resources.items())


def choose_node(
    placement: Placement,
    nodes: Iterable[NodeView],
    *,
    occupied: Mapping[str, str | None],
    suspect: Iterable[str] = (),
    own_node: str | None = None,
    ancestor_nodes: Iterable[str] = (),
) -> str | None:
    """The node id to pin a child to, or None to let Ray place it.

    Args:
        occupied: sibling id -> the node it runs on (None: unknown or down).
        suspect: node ids never to choose.
        own_node: the supervisor's node (children prefer other nodes).
        ancestor_nodes: the nodes of the supervisors above it (avoided like its own: a node loss
            should never take a supervisor and the children it would have to restart).

    Raises:
        NoNodeFits: no alive, unsuspected node satisfies the placement.
    """
    alive = [n for n in nodes if n.alive]
    suspects = set(suspect)
    if len(alive) <= 1 and not placement.constrained and not suspects:
        return None
    candidates = [n for n in alive if n.node_id not in suspects and _fits(n, placement)]
    if any(n.resources.get("CPU", 0.0) > 0 for n in candidates):
        candidates = [n for n in candidates if n.resources.get("CPU", 0.0) > 0]
    if not candidates:
        raise NoNodeFits(
            f"no node fits (labels {placement.node_labels or '-'}, resources {placement.resources or '-'}; "
            f"{len(alive)} alive, {len(suspects)} suspected unreachable)"
        )
    spread = set(placement.spread_from)
    supervisors = {own_node, *ancestor_nodes} - {None}

    def score(node: NodeView) -> tuple[int, int, int, str]:
        on_node = [cid for cid, nid in occupied.items() if nid == node.node_id]
        return (sum(1 for cid in on_node if cid in spread), int(node.node_id in supervisors), len(on_node),
                node.node_id)

    return min(candidates, key=score).node_id

"""Before a tree starts on a cluster: can every node read the secrets the tree's actors read there?

The actors read their secrets in their own process (``core.secrets``), on whatever node Ray
places them, and after a node loss that can be any node. So every alive node is asked, by a
zero-CPU task pinned to it, whether the sources the config names resolve there; the answer is
which sources failed, never a value. A gap is refused before any actor exists: a gateway that
cannot log in, a reconciler that cannot poll or an Alerter that is silently log-only (the webhook
was in the operator's shell, not on the node: measured) must not be found after the fact.
"""

from __future__ import annotations

from dataclasses import dataclass

from tradetree.config import EngineConfig
from tradetree.core import ConfigError, StoreUnavailable, redis_password_sources, resolve_redis_locator
from tradetree.telemetry import resolve_slack_target

__all__ = ["NodeSecrets", "check_here", "check_node_secrets", "judge"]


@dataclass(frozen=True)
class NodeSecrets:
    """What one node can read: ``problems`` by source (empty: all there), and whether Slack resolves."""

    node: str
    problems: dict[str, str]
    slack: bool


def _without_redis_url(config: EngineConfig) -> EngineConfig:
    # The config goes to a task as an argument: an inline redis.url password must not go with it.
    return config.model_copy(update={"redis": config.redis.model_copy(update={"url": None})})


def check_here(config: EngineConfig, actor_redis_url: str) -> tuple[dict[str, str], bool]:
    """In this process: the secret sources the tree's actors would read that fail here, and whether
    a Slack destination resolves. Messages name sources, never values."""
    problems: dict[str, str] = {}
    if redis_password_sources(actor_redis_url).get("password_required") == "1":
        try:
            resolve_redis_locator(actor_redis_url)
        except StoreUnavailable as exc:
            problems["redis password"] = str(exc)
    for venue in config.venues:
        if venue.uses_embedded_simulator:
            continue
        try:
            venue.resolve_credentials()
        except ConfigError as exc:
            problems[f"venue {venue.name} credentials"] = str(exc)
    slack = False
    try:
        slack = resolve_slack_target(config.alerts) is not None
    except ConfigError as exc:
        problems["slack"] = str(exc)
    return problems, slack


def judge(nodes: list[NodeSecrets], *, slack_here: bool) -> list[str]:
    """Refuse a cluster where a node lacks a secret; the warnings to print otherwise (pure).

    ``slack_here``: this shell resolves a Slack destination, so the operator expects Slack alerts.

    Raises:
        ConfigError: a node cannot read a source, or Slack is set here but not on every node.
    """
    gaps = [f"{n.node}: {what}: {why}" for n in nodes for what, why in sorted(n.problems.items())]
    if gaps:
        raise ConfigError("the tree's actors read their secrets on the node Ray places them on, and these nodes "
                          "cannot:\n  " + "\n  ".join(gaps) + "\nSet them on every node (deploy/kuberay mounts "
                          "them from Kubernetes Secrets); nothing was started.")
    silent = [n.node for n in nodes if not n.slack]
    if slack_here and silent:
        raise ConfigError("Slack is set in this shell but not on node(s) " + ", ".join(silent) + ": an Alerter "
                          "placed there would be log-only. Set alerts.slack_webhook_url_file (or its env var) "
                          "on every node; nothing was started.")
    if len(silent) == len(nodes):
        return ["no Slack destination on the cluster's nodes: alerts are log-only (Alerter logs, "
                "`tradetree status`)"]
    return []


def check_node_secrets(config: EngineConfig, actor_redis_url: str, *, timeout_secs: float) -> list[str]:
    """Ask every alive node of the connected cluster (see ``judge``); the warnings to print.

    Raises:
        ConfigError: a gap (``judge``), or a node that did not answer within ``timeout_secs``.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(check_here)
    config = _without_redis_url(config)
    refs = {f"node {n['NodeManagerAddress']} {n['NodeID'][:8]}": task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                    config, actor_redis_url)
            for n in ray.nodes() if n["Alive"]}
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_secs)
    done = set(ready)
    nodes = []
    for node, ref in refs.items():
        if ref not in done:
            raise ConfigError(f"{node} did not say within {timeout_secs:.0f}s whether it holds the tree's "
                              "secrets; nothing was started")
        try:
            problems, slack = ray.get(ref)
        except ray.exceptions.RayError as exc:
            raise ConfigError(f"{node}: checking its secrets failed: {exc.__class__.__name__}") from None
        nodes.append(NodeSecrets(node, problems, slack))
    try:
        slack_here = resolve_slack_target(config.alerts) is not None
    except ConfigError:
        slack_here = False
    return judge(nodes, slack_here=slack_here)

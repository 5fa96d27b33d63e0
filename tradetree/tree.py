"""The engine's supervision tree, built as plain data from an ``EngineConfig``.

    RootSupervisor                      one_for_one; escalation => SAFE MODE; re-created by Ray if lost
    ├── ServiceSupervisor               one_for_one, never escalates: its children never trade
    │   ├── Alerter                     Slack + log, de-duplicated, rate-limited
    │   └── MetricsExporter             /metrics for Prometheus (when ``metrics.enabled``)
    ├── VenueSupervisor[<venue>]        one_for_one: gateway and reconciler live and die apart
    │   ├── VenueGateway[<venue>]       REST (ccxt) + WS (websockets); fills tagged ws
    │   └── FillReconciler[<venue>]     its own REST client: polling, fill health, drift
    ├── RiskMonitor                     breakers from Redis; hosts the kill switch
    ├── ModelServer[<model>] ...        one per ``models:`` entry; started (probes green) before strategies
    └── StrategySupervisor              one_for_one
        └── <strategy id> ...           start paused; released when their venue's probes (and those
                                        of every ModelServer they forecast with) are green

``build_root_spec`` has no side effects; ``start_root`` launches it on Ray.
Actor names are the spec ids, all in one Ray namespace, so the dashboard and
the control API find them by name (``supervisor.ActorClient``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from typing import Any

from tradetree.config import EngineConfig, resolve_served_models, served_model_refs
from tradetree.core import (
    ALERTER_ID,
    METRICS_EXPORTER_ID,
    RISK_MONITOR_ID,
    ROOT_ID,
    SERVICE_SUPERVISOR_ID,
    STRATEGY_SUPERVISOR_ID,
    StrategyState,
    TradetreeError,
    gateway_id,
    model_server_id,
    reconciler_id,
    venue_supervisor_id,
)
from tradetree.supervisor import ActorClient, BackoffSpec, ChildSpec, Placement, RestartType, SupervisorSpec

__all__ = [
    "ROOT_ID",
    "STRATEGY_SUPERVISOR_ID",
    "gateway_id",
    "venue_supervisor_id",
    "reconciler_id",
    "ALERTER_ID",
    "RISK_MONITOR_ID",
    "METRICS_EXPORTER_ID",
    "model_server_id",
    "build_root_spec",
    "start_root",
    "enter_safe_mode",
    "wind_down_for_shutdown",
]

log = logging.getLogger(__name__)

def _venue_subtree(config: EngineConfig, venue_name: str, endpoint: Any, *, redis_url: str,
                   ray_namespace: str) -> SupervisorSpec:
    venue = config.venue(venue_name)
    ns = config.redis.namespace
    gateway = ChildSpec(
        id=gateway_id(venue_name),
        actor_class="tradetree.actors.gateway:VenueGatewayActor",
        args=(venue,),
        kwargs={
            "rest_url": endpoint.rest_url,
            "ws_url": endpoint.ws_url,
            "credentials": endpoint.credentials,
            "redis_url": redis_url,
            "namespace": ns,
            "heartbeat_interval_secs": config.heartbeat_interval_secs,
            "dead_man_switch_secs": config.dead_man_switch_secs,
            # Re-armed well within the timeout, so one slow call does not let it fire.
            "dead_man_rearm_secs": config.dead_man_switch_secs / 4,
            "ray_namespace": ray_namespace,
            "subscribers": {s.id: list(s.symbols) for s in config.strategies if s.venue == venue_name},
        },
        restart=RestartType.PERMANENT,
        backoff=BackoffSpec(min_secs=0.5, max_secs=30.0, jitter=0.2),
        heartbeat_key=f"gateway:{venue_name}",
        heartbeat_stale_secs=max(10.0, 10 * config.heartbeat_interval_secs),
        startup_timeout_secs=config.supervision.venue_startup_timeout_secs,
    )
    reconciler = ChildSpec(
        id=reconciler_id(venue_name),
        actor_class="tradetree.actors.reconciler:FillReconcilerActor",
        args=(venue,),
        kwargs={
            "rest_url": endpoint.rest_url,
            "credentials": endpoint.credentials,
            "redis_url": redis_url,
            "namespace": ns,
            "config": config.reconciler,
            "alerter_name": ALERTER_ID,
            "ray_namespace": ray_namespace,
        },
        restart=RestartType.PERMANENT,
        backoff=BackoffSpec(min_secs=0.5, max_secs=30.0, jitter=0.2),
        heartbeat_key=f"reconciler:{venue_name}",
        # The two fill paths of a venue must not die with one node: apart whenever the cluster allows.
        placement=Placement(spread_from=(gateway_id(venue_name),)),
        heartbeat_stale_secs=max(10.0, 5 * config.reconciler.poll_interval_secs),
        startup_timeout_secs=config.supervision.venue_startup_timeout_secs,
    )
    return SupervisorSpec(
        id=venue_supervisor_id(venue_name),
        intensity=config.supervision.venue_intensity,
        period_secs=config.supervision.venue_period_secs,
        children=(gateway, reconciler),
        startup_timeout_secs=sequential_startup_secs((gateway, reconciler)),
    )


def sequential_startup_secs(children: tuple[Any, ...]) -> float:
    """The start bound of a supervisor whose ``children`` start one after the other: the sum of theirs,
    and never less than a supervisor's default bound.

    The fixed default below that sum failed a healthy tree on a busy machine (every child within its
    own bound, the whole later than the parent's); each child's own bound still catches a hung one.
    """
    default = SupervisorSpec.model_fields["startup_timeout_secs"].default
    return max(float(default), float(sum(c.startup_timeout_secs for c in children)))


def _model_server_child(model) -> ChildSpec:
    # Its start gate is its probes (serving, model file integrity, canary): the supervisor waits for
    # them before starting the next child, so strategies find it serving.
    return ChildSpec(
        id=model_server_id(model.name),
        actor_class="tradetree.actors.model_server:ModelServerActor",
        args=(str(model.registry_root), model.name, model.version),
        kwargs={"require_approved": model.require_approved},
        restart=RestartType.PERMANENT,
        backoff=BackoffSpec(min_secs=1.0, max_secs=60.0, jitter=0.2),
        probe_timeout_secs=10.0,  # the canary is a model prediction: allow a slow one under load
        startup_timeout_secs=60.0,
    )


def _strategy_child(config: EngineConfig, strategy, *, redis_url: str, ray_namespace: str) -> ChildSpec:
    # A strategy forecasting with a served model gets that server's actor in its params, and waits
    # for the server's probes too.
    models = tuple(model_server_id(name) for _, name in served_model_refs(strategy))
    return ChildSpec(
        id=strategy.id,
        actor_class="tradetree.actors.strategy_host:StrategyActor",
        args=(resolve_served_models(strategy, ray_namespace=ray_namespace),),
        kwargs={
            "gateway_name": gateway_id(strategy.venue),
            "redis_url": redis_url,
            "namespace": config.redis.namespace,
            "ray_namespace": ray_namespace,
            "bar_interval_ms": strategy.bar_interval_ms,
            "start_paused": True,
            "risk": config.risk,
            # The host's wait for a submission is derived from it (actors.strategy_host.order_call_timeout_secs).
            "venue_http_timeout_secs": config.venue(strategy.venue).http_timeout_secs,
        },
        restart=RestartType.PERMANENT,
        start_paused=True,
        # The whole fill pipeline of the venue must be green, not just the gateway.
        release_after=(gateway_id(strategy.venue), reconciler_id(strategy.venue), RISK_MONITOR_ID,
                       *dict.fromkeys(models)),
        startup_timeout_secs=config.supervision.child_startup_timeout_secs,
    )


def _metrics_child(config: EngineConfig, *, redis_url: str, ray_namespace: str) -> ChildSpec:
    # It starts right after the alerter, so it can show the rest of the tree coming up. Its start
    # needs nothing else and never fails on a busy port: metrics must not stop the engine.
    instruments: dict[str, list[str]] = {}
    for v in config.venues:
        symbols = [sym for s in config.strategies if s.venue == v.name for sym in s.symbols]
        instruments[v.name] = sorted(set(v.instruments) | set(symbols))
    return ChildSpec(
        id=METRICS_EXPORTER_ID,
        actor_class="tradetree.actors.metrics_exporter:MetricsExporterActor",
        args=(config.metrics,),
        kwargs={
            "redis_url": redis_url,
            "namespace": config.redis.namespace,
            "ray_namespace": ray_namespace,
            "components": {
                "gateways": {v.name: gateway_id(v.name) for v in config.venues},
                "reconcilers": {v.name: reconciler_id(v.name) for v in config.venues},
                "strategies": {s.id: s.venue for s in config.strategies},
                "risk_monitor": RISK_MONITOR_ID,
                "alerter": ALERTER_ID,
                "model_servers": {m.name: model_server_id(m.name) for m in config.models},
            },
            "instruments": instruments,
            "risk": config.risk,
            "root_id": ROOT_ID,
        },
        restart=RestartType.PERMANENT,
        backoff=BackoffSpec(min_secs=1.0, max_secs=60.0, jitter=0.2),
        startup_timeout_secs=config.supervision.child_startup_timeout_secs,
    )


def build_root_spec(config: EngineConfig, *, redis_url: str, endpoints: Mapping[str, Any],
                    ray_namespace: str) -> SupervisorSpec:
    """The whole tree for ``config``. ``endpoints[venue]`` gives rest_url, ws_url, credentials."""
    venues = tuple(
        _venue_subtree(config, v.name, endpoints[v.name], redis_url=redis_url, ray_namespace=ray_namespace)
        for v in config.venues
    )
    alerter = ChildSpec(
        id=ALERTER_ID,
        actor_class="tradetree.actors.alerter:AlerterActor",
        args=(config.alerts,),
        kwargs={"engine_name": config.name},  # on every Slack message: engines sharing a channel stay apart
        restart=RestartType.PERMANENT,
        startup_timeout_secs=config.supervision.child_startup_timeout_secs,
    )
    risk_monitor = ChildSpec(
        id=RISK_MONITOR_ID,
        actor_class="tradetree.actors.risk_monitor:RiskMonitorActor",
        args=(config.risk,),
        kwargs={
            "redis_url": redis_url,
            "namespace": config.redis.namespace,
            "ray_namespace": ray_namespace,
            "alerter_name": ALERTER_ID,
            "kill_switch": config.kill_switch,
            "gateways": {v.name: gateway_id(v.name) for v in config.venues},
        },
        restart=RestartType.PERMANENT,
        startup_timeout_secs=config.supervision.child_startup_timeout_secs,
    )
    metrics: tuple[ChildSpec, ...] = ()
    if config.metrics.enabled:
        metrics = (_metrics_child(config, redis_url=redis_url, ray_namespace=ray_namespace),)
    service_children = (alerter, *metrics)
    # Crashes of children that never trade are theirs alone: this supervisor restarts them forever
    # (alerting on a crash loop) and never escalates, so they cannot count toward the root's
    # intensity and put trading into SAFE MODE.
    services = SupervisorSpec(
        id=SERVICE_SUPERVISOR_ID,
        intensity=config.supervision.service_intensity,
        period_secs=config.supervision.service_period_secs,
        escalate=False,
        children=service_children,
        startup_timeout_secs=sequential_startup_secs(service_children),
    )
    model_servers = tuple(_model_server_child(m) for m in config.models)
    children: tuple[Any, ...] = (services, *venues, risk_monitor, *model_servers)
    if config.strategies:
        hosts = tuple(_strategy_child(config, s, redis_url=redis_url, ray_namespace=ray_namespace)
                      for s in config.strategies)
        strategies = SupervisorSpec(
            id=STRATEGY_SUPERVISOR_ID,
            intensity=config.supervision.strategy_intensity,
            period_secs=config.supervision.strategy_period_secs,
            children=hosts,
            startup_timeout_secs=sequential_startup_secs(hosts),
        )
        children = children + (strategies,)
    return SupervisorSpec(
        id=ROOT_ID,
        intensity=config.supervision.root_intensity,
        period_secs=config.supervision.root_period_secs,
        children=children,
        startup_timeout_secs=sequential_startup_secs(children),
        # SAFE MODE pauses strategies through their actors, so keep them alive.
        stop_children_on_escalate=False,
        placement=Placement(resources=dict(config.supervision.root_resources)),
    )


async def enter_safe_mode(reason: str, *, redis_url: str, namespace: str, strategy_ids: tuple[str, ...],
                          ray_namespace: str) -> None:
    """Root escalation: kill flag first, then every strategy PAUSED (in Redis and in its actor)."""
    from tradetree.core import RedisStore, WallClock

    log.critical("SAFE MODE: %s", reason)
    store = await RedisStore.connect(redis_url, namespace)
    try:
        await store.set_kill_flag(f"SAFE MODE: {reason}", WallClock().now_ms())
        for sid in strategy_ids:
            await store.set_strategy_state(sid, StrategyState.PAUSED)
    finally:
        await store.close()
    actors = ActorClient(ray_namespace)
    for sid in strategy_ids:
        # Fire and forget; a strategy dead or never started already reads PAUSED from Redis.
        await asyncio.to_thread(actors.tell, sid, "pause", f"SAFE MODE: {reason}")


async def pause_and_cancel(ray_namespace: str, strategy_ids: tuple[str, ...], venues: tuple[str, ...], *,
                           reason: str, timeout_secs: float) -> tuple[int, dict[str, TradetreeError]]:
    """Pause every strategy, then cancel our open orders on every venue: the wind-down a clean stop
    and an abandoned start share. Each step runs on all targets at once, so one hung strategy or
    gateway cannot spend the others' time (the cancels would never be reached). A strategy that
    does not answer is only logged (dead or never started, it sends nothing).

    Returns (orders canceled, the error of each venue whose cancel failed).
    """
    actors = ActorClient(ray_namespace, timeout_secs=timeout_secs)
    paused = await asyncio.gather(*(actors.call(sid, "pause", reason) for sid in strategy_ids),
                                  return_exceptions=True)
    for sid, outcome in zip(strategy_ids, paused, strict=True):
        if isinstance(outcome, TradetreeError):
            log.warning("could not pause %s (%s): %s", sid, reason, outcome)
        elif isinstance(outcome, BaseException):
            raise outcome
    results = await asyncio.gather(*(actors.call(gateway_id(v), "cancel_all") for v in venues),
                                   return_exceptions=True)
    canceled, failed = 0, {}
    for venue, outcome in zip(venues, results, strict=True):
        if isinstance(outcome, TradetreeError):
            failed[venue] = outcome
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            canceled += int(outcome)
    return canceled, failed


async def undo_abandoned_start(reason: str, *, ray_namespace: str, strategy_ids: tuple[str, ...],
                               venues: tuple[str, ...]) -> str:
    """The root's start failed: before it stops the children, pause every strategy and cancel our
    orders on every venue whose gateway runs (a released strategy may have traded meanwhile).
    Returns what was done, for the StartFailed message."""
    log.error("start abandoned (%s): pausing strategies and canceling orders before the unwind", reason)
    canceled, failed = await pause_and_cancel(ray_namespace, strategy_ids, venues, reason="start abandoned",
                                              timeout_secs=10.0)
    done = f"strategies paused and {canceled} open order(s) canceled"
    if failed:
        done += f" (gateway not up, nothing of ours to cancel through it: {', '.join(failed)})"
    return done


def start_root(spec: SupervisorSpec, *, config: EngineConfig, ray_namespace: str, redis_url: str,
               start_timeout_secs: float | None = None) -> Any:
    """Launch the root supervisor (detached, named ``RootSupervisor``) and start the tree.

    Raises:
        StartFailed: a child did not start; what had started was unwound.
    """
    from tradetree.core import RedisStore
    from tradetree.supervisor import launch_supervisor

    safe_mode = functools.partial(
        enter_safe_mode,
        redis_url=redis_url,
        namespace=config.redis.namespace,
        strategy_ids=tuple(s.id for s in config.strategies),
        ray_namespace=ray_namespace,
    )
    undo = functools.partial(undo_abandoned_start, ray_namespace=ray_namespace,
                             strategy_ids=tuple(s.id for s in config.strategies),
                             venues=tuple(v.name for v in config.venues))
    store_factory = functools.partial(RedisStore.connect, redis_url, config.redis.namespace)
    return asyncio.run(
        launch_supervisor(spec, namespace=ray_namespace, store_factory=store_factory, on_escalate=safe_mode,
                          on_start_abandoned=undo, alerter=ALERTER_ID, start_timeout_secs=start_timeout_secs)
    )


def wind_down_for_shutdown(config: EngineConfig, *, ray_namespace: str, timeout_secs: float = 20.0) -> int:
    """Before a clean stop: pause every strategy, then cancel our open orders on every venue.

    Returns how many orders were canceled. Raises the first venue error after
    trying every venue.
    """
    canceled, failed = asyncio.run(pause_and_cancel(
        ray_namespace, tuple(s.id for s in config.strategies), tuple(v.name for v in config.venues),
        reason="shutdown", timeout_secs=timeout_secs))
    if failed:
        raise next(iter(failed.values()))
    return canceled

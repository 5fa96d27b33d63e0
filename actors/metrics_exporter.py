"""MetricsExporter: gathers the tree's status every few seconds and serves it on ``/metrics``.

``SnapshotGatherer`` reads the parts of a snapshot through a ``SnapshotReader``
(the tree walk, each actor's ``stats()``, a Redis view), each part isolated:
a part that fails or times out is left out, its component is marked down
(``up[component] = False``) and counted in ``scrape_errors``; the others are
kept. ``RayRedisReader`` is the real reader. ``MetricsExporter`` runs the
refresh loop and prometheus-client's HTTP server (a daemon thread) on a
``tradetree.metrics.TreeCollector``; ``MetricsExporterActor`` is its
one-line-per-method Ray shell (the supervisor applies ``ray.remote``).

What the exporter guarantees:
- a scrape never waits on Ray or Redis: it renders the latest snapshot;
- ``start()`` needs neither Redis nor the other actors, and a port it cannot
  bind does not fail it: metrics must never stop the engine from trading.
  The ``http`` probe (readiness only, nothing is released after this actor)
  then fails naming the address and the error, and the bind is retried on
  every refresh;
- the refresh loop never raises; its ``refresh`` probe (liveness) fails only
  if the loop task ended.

``RayMetricsMirror`` also sets a handful of key series (``key_series``) as
``ray.util.metrics`` gauges after each refresh, so the Ray dashboard's
metrics view shows them next to Ray's own. It does nothing outside a Ray
worker and never fails the refresh: a failure is logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any, Protocol

from tradetree.core import (
    DEFAULT_VALUATION,
    Clock,
    HealthReport,
    ValuationRules,
    WallClock,
    cancel_and_wait,
)
from tradetree.supervisor import ActorClient
from tradetree.telemetry import (
    REDIS,
    TREE,
    MetricsConfig,
    TreeCollector,
    actor_ids,
    assemble_snapshot,
    build_registry,
    exporter_probes,
    metrics_url,
    venue_marks_view,
)

__all__ = ["SnapshotReader", "SnapshotGatherer", "RayRedisReader", "MetricsExporter", "MetricsExporterActor",
           "RayMetricsMirror", "key_series"]

log = logging.getLogger(__name__)

_STOP_TIMEOUT_SECS = 5.0


class SnapshotReader(Protocol):
    """Where the parts of a snapshot come from. Each method may raise anything."""

    async def tree(self) -> dict[str, Any]:
        """``supervisor.status`` of the tree."""
        ...

    async def stats(self, actor_id: str) -> dict[str, Any]:
        """The named actor's ``stats()``."""
        ...

    async def redis_view(self) -> dict[str, Any]:
        """The ``redis`` section of the snapshot (see ``tradetree.metrics``)."""
        ...


class SnapshotGatherer:
    """Builds snapshots from a reader; keeps per-component error counts across calls.

    Args:
        reader: where the parts come from.
        components: the components map (see ``tradetree.metrics``).
        timeout_secs: bound on each part's read.
    """

    def __init__(self, reader: SnapshotReader, components: dict[str, Any], *, timeout_secs: float,
                 clock: Clock | None = None) -> None:
        self._reader = reader
        self._components = components
        self._timeout_secs = timeout_secs
        self._clock = clock or WallClock()
        self.scrape_errors: dict[str, int] = {}
        self._down: set[str] = set()

    async def gather(self) -> dict[str, Any]:
        """One snapshot. Never raises (except on cancellation)."""
        started = time.perf_counter()
        ts_ms = self._clock.now_ms()
        ids = actor_ids(self._components)
        parts = [(TREE, self._reader.tree()), (REDIS, self._reader.redis_view())]
        parts += [(actor_id, self._reader.stats(actor_id)) for actor_id in ids]
        results = await asyncio.gather(*(self._bounded(name, coro) for name, coro in parts))
        values = dict(zip((name for name, _ in parts), results))
        return assemble_snapshot(ts_ms=ts_ms, gather_secs=time.perf_counter() - started,
                                 components=self._components, values=values, scrape_errors=self.scrape_errors)

    async def _bounded(self, name: str, coro: Any) -> Any:
        self.scrape_errors.setdefault(name, 0)
        try:
            value = await asyncio.wait_for(coro, timeout=self._timeout_secs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one component's failure must not cost the others their metrics
            self.scrape_errors[name] += 1
            if name not in self._down:  # log transitions, not every refresh
                self._down.add(name)
                log.warning("metrics: cannot read %s: %s", name, type(exc).__name__)
            return None
        if name in self._down:
            self._down.discard(name)
            log.info("metrics: %s readable again", name)
        return value


class RayRedisReader:
    """The real reader: the tree and actors through Ray, the rest from Redis.

    Redis is connected on first use and again after any failure.
    """

    def __init__(self, *, redis_url: str, namespace: str, ray_namespace: str, venues: list[str],
                 instruments: dict[str, list[str]], root_id: str, timeout_secs: float,
                 rules: ValuationRules = DEFAULT_VALUATION) -> None:
        self._redis_url = redis_url
        self._rules = rules
        self._namespace = namespace
        self._ray_namespace = ray_namespace
        self._venues = list(venues)
        self._wanted = [(v, inst) for v, insts in instruments.items() for inst in insts]
        self._root_id = root_id
        self._timeout_secs = timeout_secs
        self._store: Any = None
        self._actors = ActorClient(ray_namespace, timeout_secs=timeout_secs)

    async def tree(self) -> dict[str, Any]:
        from tradetree.supervisor import tree_status

        # tree_status blocks on ray.get; a thread keeps this actor's event loop free.
        return await asyncio.to_thread(tree_status, self._ray_namespace, root_id=self._root_id,
                                       timeout_secs=self._timeout_secs)

    async def stats(self, actor_id: str) -> dict[str, Any]:
        return await self._actors.call(actor_id, "stats")

    async def redis_view(self) -> dict[str, Any]:
        from tradetree.core import ControlState, MarkBook, RedisStore, collect_snapshot

        if self._store is None:
            self._store = await RedisStore.connect(self._redis_url, self._namespace,
                                                   socket_timeout_secs=self._timeout_secs)
        store = self._store
        try:
            view = await collect_snapshot(store, rules=self._rules)
            view.pop("actors", None)
            control = ControlState(store.client, self._namespace)
            marks = await MarkBook(store.client, self._namespace).read(self._wanted)
            venues = {}
            for venue in self._venues:
                venues[venue] = {
                    "fills_by_layer": await store.fill_layer_counts(venue),
                    "control": (await control.snapshot(venue)).model_dump(mode="json"),
                    "marks": venue_marks_view(marks, venue),
                }
            view["venues"] = venues
            return view
        except BaseException:
            self._store = None
            with contextlib.suppress(Exception):
                await store.close()
            raise

    async def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            with contextlib.suppress(Exception):
                await store.close()


# The series mirrored to ray.util.metrics: name -> (description, tag keys). Ray's exporter
# prefixes them with ``ray_``; they are gauges because they carry the tree's own totals, which a
# restarted actor re-reads from Redis and the tree (a Ray counter would count from zero again).
RAY_SERIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "tradetree_kill_flag": ("1 if the global kill flag is set in Redis.", ()),
    "tradetree_strategies_running": ("Strategies whose state in Redis is RUNNING.", ()),
    "tradetree_strategy_unrealized_pnl": (
        "Unrealized P&L of the strategy at its marks (quote currency; NaN: a position cannot be valued).",
        ("strategy",)),
    "tradetree_strategy_total_pnl": (
        "Realized plus unrealized P&L of the strategy net of fees (quote currency; NaN: incomplete).",
        ("strategy",)),
    "tradetree_fills_applied": ("Fills applied to positions, by venue and the layer that applied them first.",
                                ("venue", "layer")),
    "tradetree_actor_restarts": ("Restarts of the child by its supervisor.", ("child",)),
    "tradetree_risk_breakers_open": ("Risk breakers open.", ()),
}

Series = tuple[str, tuple[tuple[str, str], ...]]  # name, sorted tags


# The Prometheus sample each mirrored series is read from (counters carry their ``_total``).
_MIRROR_SOURCES = {
    "tradetree_kill_flag": "tradetree_kill_flag",
    "tradetree_strategy_unrealized_pnl": "tradetree_strategy_unrealized_pnl",
    "tradetree_strategy_total_pnl": "tradetree_strategy_total_pnl",
    "tradetree_fills_applied_total": "tradetree_fills_applied",
    "tradetree_actor_restarts_total": "tradetree_actor_restarts",
    "tradetree_risk_breakers_open": "tradetree_risk_breakers_open",
}


def key_series(snap: dict[str, Any] | None) -> dict[Series, float]:
    """The ``RAY_SERIES`` values in a gathered snapshot, read off the ``/metrics`` collector's own
    samples so the two views can never disagree.

    A part the snapshot lacks (Redis or the tree unread) gives no value; a
    strategy's P&L that cannot be valued (no sample on ``/metrics``) is NaN, never 0.
    """
    out: dict[Series, float] = {}
    if not snap:
        return out
    running = None
    pnl_strategies: set[str] = set()
    for family in TreeCollector(lambda: snap, clock_ms=lambda: int(snap.get("ts_ms") or 0)).collect():
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "tradetree_strategy_running":
                running = (running or 0.0) + sample.value
            elif sample.name == "tradetree_strategy_unvalued_positions":
                pnl_strategies.add(labels["strategy"])
            name = _MIRROR_SOURCES.get(sample.name)
            if name is not None:
                tags = tuple(sorted((k, v) for k, v in labels.items() if k in RAY_SERIES[name][1]))
                out[(name, tags)] = float(sample.value)
    if snap.get("redis") is not None:
        out[("tradetree_strategies_running", ())] = running or 0.0
    for sid in pnl_strategies:
        for name in ("tradetree_strategy_unrealized_pnl", "tradetree_strategy_total_pnl"):
            out.setdefault((name, (("strategy", sid),)), math.nan)
    return out


class RayMetricsMirror:
    """Sets ``key_series`` of each snapshot on ``ray.util.metrics`` gauges.

    A no-op unless Ray is initialized in this process (an actor's worker).
    A series set before and absent now is set to NaN: a Ray gauge cannot drop
    a sample, and its last value must not stand for one no longer known.
    Never raises; the first failure is logged, later ones are counted.
    """

    def __init__(self) -> None:
        self._gauges: dict[str, Any] = {}
        self._last: dict[Series, float] = {}
        self.failures = 0

    def update(self, snap: dict[str, Any] | None) -> None:
        try:
            import ray

            if not ray.is_initialized():
                return
            values = key_series(snap)
            values.update({key: math.nan for key in self._last if key not in values})
            for (name, tags), value in values.items():
                self._gauge(name).set(value, tags=dict(tags))
            self._last = values
        except Exception as exc:  # the Ray dashboard's copy must never cost /metrics its refresh
            self.failures += 1
            if self.failures == 1:
                log.warning("metrics: ray.util.metrics mirror failed (logged once): %s: %s", type(exc).__name__, exc)

    def _gauge(self, name: str) -> Any:
        gauge = self._gauges.get(name)
        if gauge is None:
            from ray.util.metrics import Gauge

            description, tag_keys = RAY_SERIES[name]
            gauge = self._gauges[name] = Gauge(name, description=description, tag_keys=tag_keys)
        return gauge

    def last_recorded(self) -> list[dict[str, Any]]:
        """What the last successful update set: ``[{"name", "tags", "value"}]``, sorted."""
        return [{"name": name, "tags": dict(tags), "value": value} for (name, tags), value in sorted(self._last.items())]


class MetricsExporter:
    """The refresh loop and the HTTP endpoint. ``start()`` first, ``stop()`` at the end.

    ``refresh_now()`` gathers one snapshot at once (tests, and the first one at start).
    """

    def __init__(self, config: MetricsConfig, gatherer: SnapshotGatherer, *, clock: Clock | None = None,
                 closer: Any = None, mirror: RayMetricsMirror | None = None) -> None:
        self._config = config
        self._gatherer = gatherer
        self._mirror = mirror
        self._clock = clock or WallClock()
        self._closer = closer
        self._snapshot: dict[str, Any] | None = None
        self.collector = TreeCollector(lambda: self._snapshot, clock_ms=self._clock.now_ms)
        self.registry = build_registry(self.collector)
        self._server: Any = None
        self._server_thread: Any = None
        self._bind_error = ""
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def snapshot(self) -> dict[str, Any] | None:
        return self._snapshot

    async def start(self) -> None:
        """Bind the endpoint (a failure is reported by the ``http`` probe) and start refreshing."""
        self._bind()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="metrics-refresh")

    async def stop(self) -> None:
        """Stop refreshing and serving. Idempotent."""
        self._closing = True
        if self._task is not None:
            await cancel_and_wait([self._task], timeout_secs=_STOP_TIMEOUT_SECS, owner="metrics exporter")
            self._task = None
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.shutdown)
            server.server_close()
        if self._closer is not None:
            await self._closer()

    def _bind(self) -> None:
        from prometheus_client import start_http_server

        try:
            self._server, self._server_thread = start_http_server(self._config.port, addr=self._config.host,
                                                                  registry=self.registry)
        except OSError as exc:
            if not self._bind_error:
                log.error("metrics: cannot serve on %s:%d: %s", self._config.host, self._config.port, exc)
            self._bind_error = f"cannot bind {self._config.host}:{self._config.port}: {exc}"
            return
        self._bind_error = ""
        log.info("metrics: serving %s", self.url())

    def address(self) -> tuple[str, int] | None:
        """(host, port) actually bound, or None when not serving."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def url(self) -> str | None:
        return metrics_url(self.address())

    async def refresh_now(self) -> dict[str, Any]:
        self._snapshot = await self._gatherer.gather()
        if self._mirror is not None:
            self._mirror.update(self._snapshot)
        return self._snapshot

    async def _loop(self) -> None:
        while not self._closing:
            started = self._clock.monotonic()
            try:
                if self._server is None:
                    self._bind()
                await self.refresh_now()
            except asyncio.CancelledError:
                raise
            except Exception:  # the gatherer never raises; this is a bug, and must not stop metrics
                log.exception("metrics: refresh failed")
            await asyncio.sleep(max(0.0, self._config.refresh_secs - (self._clock.monotonic() - started)))

    def check_health(self) -> HealthReport:
        """Probes: ``refresh`` (liveness: the loop runs) and ``http`` (readiness: the endpoint is bound)."""
        running = self._task is not None and not self._task.done()
        snap = self._snapshot
        probes = exporter_probes(loop_running=running, snapshot_ts_ms=None if snap is None else snap["ts_ms"],
                                 url=self.url(), bind_error=self._bind_error)
        return HealthReport(component="metrics", ts_ms=self._clock.now_ms(), probes=probes)


class MetricsExporterActor:
    """Thin Ray actor over ``MetricsExporter`` reading the tree in ``ray_namespace``.

    ``components`` names the actors (see ``tradetree.metrics``); ``instruments``
    lists, per venue, the instruments whose market data age is exported;
    ``risk`` (the engine's ``RiskConfig``) values positions as the notional
    limits do (without it: ``core.DEFAULT_VALUATION``). Key series are
    mirrored to ``ray.util.metrics`` (``ray_metrics()`` returns the last set).
    """

    def __init__(self, config: MetricsConfig, *, redis_url: str, namespace: str, ray_namespace: str,
                 components: dict[str, Any], instruments: dict[str, list[str]], root_id: str,
                 risk: ValuationRules | None = None) -> None:
        reader = RayRedisReader(redis_url=redis_url, namespace=namespace, ray_namespace=ray_namespace,
                                venues=list(instruments), instruments=instruments, root_id=root_id,
                                timeout_secs=config.call_timeout_secs, rules=risk or DEFAULT_VALUATION)
        gatherer = SnapshotGatherer(reader, components, timeout_secs=config.call_timeout_secs)
        self._mirror = RayMetricsMirror()
        self._impl = MetricsExporter(config, gatherer, closer=reader.close, mirror=self._mirror)

    async def start(self) -> None:
        await self._impl.start()

    async def stop(self) -> None:
        await self._impl.stop()

    async def check_health(self) -> HealthReport:
        return self._impl.check_health()

    async def url(self) -> str | None:
        return self._impl.url()

    async def address(self) -> tuple[str, int] | None:
        return self._impl.address()

    async def refresh_now(self) -> None:
        await self._impl.refresh_now()

    async def ray_metrics(self) -> list[dict[str, Any]]:
        return self._mirror.last_recorded()

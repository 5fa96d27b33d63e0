"""Start, watch and stop the whole engine: Redis, simulator, Ray, the supervision tree.

Order of start matters and is fail-closed: the config is validated and Redis
must answer before Ray or any actor exists, so a bad config or a dead Redis
stops the start with a clear message and no order can have been sent. A
strategy an earlier (dead) engine left RUNNING in Redis is set PAUSED under
the supervisor's hold before anything starts: it runs again only once this
engine's supervisor releases it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

from tradetree.config import EngineConfig
from tradetree.core import (
    DRIVER_REDIS_PASSWORD_ENV,
    ConfigError,
    ControlState,
    EmbeddedRedis,
    EngineLock,
    EngineRecord,
    RedisStore,
    StoreUnavailable,
    StrategyState,
    TradetreeError,
    VenueCredentials,
    WallClock,
    clear_engine_record,
    port_free,
    redis_locator,
    resolve_redis_url,
    write_engine_record,
)

__all__ = ["VenueEndpoint", "EngineRuntime", "DEFAULT_STATE_DIR", "TREE_RAY_SYSTEM_CONFIG",
           "hold_running_strategies", "niced_nodes", "worker_niceness_by_node"]

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path(".tradetree")

# Ray nices every worker to 15 so its own daemons win the CPU, and every actor of the tree is
# such a worker: beside any normal-priority load on the node (a sweep, a build, a backup) the
# gateway, reconciler and risk monitor got a few percent of a core. Measured beside two CPU
# hogs on 2 cores: an actor took 6-9 s to start instead of 0.6-0.9 s, a scenario tree over 15x
# longer to run; at niceness 0, 0.9-1.3 s. The tree is the latency-critical work on its nodes.
TREE_RAY_SYSTEM_CONFIG: dict[str, Any] = {"worker_niceness": 0}
NICENESS_CHECK_TIMEOUT_SECS = 60.0
ATTACH_TIMEOUT_SECS = 60.0
NODE_CHECK_TIMEOUT_SECS = 60.0


@dataclass(frozen=True)
class VenueEndpoint:
    """Where the gateway of one venue connects, resolved at start."""

    rest_url: str
    ws_url: str
    # None: the venue's actors read the keys themselves from the sources its config names. Only
    # the embedded simulator's own keys (public defaults of config.simulator) are handed over.
    credentials: VenueCredentials | None = field(repr=False)


def worker_niceness_by_node(timeout_secs: float) -> dict[str, int | None]:
    """The niceness a worker process gets on each alive node (None: no answer within the bound)."""
    import os

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, max_retries=0)
    def _niceness() -> int:
        return os.nice(0)

    refs = {node["NodeManagerAddress"] + " " + node["NodeID"][:8]: _niceness.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote()
            for node in ray.nodes() if node["Alive"]}
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_secs)
    done = set(ready)
    out: dict[str, int | None] = {}
    for node, ref in refs.items():
        try:
            out[node] = ray.get(ref) if ref in done else None
        except ray.exceptions.RayError:
            out[node] = None
    return out


def niced_nodes(niceness: dict[str, int | None]) -> dict[str, int]:
    """The nodes whose workers run at a lower priority than a normal process."""
    return {node: n for node, n in niceness.items() if n is not None and n > 0}


def ray_auth_mode() -> str:
    """What this process's Ray uses: "token" (clients need the token and RAY_AUTH_MODE=token) or "disabled"."""
    try:
        from ray._raylet import AuthenticationMode, get_authentication_mode  # type: ignore[attr-defined]

        return "token" if get_authentication_mode() == AuthenticationMode.TOKEN else "disabled"
    except ImportError:  # a Ray without token authentication
        return os.environ.get("RAY_AUTH_MODE", "disabled").lower()


async def _check_redis(url: str, namespace: str, timeout_secs: float) -> None:
    store = await RedisStore.connect(url, namespace, socket_timeout_secs=timeout_secs)
    await store.close()


async def hold_running_strategies(store: RedisStore, strategy_ids: list[str], now_ms: int) -> list[str]:
    """Mark the configured strategies that Redis says are RUNNING as PAUSED under the supervisor's hold.

    A RUNNING left in Redis by an engine that died is stale: until this
    engine's supervisor releases a strategy (its venue's probes green, startup
    reconciliation done), Redis must not say it trades. The hold is the
    supervisor's own, so the release lifts it; any other pause is kept.
    Returns the ids it held.
    """
    control = ControlState(store.client, store.namespace)
    states = await store.strategy_states()
    held = []
    for sid in strategy_ids:
        if states.get(sid) is StrategyState.RUNNING:
            await control.set_strategy_pause(sid, "supervisor", "engine starting: held until the venue's probes pass",
                                             now_ms)
            await store.set_strategy_state(sid, StrategyState.PAUSED)
            held.append(sid)
    return held


class EngineRuntime:
    """The running engine of one process (the driver).

    Use ``start()``, then ``snapshot()`` as often as wanted, then
    ``shutdown()``; or as a context manager.
    """

    def __init__(self, config: EngineConfig, *, state_dir: Path | None = None,
                 ray_address: str | None = None, include_dashboard: bool = True,
                 config_path: str = "", on_progress: Callable[[str], None] | None = None,
                 detached: bool = False, start_timeout_secs: float | None = None) -> None:
        self.config = config
        self.state_dir = Path(state_dir) if state_dir is not None else config.state_dir
        # $RAY_ADDRESS is how Ray's own tools (ray job submit) name the cluster: honour it, as ray.init does.
        ray_address = ray_address or os.environ.get("RAY_ADDRESS") or None
        self.config_path = config_path
        self._progress = on_progress or (lambda line: log.info("%s", line))
        self._lock = EngineLock(self.state_dir)
        self.record: EngineRecord | None = None
        self.ray_address = ray_address
        self.include_dashboard = include_dashboard
        self.redis_url: str | None = None  # this process's, with the password if Redis has one
        self.actor_redis_url: str | None = None  # the actors': a locator without it (core.secrets)
        self._set_password_env = False
        self._launched_root = False
        self.embedded_redis: EmbeddedRedis | None = None
        self.simulator: Any = None  # SimulatorThread when the embedded simulator is used
        self.sim_server: Any = None
        self.endpoints: dict[str, VenueEndpoint] = {}
        self.root: Any = None
        self.ray_namespace = config.name
        self._started_ray = False
        self.started_at = 0.0
        # Cluster mode (`tradetree up`): the tree outlives this process, so Redis and the venue must
        # be external, and no local lock or engine.json describes it (the record in Redis does).
        self.detached = detached
        # How long this process waits for the tree to come up (None: the tree's own start bound).
        self.start_timeout_secs = start_timeout_secs

    def _redis(self) -> str:
        if self.redis_url is None:
            raise TradetreeError("the engine's Redis is not started (call start() first)")
        return self.redis_url

    # -- start -------------------------------------------------------------

    def _start_redis(self) -> str:
        url = self.config.redis.url_here()
        if url is None:
            self.embedded_redis = EmbeddedRedis(data_dir=self.state_dir / "redis")
            self.embedded_redis.start()
            url = self.embedded_redis.url
            log.info("embedded Redis (%s) at %s", self.embedded_redis.kind, url)
        try:
            asyncio.run(_check_redis(url, self.config.redis.namespace, self.config.redis.socket_timeout_secs))
        except StoreUnavailable:
            self._stop_redis()
            raise
        return url

    def _start_simulator_if_needed(self) -> None:
        from tradetree.sim import SimulatorThread

        needs_sim = [v for v in self.config.venues if v.uses_embedded_simulator]
        if not needs_sim:
            return
        self.simulator = SimulatorThread(self.config.simulator)
        self.sim_server = self.simulator.start()
        sim_cfg = self.config.simulator
        creds = VenueCredentials(
            api_key=SecretStr(sim_cfg.api_key), secret_key=sim_cfg.secret_key, passphrase=sim_cfg.passphrase
        )
        for v in needs_sim:
            self.endpoints[v.name] = VenueEndpoint(self.sim_server.rest_url, self.sim_server.ws_url, creds)

    @property
    def launched_root(self) -> bool:
        """This start has launched the tree's root (what a progress view may show is this start's)."""
        return self._launched_root

    @property
    def on_a_cluster(self) -> bool:
        """The tree's actors may run on other hosts than this process (an existing cluster, or `up`)."""
        return self.detached or bool(self.ray_address)

    def _resolve_live_endpoints(self) -> None:
        for v in self.config.venues:
            if not v.uses_embedded_simulator:
                assert v.rest_url and v.ws_url
                if not self.on_a_cluster:
                    # One host: the actors will read what this process reads, so a missing key fails
                    # here, before anything starts. On a cluster the nodes are checked instead.
                    v.resolve_credentials()
                self.endpoints[v.name] = VenueEndpoint(v.rest_url, v.ws_url, None)

    def _redis_for_actors(self) -> str:
        """The Redis URL the tree's actors are handed: never with its password (Ray keeps actor
        arguments in its GCS and shows them back); each actor reads the password in its own process.

        Call before Ray is started: a driver that starts Ray itself hands a password it was given
        inline down through its environment, which the raylet and every worker inherit.
        """
        import ray

        url = self._redis()
        password = urlsplit(url).password
        if password is None:
            return url
        if not self.ray_address and not ray.is_initialized():
            os.environ[DRIVER_REDIS_PASSWORD_ENV] = unquote(password)
            self._set_password_env = True
            return redis_locator(url, password_file=None, password_env=DRIVER_REDIS_PASSWORD_ENV, required=True)
        cfg = self.config.redis
        return redis_locator(url, password_file=cfg.password_file, password_env=cfg.password_env, required=True)

    def _start_ray(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if self.ray_address:
            # An existing cluster: its resources and system config are its own; attach with token
            # auth prepared and a bound (Ray alone retries a dead address for minutes).
            from tradetree.supervisor import attach_ray

            attach_ray(self.ray_address, self.ray_namespace, timeout_secs=ATTACH_TIMEOUT_SECS,
                       runtime_env=self.config.ray.runtime_env)
        else:
            ray.init(namespace=self.ray_namespace, configure_logging=False, log_to_driver=False,
                     include_dashboard=self.include_dashboard, dashboard_host="127.0.0.1",
                     dashboard_port=self.config.dashboard_port, num_cpus=max(4, len(self.config.strategies) + 4),
                     _system_config=TREE_RAY_SYSTEM_CONFIG, runtime_env=self.config.ray.runtime_env or None)
        self._started_ray = True

    def _warn_if_workers_niced(self) -> None:
        # A cluster someone else started keeps its own worker niceness: say so, do not refuse
        # (the tree is correct niced, only slow beside other load).
        if self._started_ray and not self.ray_address:
            return
        niced = niced_nodes(worker_niceness_by_node(NICENESS_CHECK_TIMEOUT_SECS))
        if niced:
            log.warning("Ray workers run niced on %s: the tree's actors get a few percent of a core beside any "
                        "other load there. Start those nodes with RAY_worker_niceness=0 (deploy/ray-cluster.yaml "
                        "does).", ", ".join(f"{node} (nice {n})" for node, n in sorted(niced.items())))

    def start(self) -> None:
        """Bring everything up. On any failure, what was started is stopped again.

        Raises:
            ConfigError: credentials missing for a live venue.
            StoreUnavailable: Redis does not answer (nothing else was started).
            TradetreeError: the tree failed to start (its message names the child).
        """
        from tradetree.config import check_strategies
        from tradetree.tree import build_root_spec, start_root

        self.started_at = time.monotonic()
        check_strategies(self.config)
        if self.detached:
            self._check_cluster_mode()
        self._resolve_live_endpoints()  # credentials first: fail before starting anything
        if not self.detached:
            self._lock.acquire()  # before any Redis: a second engine must never append to this one's AOF
        try:
            self._check_ports()
            self.redis_url = self._start_redis()
        except BaseException:
            self._lock.release()
            raise
        self._progress(f"Redis ready ({'embedded, ' + self.state_dir.as_posix() + '/redis' if self.embedded_redis else 'external'}), "
                       f"namespace {self.config.redis.namespace!r}")
        try:
            self.actor_redis_url = self._redis_for_actors()
            self._start_ray()
            self._progress(f"Ray ready at {self._gcs_address()} (namespace {self.ray_namespace!r})")
            self._warn_if_workers_niced()
            # Before anything is written to Redis: a second `up` of a running tree must not put the
            # running tree's strategies under a start-up hold on its way to being refused.
            if self.detached:
                self._refuse_a_running_tree()
            if self.on_a_cluster:
                self._check_node_secrets()
            if self.config.venues and any(v.uses_embedded_simulator for v in self.config.venues):
                asyncio.run(self._reset_paper_namespace())
            else:
                asyncio.run(self._hold_strategies())
            self._start_simulator_if_needed()
            if self.sim_server is not None:
                self._progress(f"simulator: REST {self.sim_server.rest_url}  WS {self.sim_server.ws_url}")
            self._progress("starting the tree: each child is started and must pass its probes")
            spec = build_root_spec(self.config, redis_url=self.actor_redis_url, endpoints=self.endpoints,
                                   ray_namespace=self.ray_namespace)
            self._launched_root = True
            self.root = start_root(spec, config=self.config, ray_namespace=self.ray_namespace,
                                   redis_url=self.actor_redis_url, start_timeout_secs=self.start_timeout_secs)
            self.record = self._publish_record()
        except BaseException as exc:
            note = self._wind_down_abandoned_start()
            self.shutdown()
            if note and isinstance(exc, TradetreeError):
                raise TradetreeError(f"{exc}\n{note}") from exc
            raise

    def _wind_down_abandoned_start(self) -> str:
        """A start that failed or timed out may have left a live, half-started tree: before it is torn
        down, its strategies are paused and its orders canceled (never an abandoned tree trading).
        Returns what was done, for the error message ("" when no tree had been created)."""
        import ray

        from tradetree.core import ROOT_ID
        from tradetree.tree import wind_down_for_shutdown

        # Only a root this start launched: a RootSupervisor found otherwise is a running tree's
        # (a second `up`, refused), and must not be wound down by the start that was refused.
        if self.root is not None or not self._launched_root or not ray.is_initialized():
            return ""
        try:
            root = ray.get_actor(ROOT_ID, namespace=self.ray_namespace)
        except ValueError:
            return ""
        self.root = root  # shutdown() stops it and kills it, after the wind-down below
        try:
            status: Any = ray.get(root.status.remote(), timeout=10)
            if status["state"] == "stopped":
                return ""  # the root gave up on a child and unwound itself, undoing first: StartFailed says so
        except (ray.exceptions.RayError, TimeoutError, KeyError, TypeError):
            pass  # unknown: wind down anyway
        try:
            canceled = wind_down_for_shutdown(self.config, ray_namespace=self.ray_namespace, timeout_secs=10.0)
            done = f"strategies paused and {canceled} open order(s) canceled"
        except TradetreeError as exc:  # a gateway not yet up has no order of ours to cancel
            done = f"strategies paused; canceling orders failed on a venue not yet up ({exc})"
        log.error("start abandoned: %s before the tree was torn down", done)
        return f"The tree had started in part: {done} before it was torn down."

    def _check_node_secrets(self) -> None:
        from tradetree.node_secrets import check_node_secrets

        assert self.actor_redis_url is not None
        for line in check_node_secrets(self.config, self.actor_redis_url, timeout_secs=NODE_CHECK_TIMEOUT_SECS):
            self._progress(line)

    def _check_cluster_mode(self) -> None:
        """Refuse what cannot outlive this process: the embedded Redis and the embedded simulator."""
        problems = []
        if resolve_redis_url(self.config.redis.url) is None:
            problems.append("redis.url (or $REDIS_URL): the embedded Redis lives in this process")
        embedded = [v.name for v in self.config.venues if v.uses_embedded_simulator]
        if embedded:
            problems.append(f"venues[{', '.join(embedded)}].rest_url/ws_url: the embedded simulator lives in this "
                            "process (run `tradetree sim` on its own and point the venue at it)")
        if problems:
            raise ConfigError("`tradetree up` starts a tree that outlives this process; set: " + "; ".join(problems))

    def _refuse_a_running_tree(self) -> None:
        from tradetree.core import ROOT_ID
        from tradetree.supervisor import RayBackend

        if asyncio.run(RayBackend(self.ray_namespace).get_existing(ROOT_ID)) is not None:
            raise ConfigError(f"a tree of {self.config.name!r} already runs in Ray namespace {self.ray_namespace!r} "
                              "on this cluster: `tradetree status` shows it, `tradetree down` stops it")

    def detach(self) -> None:
        """Leave the started tree running on the cluster and disconnect this process (``tradetree up``)."""
        import ray

        if not self.detached:
            raise TradetreeError("detach() is for a runtime created with detached=True")
        self.root = None
        self.record = None  # the Redis record stays: it describes the running tree
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
            self._started_ray = False

    @classmethod
    def attach_running(cls, config: EngineConfig, *, ray_address: str | None = None,
                       on_progress: Callable[[str], None] | None = None) -> EngineRuntime:
        """The runtime of a tree started detached (``tradetree up``), to wind it down (``tradetree down``).

        Raises:
            ConfigError: no tree of this config runs on that cluster.
            StoreUnavailable: its Redis does not answer.
        """
        import ray

        from tradetree.core import ROOT_ID, read_engine_record

        runtime = cls(config, ray_address=ray_address, detached=True, on_progress=on_progress)
        runtime._check_cluster_mode()
        runtime.redis_url = runtime._start_redis()

        async def _record() -> EngineRecord | None:
            store = await RedisStore.connect(runtime._redis(), config.redis.namespace)
            try:
                return await read_engine_record(store.client, config.redis.namespace)
            finally:
                await store.close()

        record = asyncio.run(_record())
        if runtime.ray_address is None and record is not None:
            runtime.ray_address = record.ray_address
        if runtime.ray_address is None:
            raise ConfigError("no Ray address: give --address (or $RAY_ADDRESS); no running engine is recorded in "
                              f"Redis namespace {config.redis.namespace!r}")
        runtime._start_ray()
        try:
            runtime.root = ray.get_actor(ROOT_ID, namespace=runtime.ray_namespace)
        except ValueError:
            runtime.shutdown()
            raise ConfigError(f"no tree of {config.name!r} runs on {runtime.ray_address} "
                              f"(Ray namespace {runtime.ray_namespace!r})") from None
        runtime.record = record
        return runtime

    def _check_ports(self) -> None:
        """Refuse, naming the config field, a port another process holds (before anything starts)."""
        wanted = []
        if not self.ray_address and self.include_dashboard:
            import ray

            if not ray.is_initialized():
                wanted.append(("dashboard_port", "127.0.0.1", self.config.dashboard_port))
        if self.config.metrics.enabled and not self.ray_address:  # on a cluster the exporter binds elsewhere
            wanted.append(("metrics.port", self.config.metrics.host, self.config.metrics.port))
        if any(v.uses_embedded_simulator for v in self.config.venues):
            wanted.append(("simulator.port", self.config.simulator.host, self.config.simulator.port))
        taken = [f"{field} {port} ({host})" for field, host, port in wanted if not port_free(host, port)]
        if taken:
            raise ConfigError(f"port(s) already in use: {', '.join(taken)}. Another engine or program holds "
                              "them: change those fields in the config (0 = any free port), or stop it.")

    def _gcs_address(self) -> str:
        import ray

        return str(ray.get_runtime_context().gcs_address)

    def _publish_record(self) -> EngineRecord:
        """Tell other processes how to reach this tree: Redis (any host) and engine.json (local mode)."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            pkg_version = version("tradetree")
        except PackageNotFoundError:
            pkg_version = "unknown"
        dashboard = None
        if self.include_dashboard and self._started_ray and not self.ray_address:
            dashboard = f"http://127.0.0.1:{self.config.dashboard_port}"
        record = EngineRecord(
            name=self.config.name, version=pkg_version, ray_address=self._gcs_address(),
            ray_namespace=self.ray_namespace, ray_auth_mode=ray_auth_mode(),
            redis_namespace=self.config.redis.namespace, started_ms=WallClock().now_ms(), pid=os.getpid(),
            host=socket.gethostname(), config_path=self.config_path, dashboard_url=dashboard,
            metrics_url=self.metrics_url(),
            simulator_url=self.sim_server.rest_url if self.sim_server is not None else None,
            state_dir=str(self.state_dir.resolve()),
            embedded_redis_url=self.embedded_redis.url if self.embedded_redis is not None else None,
        )

        async def _write() -> None:
            store = await RedisStore.connect(self._redis(), self.config.redis.namespace)
            try:
                await write_engine_record(store.client, self.config.redis.namespace, record)
            finally:
                await store.close()

        if not self.detached:
            self._lock.write_local(record)
        try:
            asyncio.run(_write())
        except TradetreeError as exc:  # the tree runs; only attaching by --config is harder
            log.error("could not record how to attach to this engine in Redis: %s", exc)
        return record

    async def _hold_strategies(self) -> None:
        store = await RedisStore.connect(self._redis(), self.config.redis.namespace)
        try:
            held = await hold_running_strategies(store, [s.id for s in self.config.strategies],
                                                 WallClock().now_ms())
        finally:
            await store.close()
        if held:
            log.warning("strategies left RUNNING by an earlier engine held PAUSED until released: %s",
                        ", ".join(held))

    async def _reset_paper_namespace(self) -> None:
        # The embedded simulator's account is new each run; positions left in
        # Redis by an earlier run would not match it, so paper state starts clean.
        store = await RedisStore.connect(self._redis(), self.config.redis.namespace)
        try:
            await store.reset_namespace()
        finally:
            await store.close()

    # -- watch ---------------------------------------------------------------

    def actor_health(self) -> dict[str, Any]:
        from tradetree.core import ROOT_ID
        from tradetree.supervisor import tree_status

        if self.root is None:
            return {}
        return tree_status(self.ray_namespace, root_id=ROOT_ID)

    def metrics_url(self, timeout_secs: float = 10.0) -> str | None:
        """The tree's Prometheus endpoint as bound (``port: 0`` resolved); None when metrics are
        disabled, the tree is not running, or the exporter is not serving (its ``http`` probe says why)."""
        from tradetree.core import METRICS_EXPORTER_ID
        from tradetree.supervisor import ActorClient

        if self.root is None or not self.config.metrics.enabled:
            return None
        try:
            return ActorClient(self.ray_namespace).call_sync(METRICS_EXPORTER_ID, "url", timeout_secs=timeout_secs)
        except TradetreeError:
            return None

    def snapshot(self) -> dict[str, Any]:
        from tradetree.core import collect_snapshot

        async def _snap():
            store = await RedisStore.connect(self._redis(), self.config.redis.namespace)
            try:
                return await collect_snapshot(store, self.actor_health(), rules=self.config.risk)
            finally:
                await store.close()

        return asyncio.run(_snap())

    # -- stop ----------------------------------------------------------------

    def shutdown(self) -> None:
        """Pause strategies, cancel our open orders, stop the tree, then Ray, simulator, Redis.

        Positions and orders stay in Redis. Safe to call more than once.
        """
        import ray

        try:
            if self.record is not None:
                self._unpublish_record()
            if self.root is not None:
                from tradetree.tree import wind_down_for_shutdown

                try:
                    wind_down_for_shutdown(self.config, ray_namespace=self.ray_namespace)
                except TradetreeError as exc:  # its calls go through ActorClient, which raises nothing else
                    log.error("could not cancel every open order at shutdown: %s", exc)
                try:
                    ray.get(self.root.stop.remote(), timeout=60)
                except (ray.exceptions.RayError, TimeoutError) as exc:
                    log.error("tree stop incomplete: %s", exc)
                try:
                    ray.kill(self.root)
                except (ray.exceptions.RayError, ValueError):
                    pass
                self.root = None
            if self._started_ray and ray.is_initialized():
                ray.shutdown()
                self._started_ray = False
            if self._set_password_env and not ray.is_initialized():
                os.environ.pop(DRIVER_REDIS_PASSWORD_ENV, None)
                self._set_password_env = False
            if self.simulator is not None:
                self.simulator.stop()
                self.simulator = None
            self._stop_redis()
        finally:  # whatever failed above, this process no longer runs an engine from the state dir
            self._lock.release()

    def _unpublish_record(self) -> None:
        record, self.record = self.record, None
        if record is None or self.redis_url is None:
            return

        async def _clear() -> None:
            store = await RedisStore.connect(self._redis(), self.config.redis.namespace)
            try:
                await clear_engine_record(store.client, self.config.redis.namespace, record.pid)
            finally:
                await store.close()

        try:
            asyncio.run(_clear())
        except TradetreeError as exc:
            log.warning("could not remove the engine record from Redis: %s", exc)

    def _stop_redis(self) -> None:
        if self.embedded_redis is not None:
            self.embedded_redis.stop()
            self.embedded_redis = None

    def __enter__(self) -> EngineRuntime:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

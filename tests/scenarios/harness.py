"""Run the whole tree for a scenario: real Ray, real Redis, the simulator over loopback.

``running_tree(...)`` starts an ``EngineRuntime`` on the embedded simulator
with fast timers, yields a ``Tree`` with helpers to read Redis, the simulator's
account truth and the actors, and shuts everything down afterwards.
Nothing here sleeps a fixed time to make a point: ``Tree.wait_for`` polls a
condition with a deadline and fails with what it saw last.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import ray

from tests import paper_helpers
from tests.paper_helpers import SUPERVISION
from tradetree.config import EngineConfig
from tradetree.core.control_state import ControlState
from tradetree.core.names import ALERTER_ID, RISK_MONITOR_ID, ROOT_ID, gateway_id, reconciler_id
from tradetree.core.store import AuditEntry, RedisStore
from tradetree.core.types import Order, Position
from tradetree.runner import EngineRuntime
from tradetree.supervisor.status import tree_status

__all__ = ["Tree", "running_tree", "scenario_config", "STRATEGY"]

STRATEGY = {
    "class": "MeanReversion", "version": "v1", "venue": "okx", "bar_interval_ms": 30000,
    "params": {"window_bars": 8, "entry_z": 1.0, "exit_z": 0.2, "stop_z": 6.0, "size": "1"},
}


def scenario_config(redis_url: str, namespace: str, *, strategies: list[dict] | None = None,
                    **overrides: Any) -> EngineConfig:
    """A small, fast engine config: one venue (the embedded simulator), quick timers."""
    if strategies is None:
        strategies = [{**STRATEGY, "symbols": ["BTC-USDT-SWAP"]}]
    raw: dict[str, Any] = {
        "name": f"tt-scn-{uuid.uuid4().hex[:6]}",
        "redis": {"url": redis_url, "namespace": namespace},
        "venues": [{"name": "okx", "instruments": ["BTC-USDT-SWAP", "ETH-USDT-SWAP"]}],
        "strategies": strategies,
        "simulator": {"seed": 11, "tick_interval_ms": 100, "time_scale": 60.0},
        "reconciler": {"poll_interval_secs": 0.5, "fill_health_interval_secs": 0.25,
                       "fill_gap_alert_secs": 1.5, "drift_interval_secs": 1.0},
        "risk": {"max_verification_age_secs": 3.0, "max_market_data_age_secs": 3.0, "loop_interval_secs": 0.25},
        "kill_switch": {"max_clip_size": "100", "backoff_min_secs": 0.2, "backoff_max_secs": 2.0,
                        "max_duration_secs": 60, "verify_interval_secs": 0.2},
        "heartbeat_interval_secs": 0.5,
        # Start bounds only decide how long a tree that never comes up takes to fail: generous, so a
        # busy machine is never the reason (beside two CPU hogs, with Ray's default worker niceness
        # of 15, each actor took ~50 s to be created and pass its probes; at niceness 0, seconds).
        "supervision": dict(SUPERVISION),
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return EngineConfig.model_validate(raw)


class Tree:
    """A running engine plus read helpers. Every read opens its own short Redis connection."""

    def __init__(self, runtime: EngineRuntime) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.ns = runtime.config.redis.namespace
        self.ray_ns = runtime.ray_namespace

    # -- the simulator ----------------------------------------------------------------

    @property
    def sim(self):
        return self.runtime.sim_server

    def truth(self) -> dict[str, Any]:
        return self.sim.account_truth()

    def venue_positions(self) -> dict[str, Decimal]:
        return {k: Decimal(v) for k, v in self.truth()["positions"].items() if Decimal(v) != 0}

    # -- Redis ------------------------------------------------------------------------

    def redis(self, fn: Callable[[RedisStore, ControlState], Any]) -> Any:
        """Run ``await fn(store, control)`` on a fresh connection and return its result."""

        async def go():
            store = await RedisStore.connect(self.runtime.redis_url, self.ns)
            try:
                return await fn(store, ControlState(store.client, self.ns))
            finally:
                await store.close()

        return asyncio.run(go())

    def positions(self) -> list[Position]:
        return self.redis(lambda s, c: s.positions())

    def summed_positions(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for p in self.positions():
            out[p.inst_id] = out.get(p.inst_id, Decimal(0)) + p.qty
        return {k: v for k, v in out.items() if v != 0}

    def audit(self) -> list[AuditEntry]:
        return self.redis(lambda s, c: s.audit_entries())

    def open_orders(self) -> list[Order]:
        return self.redis(lambda s, c: s.open_orders())

    def strategy_states(self) -> dict[str, str]:
        return self.redis(lambda s, c: s.strategy_states())

    def layer_counts(self) -> dict[str, dict[str, int]]:
        return self.redis(lambda s, c: s.fill_layer_counts())

    def control_snapshot(self, venue: str = "okx"):
        return self.redis(lambda s, c: c.snapshot(venue))

    def assert_matches_venue(self) -> None:
        """Redis positions summed over strategies equal the venue; each venue trade audited once."""
        assert self.summed_positions() == self.venue_positions()
        audited = Counter(e.fill.trade_id for e in self.audit())
        assert all(n == 1 for n in audited.values()), audited
        assert set(audited) == {t["trade_id"] for t in self.truth()["trades"]}

    def matches_venue(self) -> bool:
        try:
            self.assert_matches_venue()
        except AssertionError:
            return False
        return True

    # -- actors -----------------------------------------------------------------------

    def actor(self, name: str):
        return ray.get_actor(name, namespace=self.ray_ns)

    def gateway(self, venue: str = "okx"):
        return self.actor(gateway_id(venue))

    def reconciler(self, venue: str = "okx"):
        return self.actor(reconciler_id(venue))

    def risk_monitor(self):
        return self.actor(RISK_MONITOR_ID)

    def alerter(self):
        return self.actor(ALERTER_ID)

    def alerts(self, n: int = 200) -> list[dict[str, Any]]:
        return [a if isinstance(a, dict) else a.model_dump(mode="json")
                for a in ray.get(self.alerter().recent.remote(n), timeout=10)]

    def status(self) -> dict[str, dict[str, Any]]:
        return tree_status(self.ray_ns, root_id=ROOT_ID)

    def health(self, name: str):
        return ray.get(self.actor(name).check_health.remote(), timeout=10)

    # -- waiting ----------------------------------------------------------------------

    @staticmethod
    def wait_for(predicate: Callable[[], Any], timeout_secs: float, what: str, interval_secs: float = 0.2) -> Any:
        """``paper_helpers.wait_for``; an exception from ``predicate`` (an actor or Redis restarting) is "not yet"."""
        return paper_helpers.wait_for(predicate, timeout_secs, what, poll_secs=interval_secs, tolerate_exceptions=True)

    def wait_for_fills(self, n: int, timeout_secs: float = 90) -> None:
        self.wait_for(lambda: len(self.audit()) >= n, timeout_secs, f"{n} applied fills")

    def wait_running(self, timeout_secs: float = paper_helpers.RELEASE_TIMEOUT_SECS) -> None:
        """Until every strategy is RUNNING (released), as the paper tests wait for it."""
        paper_helpers.wait_until_released(self.runtime.redis_url, self.ns, [s.id for s in self.config.strategies],
                                          timeout_secs, tolerate_exceptions=True)


@contextlib.contextmanager
def running_tree(config: EngineConfig) -> Iterator[Tree]:
    # A state dir (engine lock) of its own: a module's tree may still run while a test starts another.
    config = config.model_copy(update={"state_dir": Path(tempfile.mkdtemp(prefix="tt-scn-state-"))})
    runtime = EngineRuntime(config, include_dashboard=False)
    runtime.start()
    try:
        yield Tree(runtime)
    finally:
        runtime.shutdown()


# -- fill-pipeline helpers (incident replay, WS cut, REST polling failing, missed-fill benchmark) ---------

PROBE_STRATEGY = "scenario_probe"  # strategy id of the orders a scenario sends itself, past the strategies
# A mean-reversion strategy that wants to trade nearly every bar (a 4-bar z-score swings widely):
# scenarios that check what the freshness gate refuses need a strategy that keeps asking.
BUSY_STRATEGY = {
    "class": "MeanReversion", "version": "v1", "venue": "okx", "bar_interval_ms": 30000,
    "symbols": ["BTC-USDT-SWAP"],
    "params": {"window_bars": 4, "entry_z": 0.6, "exit_z": 0.1, "stop_z": 10.0, "size": "1"},
}
# Probe orders trade another instrument than the strategy: on a net-mode account, a probe position
# on the strategy's instrument would make the strategy's reduce-only exits invalid at the venue.
PROBE_INST = "ETH-USDT-SWAP"


def submit_direct(tree: Tree, side: str, size: str = "1", *, inst_id: str = PROBE_INST,
                  strategy_id: str = PROBE_STRATEGY) -> Order:
    """A market order straight through the gateway (recorded in Redis, then sent): fills on demand.

    It bypasses the strategies and their freshness gate on purpose, so a
    scenario can make fills happen while a fault is on.
    """
    from tradetree.core.types import OrderIntent, OrderType, Side

    intent = OrderIntent(strategy_id=strategy_id, venue="okx", inst_id=inst_id, side=Side(side),
                         type=OrderType.MARKET, size=Decimal(size), reason="scenario probe")
    allow_direct(tree, strategy_id)
    return ray.get(tree.gateway().submit_order.remote(intent), timeout=30)


def allow_direct(tree: Tree, strategy_id: str) -> None:
    """Record ``strategy_id`` RUNNING (unless the kill switch owns it), as a host would for its strategy:
    the gateway's own gate refuses orders of a strategy that is not. Its kill flag and venue
    pauses still hold the orders back."""
    from tradetree.core.types import StrategyState

    tree.redis(lambda s, c: s.transition_strategy_state(
        strategy_id, (None, StrategyState.PAUSED, StrategyState.RUNNING), StrategyState.RUNNING))


def actor_stats(tree: Tree, name: str) -> dict[str, Any]:
    return ray.get(tree.actor(name).stats.remote(), timeout=10)


class FillLatencyWatch:
    """Wall-clock latency from a fill at the venue to Redis matching it, sampled from outside.

    A background thread reads the simulator's trades, then Redis (audit
    stream and positions), every ``interval_secs``. For each venue trade it
    keeps ``seen``: the monotonic time the read that first showed it at the
    venue *started* (the simulator recorded it at most one sample earlier),
    ``applied``: when the first Redis read containing it ended, and
    ``matched``: when the first read ended in which Redis held exactly the
    venue's trades and its positions summed over strategies equalled the
    venue's. Venue time (``ts_ms``) is never used: the simulator's clock runs
    ``time_scale`` times faster than the wall.
    """

    def __init__(self, tree: Tree, interval_secs: float = 0.05) -> None:
        import threading

        self.tree = tree
        self.interval_secs = interval_secs
        self.seen: dict[str, float] = {}
        self.applied: dict[str, float] = {}
        self.matched: dict[str, float] = {}
        self.layers: dict[str, str] = {}
        self.matched_sample_secs: dict[str, float] = {}  # how long the sample that first saw it matched took
        self.samples = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fill-latency-watch", daemon=True)

    def __enter__(self) -> FillLatencyWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:
                self.errors += 1
            self._stop.wait(self.interval_secs)

    def sample(self) -> None:
        started = time.monotonic()
        truth = self.tree.truth()
        venue_trades = {f"{t['inst_id']}:{t['trade_id']}" for t in truth["trades"]}
        venue_positions = {k: Decimal(v) for k, v in truth["positions"].items() if Decimal(v) != 0}

        async def read(store, _control):
            return await store.audit_entries(), await store.positions()

        entries, positions = self.tree.redis(read)
        ended = time.monotonic()
        self.samples += 1
        for key in venue_trades:
            self.seen.setdefault(key, started)
        redis_trades = {}
        for e in entries:
            key = f"{e.fill.inst_id}:{e.fill.trade_id}"
            redis_trades[key] = e.fill.layer.value
            self.applied.setdefault(key, ended)
            self.layers.setdefault(key, e.fill.layer.value)
        summed: dict[str, Decimal] = {}
        for p in positions:
            summed[p.inst_id] = summed.get(p.inst_id, Decimal(0)) + p.qty
        summed = {k: v for k, v in summed.items() if v != 0}
        if set(redis_trades) == venue_trades and summed == venue_positions:
            for key in venue_trades:
                if key not in self.matched:
                    self.matched[key] = ended
                    self.matched_sample_secs[key] = ended - started

    def latencies(self, keys: Any = None) -> dict[str, float]:
        """``matched - seen`` in seconds per trade (only trades matched so far)."""
        keys = self.seen.keys() if keys is None else keys
        return {k: self.matched[k] - self.seen[k] for k in keys if k in self.matched and k in self.seen}

    def late(self, keys: Any, bound_secs: float) -> dict[str, float]:
        """Trades matched more than ``bound_secs`` after they appeared at the venue, beyond what a
        sample can resolve: ``matched`` is the end of the sample that first saw a trade matched, so a
        sample that took s seconds (on a busy machine this thread is starved too: 1.8 s was seen
        beside two CPU hogs, 10-20 ms on a quiet one) shows it up to s late. Latencies in seconds."""
        return {k: round(v, 3) for k, v in self.latencies(keys).items() if v - self.matched_sample_secs[k] > bound_secs}

    def trades_seen_between(self, start: float, end: float = float("inf")) -> list[str]:
        return sorted(k for k, t in self.seen.items() if start <= t < end)


def venue_trade_keys(tree: Tree) -> set[str]:
    """``inst_id:trade_id`` of every trade at the venue now (the keys ``FillLatencyWatch`` uses)."""
    return {f"{t['inst_id']}:{t['trade_id']}" for t in tree.truth()["trades"]}

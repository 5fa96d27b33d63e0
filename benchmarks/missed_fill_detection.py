"""Missed-fill detection: from a fill whose WS record the venue dropped to the corrected position in Redis.

The whole engine runs (Ray, real Redis, the embedded simulator) with the
simulator's ``drop_fill_records`` fault on from the start: every order status
still arrives on the WS, no fill record does, so each fill reaches Redis only
through the REST poller (or, if it were slower, the fill-health layer). Market
orders on one swap are sent straight through the gateway, one after another at
random gaps (seeded), alternately buying and selling, until ``--fills`` fills
happened at the venue; each is measured on its own.

Measured per fill, in wall-clock time (the simulator's venue clock runs
``time_scale`` times faster than the wall, so its timestamps are not used):

- **at venue**: when a sampler thread (every ``--sample-ms``) first sees the
  trade in the simulator's account;
- **in Redis**: when the same sampler first sees it in the audit stream. The
  Lua script that applies a fill writes the position and the audit entry in one
  atomic step, so this is when the position was corrected.

Latency = in Redis - at venue (both sides carry up to one sample of error).
For each poll interval (``--intervals``, default 0.5 s and 2 s): p50, p90,
p99 and max, the ratio p50 / interval (about 0.5 expected: a fill waits half
an interval on average for the next cycle, plus the cycle itself), and which
layer applied the fills. The fill-health layer keeps the engine's default
thresholds and the canary is off, so the poller is what is measured. At the
end of each run Redis must equal the venue (positions summed over strategies,
every trade once), else the run is reported as failed.

    .venv/bin/python benchmarks/missed_fill_detection.py [--intervals 0.5 2] [--fills 200]

Prints a table and writes ``benchmarks/results/missed_fill_detection_<UTC>.json``.
Needs a Redis server (``--redis-url``, default ``$TRADETREE_TEST_REDIS_URL`` or
``redis://127.0.0.1:6379/0``); its keys live under a fresh namespace, deleted
afterwards.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
INST = "ETH-USDT-SWAP"


def engine_config(redis_url: str, namespace: str, poll_interval_secs: float, seed: int):
    """One venue (the embedded simulator), no strategies, the poller at ``poll_interval_secs``."""
    from tradetree.config import EngineConfig

    return EngineConfig.model_validate({
        "name": f"tt-bench-{uuid.uuid4().hex[:6]}",
        "redis": {"url": redis_url, "namespace": namespace},
        "venues": [{"name": "okx", "instruments": ["BTC-USDT-SWAP", INST]}],
        "simulator": {"seed": seed, "tick_interval_ms": 100, "time_scale": 60.0},
        "reconciler": {"poll_interval_secs": poll_interval_secs, "canary_enabled": False},
        "heartbeat_interval_secs": 0.5,
    })


class Sampler:
    """Samples the simulator's trades and the audit stream (read incrementally) on a thread."""

    def __init__(self, sim: Any, redis_url: str, namespace: str, interval_secs: float) -> None:
        import redis

        from tradetree.core.redis_keys import RedisKeys

        self.sim = sim
        self.interval_secs = interval_secs
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        self.audit_key = RedisKeys(namespace).audit
        self.at_venue: dict[str, float] = {}
        self.in_redis: dict[str, float] = {}
        self.layer: dict[str, str] = {}
        self._last_id = "0-0"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="missed-fill-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_secs)

    def sample(self) -> None:
        started = time.monotonic()
        for t in self.sim.account_truth()["trades"]:
            self.at_venue.setdefault(f"{t['inst_id']}:{t['trade_id']}", started)
        reply = self.client.xread({self.audit_key: self._last_id}, count=10_000)
        ended = time.monotonic()
        for _, entries in reply:
            for entry_id, fields in entries:
                key = f"{fields['inst_id']}:{fields['trade_id']}"
                self.in_redis.setdefault(key, ended)
                self.layer.setdefault(key, fields["layer"])
                self._last_id = entry_id


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def run_one(poll_interval_secs: float, *, fills: int, redis_url: str, seed: int, sample_ms: int,
            timeout_secs: float) -> dict[str, Any]:
    from tradetree.core.types import OrderIntent, OrderType, Side
    from tradetree.runner import EngineRuntime
    from tradetree.supervisor.actor_client import ActorClient
    from tradetree.tree import gateway_id

    namespace = f"tt-bench-{uuid.uuid4().hex[:12]}"
    config = engine_config(redis_url, namespace, poll_interval_secs, seed)
    rng = random.Random(seed)
    runtime = EngineRuntime(config, include_dashboard=False)
    runtime.start()
    try:
        sim = runtime.sim_server
        sim.faults.set_drop_fill_records(True)
        actors = ActorClient(runtime.ray_namespace, timeout_secs=30)
        gateway = gateway_id("okx")
        sent = 0
        # The benchmark stands in for a strategy: it is RUNNING, and, as an operator would, it
        # lifts the fill-health pause each lost WS fill raises, so the gateway's own gate (which
        # refuses orders on a paused venue) lets its orders through. What is measured is only the
        # poller bringing the fills the WS lost.
        import redis as _redis

        from tradetree.core.redis_keys import RedisKeys
        keys_of = RedisKeys(namespace)
        admin = _redis.Redis.from_url(runtime.redis_url)
        admin.hset(keys_of.strategy_states, "bench", "RUNNING")
        with Sampler(sim, runtime.redis_url, namespace, sample_ms / 1000) as sampler:
            deadline = time.monotonic() + timeout_secs
            while len(sim.account_truth()["trades"]) < fills and time.monotonic() < deadline:
                side = Side.BUY if sent % 2 == 0 else Side.SELL
                intent = OrderIntent(strategy_id="bench", venue="okx", inst_id=INST, side=side,
                                     type=OrderType.MARKET, size=Decimal(1), reason="missed-fill benchmark")
                for _ in range(20):
                    admin.delete(keys_of.ctl_venue_pause("okx"))
                    order = actors.call_sync(gateway, "submit_order", intent)
                    if not hasattr(order, "reasons"):  # an OrderDenied: paused again meanwhile
                        break
                    time.sleep(0.05)
                else:
                    raise RuntimeError(f"benchmark order denied: {order.reasons}")
                if order.state.value == "rejected":
                    raise RuntimeError(f"benchmark order rejected: {order.reject_reason}")
                sent += 1
                # A random phase against the poll timer for every fill.
                time.sleep(rng.uniform(0.05, 0.25))
            # Every fill must reach Redis: wait for the stragglers (a few poll intervals at most).
            settle = time.monotonic() + max(10.0, 5 * poll_interval_secs)
            while time.monotonic() < settle and not set(sampler.at_venue) <= set(sampler.in_redis):
                time.sleep(0.05)
        matches = _redis_matches_venue(runtime, namespace)
        keys = sorted(sampler.at_venue)
        latencies = [sampler.in_redis[k] - sampler.at_venue[k] for k in keys if k in sampler.in_redis]
        missing = [k for k in keys if k not in sampler.in_redis]
        layers: dict[str, int] = {}
        for k in keys:
            if k in sampler.layer:
                layers[sampler.layer[k]] = layers.get(sampler.layer[k], 0) + 1
        p50 = percentile(latencies, 50) if latencies else float("nan")
        return {
            "poll_interval_secs": poll_interval_secs,
            "orders_sent": sent,
            "fills": len(keys),
            "fills_missing_in_redis": len(missing),
            "redis_matches_venue": matches,
            "layers": layers,
            "latency_secs": {
                "p50": p50,
                "p90": percentile(latencies, 90) if latencies else None,
                "p99": percentile(latencies, 99) if latencies else None,
                "max": max(latencies) if latencies else None,
                "mean": statistics.fmean(latencies) if latencies else None,
                "min": min(latencies) if latencies else None,
            },
            "p50_over_interval": p50 / poll_interval_secs,
            "within_interval_plus_1s": sum(1 for x in latencies if x <= poll_interval_secs + 1.0),
            "ok": matches and not missing and len(keys) >= fills,
        }
    finally:
        runtime.shutdown()
        if "admin" in locals():
            admin.close()
        _delete_namespace(redis_url, namespace)


def _redis_matches_venue(runtime: Any, namespace: str) -> bool:
    import asyncio

    from tradetree.core.store import RedisStore

    async def read():
        store = await RedisStore.connect(runtime.redis_url, namespace)
        try:
            return await store.positions(), await store.audit_entries()
        finally:
            await store.close()

    positions, audit = asyncio.run(read())
    truth = runtime.sim_server.account_truth()
    summed: dict[str, Decimal] = {}
    for p in positions:
        summed[p.inst_id] = summed.get(p.inst_id, Decimal(0)) + p.qty
    redis_side = {k: v for k, v in summed.items() if v != 0}
    venue_side = {k: Decimal(v) for k, v in truth["positions"].items() if Decimal(v) != 0}
    audited = [f"{e.fill.inst_id}:{e.fill.trade_id}" for e in audit]
    venue_trades = {f"{t['inst_id']}:{t['trade_id']}" for t in truth["trades"]}
    return redis_side == venue_side and len(audited) == len(set(audited)) and set(audited) == venue_trades


def _delete_namespace(redis_url: str, namespace: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def print_table(runs: list[dict[str, Any]]) -> None:
    header = (f"{'poll (s)':>8} {'fills':>6} {'p50 (s)':>8} {'p90 (s)':>8} {'p99 (s)':>8} {'max (s)':>8} "
              f"{'p50/poll':>8} {'<=poll+1s':>10} {'layers':<20} {'ok':>3}")
    print(header)
    print("-" * len(header))
    for r in runs:
        lat = r["latency_secs"]
        layers = ", ".join(f"{k} {v}" for k, v in sorted(r["layers"].items()))
        print(f"{r['poll_interval_secs']:>8.2f} {r['fills']:>6} {lat['p50']:>8.3f} {lat['p90']:>8.3f} "
              f"{lat['p99']:>8.3f} {lat['max']:>8.3f} {r['p50_over_interval']:>8.2f} "
              f"{r['within_interval_plus_1s']:>4}/{r['fills']:<5} {layers:<20} {'yes' if r['ok'] else 'NO':>3}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.5, 2.0], help="poll intervals (s)")
    parser.add_argument("--fills", type=int, default=200, help="fills per interval")
    parser.add_argument("--redis-url", default=os.environ.get("TRADETREE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample-ms", type=int, default=10, help="how often the sampler reads both sides")
    parser.add_argument("--timeout-secs", type=float, default=300.0, help="per interval, to send the orders")
    args = parser.parse_args(argv)

    import logging

    import ray

    logging.basicConfig(level=logging.WARNING)
    from tradetree.runner import TREE_RAY_SYSTEM_CONFIG

    ray.init(namespace=f"tt-bench-{uuid.uuid4().hex[:6]}", include_dashboard=False, num_cpus=4,
             log_to_driver=False, configure_logging=False, _system_config=TREE_RAY_SYSTEM_CONFIG)
    runs = []
    try:
        for interval in args.intervals:
            print(f"poll interval {interval:g}s: {args.fills} fills...", flush=True)
            runs.append(run_one(interval, fills=args.fills, redis_url=args.redis_url, seed=args.seed,
                                sample_ms=args.sample_ms, timeout_secs=args.timeout_secs))
    finally:
        ray.shutdown()
    print()
    print_table(runs)
    report = {
        "benchmark": "missed_fill_detection",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "settings": {"fills": args.fills, "seed": args.seed, "sample_ms": args.sample_ms, "instrument": INST,
                     "fault": "drop_fill_records", "order_gap_secs": [0.05, 0.25]},
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"missed_fill_detection_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {out.relative_to(ROOT)}")
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Market event to order at the venue, through the running tree, beside a bare Ray round trip.

What a live strategy waits for: a ticker leaves the venue, the gateway's
websocket reads it, the gateway fans it out to the strategy host (a Ray call),
the host closes the bar, the strategy decides, the pre-trade checks read Redis,
the host asks the gateway to submit (a Ray call), the gateway records the order
in Redis and sends it over REST, and the venue's matching engine takes it.

The tree is the real one (``EngineRuntime``: Ray actors, an embedded Redis, the
embedded simulator over loopback), trading the shipped
``SingleVenueMarketMaking`` with a requote threshold so small that it requotes
on every other bar (cancel on one bar, quote on the next). The simulator runs
at ``time_scale`` 1 so a bar of venue time is a bar of wall time. Two
timestamps are taken inside the simulator's own thread, with one clock:

- when the websocket hub is handed a market step (the event), per instrument;
- when the matching engine is handed an order (the order at the venue).

A quote's event is the first market step of the bar that closed the bar it was
decided on (the host closes a bar on the first ticker past its end), i.e. the
last bar-opening step before the order reached the venue. Event to the first
quote of that decision, and to every quote, are reported apart.

The baseline runs in the same process at the same time: a driver-to-actor Ray
round trip (``ray.get(actor.ping.remote())``) on a bare sync actor and on a
bare async actor (the gateway and the host are async actors), sampled in
between the tree's bars.

    .venv/bin/python benchmarks/event_to_order.py [--seconds 120] [--bar-ms 250]

Prints a table and writes ``benchmarks/results/event_to_order_<UTC>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
INST = "BTC-USDT-SWAP"
GOAL_RAY_ROUND_TRIPS = 3.0


def engine_config(bar_ms: int, tick_ms: int) -> Any:
    from tradetree.config import EngineConfig

    return EngineConfig.model_validate({
        "name": f"tt-e2o-{uuid.uuid4().hex[:6]}",
        "redis": {"url": None, "namespace": "e2o"},
        "venues": [{"name": "okx", "instruments": [INST]}],
        "strategies": [{
            "class": "SingleVenueMarketMaking", "version": "v1", "venue": "okx", "symbols": [INST],
            "bar_interval_ms": bar_ms,
            # Quotes far from the touch (no fills, so no inventory limit), requoted on every move.
            "params": {"fair_price": "close", "half_spread_bps": 40, "requote_bps": 0.001,
                       "quote_size": "1", "max_inventory": "10", "tick_size": "0.1", "ack_timeout_ms": 5000},
        }],
        "simulator": {"seed": 3, "tick_interval_ms": tick_ms, "time_scale": 1.0},
        "metrics": {"enabled": False},
    })


class VenueClock:
    """Timestamps taken inside the simulator's thread: market steps handed to the WS hub, orders handed
    to the matching engine. The wrappers call straight through; they only note the time first."""

    def __init__(self, server: Any) -> None:
        self.steps: list[tuple[float, int]] = []  # (perf_counter, venue ts of the INST tick)
        self.orders: list[tuple[float, str]] = []  # (perf_counter, clOrdId)
        self.recording = False
        hub_on_market, engine_submit = server._hub.on_market, server.engine.submit

        def on_market(ticks):
            if self.recording:
                now = time.perf_counter()
                for tick in ticks:
                    if tick.inst_id == INST:
                        self.steps.append((now, tick.ts_ms))
            return hub_on_market(ticks)

        def submit(req, ts_ms):
            if self.recording and req.inst_id == INST:
                self.orders.append((time.perf_counter(), req.cl_ord_id))
            return engine_submit(req, ts_ms)

        server._hub.on_market = on_market
        server.engine.submit = submit


def bar_openers(steps: list[tuple[float, int]], bar_ms: int) -> list[float]:
    """The time of each bar's first market step: the event that closes the bar before it."""
    out, last_bar = [], None
    for at, ts in steps:
        bar = ts // bar_ms
        if bar != last_bar:
            if last_bar is not None:
                out.append(at)
            last_bar = bar
    return out


def latencies(openers: list[float], orders: list[tuple[float, str]], max_ms: float) -> dict[str, list[float]]:
    """Event to each order (ms), and to the first order of each decision. An order more than ``max_ms``
    after its event is counted apart (``late``): it was decided on a later look, not on that bar."""
    import bisect

    every, first, late = [], [], []
    seen: set[float] = set()
    for at, _ in orders:
        i = bisect.bisect_right(openers, at) - 1
        if i < 0:
            continue
        ms = (at - openers[i]) * 1000
        if ms > max_ms:
            late.append(ms)
            continue
        every.append(ms)
        if openers[i] not in seen:
            seen.add(openers[i])
            first.append(ms)
    return {"every": every, "first": first, "late": late}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ray_round_trips(stop: threading.Event, out: dict[str, list[float]], pause_secs: float) -> None:
    import ray

    @ray.remote(num_cpus=0)
    class Bare:
        def ping(self, x):
            return x

    @ray.remote(num_cpus=0)
    class BareAsync:
        async def ping(self, x):
            return x

    actors = {"sync": Bare.remote(), "async": BareAsync.remote()}
    for a in actors.values():
        ray.get(a.ping.remote(0), timeout=300)  # created and warm before sampling
    while not stop.is_set():
        for kind, actor in actors.items():
            t = time.perf_counter()
            ray.get(actor.ping.remote(1), timeout=60)
            out[kind].append((time.perf_counter() - t) * 1000)
        stop.wait(pause_secs)
    for a in actors.values():
        ray.kill(a)


async def strategy_orders(redis_url: str, namespace: str, ids: list[str]) -> dict[str, str]:
    """clOrdId -> strategy id, from Redis: only the strategy's orders are the ones this measures."""
    from tradetree.core import RedisStore

    store = await RedisStore.connect(redis_url, namespace)
    try:
        out = {}
        for coid in ids:
            order = await store.get_order(coid)
            if order is not None:
                out[coid] = order.strategy_id
        return out
    finally:
        await store.close()


async def strategy_running(redis_url: str, namespace: str, sid: str) -> bool:
    from tradetree.core import RedisStore, StrategyState

    store = await RedisStore.connect(redis_url, namespace)
    try:
        return await store.strategy_state(sid) == StrategyState.RUNNING
    finally:
        await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="measured window, after the release")
    parser.add_argument("--bar-ms", type=int, default=250, help="the strategy's bar (venue ms = wall ms)")
    parser.add_argument("--tick-ms", type=int, default=25, help="the simulator's market step")
    parser.add_argument("--start-timeout", type=float, default=900.0, help="bound on the tree's start and release")
    parser.add_argument("--ray-pause", type=float, default=0.05, help="pause between baseline samples")
    args = parser.parse_args()

    import logging

    import ray

    from tradetree.runner import EngineRuntime

    logging.basicConfig(level=logging.WARNING)
    config = engine_config(args.bar_ms, args.tick_ms)
    sid = config.strategies[0].id
    state_dir = Path(tempfile.mkdtemp(prefix="tt-e2o-"))
    runtime = EngineRuntime(config, state_dir=state_dir, include_dashboard=False)
    t0 = time.perf_counter()
    runtime.start()
    started = time.perf_counter() - t0
    assert runtime.sim_server is not None and runtime.redis_url is not None
    clock = VenueClock(runtime.sim_server)
    baseline: dict[str, list[float]] = {"sync": [], "async": []}
    stop = threading.Event()
    try:
        deadline = time.monotonic() + args.start_timeout
        while not asyncio.run(strategy_running(runtime.redis_url, config.redis.namespace, sid)):
            if time.monotonic() > deadline:
                raise SystemExit(f"{sid} not RUNNING within {args.start_timeout:g}s")
            time.sleep(0.5)
        released = time.perf_counter() - t0
        print(f"tree started in {started:.1f}s, {sid} released at {released:.1f}s; measuring {args.seconds:g}s",
              flush=True)
        sampler = threading.Thread(target=ray_round_trips, args=(stop, baseline, args.ray_pause), daemon=True)
        sampler.start()
        clock.recording = True
        time.sleep(args.seconds)
        clock.recording = False
        stop.set()
        sampler.join(timeout=120)
        with runtime.sim_server.lock:
            steps, orders = list(clock.steps), list(clock.orders)
        owners = asyncio.run(strategy_orders(runtime.redis_url, config.redis.namespace, [c for _, c in orders]))
    finally:
        runtime.shutdown()
        if ray.is_initialized():
            ray.shutdown()

    ours = [(at, c) for at, c in orders if owners.get(c) == sid]
    lat = latencies(bar_openers(steps, args.bar_ms), ours, max_ms=args.bar_ms)
    sync_p50 = pct(baseline["sync"], 0.5)
    rows = {
        "event -> first quote": lat["first"],
        "event -> every quote": lat["every"],
        "Ray round trip, sync actor": baseline["sync"],
        "Ray round trip, async actor": baseline["async"],
    }
    print(f"\n{'measure':<30} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'p50 / sync RTT':>15}")
    for name, values in rows.items():
        p50 = pct(values, 0.5)
        print(f"{name:<30} {len(values):>6} {p50:>8.2f} {pct(values, 0.9):>8.2f} {pct(values, 0.99):>8.2f}"
              f" {p50 / sync_p50:>14.1f}x")
    first_p50 = pct(lat["first"], 0.5)
    print(f"\norders at the venue: {len(orders)} ({len(ours)} the strategy's); decided on a later bar: "
          f"{len(lat['late'])}")
    print(f"goal: event -> order p50 within {GOAL_RAY_ROUND_TRIPS:g} Ray round trips: "
          f"{first_p50 / sync_p50:.1f} round trips ({'met' if first_p50 <= GOAL_RAY_ROUND_TRIPS * sync_p50 else 'not met'})")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = RESULTS / f"event_to_order_{stamp}.json"
    out.write_text(json.dumps({
        "benchmark": "event_to_order", "utc": stamp, "args": vars(args),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "tree_start_secs": round(started, 2), "release_secs": round(released, 2),
        "orders_at_venue": len(orders), "strategy_orders": len(ours), "late": len(lat["late"]),
        "figures_ms": {name: {"n": len(v), "p50": pct(v, 0.5), "p90": pct(v, 0.9), "p99": pct(v, 0.99)}
                       for name, v in rows.items()},
        "ratio_first_p50_to_sync_round_trip": first_p50 / sync_p50,
        "goal_round_trips": GOAL_RAY_ROUND_TRIPS,
    }, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

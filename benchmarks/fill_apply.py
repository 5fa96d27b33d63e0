"""Fill application: ``RedisStore.apply_fill`` / ``apply_fills`` beside a trivial script.

What a user waits for when fills arrive is the store applying them: one
``apply_fill`` awaited at a time (the gateway's WS path), a duplicate of an
applied fill (every layer may deliver each fill), and a page of fills in one
``apply_fills`` call (the REST poller). Each is measured beside the floor of
the same Redis and the same client: a trivial ``EVALSHA`` of ``return 1``
awaited one at a time, and pipelined in pages of the same size.

Fills are realistic for the hot path: spot fills with a quote fee, each of a
recorded order (attribution hits), newest last (the in-order fold), on a
fresh namespace per round. Each round runs every case once, in turn, so the
load of a shared machine weighs on all alike; the figures are medians over
rounds. Beside the wall rate it reports CPU per operation, of the client
process and (with a private server) of the server's main thread: on a loaded
machine the wall rate mostly measures the CPU share each process gets, the
CPU per operation what the code costs.

    .venv/bin/python benchmarks/fill_apply.py [--fills 2000] [--page 100] [--rounds 5]

Starts a private ``redis-server`` on a free loopback port when one is on
PATH (no persistence; stopped at the end), else uses ``--redis-url`` /
``$TRADETREE_TEST_REDIS_URL``. Prints a table and writes
``benchmarks/results/fill_apply_<UTC>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
D = Decimal
GOAL_SEQUENTIAL_RATIO = 0.80
GOAL_BATCHED_PER_SEC = 20_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own on a free loopback port, without persistence."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="tt-bench-redis-")
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir,
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def wait_ready(self, timeout_secs: float = 10.0) -> None:
        import redis

        deadline = time.monotonic() + timeout_secs
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5)
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def make_fills(n: int, orders: int, trade_prefix: str, ts0: int) -> list[Any]:
    """``n`` fills of the ``orders`` recorded orders, from ``ts0`` on (newest last)."""
    from tradetree.core.types import Fill, FillLayer, Side

    return [
        Fill(venue="okx", inst_id="BTC-USDT", trade_id=f"{trade_prefix}{i}",
             client_order_id=f"c{i % orders}", side=Side.BUY if i % 3 else Side.SELL,
             price=D(60_000) + D(i % 97) / 10, size=D("0.001"), fee=D("0.03"), fee_ccy="USDT",
             ts_ms=ts0 + i, layer=FillLayer.WS)
        for i in range(n)
    ]


def _server_cpu_ns(pid: int | None) -> int:
    """CPU time of the server's main thread (where commands and scripts run), in ns."""
    if pid is None:
        return 0
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


async def _timed(op: Callable[[], Awaitable[None]], count: int, server_pid: int | None) -> dict[str, float]:
    """Rate per wall second, and client and server CPU us per operation.

    On a loaded machine the wall rate mostly measures the share of CPU each process
    gets; CPU per operation is what the code costs, whatever the load.
    """
    server0, cpu0, started = _server_cpu_ns(server_pid), time.process_time_ns(), time.perf_counter()
    await op()
    wall = time.perf_counter() - started
    cpu, server = time.process_time_ns() - cpu0, _server_cpu_ns(server_pid) - server0
    return {"per_sec": count / wall, "client_cpu_us": cpu / count / 1e3,
            "server_cpu_us": server / count / 1e3 if server_pid else float("nan")}


async def one_round(url: str, n: int, page: int, orders: int, server_pid: int | None) -> dict[str, Any]:
    from tradetree.core.store import RedisStore
    from tradetree.core.types import FillLayer, Instrument, InstrumentKind, Order, OrderType, Side

    spot = Instrument(venue="okx", inst_id="BTC-USDT", kind=InstrumentKind.SPOT, base="BTC",
                      quote="USDT", tick_size=D("0.1"), lot_size=D("0.00000001"),
                      min_size=D("0.00001"))
    store = await RedisStore.connect(url, f"tt-bench-fills-{uuid.uuid4().hex[:10]}")
    client = store.client
    trivial = client.register_script("return 1")
    await trivial()  # loads it
    cases: dict[str, dict[str, float]] = {}
    try:
        for i in range(orders):
            await store.record_order(Order(
                client_order_id=f"c{i}", strategy_id=f"s{i % 3}", venue="okx", inst_id="BTC-USDT",
                side=Side.BUY, type=OrderType.MARKET, size=D(1000), created_ms=1, updated_ms=1))
        single = make_fills(n, orders, "s", 1_700_000_000_000)
        paged = make_fills(n, orders, "p", 1_700_000_000_000 + n)  # newer: in-order folds
        poll = FillLayer.POLL

        async def trivial_sequential() -> None:
            for _ in range(n):
                await trivial()

        async def trivial_pipelined() -> None:
            for start in range(0, n, page):
                async with client.pipeline(transaction=False) as pipe:
                    for _ in range(min(page, n - start)):
                        pipe.evalsha(trivial.sha, 0)
                    await pipe.execute()

        async def sequential() -> None:
            for fill in single:
                await store.apply_fill(fill, spot)

        async def duplicate() -> None:
            for fill in single:
                await store.apply_fill(fill.model_copy(update={"layer": poll}), spot)

        async def batched() -> None:
            for start in range(0, n, page):
                await store.apply_fills([(f, spot) for f in paged[start:start + page]])

        async def batched_duplicate() -> None:
            for start in range(0, n, page):
                await store.apply_fills(
                    [(f.model_copy(update={"layer": poll}), spot) for f in paged[start:start + page]])

        # Duplicates replay the fills applied just before them, so the order is fixed.
        for name, op in (("trivial_evalsha_sequential", trivial_sequential),
                         ("apply_fill_sequential", sequential),
                         ("apply_fill_duplicate", duplicate),
                         ("trivial_evalsha_pipelined", trivial_pipelined),
                         ("apply_fills_batched", batched),
                         ("apply_fills_batched_duplicate", batched_duplicate)):
            cases[name] = await _timed(op, n, server_pid)
        applied = await store.fill_layer_counts("okx")
        expected = {"ws": {"delivered": 2 * n, "applied": 2 * n}, "poll": {"delivered": 2 * n, "applied": 0}}
        if {k: applied[k] for k in expected} != expected:
            raise RuntimeError(f"fill counters {applied} differ from {expected}")
    finally:
        await store.reset_namespace()
        await store.close()
    return cases


def summarize(rounds: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    names = list(rounds[0])
    med = {k: statistics.median(r[k]["per_sec"] for r in rounds) for k in names}
    cpu = {k: {m: statistics.median(r[k][m] for r in rounds) for m in ("client_cpu_us", "server_cpu_us")}
           for k in names}
    seq_floor, pipe_floor = med["trivial_evalsha_sequential"], med["trivial_evalsha_pipelined"]
    ratios = {
        "apply_fill_sequential / trivial_sequential": med["apply_fill_sequential"] / seq_floor,
        "apply_fill_duplicate / trivial_sequential": med["apply_fill_duplicate"] / seq_floor,
        "apply_fills_batched / trivial_pipelined": med["apply_fills_batched"] / pipe_floor,
        "apply_fills_batched / apply_fill_sequential": med["apply_fills_batched"] / med["apply_fill_sequential"],
        "apply_fills_batched_duplicate / trivial_pipelined": med["apply_fills_batched_duplicate"] / pipe_floor,
    }
    goals = {
        "sequential >= 80% of trivial EVALSHA": ratios["apply_fill_sequential / trivial_sequential"]
        >= GOAL_SEQUENTIAL_RATIO,
        "batched >= 20k fills/s": med["apply_fills_batched"] >= GOAL_BATCHED_PER_SEC,
    }
    seq_cpu = cpu["trivial_evalsha_sequential"]
    cpu_ratios = {  # trivial CPU / our CPU: the rate ratio an unloaded machine would show, roughly
        f"{k} (cpu) / trivial_sequential": (seq_cpu["client_cpu_us"] + seq_cpu["server_cpu_us"])
        / (cpu[k]["client_cpu_us"] + cpu[k]["server_cpu_us"])
        for k in ("apply_fill_sequential", "apply_fill_duplicate")
    }
    return {"per_sec_median": med, "cpu_us_per_op_median": cpu, "ratios": ratios,
            "cpu_ratios": cpu_ratios, "goals_met": goals}


def print_table(summary: dict[str, Any], args: argparse.Namespace, url: str) -> None:
    med, cpu = summary["per_sec_median"], summary["cpu_us_per_op_median"]
    print(f"fill application, {args.fills} fills per case, pages of {args.page}, "
          f"median of {args.rounds} rounds, Redis {url}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'case':34} {'per s':>10} {'wall us/op':>11} {'client cpu us':>14} {'server cpu us':>14}")
    for name, rate in med.items():
        c = cpu[name]
        print(f"{name:34} {rate:10.0f} {1e6 / rate:11.1f} {c['client_cpu_us']:14.1f} "
              f"{c['server_cpu_us']:14.1f}")
    print()
    for name, ratio in (summary["ratios"] | summary["cpu_ratios"]).items():
        print(f"{name:52} {ratio:6.2f}x")
    for goal, met in summary["goals_met"].items():
        print(f"goal {goal}: {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=2000, help="fills per case and round")
    parser.add_argument("--page", type=int, default=100, help="fills per apply_fills call / pipeline")
    parser.add_argument("--orders", type=int, default=20, help="recorded orders the fills belong to")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-url", default=os.environ.get("TRADETREE_TEST_REDIS_URL",
                                                              "redis://127.0.0.1:6379/0"))
    parser.add_argument("--shared-redis", action="store_true",
                        help="use --redis-url even when redis-server is on PATH")
    args = parser.parse_args()

    server = None if args.shared_redis or shutil.which("redis-server") is None else PrivateRedis()
    try:
        if server is not None:
            server.wait_ready()
        url = server.url if server is not None else args.redis_url
        pid = server.proc.pid if server is not None else None
        rounds = [asyncio.run(one_round(url, args.fills, args.page, args.orders, pid))
                  for _ in range(args.rounds)]
    finally:
        if server is not None:
            server.stop()
    summary = summarize(rounds)
    print_table(summary, args, url)

    import redis

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = RESULTS / f"fill_apply_{stamp}.json"
    out.write_text(json.dumps({
        "benchmark": "fill_apply",
        "utc": stamp,
        "redis": "private redis-server" if server is not None else url,
        "fills_per_case": args.fills, "page": args.page, "orders": args.orders,
        "rounds": args.rounds,
        "machine": {"python": platform.python_version(), "redis_py": redis.__version__,
                    "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        **summary,
        "per_round": rounds,
    }, indent=2))
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

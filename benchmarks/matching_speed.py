"""Matching engine throughput: orders per second through ``sim.matching.MatchingEngine``, beside baselines.

Three workloads on BTC-USDT (the simulator's default instrument, 20-level
synthetic book), each order after a new market step, as the backtester and the
paper venue drive it:

- ``market``: a market order alternating buy / sell of 0.01 BTC: book rebuild
  (the step's hash-seeded sizes), a VWAP walk, fees, position, events;
- ``limit_cancel``: a limit order 1 % away from the market (it rests), then
  its cancel: validation, reservation, the resting pass, the cancel;
- ``limit_fill``: a limit order at the last step's price: it crosses the synthetic book at once or
  rests until the next step's trade fills it (what is left after two steps is canceled).

Baselines measured in the same run: a plain loop that builds the same
``OrderRequest`` objects and inserts them in a dict (the floor of handling an
order in Python), and with ``--previous-tree DIR`` an earlier source tree (e.g.
``git archive 242b537 | tar -x -C DIR``). Every round runs this tree's workloads
with the floor, and the earlier tree's workloads, each in a fresh child process,
so all are measured alike.
Medians of ``--rounds`` alternated rounds.

    .venv/bin/python benchmarks/matching_speed.py [--orders 20000] [--rounds 5] [--previous-tree DIR]

Results go to ``benchmarks/results/matching_speed_<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORKLOADS = ("market", "limit_cancel", "limit_fill")


def _engine():
    from _trees import module

    default_instruments = module("sim.config").default_instruments
    MatchingEngine = module("sim.matching").MatchingEngine

    insts = [i for i in default_instruments() if i.inst_id == "BTC-USDT"]
    return MatchingEngine(insts, initial_balances={"USDT": Decimal("1e12"), "BTC": Decimal("1e6")}, seed=7)


def _ticks(n: int):
    """``n`` market steps one second apart, the price wandering on the 0.1 grid around 60 000."""
    from _trees import module

    market_data = module("sim.market_data")
    MarketTick, PublicTrade = market_data.MarketTick, market_data.PublicTrade

    out = []
    price = 600_000
    for k in range(n):
        price += (k * 7919) % 11 - 5
        px = Decimal(price).scaleb(-1)
        ts = 1_700_000_000_000 + 1000 * k
        side = "buy" if k % 2 else "sell"
        out.append(MarketTick("BTC-USDT", ts, px, Decimal("5"), (PublicTrade(str(k + 1), px, Decimal("5"), side, ts),)))
    return out


def run_workload(name: str, n: int) -> float:
    """Seconds for ``n`` orders of workload ``name`` (market steps included, their building not)."""
    from _trees import module

    OrderRequest = module("sim.matching").OrderRequest

    engine = _engine()
    ticks = _ticks(n + 1)
    size = Decimal("0.01")
    engine.on_market(ticks[0])
    if name == "market":
        reqs = [OrderRequest("BTC-USDT", "buy" if k % 2 else "sell", "market", size, None, f"m{k}", "", False,
                             "base_ccy") for k in range(n)]
        t = time.perf_counter()
        for k in range(n):
            tick = ticks[k + 1]
            engine.on_market(tick)
            engine.submit(reqs[k], tick.ts_ms)
        return time.perf_counter() - t
    if name == "limit_cancel":
        reqs = [OrderRequest("BTC-USDT", "buy", "limit", size, (ticks[k + 1].price * Decimal("0.99")).quantize(
            Decimal("0.1")), f"l{k}") for k in range(n)]
        t = time.perf_counter()
        for k in range(n):
            tick = ticks[k + 1]
            engine.on_market(tick)
            engine.submit(reqs[k], tick.ts_ms)
            engine.cancel("BTC-USDT", cl_ord_id=f"l{k}", ts_ms=tick.ts_ms)
        return time.perf_counter() - t
    if name == "limit_fill":
        reqs = [OrderRequest("BTC-USDT", "buy" if k % 2 else "sell", "limit", size, ticks[k].price, f"f{k}")
                for k in range(n)]
        t = time.perf_counter()
        for k in range(n):
            engine.submit(reqs[k], ticks[k].ts_ms)
            engine.on_market(ticks[k + 1])
            if k % 2:  # a step that moved away leaves an order resting: cancel, so the book stays small
                engine.cancel("BTC-USDT", cl_ord_id=f"f{k - 1}", ts_ms=ticks[k + 1].ts_ms)
                engine.cancel("BTC-USDT", cl_ord_id=f"f{k}", ts_ms=ticks[k + 1].ts_ms)
        return time.perf_counter() - t
    raise ValueError(name)


def run_floor(n: int) -> float:
    """The baseline: build the same requests and insert them in a dict by client order id."""
    from _trees import module

    OrderRequest = module("sim.matching").OrderRequest

    size = Decimal("0.01")
    book: dict[str, object] = {}
    t = time.perf_counter()
    for k in range(n):
        cl = f"d{k}"
        book[cl] = OrderRequest("BTC-USDT", "buy" if k % 2 else "sell", "market", size, None, cl, "", False,
                                "base_ccy")
    return time.perf_counter() - t


def child(n: int) -> None:
    print(json.dumps({**{w: run_workload(w, n) for w in WORKLOADS}, "dict_insert": run_floor(n)}))


def _child(tree: Path | None, n: int) -> dict:
    """The workloads in a fresh process: this tree, or ``tree`` on ``PYTHONPATH`` (both measured alike)."""
    from _trees import child_env

    env = child_env(tree)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "--orders", str(n)],
                          capture_output=True, text=True, env=env, cwd="/", timeout=1800)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--previous-tree", type=Path)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.orders)
        return 0
    n = args.orders
    secs: dict[str, list[float]] = {w: [] for w in (*WORKLOADS, "dict_insert")}
    previous: dict[str, list[float]] = {w: [] for w in WORKLOADS}
    for k in range(args.rounds):
        print(f"round {k + 1}/{args.rounds}", file=sys.stderr, flush=True)
        ours = _child(None, n)
        for w in secs:
            secs[w].append(ours[w])
        if args.previous_tree is not None:
            prev = _child(args.previous_tree.resolve(), n)
            for w in WORKLOADS:
                if w in prev:
                    previous[w].append(prev[w])
    rate = {w: n / statistics.median(v) for w, v in secs.items()}
    out = {
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_avg_at_start": os.getloadavg()},
        "orders_per_round": n, "rounds": args.rounds, "orders_per_sec": rate, "round_secs": secs,
        "vs_dict_insert": {w: rate[w] / rate["dict_insert"] for w in WORKLOADS},
    }
    print(f"{'workload':<14} {'orders/s':>11} {'x dict insert':>14} {'previous orders/s':>18} {'x previous':>11}")
    for w in WORKLOADS:
        prev_rate = n / statistics.median(previous[w]) if previous[w] else None
        if prev_rate:
            out.setdefault("previous_orders_per_sec", {})[w] = prev_rate
            out.setdefault("vs_previous", {})[w] = rate[w] / prev_rate
        print(f"{w:<14} {rate[w]:>11,.0f} {rate[w] / rate['dict_insert']:>14.4f} "
              f"{(f'{prev_rate:,.0f}' if prev_rate else '-'):>18} {(f'{rate[w] / prev_rate:.2f}' if prev_rate else '-'):>11}")
    print(f"{'dict_insert':<14} {rate['dict_insert']:>11,.0f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"matching_speed_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sweep speed: 100 variants of a shipped strategy on a real 1-minute file, on Ray, beside a serial loop.

The sweep is ``sim.backtest.sweep.run_sweep`` as ``tradetree sweep`` runs it:
``MeanReversion_v10_BTC`` (``configs/strategies``), a 10 x 10 grid of
``window_bars`` x ``entry_z``, 75 % in-sample, the top 5 re-run on the
held-out quarter, on a local Ray with ``--num-cpus`` (2) workers. The data is
prepared once per window in the driver and read by every task from the object
store. Reported: wall time (what the user waits for, Ray start included and
apart), variants per minute, and CPU use = the tasks' CPU seconds over
(wall seconds x CPUs).

Baseline, in the same run: the loop a user would write without a sweep, one
``run_backtest`` per variant in one process, each preparing its own data, timed
on ``--baseline-variants`` variants and scaled to the sweep's count.

    .venv/bin/python benchmarks/sweep_speed.py [--data FILE] [--variants 100] [--num-cpus 2]

Results go to ``benchmarks/results/sweep_speed_<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "binance_spot_BTCUSDT_1m_2026-03-23_2026-04-22.csv.gz"
DEFAULT_STRATEGY = ROOT / "configs" / "strategies" / "MeanReversion_v10_BTC.yaml"
RESULTS = ROOT / "benchmarks" / "results"


def grid(variants: int) -> dict[str, list]:
    """``window_bars`` x ``entry_z`` choices whose product is at least ``variants`` (10 x 10 for 100)."""
    side = max(1, int(round(variants ** 0.5)))
    other = -(-variants // side)
    return {"window_bars": [10 + 5 * k for k in range(side)],
            "entry_z": [round(1.0 + 0.15 * k, 2) for k in range(other)]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--strategy", type=Path, default=DEFAULT_STRATEGY)
    p.add_argument("--variants", type=int, default=100)
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--baseline-variants", type=int, default=4, help="variants of the serial loop actually run")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()

    sys.path.insert(0, str(ROOT))
    import ray
    from tqdm import tqdm

    from tradetree.core.config import StrategyConfig, load_strategy_config
    from tradetree.sim.backtest.config import BacktestConfig
    from tradetree.sim.backtest.data import load_candle_series
    from tradetree.sim.backtest.engine import clear_bar_tables, run_backtest
    from tradetree.sim.backtest.sweep import SweepSpec, parameter_sets, run_sweep

    sc = load_strategy_config(args.strategy)
    # the file is a spot pair; the shipped config trades the swap, which the backtester maps to its spot candles
    series = load_candle_series(args.data)
    config = BacktestConfig()
    spec = SweepSpec(choices=grid(args.variants))
    sets = parameter_sets(spec)
    n = len(series)
    print(f"{sc.id}: {len(sets)} variants on {n:,} candles of {args.data.name}, {args.num_cpus} CPUs "
          f"(load average {os.getloadavg()[0]:.1f})", flush=True)

    # the serial baseline first, so the sweep's Ray does not compete with it
    split = int(round(n * 0.75))
    window = series.slice(0, split)
    serial: list[float] = []
    for params in sets[: args.baseline_variants]:
        clear_bar_tables()
        variant = StrategyConfig.model_validate({**sc.model_dump(mode="json", by_alias=True),
                                                 "params": {**sc.params, **params}})
        t = time.perf_counter()
        run_backtest(variant, window, config)
        serial.append(time.perf_counter() - t)
    per_variant = sorted(serial)[len(serial) // 2]

    t0 = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_start = time.perf_counter() - t0
    bar = tqdm(total=0, desc="sweep", unit="run", disable=args.no_progress, file=sys.stderr, dynamic_ncols=True)
    state = {"done": 0}

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - state["done"])
        state["done"] = done

    try:
        t = time.perf_counter()
        result = run_sweep(sc, series, config, spec, top=args.top,
                           num_cpus=args.num_cpus, progress=progress)
        sweep_secs = time.perf_counter() - t
    finally:
        bar.close()
        ray.shutdown()
    wall = ray_start + sweep_secs
    rows = result.rows
    ran = len(rows) + len(result.top_rows())
    cpu = result.task_cpu_secs
    errors = [r.error for r in rows if r.error]
    out = {
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_avg_at_start": os.getloadavg()},
        "strategy": sc.id, "data": str(args.data), "candles": n, "in_sample_candles": result.in_sample_bars,
        "variants": len(rows), "held_out_reruns": len(result.top_rows()), "backtests": ran,
        "num_cpus": args.num_cpus, "ray_start_secs": ray_start, "sweep_secs": sweep_secs, "wall_secs": wall,
        "variants_per_min": len(rows) / wall * 60, "task_cpu_secs": cpu,
        "cpu_use": cpu / (sweep_secs * args.num_cpus) if cpu else None,
        "errors": errors[:3],
        "baseline": {"what": "serial loop, one run_backtest per variant, each preparing its own data",
                     "variants_run": len(serial), "secs_per_variant": per_variant, "rounds_secs": serial,
                     "scaled_secs": per_variant * len(rows)},
    }
    out["speedup_vs_serial"] = out["baseline"]["scaled_secs"] / wall
    print(f"sweep: {len(rows)} variants + {len(result.top_rows())} held-out re-runs in {wall:.1f} s "
          f"(Ray start {ray_start:.1f} s): {out['variants_per_min']:.0f} variants/min, CPU use "
          f"{out['cpu_use'] or 0:.0%} of {args.num_cpus} CPUs")
    print(f"serial loop: {per_variant:.2f} s per variant (median of {len(serial)}), {len(rows)} variants "
          f"~{out['baseline']['scaled_secs']:.0f} s; the sweep is {out['speedup_vs_serial']:.1f}x")
    if errors:
        print(f"errors: {errors[:3]}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"sweep_speed_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

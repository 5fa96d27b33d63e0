"""Sweep speed: 100 variants of a shipped strategy on a real 1-minute file, on Ray, beside baselines.

The sweep is ``sim.backtest.sweep.run_sweep`` as ``tradetree sweep`` runs it:
``MeanReversion_v10_BTC`` (``configs/strategies``), a 10 x 10 grid of
``window_bars`` x ``entry_z``, 75 % in-sample, the top 5 re-run on the
held-out quarter, on a local Ray with ``--num-cpus`` (2) workers. The data is
prepared once per window in the driver and read by every task from the object
store. Reported: wall time (what the user waits for, Ray start included and
apart), variants per minute, and CPU use = the tasks' CPU seconds over
(wall seconds x CPUs).

Baselines, alternated with the sweep round by round (``--rounds``), every one
in a fresh process so that none inherits another's warm state:

- the loop a user would write without a sweep: one ``run_backtest`` per
  in-sample variant in one process, each preparing its own data (what a
  process keeps between runs, such as the bar tables, it keeps as it would for
  that user), on ``--baseline-variants`` variants (default: all of them; fewer
  are scaled to the sweep's count by their mean);
- with ``--previous-tree DIR`` the same sweep from an earlier source tree (e.g.
  ``git archive 242b537 | tar -x -C DIR``), whose ``run_sweep`` prepared the
  data again in every task: the comparison that shows what sharing the
  preparation buys.

    .venv/bin/python benchmarks/sweep_speed.py [--data FILE] [--variants 100] [--num-cpus 2] [--rounds 1]
                                               [--previous-tree DIR]

Results go to ``benchmarks/results/sweep_speed_<UTC time>.json``.
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


def _inputs(args: argparse.Namespace):
    from _trees import module  # this checkout, or the tree the parent named, in that tree's layout

    load_strategy_config = module("core.config").load_strategy_config
    BacktestConfig = module("sim.backtest.config").BacktestConfig
    load_candle_series = module("sim.backtest.data").load_candle_series
    SweepSpec = module("sim.backtest.sweep").SweepSpec

    # the file is a spot pair; the shipped config trades the swap, which the backtester maps to its spot candles
    return (load_strategy_config(args.strategy), load_candle_series(args.data), BacktestConfig(),
            SweepSpec(choices=grid(args.variants)))


def sweep_child(args: argparse.Namespace) -> None:
    """Child mode: one sweep (this tree, or the tree on ``PYTHONPATH``), Ray started here; JSON out."""
    import ray
    from _trees import module

    run_sweep = module("sim.backtest.sweep").run_sweep

    sc, series, config, spec = _inputs(args)
    t0 = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_start = time.perf_counter() - t0
    try:
        t = time.perf_counter()
        result = run_sweep(sc, series, config, spec, top=args.top, num_cpus=args.num_cpus)
        sweep_secs = time.perf_counter() - t
    finally:
        ray.shutdown()
    print(json.dumps({"ray_start_secs": ray_start, "sweep_secs": sweep_secs, "wall_secs": ray_start + sweep_secs,
                      "variants": len(result.rows), "held_out_reruns": len(result.top_rows()),
                      "in_sample_candles": result.in_sample_bars,
                      "task_cpu_secs": getattr(result, "task_cpu_secs", 0.0),
                      "errors": [r.error for r in result.rows if r.error][:3],
                      "ranking": [r.params for r in result.rows[:args.top]]}))


def serial_child(args: argparse.Namespace) -> None:
    """Child mode: the serial loop, one ``run_backtest`` per variant on the in-sample window; JSON out."""
    from _trees import module

    StrategyConfig = module("core.config").StrategyConfig
    run_backtest = module("sim.backtest.engine").run_backtest
    parameter_sets = module("sim.backtest.sweep").parameter_sets

    sc, series, config, spec = _inputs(args)
    window = series.slice(0, int(round(len(series) * 0.75)))
    secs = []
    for params in parameter_sets(spec)[: args.baseline_variants or None]:
        variant = StrategyConfig.model_validate({**sc.model_dump(mode="json", by_alias=True),
                                                 "params": {**sc.params, **params}})
        t = time.perf_counter()
        run_backtest(variant, window, config)
        secs.append(time.perf_counter() - t)
    print(json.dumps({"secs": secs}))


def _child(mode: str, args: argparse.Namespace, tree: Path | None) -> dict:
    from _trees import child_env

    env = child_env(tree)
    cmd = [sys.executable, str(Path(__file__).resolve()), mode, "--data", str(args.data.resolve()),
           "--strategy", str(args.strategy.resolve()), "--variants", str(args.variants),
           "--num-cpus", str(args.num_cpus), "--top", str(args.top),
           "--baseline-variants", str(args.baseline_variants)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/", timeout=7200)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--strategy", type=Path, default=DEFAULT_STRATEGY)
    p.add_argument("--variants", type=int, default=100)
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--rounds", type=int, default=1, help="alternated rounds of serial loop, sweep(s); medians")
    p.add_argument("--baseline-variants", type=int, default=0,
                   help="variants of the serial loop actually run (default 0: all, nothing scaled)")
    p.add_argument("--previous-tree", type=Path, help="an earlier source tree whose sweep runs as a baseline")
    p.add_argument("--sweep-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--serial-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.sweep_child:
        sweep_child(args)
        return 0
    if args.serial_child:
        serial_child(args)
        return 0

    sys.path.insert(0, str(ROOT))
    from tradetree.sim.backtest.sweep import SweepSpec, parameter_sets

    variants = len(parameter_sets(SweepSpec(choices=grid(args.variants))))
    print(f"{args.strategy.stem}: {variants} variants on {args.data.name}, {args.num_cpus} CPUs, {args.rounds} "
          f"round(s) (load average {os.getloadavg()[0]:.1f})", flush=True)
    runs: dict[str, list[dict]] = {"serial": [], "sweep": [], "previous_sweep": []}
    for k in range(args.rounds):
        print(f"round {k + 1}/{args.rounds}: serial loop", file=sys.stderr, flush=True)
        runs["serial"].append(_child("--serial-child", args, None))
        print(f"round {k + 1}/{args.rounds}: sweep", file=sys.stderr, flush=True)
        runs["sweep"].append(_child("--sweep-child", args, None))
        if args.previous_tree is not None:
            print(f"round {k + 1}/{args.rounds}: previous tree's sweep", file=sys.stderr, flush=True)
            runs["previous_sweep"].append(_child("--sweep-child", args, args.previous_tree.resolve()))
    errors = [r["error"] for rs in runs.values() for r in rs if "error" in r]
    sweeps = [r for r in runs["sweep"] if "error" not in r]
    if not sweeps:
        print(f"the sweep failed: {errors}", file=sys.stderr)
        return 1
    first = sweeps[0]
    wall = _median(sweeps, "wall_secs") or 0.0
    sweep_secs = _median(sweeps, "sweep_secs") or 0.0
    cpu = _median(sweeps, "task_cpu_secs")
    serial_totals = [sum(r["secs"]) / len(r["secs"]) * first["variants"] for r in runs["serial"] if r.get("secs")]
    serial = statistics.median(serial_totals) if serial_totals else None
    previous = [r for r in runs["previous_sweep"] if "error" not in r]
    previous_wall = _median(previous, "wall_secs")
    out = {
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_avg_at_start": os.getloadavg()},
        "strategy": args.strategy.stem, "data": str(args.data), "in_sample_candles": first["in_sample_candles"],
        "variants": first["variants"], "held_out_reruns": first["held_out_reruns"],
        "backtests": first["variants"] + first["held_out_reruns"], "num_cpus": args.num_cpus, "rounds": args.rounds,
        "ray_start_secs": _median(sweeps, "ray_start_secs"), "sweep_secs": sweep_secs, "wall_secs": wall,
        "variants_per_min": first["variants"] / wall * 60, "task_cpu_secs": cpu,
        "cpu_use": cpu / (sweep_secs * args.num_cpus) if cpu else None, "errors": errors[:3] + first["errors"],
        "serial": {"what": "one run_backtest per in-sample variant in one process, each preparing its own data",
                   "variants_run": [len(r.get("secs", [])) for r in runs["serial"]],
                   "scaled_secs": serial, "rounds": runs["serial"]},
        "previous_sweep": {"tree": str(args.previous_tree), "wall_secs": previous_wall, "rounds": previous}
        if args.previous_tree is not None else None,
        "sweep_rounds": sweeps,
    }
    if serial:
        out["speedup_vs_serial"] = serial / wall
    if previous_wall:
        out["speedup_vs_previous_sweep"] = previous_wall / wall
    print(f"sweep: {first['variants']} variants + {first['held_out_reruns']} held-out re-runs in {wall:.1f} s "
          f"(Ray start {out['ray_start_secs']:.1f} s): {out['variants_per_min']:.0f} variants/min, CPU use "
          f"{out['cpu_use'] or 0:.0%} of {args.num_cpus} CPUs")
    if serial:
        print(f"serial loop: ~{serial:.0f} s for {first['variants']} variants; the sweep is "
              f"{out['speedup_vs_serial']:.1f}x")
    if previous_wall:
        print(f"previous tree's sweep: {previous_wall:.1f} s; this sweep is {out['speedup_vs_previous_sweep']:.2f}x")
    if out["errors"]:
        print(f"errors: {out['errors']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"sweep_speed_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``tradetree backtest``, ``tradetree sweep`` and ``tradetree compare``.

    tradetree backtest configs/strategies/X.yaml --data candles.csv.gz [--seed N] [--out DIR]
    tradetree sweep    configs/strategies/X.yaml --data candles.csv.gz --grid window_bars=10,20 ... [--random N]
                       [--address HOST:PORT]   (an existing Ray cluster; default $RAY_ADDRESS, else a local Ray)
    tradetree compare  RUN_A RUN_B [--data candles.csv.gz]

``--data`` takes ``FILE`` (for the first symbol) or ``INST=FILE`` and may be
repeated; ``--config`` takes a backtest YAML (:class:`BacktestConfig` fields:
fees, book, latency_ms, instruments, risk, ...). Bad files and options raise
``ConfigError`` (exit code 2 in ``tradetree.cli.main``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from tradetree.core import ConfigError, StrategyConfig, load_strategy_config
from tradetree.sim.backtest.config import BacktestConfig, FillRule, load_backtest_config
from tradetree.sim.backtest.data import CandleCache, CandleSeries, load_candles_cached

__all__ = ["register", "cmd_backtest", "cmd_sweep", "cmd_compare", "parse_data_args"]

DEFAULT_RUNS_DIR = Path(".tradetree/runs")
_INST_ID = re.compile(r"^[A-Za-z0-9]+(-[A-Za-z0-9]+)*$")


def parse_data_args(values: list[str], symbols: tuple[str, ...], cache: CandleCache | None = None
                    ) -> dict[str, CandleSeries]:
    """``[INST=]FILE`` arguments -> candle series per instrument (a bare FILE is the first symbol's).

    ``cache`` keeps the parsed files on disk by their hash (``data.load_candles_cached``).

    Raises:
        ConfigError: a file cannot be read or parsed, or two files name the same instrument.
    """
    files: dict[str, str] = {}
    for value in values:
        inst, sep, file = value.partition("=")
        if not sep or not _INST_ID.match(inst):
            inst, file = symbols[0], value
        if inst in files:
            raise ConfigError(f"--data: two files for {inst}")
        files[inst] = file
    out: dict[str, CandleSeries] = {}
    for inst, file in files.items():
        try:
            out[inst] = load_candles_cached(file, cache)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--data {file}: {exc}") from None
    return out


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="bar" if desc == "backtest" else "run", disable=not enabled,
               file=sys.stderr, dynamic_ncols=True)
    state = {"done": 0}

    def update(done: int, _total: int) -> None:
        bar.update(done - state["done"])
        state["done"] = done

    return bar, update


def _config(args: argparse.Namespace) -> BacktestConfig:
    overrides: dict[str, Any] = {"seed": args.seed, "latency_ms": args.latency_ms, "fill_rule": args.fill_rule}
    if args.config is not None:
        return load_backtest_config(args.config, **overrides)
    try:
        return BacktestConfig.model_validate({k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        raise ConfigError(f"backtest options: {exc}") from None


def _cache(args: argparse.Namespace) -> CandleCache | None:
    return None if getattr(args, "no_cache", False) else CandleCache(getattr(args, "cache_dir", None))


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def cmd_backtest(args: argparse.Namespace) -> int:
    from tradetree.sim.backtest.engine import Backtester
    from tradetree.sim.backtest.report import metrics_table, write_run

    sc: StrategyConfig = load_strategy_config(args.strategy_config)
    data = parse_data_args(args.data, sc.symbols, _cache(args))
    config = _config(args)
    out = args.out or DEFAULT_RUNS_DIR / f"{sc.id}-backtest-seed{config.seed}-{_stamp()}"
    n = len(next(iter(data.values())))
    bar, update = _progress_bar(n, "backtest", not args.no_progress)
    try:
        result = Backtester(sc, data if len(data) > 1 else next(iter(data.values())), config,
                            progress=update).run()
    finally:
        bar.close()
    write_run(result, out, plots=not args.no_plots)
    print(f"{sc.id}: {len(result.trades)} fills, {result.timings['candles_per_sec']:,.0f} bars/s")
    for label, value in metrics_table(result.metrics)[:10]:
        print(f"  {label:<28} {value}")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"run folder: {out}")
    return 0


def _runtime_env(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        env = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--runtime-env-json: {exc}") from None
    if not isinstance(env, dict):
        raise ConfigError("--runtime-env-json: expected a JSON object, e.g. '{\"pip\": [\"tradetree==X\"]}'")
    return env


def cmd_sweep(args: argparse.Namespace) -> int:
    from tradetree.sim.backtest.sweep import (
        SweepSpec,
        parse_param_spec,
        run_sweep,
        sweep_markdown,
        sweep_rows_for_csv,
        where_it_ran,
    )

    # $RAY_ADDRESS as Ray's own tools honour it: a shell set up for a cluster sweeps on it.
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if address and args.num_cpus is not None:
        raise ConfigError(f"--num-cpus sizes a local Ray, but the sweep attaches to the cluster at {address} "
                          "(--address or $RAY_ADDRESS), whose CPUs are its own: drop one of the two")
    runtime_env = _runtime_env(args.runtime_env_json)
    sc = load_strategy_config(args.strategy_config)
    data = parse_data_args(args.data, sc.symbols, _cache(args))
    config = _config(args)
    choices: dict[str, list[Any]] = {}
    ranges = {}
    for spec in args.grid or []:
        name, values = parse_param_spec(spec)
        if isinstance(values, list):
            choices[name] = values
        else:
            ranges[name] = values
    spec = SweepSpec(choices=choices, ranges=ranges, random=args.random, seed=config.seed)
    bar, update = _progress_bar(0, "sweep", not args.no_progress)

    def progress(done: int, total: int) -> None:
        bar.total = total
        update(done, total)

    try:
        result = run_sweep(sc, data, config, spec, holdout_fraction=args.holdout, top=args.top, metric=args.metric,
                           warmup_bars=args.warmup_bars, num_cpus=args.num_cpus or 2, progress=progress,
                           address=address, runtime_env=runtime_env, attach_timeout_secs=args.attach_timeout)
    finally:
        bar.close()
    out = args.out or DEFAULT_RUNS_DIR / f"{sc.id}-sweep-{_stamp()}"
    out.mkdir(parents=True, exist_ok=True)
    text = sweep_markdown(result)
    (out / "sweep.md").write_text(text, encoding="utf-8")
    header, rows = sweep_rows_for_csv(result)
    with (out / "sweep.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    print(text)
    print(where_it_ran(result))
    print(f"sweep folder: {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from tradetree.sim.backtest.compare import (
        ReferencePrices,
        compare_runs,
        load_run,
        render_markdown,
        write_comparison,
    )

    try:
        run_a, run_b = load_run(args.run_a), load_run(args.run_b)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"compare: {exc}") from None
    reference = None
    if args.data:
        symbols = tuple(run_a.meta.get("symbols") or run_b.meta.get("symbols") or ["?"])
        reference = ReferencePrices(parse_data_args(args.data, symbols))
    marks: dict[str, Decimal] = {}
    for item in args.mark or []:
        inst, _, px = item.partition("=")
        try:
            marks[inst] = Decimal(px)
        except InvalidOperation:
            raise ConfigError(f"--mark {item!r}: expected INST=PRICE") from None
    div = compare_runs(run_a, run_b, tolerance_ms=args.tolerance_ms, reference=reference, marks=marks or None)
    out = args.out or Path(args.run_b) / f"compare-{Path(args.run_a).name}"
    write_comparison(div, out)
    print(render_markdown(div, rows=10))
    print(f"comparison folder: {out}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("strategy_config", type=Path, help="strategy YAML (configs/strategies/...)")
    p.add_argument("--data", action="append", required=True, metavar="[INST=]FILE",
                   help="candles (.csv, .csv.gz, .parquet); repeat per symbol as INST=FILE")
    p.add_argument("--config", type=Path, help="backtest config YAML (fees, book, latency_ms, instruments, risk)")
    p.add_argument("--seed", type=int, help="seed of the book model (default 1)")
    p.add_argument("--latency-ms", type=int, help="order latency in the matching engine")
    p.add_argument("--fill-rule", choices=[r.value for r in FillRule], help="default next_tick")
    p.add_argument("--out", type=Path, help=f"output folder (default under {DEFAULT_RUNS_DIR})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--cache-dir", type=Path, help="cache of parsed candle files, the 8 last used (default "
                   "$TRADETREE_CACHE_DIR or .tradetree/cache; safe to delete)")
    p.add_argument("--no-cache", action="store_true", help="parse the candle files again, read and write no cache")


def register(subparsers: Any) -> None:
    """Add ``backtest``, ``sweep`` and ``compare`` to an argparse ``subparsers`` object."""
    bt = subparsers.add_parser("backtest", help="backtest a strategy config on candles (same code as paper)")
    _common(bt)
    bt.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    bt.set_defaults(func=cmd_backtest)

    sw = subparsers.add_parser("sweep", help="parameter sweep on Ray, ranked, top sets re-run on held-out data")
    _common(sw)
    sw.add_argument("--grid", action="append", metavar="PARAM=V1,V2|PARAM=LO..HI",
                    help="values of one parameter (repeat per parameter)")
    sw.add_argument("--random", type=int, metavar="N", help="draw N parameter sets instead of the full grid")
    sw.add_argument("--holdout", type=float, default=0.25, help="held-out fraction at the end (default 0.25)")
    sw.add_argument("--top", type=int, default=5, help="sets re-run on the held-out data (default 5)")
    sw.add_argument("--metric", default="sharpe", help="ranking metric (default sharpe)")
    sw.add_argument("--warmup-bars", type=int, default=500, help="bars before the held-out period to warm up")
    sw.add_argument("--num-cpus", type=int, default=None,
                    help="CPUs of the local Ray started when there is no --address (default 2)")
    sw.add_argument("--address", default=None, metavar="HOST:PORT",
                    help="run the backtests on this existing Ray cluster (GCS host:port; default $RAY_ADDRESS, "
                         "else a local Ray); the cluster's nodes must have tradetree installed, or see "
                         "--runtime-env-json")
    sw.add_argument("--attach-timeout", type=float, default=30.0,
                    help="seconds to attach to --address before giving up (default 30)")
    # No runtime env by default: shipping the working dir would upload the checkout (data, runs, .venv)
    # on every sweep, and nodes that share the install need nothing.
    sw.add_argument("--runtime-env-json", metavar="JSON",
                    help="Ray runtime env of every backtest task, e.g. '{\"pip\": [\"tradetree==X\"]}' or a "
                         "remote working_dir/py_modules URI (Ray uploads local directories only at ray.init)")
    sw.set_defaults(func=cmd_sweep)

    cp = subparsers.add_parser("compare", help="divergence report: two run folders trade by trade")
    cp.add_argument("run_a", type=Path, help="run folder A (e.g. the backtest)")
    cp.add_argument("run_b", type=Path, help="run folder B (e.g. paper, exported from Redis)")
    cp.add_argument("--data", action="append", metavar="[INST=]FILE",
                    help="reference candles: separates timing from fill price")
    cp.add_argument("--tolerance-ms", type=int, default=120_000, help="max time apart of matched trades")
    cp.add_argument("--mark", action="append", metavar="INST=PRICE", help="mark price to value open positions")
    cp.add_argument("--out", type=Path, help="output folder (default: inside run B)")
    cp.set_defaults(func=cmd_compare)

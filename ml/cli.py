"""``tradetree ml train | eval | list | fetch``.

``register(subparsers)`` adds an ``ml`` command with the three sub-commands
to an argparse subparsers object; each parsed namespace carries ``func``, a
callable ``func(args) -> int`` (the exit code). ``main(argv)`` runs the same
commands standalone (``python -m tradetree.ml.cli``).

Exit codes: 0 done (``train``: registered, and approved unless
``--require-pass``), 1 the model failed its gate under ``--require-pass``,
2 bad input (config, data, missing model).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tradetree.core import ConfigError, VenueError
from tradetree.ml.config import ModelConfig, load_model_config
from tradetree.ml.data import cache_path_for, fetch_ohlcv_cached, load_candles, load_orderbook_snapshots
from tradetree.ml.dataset import build_dataset
from tradetree.ml.errors import MLError
from tradetree.ml.evaluation import EvaluationResult, walk_forward_evaluate
from tradetree.ml.features import FeatureInputs
from tradetree.ml.pipeline import train_and_register
from tradetree.ml.plots import plot_evaluation
from tradetree.ml.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry

__all__ = ["register", "main"]


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="configs/ml/<model>.yaml")
    p.add_argument("--data", required=True, type=Path, help="candles: .csv, .csv.gz (or .parquet with pyarrow)")
    p.add_argument("--cross", action="append", default=[], metavar="ASSET=PATH",
                   help="candles of a cross asset named in the config's features.cross_assets (repeatable)")
    p.add_argument("--orderbook", type=Path, help="order book snapshots (needed when features.orderbook is set)")
    p.add_argument("--thread-count", type=int, help="override catboost.thread_count")


def register(subparsers: Any) -> None:
    """Add ``ml train``, ``ml eval`` and ``ml list`` to ``subparsers``."""
    ml = subparsers.add_parser("ml", help="CatBoost volatility / direction models: train, evaluate, list")
    sub = ml.add_subparsers(dest="ml_command", required=True)

    train = sub.add_parser("train", help="walk-forward evaluate, fit on all data, register")
    _add_data_args(train)
    train.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT, help="registry root folder")
    train.add_argument("--name", help="registry name (default: the config's name)")
    train.add_argument("--require-pass", action="store_true", help="exit 1 when the model fails its gate")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="walk-forward evaluation against baselines (no registration)")
    _add_data_args(ev)
    ev.add_argument("--plots", type=Path, help="write PNG plots here (needs matplotlib)")
    ev.add_argument("--json", type=Path, help="write the metrics as JSON here")
    ev.set_defaults(func=cmd_eval)

    ls = sub.add_parser("list", help="registered models")
    ls.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT, help="registry root folder")
    ls.set_defaults(func=cmd_list)

    fetch = sub.add_parser("fetch", help="download candles with ccxt into a resumable cache (needs network)")
    fetch.add_argument("--exchange", required=True, help="ccxt exchange id, e.g. okx, binance")
    fetch.add_argument("--symbol", required=True, help="ccxt symbol, e.g. BTC/USDT or BTC/USDT:USDT")
    fetch.add_argument("--timeframe", default="1h", help="ccxt timeframe (default 1h)")
    fetch.add_argument("--since", required=True, help="start: ISO date/time (UTC) or epoch ms; ignored when the cache has bars")
    fetch.add_argument("--until", help="end (exclusive), same forms; default now")
    fetch.add_argument("--cache-dir", type=Path, default=Path("data/candles"), help="cache folder")
    fetch.set_defaults(func=cmd_fetch)


def _load(args: argparse.Namespace) -> tuple[ModelConfig, FeatureInputs]:
    config = load_model_config(args.config)
    if args.thread_count:
        config = config.model_copy(update={"catboost": config.catboost.model_copy(update={"thread_count": args.thread_count})})
    cross = {}
    for item in args.cross:
        asset, sep, path = item.partition("=")
        if not sep or not asset or not path:
            raise ConfigError(f"--cross {item!r}: expected ASSET=PATH")
        cross[asset] = load_candles(path)
    orderbook = load_orderbook_snapshots(args.orderbook) if args.orderbook else None
    return config, FeatureInputs(candles=load_candles(args.data), cross=cross, orderbook=orderbook)


def _metrics_table(result: EvaluationResult, title: str) -> Table:
    table = Table(title=title)
    keys = list(next(iter(result.metrics.values())))
    table.add_column("model")
    for k in keys:
        table.add_column(k, justify="right")
    for name, m in result.metrics.items():
        table.add_row(name, *(_fmt(m[k]) for k in keys))
    return table


def _precision_table(result: EvaluationResult, name: str) -> Table:
    table = Table(title=f"{name}: precision at probability thresholds (long if P>=t, short if P<=1-t)")
    cols = ["threshold", "long_precision", "long_coverage", "short_precision", "short_coverage", "base_rate_up"]
    for c in cols:
        table.add_column(c, justify="right")
    for row in result.precision[name]:
        table.add_row(*(_fmt(row[c]) for c in cols))
    return table


def _print_evaluation(console: Console, result: EvaluationResult, config: ModelConfig) -> None:
    console.print(_metrics_table(result, f"{config.name}: walk-forward, {config.task}, horizon {config.horizon_bars} bars, "
                                         f"{len(result.predictions)} out-of-sample rows"))
    if result.task == "direction":
        for name in result.model_names:
            console.print(_precision_table(result, name))
    verdict = "[green]PASSED[/green]" if result.gate.passed else "[red]FAILED[/red]"
    console.print(f"gate: {verdict}" + "".join(f"\n  - {r}" for r in result.gate.reasons))


def cmd_train(args: argparse.Namespace) -> int:
    console = Console()
    try:
        config, inputs = _load(args)
        outcome = train_and_register(inputs, config, ModelRegistry(args.registry), name=args.name)
    except (ConfigError, MLError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    _print_evaluation(console, outcome.evaluation, config)
    console.print(f"registered {outcome.record.name} {outcome.record.version} at {outcome.record.path}")
    return 1 if args.require_pass and not outcome.record.approved else 0


def cmd_eval(args: argparse.Namespace) -> int:
    console = Console()
    try:
        config, inputs = _load(args)
        result = walk_forward_evaluate(build_dataset(inputs, config), config)
        paths = [] if args.plots is None else plot_evaluation(result, args.plots, prefix=f"{config.name}_")
    except (ConfigError, MLError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    _print_evaluation(console, result, config)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_dict(), indent=2))
        console.print(f"metrics written to {args.json}")
    for p in paths:
        console.print(f"plot written to {p}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    console = Console()
    try:
        records = ModelRegistry(args.registry).records()
    except MLError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    table = Table(title=f"models in {args.registry}")
    for c in ("name", "version", "task", "horizon", "created_at", "oos metric", "approved", "data sha256"):
        table.add_column(c)
    for r in records:
        metrics = r.metrics.get("metrics", {}).get("catboost", {})
        key = "r2" if r.task == "volatility" else "mcc"
        table.add_row(
            r.name, r.version, r.task, str(r.horizon_bars), str(r.meta.get("created_at", "-")),
            f"{key} {_fmt(metrics.get(key))}", "yes" if r.approved else "no", str(r.meta.get("data_sha256", ""))[:12],
        )
    console.print(table)
    if not records:
        console.print("no models registered")
    return 0


def _parse_time_ms(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"not a time: {text!r} (use ISO 8601, e.g. 2024-01-01T00:00, or epoch ms)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _make_exchange(exchange_id: str) -> Any:
    import ccxt.async_support as ccxt_async

    cls = getattr(ccxt_async, exchange_id, None)
    if cls is None:
        raise ConfigError(f"unknown ccxt exchange {exchange_id!r}")
    return cls({"enableRateLimit": True})


def cmd_fetch(args: argparse.Namespace) -> int:
    console = Console()
    try:
        since_ms = _parse_time_ms(args.since)
        until_ms = _parse_time_ms(args.until) if args.until else None
        exchange = _make_exchange(args.exchange)
        path = cache_path_for(args.cache_dir, args.exchange, args.symbol, args.timeframe)

        async def run() -> Any:
            try:
                return await fetch_ohlcv_cached(exchange, args.symbol, args.timeframe, since_ms=since_ms,
                                                until_ms=until_ms, cache_path=path)
            finally:
                close = getattr(exchange, "close", None)
                if close is not None:
                    await close()

        frame = asyncio.run(run())
    except (ConfigError, MLError, VenueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    first = int(frame["timestamp_ms"].iloc[0]) if len(frame) else None
    last = int(frame["timestamp_ms"].iloc[-1]) if len(frame) else None
    console.print(f"{len(frame)} {args.symbol} {args.timeframe} bars in {path} (first {first}, last {last})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tradetree")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

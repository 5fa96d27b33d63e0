"""Walk-forward benchmark of the CatBoost models on real BTC and ETH candles.

Runs the configs in ``configs/ml/`` on the Binance BTC/USDT and ETH/USDT
candles of ``shared/data`` (hourly 2020-05..2024-05, 5-minute 2024-01..09),
each with and without the other asset as a cross-asset feature (hourly
only), prints the
model-vs-baselines tables and writes everything to
``benchmarks/results/ml_walkforward_<utc time>.json`` (plus PNG plots when
matplotlib is installed).

    python benchmarks/ml_walkforward.py [--data-dir ../shared/data] [--thread-count 2] [--timeframes 1h,5m]

This is a benchmark, not a test: it reads real data and takes about ten
minutes on two cores (hourly ~7, 5-minute ~4).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tradetree.ml.config import ModelConfig, load_model_config  # noqa: E402
from tradetree.ml.data import load_candles  # noqa: E402
from tradetree.ml.dataset import build_dataset  # noqa: E402
from tradetree.ml.evaluation import EvaluationResult, walk_forward_evaluate  # noqa: E402
from tradetree.ml.features import FeatureInputs  # noqa: E402
from tradetree.ml.plots import matplotlib_available, plot_evaluation  # noqa: E402

FILES = {
    ("BTC", "1h"): "binance_spot_BTCUSDT_1h_2020-05-11_2024-05-08.csv.gz",
    ("ETH", "1h"): "binance_spot_ETHUSDT_1h_2020-05-11_2024-05-08.csv.gz",
    ("BTC", "5m"): "binance_spot_BTCUSDT_5m_2024-01-01_2024-09-24.csv.gz",
    ("ETH", "5m"): "binance_spot_ETHUSDT_5m_2024-01-01_2024-09-24.csv.gz",
}
CONFIGS = {"1h": ["vol_catboost_1h.yaml", "direction_catboost_1h.yaml"], "5m": ["vol_catboost_5m.yaml"]}


def _table(title: str, result: EvaluationResult) -> Table:
    keys = list(next(iter(result.metrics.values())))
    table = Table(title=title)
    table.add_column("model")
    for k in keys:
        table.add_column(k, justify="right")
    for name, m in result.metrics.items():
        table.add_row(name, *(f"{m[k]:.4f}" for k in keys))
    return table


def _precision(result: EvaluationResult) -> Table:
    table = Table(title="catboost precision at thresholds")
    for c in ("threshold", "long_precision", "long_coverage", "short_precision", "short_coverage", "base_rate_up"):
        table.add_column(c, justify="right")
    for row in result.precision["catboost"]:
        table.add_row(*(f"{row[c]:.4f}" for c in ("threshold", "long_precision", "long_coverage",
                                                   "short_precision", "short_coverage", "base_rate_up")))
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--thread-count", type=int, default=2)
    parser.add_argument("--timeframes", default="1h,5m", help="comma-separated subset of 1h,5m (default both)")
    args = parser.parse_args()
    console = Console(width=160)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for tf in [t.strip() for t in args.timeframes.split(",") if t.strip()]:
        candles = {a: load_candles(args.data_dir / FILES[(a, tf)]) for a in ("BTC", "ETH")}
        for config_file in CONFIGS[tf]:
            base: ModelConfig = load_model_config(REPO / "configs" / "ml" / config_file)
            base = base.model_copy(update={"catboost": base.catboost.model_copy(update={"thread_count": args.thread_count})})
            for asset, other in (("BTC", "ETH"), ("ETH", "BTC")):
                # cross-asset variants on hourly data only, to keep the 5-minute runs short
                for cross in (False, True) if tf == "1h" else (False,):
                    features = base.features.model_copy(update={"cross_assets": (other,) if cross else ()})
                    config = base.model_copy(update={"features": features})
                    inputs = FeatureInputs(candles[asset], cross={other: candles[other]} if cross else {})
                    started = time.monotonic()
                    result = walk_forward_evaluate(build_dataset(inputs, config), config)
                    label = f"{asset} {tf} {config.task} h={config.horizon_bars}" + (f" +{other}" if cross else "")
                    console.print(_table(f"{label} ({len(result.predictions)} OOS rows, "
                                         f"{time.monotonic() - started:.0f}s, gate "
                                         f"{'passed' if result.gate.passed else 'failed'})", result))
                    if config.task == "direction":
                        console.print(_precision(result))
                    top = list(result.feature_importance.items())[:8]
                    console.print("top features: " + ", ".join(f"{k} {v:.1f}" for k, v in top))
                    if matplotlib_available():
                        prefix = label.replace(" ", "_").replace("=", "").replace("+", "x") + "_"
                        plot_evaluation(result, args.out_dir / f"plots_{stamp}", prefix=prefix)
                    runs.append({"label": label, "asset": asset, "timeframe": tf, "cross_asset": other if cross else None,
                                 "config": config.model_dump(mode="json"), "seconds": time.monotonic() - started,
                                 **result.to_dict()})
    out = args.out_dir / f"ml_walkforward_{stamp}.json"
    out.write_text(json.dumps(runs, indent=2))
    console.print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

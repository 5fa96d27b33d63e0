"""Write a backtest's run folder: trades, orders, equity, metrics, plots and a report.

``write_run(result, out_dir)`` writes (see :mod:`sim.backtest.runfolder` for
the part every run kind shares):

- ``run.json``, ``trades.csv``: the comparable run (``tradetree compare``).
- ``orders.csv``, ``denials.csv``, ``round_trips.csv``, ``equity.csv``,
  ``metrics.json``.
- ``equity.png`` (equity and drawdown), ``price.png`` (closes of the first
  symbol with the fills on them), rendered with matplotlib's Agg backend.
- ``report.md`` and ``report.html``: metrics table, notes, plots, the first
  round trips.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np

from tradetree.risk import fmt_decimal
from tradetree.sim.backtest.engine import BacktestResult
from tradetree.sim.backtest.metrics import Metrics
from tradetree.sim.backtest.runfolder import write_run_meta, write_trades_csv

__all__ = ["write_run", "metrics_table", "format_metric", "run_meta"]

_MAX_PLOT_POINTS = 4000
_ROUND_TRIPS_SHOWN = 20

_METRIC_LABELS = (
    ("net_pnl", "Net P&L"),
    ("gross_pnl", "Gross P&L (before fees)"),
    ("fees", "Fees"),
    ("return_pct", "Return %"),
    ("sharpe", "Sharpe (annualised)"),
    ("sortino", "Sortino (annualised)"),
    ("max_drawdown", "Max drawdown"),
    ("max_drawdown_pct", "Max drawdown %"),
    ("win_rate", "Win rate"),
    ("round_trips", "Round trips"),
    ("avg_round_trip_pnl", "Avg round trip P&L"),
    ("profit_factor", "Profit factor"),
    ("fills", "Fills"),
    ("orders", "Orders"),
    ("traded_notional", "Traded notional"),
    ("turnover", "Turnover (x capital)"),
    ("exposure_time", "Time in market"),
    ("avg_gross_exposure", "Avg gross exposure (x capital)"),
    ("capital", "Capital"),
    ("final_equity", "Final equity"),
    ("bars", "Bars"),
)


def format_metric(name: str, value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if name in ("win_rate", "exposure_time"):
            return f"{100 * value:.1f}%"
        if name in ("sharpe", "sortino", "profit_factor", "turnover", "avg_gross_exposure"):
            return f"{value:.3f}"
        return f"{value:,.2f}"
    return str(value)


def metrics_table(metrics: Metrics) -> list[tuple[str, str]]:
    """``(label, formatted value)`` rows in report order."""
    values = metrics.as_dict()
    return [(label, format_metric(key, values[key])) for key, label in _METRIC_LABELS]


def run_meta(result: BacktestResult) -> dict:
    """The ``run.json`` content of a backtest."""
    sc = result.strategy_config
    return {
        "kind": "backtest",
        "strategy_id": sc.id,
        "venue": sc.venue,
        "symbols": list(sc.symbols),
        "contract_values": {k: fmt_decimal(v) for k, v in result.contract_values.items()},
        "start_ms": result.metrics.start_ms,
        "end_ms": result.metrics.end_ms,
        "interval_ms": result.interval_ms,
        "seed": result.config.seed,
        "latency_ms": result.config.latency_ms,
        "fill_rule": result.config.fill_rule.value,
        "sources": result.sources,
        "trade_from_ms": result.trade_from_ms,
        "strategy_config": sc.model_dump(mode="json", by_alias=True),
        "backtest_config": result.config.model_dump(mode="json"),
        "notes": result.notes,
    }


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _text(value: object) -> str:
    if value is None:
        return ""
    if hasattr(value, "as_tuple"):
        return fmt_decimal(value)  # type: ignore[arg-type]
    return str(value)


def _downsample(n: int) -> np.ndarray:
    if n <= _MAX_PLOT_POINTS:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, _MAX_PLOT_POINTS).astype(np.int64))


def _dates(ts_ms: np.ndarray) -> np.ndarray:
    return np.asarray(ts_ms, dtype="datetime64[ms]")


def _plot_equity(result: BacktestResult, path: Path) -> None:
    curve = result.equity
    idx = _downsample(len(curve.ts_ms))
    x = _dates(curve.ts_ms[idx])
    eq = curve.equity
    peak = np.maximum.accumulate(np.concatenate([[result.metrics.capital], eq]))[1:]
    dd = eq - peak
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax1.plot(x, eq[idx], lw=1.0, color="tab:blue")
    ax1.set_ylabel("equity")
    ax1.set_title(f"{result.strategy_config.id}: equity (net of fees)")
    ax1.grid(alpha=0.3)
    ax2.fill_between(x, dd[idx], 0, color="tab:red", alpha=0.4, lw=0)
    ax2.set_ylabel("drawdown")
    ax2.grid(alpha=0.3)
    ax2.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_price(result: BacktestResult, path: Path) -> None:
    inst = result.strategy_config.symbols[0]
    curve = result.equity
    closes = curve.closes[inst]
    idx = _downsample(len(closes))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.plot(_dates(curve.ts_ms[idx]), closes[idx], lw=0.8, color="0.3", label=f"{inst} close")
    trades = [t for t in result.trades if t.inst_id == inst]
    if len(trades) > _MAX_PLOT_POINTS:  # keep the plot readable: an even sample of the fills
        pick = np.linspace(0, len(trades) - 1, _MAX_PLOT_POINTS).astype(np.int64)
        trades = [trades[int(k)] for k in np.unique(pick)]
    for side, marker, color in (("buy", "^", "tab:green"), ("sell", "v", "tab:red")):
        pts = [(t.ts_ms, float(t.price)) for t in trades if t.side == side]
        if pts:
            ts, px = zip(*pts)
            ax.scatter(_dates(np.asarray(ts)), px, marker=marker, color=color, s=14, label=side, zorder=3)
    ax.set_title(f"{inst}: closes and fills")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(result: BacktestResult) -> str:
    sc, cfg, m = result.strategy_config, result.config, result.metrics
    lines = [
        f"# Backtest: {sc.id}",
        "",
        f"- strategy: `{sc.class_name}` {sc.version} on {sc.venue} {', '.join(sc.symbols)}",
        f"- data: {', '.join(f'{k}: `{v}`' for k, v in result.sources.items())}",
        f"- bars: {m.bars} of {result.interval_ms // 1000} s, fill rule `{cfg.fill_rule.value}`, "
        f"latency {cfg.latency_ms} ms, seed {cfg.seed}",
        f"- book: spread {cfg.book.spread_ticks} ticks, {cfg.book.levels} levels, top level "
        f"{fmt_decimal(cfg.book.top_level_notional)} quote; fees: spot taker {fmt_decimal(cfg.fees.spot_taker)}, "
        f"swap taker {fmt_decimal(cfg.fees.swap_taker)}",
        f"- run: {result.timings.get('candles_per_sec', 0):,.0f} bars/s "
        f"({result.timings.get('run_secs', 0):.2f} s, preparation {result.timings.get('prep_secs', 0):.2f} s)",
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---:|",
        *(f"| {label} | {value} |" for label, value in metrics_table(m)),
        "",
    ]
    if result.denials:
        lines += [f"Pre-trade checks denied {len(result.denials)} intent(s); first: "
                  f"{'; '.join(result.denials[0].reasons)}", ""]
    if result.warmup_intents_dropped:
        lines += [f"{result.warmup_intents_dropped} intent(s) dropped during warm-up.", ""]
    if result.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in result.notes), ""]
    lines += ["## Plots", "", "![equity](equity.png)", "", "![price](price.png)", ""]
    if result.round_trips:
        lines += [f"## Round trips (first {min(_ROUND_TRIPS_SHOWN, len(result.round_trips))} of {len(result.round_trips)})", "",
                  "| instrument | side | entry | exit | max qty | net P&L |", "|---|---|---:|---:|---:|---:|"]
        for t in result.round_trips[:_ROUND_TRIPS_SHOWN]:
            lines.append(f"| {t.inst_id} | {'long' if t.side > 0 else 'short'} | {t.entry_ts_ms} | {t.exit_ts_ms} "
                         f"| {fmt_decimal(t.max_qty)} | {float(t.net_pnl):,.4f} |")
        lines.append("")
    return "\n".join(lines)


def _html(result: BacktestResult) -> str:
    sc, m = result.strategy_config, result.metrics
    rows = "\n".join(f"<tr><td>{html.escape(k)}</td><td style='text-align:right'>{html.escape(v)}</td></tr>"
                     for k, v in metrics_table(m))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    sources = ", ".join(f"{html.escape(k)}: <code>{html.escape(v)}</code>" for k, v in result.sources.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Backtest {html.escape(sc.id)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px}}</style></head>
<body><h1>Backtest: {html.escape(sc.id)}</h1>
<p>{html.escape(sc.class_name)} {html.escape(sc.version)} on {html.escape(sc.venue)}
{html.escape(', '.join(sc.symbols))};
data {sources}; fill rule <code>{result.config.fill_rule.value}</code>, latency {result.config.latency_ms} ms,
seed {result.config.seed}.</p>
<h2>Metrics</h2><table>{rows}</table>
{f'<h2>Notes</h2><ul>{notes}</ul>' if notes else ''}
<h2>Plots</h2><img src="equity.png" alt="equity"><img src="price.png" alt="price">
</body></html>
"""


def write_run(result: BacktestResult, out_dir: str | Path, *, plots: bool = True) -> Path:
    """Write the run folder of ``result`` into ``out_dir`` (created); return it.

    Raises:
        OSError: the folder or a file cannot be written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_run_meta(out / "run.json", run_meta(result))
    write_trades_csv(result.trades, out / "trades.csv")
    _write_csv(out / "orders.csv",
               ("client_order_id", "inst_id", "side", "type", "size", "price", "reduce_only", "submitted_ms",
                "state", "filled_size", "avg_fill_price", "reason", "reject_reason"),
               ([o.client_order_id, o.inst_id, o.side, o.type, _text(o.size), _text(o.price), o.reduce_only,
                 o.submitted_ms, o.state, _text(o.filled_size), _text(o.avg_fill_price), o.reason, o.reject_reason]
                for o in result.orders))
    _write_csv(out / "denials.csv", ("ts_ms", "inst_id", "side", "size", "reduce_only", "reasons"),
               ([d.ts_ms, d.inst_id, d.side, _text(d.size), d.reduce_only, " | ".join(d.reasons)]
                for d in result.denials))
    _write_csv(out / "round_trips.csv",
               ("inst_id", "side", "entry_ts_ms", "exit_ts_ms", "max_qty", "realized_pnl", "fees", "net_pnl"),
               ([t.inst_id, "long" if t.side > 0 else "short", t.entry_ts_ms, t.exit_ts_ms, _text(t.max_qty),
                 _text(t.realized_pnl), _text(t.fees), _text(t.net_pnl)] for t in result.round_trips))
    curve = result.equity
    insts = list(curve.positions)
    _write_csv(out / "equity.csv", ("ts_ms", "equity", *(f"position_{i}" for i in insts)),
               ([int(curve.ts_ms[k]), f"{curve.equity[k]:.8f}", *(f"{curve.positions[i][k]:.8g}" for i in insts)]
                for k in range(len(curve.ts_ms))))
    (out / "metrics.json").write_text(json.dumps(result.metrics.as_dict(), indent=2) + "\n", encoding="utf-8")
    if plots:
        _plot_equity(result, out / "equity.png")
        _plot_price(result, out / "price.png")
    (out / "report.md").write_text(_markdown(result), encoding="utf-8")
    (out / "report.html").write_text(_html(result), encoding="utf-8")
    return out

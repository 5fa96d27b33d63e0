"""Backtest speed: tradetree's event-driven backtester vs nautilus-trader, backtrader and backtesting.py.

The same strategy on the same bars in every engine: EMA(10) / EMA(30) of the
close, long 1 BTC while fast > slow, else flat; 0.1 % taker fee on every fill;
orders filled at the signal bar's close; trading starts on the 30th bar, when
the slow EMA has seen its period. Two data sets: the real 1-minute Binance
BTC/USDT file (130,708 bars) and a seeded synthetic series (500,000 bars).

Timed: **preparation + run** (what a user waits for), and each apart, the
median of ``--rounds`` rounds; each round runs every engine once, one after the
other, each in a fresh process (tradetree's preparation is cold), so that the
load of a shared machine weighs on all of them alike. Preparation is building
bars / feeds and engine set-up from the same numpy arrays; the run is the
engine replaying them. Loading the CSV is reported apart.

tradetree runs its full event-driven path: a ``Bar`` (built while preparing)
and a ``StrategyContext`` per bar into ``strategy.on_bar``, every intent
through ``risk.pre_trade.check`` and the simulator's ``MatchingEngine`` (fill
rule ``signal_close`` with the frictionless book, so fills are at the close as
in the anchors).

Two modes, one file:

    # in the project venv: runs tradetree, then each anchor in the anchors venv, prints and saves
    .venv/bin/python benchmarks/backtest_speed.py [--rounds 3] [--synthetic-bars 500000]

    # in benchmarks/.venv-anchors (called by the above): one anchor on one bars file, JSON to stdout
    benchmarks/.venv-anchors/bin/python benchmarks/backtest_speed.py --anchor nautilus --bars FILE.npz

The anchors are never project dependencies: ``benchmarks/requirements-anchors.txt``
pins them for ``benchmarks/.venv-anchors`` (see ``benchmarks/README.md``).
Results go to ``benchmarks/results/backtest_speed_<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18.csv.gz"
ANCHOR_PYTHON = ROOT / "benchmarks" / ".venv-anchors" / "bin" / "python"
RESULTS = ROOT / "benchmarks" / "results"
ANCHORS = ("nautilus", "backtrader", "backtesting")
FAST, SLOW, FEE, SIZE = 10, 30, 0.001, 1.0


# ----------------------------------------------------------------------------- shared (both venvs)

def ema_reference(close: np.ndarray, period: int) -> np.ndarray:
    """EMA seeded with the first close, alpha = 2 / (period + 1) (tradetree's and nautilus's seeding)."""
    alpha = 2.0 / (period + 1)
    out = np.empty(len(close))
    value = float(close[0])
    for i, x in enumerate(close.tolist()):
        value = x if i == 0 else value + alpha * (x - value)
        out[i] = value
    return out


def summarize(fills: list[list], n_bars: int) -> dict:
    """Round trips of a long-only 1-unit strategy from its fills ``[bar, side, price, size, fee]``.

    Net P&L = sum over closed round trips of (exit - entry) * size - both fees;
    an open position at the end is reported apart, not counted.
    """
    orders: list[list] = []  # consecutive fills of one side are one order (an engine may split it)
    for bar, side, price, size, fee in fills:
        if orders and orders[-1][1] == side:
            last = orders[-1]
            last[2] = (last[2] * last[3] + price * size) / (last[3] + size) if last[3] + size else price
            last[3] += size
            last[4] += fee
        else:
            orders.append([bar, side, price, size, fee])
    trips = []
    entry = None
    for bar, side, price, size, fee in orders:
        if side == "buy":
            entry = (bar, price, size, fee)
        elif entry is not None:
            trips.append((entry[0], bar, (price - entry[1]) * entry[2] - entry[3] - fee, entry[3] + fee))
            entry = None
    return {
        "bars": n_bars,
        "round_trips": len(trips),
        "net_pnl": round(sum(t[2] for t in trips), 6),
        "fees": round(sum(t[3] for t in trips), 6),
        "open_at_end": entry is not None,
        "trips": [[t[0], t[1]] for t in trips],
    }


# ----------------------------------------------------------------------------- anchors (anchors venv)

def _frame(bars: dict):
    import pandas as pd

    index = pd.to_datetime(bars["ts_ms"], unit="ms", utc=True)
    return pd.DataFrame({"open": bars["open"], "high": bars["high"], "low": bars["low"], "close": bars["close"],
                         "volume": bars["volume"]}, index=index)


def anchor_backtesting(bars: dict, repeats: int) -> dict:
    from backtesting import Backtest, Strategy

    t0 = time.perf_counter()
    df = _frame(bars).rename(columns=str.capitalize)
    fast = ema_reference(bars["close"], FAST)
    slow = ema_reference(bars["close"], SLOW)
    # backtesting.py calls next() from the bar after the first fully defined one: defined from the
    # 29th bar, next() starts on the 30th, as in the other engines
    fast[: SLOW - 2] = np.nan
    slow[: SLOW - 2] = np.nan

    class EmaCross(Strategy):
        def init(self):
            self.fast = self.I(lambda: fast, name="fast")
            self.slow = self.I(lambda: slow, name="slow")

        def next(self):
            if self.fast[-1] > self.slow[-1]:
                if not self.position:
                    self.buy(size=SIZE)
            elif self.position:
                self.position.close()

    prep = time.perf_counter() - t0
    best, stats = float("inf"), None
    for _ in range(repeats):
        bt = Backtest(df, EmaCross, cash=1e9, commission=FEE, trade_on_close=True, exclusive_orders=False)
        t = time.perf_counter()
        stats = bt.run()
        best = min(best, time.perf_counter() - t)
    fills = []
    for tr in stats._trades.itertuples():
        fills.append([int(tr.EntryBar), "buy", float(tr.EntryPrice), float(tr.Size),
                      FEE * float(tr.EntryPrice) * float(tr.Size)])
        fills.append([int(tr.ExitBar), "sell", float(tr.ExitPrice), float(tr.Size),
                      FEE * float(tr.ExitPrice) * float(tr.Size)])
    if stats._strategy.position:
        fills.append([len(df) - 1, "buy", 0.0, 0.0, 0.0])  # marks the open position at the end
    return {"prep_secs": prep, "run_secs": best, "fills": fills,
            "note": "precomputed EMAs (seeded with the first close), self.I + minimal next()"}


def anchor_backtrader(bars: dict, repeats: int) -> dict:
    import backtrader as bt

    t0 = time.perf_counter()
    df = _frame(bars)
    df.index = df.index.tz_localize(None)
    prep = time.perf_counter() - t0

    class EmaCross(bt.Strategy):
        def __init__(self):
            self.fast = bt.ind.EMA(self.data.close, period=FAST)
            self.slow = bt.ind.EMA(self.data.close, period=SLOW)
            self.fills = []

        def next(self):
            if self.fast[0] > self.slow[0]:
                if not self.position:
                    self.buy(size=SIZE).addinfo(bar=len(self.data) - 1)
            elif self.position:
                self.close().addinfo(bar=len(self.data) - 1)

        def notify_order(self, order):
            if order.status == order.Completed:  # notified on the next bar: keep the signal bar's index
                self.fills.append([order.info.bar, "buy" if order.isbuy() else "sell",
                                   float(order.executed.price), abs(float(order.executed.size)),
                                   float(order.executed.comm)])

    best, strat = float("inf"), None
    for _ in range(repeats):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.broker.setcash(1e9)
        cerebro.broker.set_coc(True)  # cheat-on-close: market orders fill at the signal bar's close
        cerebro.broker.setcommission(commission=FEE)
        cerebro.adddata(bt.feeds.PandasData(dataname=df))
        cerebro.addstrategy(EmaCross)
        t = time.perf_counter()
        strat = cerebro.run()[0]
        best = min(best, time.perf_counter() - t)
    return {"prep_secs": prep, "run_secs": best, "fills": strat.fills,
            "note": "cerebro.run() (includes its feed preload and indicator pass); bt.ind.EMA is seeded "
                    "with the SMA of its first period, stdstats off"}


def anchor_nautilus(bars: dict, repeats: int) -> dict:
    from decimal import Decimal

    from nautilus_trader.backtest.engine import BacktestEngine
    from nautilus_trader.config import BacktestEngineConfig, LoggingConfig, StrategyConfig
    from nautilus_trader.indicators import ExponentialMovingAverage
    from nautilus_trader.model.currencies import BTC, USDT
    from nautilus_trader.model.data import BarType
    from nautilus_trader.model.enums import AccountType, OmsType, OrderSide, TimeInForce
    from nautilus_trader.model.identifiers import InstrumentId, TraderId, Venue
    from nautilus_trader.model.objects import Money
    from nautilus_trader.persistence.wranglers import BarDataWrangler
    from nautilus_trader.test_kit.providers import TestInstrumentProvider
    from nautilus_trader.trading.strategy import Strategy

    class CrossConfig(StrategyConfig, frozen=True):
        instrument_id: InstrumentId
        bar_type: BarType

    class EmaCross(Strategy):
        def __init__(self, config: CrossConfig) -> None:
            super().__init__(config)
            self.fast = ExponentialMovingAverage(FAST)
            self.slow = ExponentialMovingAverage(SLOW)
            self.bar_index = -1
            self.fills = []
            self.qty = None

        def on_start(self) -> None:
            instrument = self.cache.instrument(self.config.instrument_id)
            self.qty = instrument.make_qty(Decimal(str(SIZE)))
            self.register_indicator_for_bars(self.config.bar_type, self.fast)
            self.register_indicator_for_bars(self.config.bar_type, self.slow)
            self.subscribe_bars(self.config.bar_type)

        def on_bar(self, bar) -> None:
            self.bar_index += 1
            if not self.slow.initialized:
                return
            long = not self.portfolio.is_flat(self.config.instrument_id)
            if self.fast.value > self.slow.value:
                if not long:
                    self.submit_order(self.order_factory.market(self.config.instrument_id, OrderSide.BUY, self.qty,
                                                                time_in_force=TimeInForce.GTC))
            elif long:
                self.submit_order(self.order_factory.market(self.config.instrument_id, OrderSide.SELL, self.qty,
                                                            time_in_force=TimeInForce.GTC))

        def on_order_filled(self, event) -> None:
            px = float(event.last_px)
            fee = float(event.commission.as_decimal())
            if event.commission.currency != USDT:
                fee *= px  # a base-currency commission, valued at the fill price
            self.fills.append([self.bar_index, "buy" if event.order_side == OrderSide.BUY else "sell", px,
                               float(event.last_qty), fee])

    t0 = time.perf_counter()
    instrument = TestInstrumentProvider.btcusdt_binance()
    bar_type = BarType.from_str(f"{instrument.id}-1-MINUTE-LAST-EXTERNAL")
    frame = _frame(bars)
    # nautilus takes a bar's volume as the liquidity of its prices; a minute can trade less than 1 BTC,
    # which would split the order over worse prices. Unlimited volume = fill at the close, the rule here.
    frame["volume"] = 1e9
    data = BarDataWrangler(bar_type, instrument).process(frame)
    prep = time.perf_counter() - t0
    best, strategy = float("inf"), None
    for _ in range(repeats):
        engine = BacktestEngine(config=BacktestEngineConfig(trader_id=TraderId("BENCH-001"),
                                                            logging=LoggingConfig(log_level="ERROR")))
        engine.add_venue(venue=Venue("BINANCE"), oms_type=OmsType.NETTING, account_type=AccountType.CASH,
                         base_currency=None, starting_balances=[Money(1_000_000_000, USDT), Money(100, BTC)])
        engine.add_instrument(instrument)
        engine.add_data(data)
        strategy = EmaCross(CrossConfig(instrument_id=instrument.id, bar_type=bar_type))
        engine.add_strategy(strategy)
        t = time.perf_counter()
        engine.run()
        best = min(best, time.perf_counter() - t)
        engine.dispose()
    return {"prep_secs": prep, "run_secs": best, "fills": strategy.fills,
            "note": "BacktestEngine.run() on wrangled 1-minute bars; its EMA is seeded with the first close"}


def run_anchor(name: str, bars_path: str, repeats: int) -> None:
    with np.load(bars_path) as z:
        bars = {k: z[k] for k in z.files}
    out = {"nautilus": anchor_nautilus, "backtrader": anchor_backtrader, "backtesting": anchor_backtesting}[name](
        bars, repeats)
    fills = out.pop("fills")
    out.update(summarize(fills, len(bars["close"])))
    out["version"] = _version(name)
    print(json.dumps(out))


def _version(name: str) -> str:
    from importlib.metadata import version

    return version({"nautilus": "nautilus_trader", "backtrader": "backtrader", "backtesting": "backtesting"}[name])


# ----------------------------------------------------------------------------- tradetree (project venv)

def tradetree_run(series, repeats: int) -> dict:
    """Backtest ``series`` ``repeats`` times: the best prep and the best run."""
    from decimal import Decimal

    from _trees import module  # this checkout, or the tree the parent named, in that tree's layout

    StrategyConfig = module("core.config").StrategyConfig
    BookModel = module("sim.backtest.book_model").BookModel
    BacktestConfig, FillRule = module("sim.backtest.config").BacktestConfig, module("sim.backtest.config").FillRule
    Backtester = module("sim.backtest.engine").Backtester
    FeeSchedule, SimInstrument = module("sim.config").FeeSchedule, module("sim.config").SimInstrument
    base = module("strategies.base")
    Strategy, StrategyParams, orders_toward_target = base.Strategy, base.StrategyParams, base.orders_toward_target
    EMA = module("strategies.indicators").EMA

    class EmaCrossParams(StrategyParams):
        fast_bars: int = FAST
        slow_bars: int = SLOW
        size: Decimal = Decimal(str(SIZE))

    class EmaCross(Strategy):
        """Long ``size`` while EMA(fast) > EMA(slow), else flat; from the bar the slow EMA is ready."""

        Params = EmaCrossParams

        def __init__(self, config):
            super().__init__(config)
            self.inst_id = config.symbols[0]
            self.fast = EMA(self.params.fast_bars)
            self.slow = EMA(self.params.slow_bars)
            self.flat = Decimal(0)

        def on_bar(self, bar, ctx):
            close = float(bar.close)
            fast = self.fast.update(close)
            slow = self.slow.update(close)
            if not self.slow.ready:
                return []
            target = self.params.size if fast > slow else self.flat
            if ctx.exposure(self.inst_id) == target:
                return []
            return orders_toward_target(self, self.inst_id, target, ctx, reason="ema cross")

    inst = SimInstrument(inst_id="BTC-USDT", initial_price=Decimal("100000"), tick_size=Decimal("0.01"),
                         lot_size=Decimal("0.00001"), min_size=Decimal("0.00001"))
    config = BacktestConfig(fill_rule=FillRule.SIGNAL_CLOSE, book=BookModel.frictionless(), instruments=(inst,),
                            fees=FeeSchedule(spot_taker=Decimal(str(FEE))),
                            initial_balances={"USDT": Decimal("1e9"), "BTC": Decimal("100")},
                            progress_every_bars=1 << 30)
    sc = StrategyConfig.model_validate({"class": "EmaCross", "version": "v1", "venue": "binance",
                                        "symbols": ["BTC-USDT"], "bar_interval_ms": series.interval_ms})
    best, prep, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        bt = Backtester(sc, series, config, strategy=EmaCross(sc))
        result = bt.run()
        best = min(best, result.timings["run_secs"])
        prep = min(prep, result.timings["prep_secs"])
    ts = series.ts_ms
    fills = [[int(np.searchsorted(ts, t.ts_ms, side="right")) - 1, t.side, float(t.price), float(t.size),
              float(t.fee)] for t in result.trades]
    out = {"prep_secs": prep, "run_secs": best, "version": "this tree",
           "note": "Backtester.run(): Bar + StrategyContext per bar, pre-trade check and MatchingEngine per order "
                   "(fill rule signal_close, frictionless book)"}
    out.update(summarize(fills, len(series)))
    return out


def run_tradetree_child(bars_path: str) -> None:
    """Child mode: tradetree (the installed one, or the tree on ``PYTHONPATH``) on one bars file, JSON out."""
    from _trees import module

    CandleSeries = module("sim.backtest.data").CandleSeries
    with np.load(bars_path) as z:
        series = CandleSeries.from_arrays(str(bars_path), z["ts_ms"], z["open"], z["high"], z["low"], z["close"],
                                          z["volume"])
    print(json.dumps(tradetree_run(series, 1)))


def _tradetree(bars_file: Path, tree: Path | None, timeout_secs: float) -> dict:
    """This tree, or an earlier source tree (``--previous-tree``), in a fresh process: a cold preparation."""
    from _trees import child_env

    env = child_env(tree)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--tradetree-child", "--bars", str(bars_file)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_secs, cwd=str(bars_file.parent),
                              env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_secs:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if tree is not None:
        out["version"] = f"source tree {tree}"
    return out


def _anchor(name: str, bars_file: Path, timeout_secs: float) -> dict:
    cmd = [str(ANCHOR_PYTHON), str(Path(__file__).resolve()), "--anchor", name, "--bars", str(bars_file),
           "--repeats", "1"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_secs, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_secs:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _agreement(ours: dict, theirs: dict) -> dict:
    """How many round trips are the same (same entry and exit bar), and where they first differ."""
    a = [tuple(t) for t in ours.get("trips", [])]
    b = [tuple(t) for t in theirs.get("trips", [])]
    same = len(set(a) & set(b))
    first = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if first is None and len(a) != len(b):
        first = min(len(a), len(b))
    return {"identical_round_trips": same, "first_difference_index": first,
            "first_difference": [list(a[first]) if first is not None and first < len(a) else None,
                                 list(b[first]) if first is not None and first < len(b) else None]}


def _median(xs: list[float]) -> float:
    return float(np.median(xs))


def _combine(runs: list[dict]) -> dict:
    """Median prep, run and prep + run over the rounds; agreement fields from the first round."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    out = dict(ok[0])
    out["rounds"] = len(ok)
    out["round_run_secs"] = [r["run_secs"] for r in ok]
    out["round_prep_secs"] = [r["prep_secs"] for r in ok]
    out["run_secs"] = _median(out["round_run_secs"])
    out["prep_secs"] = _median(out["round_prep_secs"])
    out["total_secs"] = _median([r["run_secs"] + r["prep_secs"] for r in ok])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--anchor", choices=ANCHORS, help=argparse.SUPPRESS)
    p.add_argument("--tradetree-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bars", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the real 1-minute candle file")
    p.add_argument("--synthetic-bars", type=int, default=500_000, help="0 for the real file only")
    p.add_argument("--synthetic-seed", type=int, default=42)
    p.add_argument("--rounds", type=int, default=3, help="rounds of every engine, alternated; medians count")
    p.add_argument("--repeats", type=int, default=1, help=argparse.SUPPRESS)  # anchor mode: runs in-process
    p.add_argument("--anchors", default=",".join(ANCHORS), help="comma list; empty for tradetree only")
    p.add_argument("--previous-tree", type=Path,
                   help="an earlier tradetree source tree (e.g. `git archive 242b537 | tar -x -C DIR`) run beside "
                        "this one as a baseline")
    p.add_argument("--anchor-timeout-secs", type=float, default=1800)
    args = p.parse_args()
    if args.anchor:
        run_anchor(args.anchor, args.bars, args.repeats)
        return 0
    if args.tradetree_child:
        run_tradetree_child(args.bars)
        return 0

    sys.path.insert(0, str(ROOT))
    from tradetree.sim.backtest.data import CandleCache, load_candle_series, load_candles_cached, synthetic_candles

    anchors = [a for a in args.anchors.split(",") if a]
    if anchors and not ANCHOR_PYTHON.exists():
        print(f"no anchors venv at {ANCHOR_PYTHON}; see benchmarks/README.md (or pass --anchors '')",
              file=sys.stderr)
        return 2
    t = time.perf_counter()
    real = load_candle_series(args.data)
    load = {"csv_secs": time.perf_counter() - t}
    with tempfile.TemporaryDirectory() as tmp:
        cache = CandleCache(tmp)
        load_candles_cached(args.data, cache)
        t = time.perf_counter()
        load_candles_cached(args.data, cache)
        load["cached_secs"] = time.perf_counter() - t
    datasets = [("real 1m BTC/USDT", real)]
    if args.synthetic_bars:
        datasets.append((f"synthetic seed {args.synthetic_seed}",
                         synthetic_candles(args.synthetic_bars, seed=args.synthetic_seed, start_price=30_000.0)))
    report = {"created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
        "load_avg_at_start": os.getloadavg()},
        "strategy": f"EMA({FAST})/EMA({SLOW}) long {SIZE:g} while fast > slow, fee {FEE:.3%}, fill at the signal "
                    "bar's close", "real_file_load": load, "datasets": []}
    print(f"loading the real file: {load['csv_secs']:.2f} s from CSV, {load['cached_secs']:.2f} s from the cache "
          "(not in the table: every engine gets the same arrays)")
    with tempfile.TemporaryDirectory() as tmp:
        for label, series in datasets:
            bars_file = Path(tmp) / f"bars_{len(series)}.npz"
            np.savez(bars_file, ts_ms=series.ts_ms, open=series.open, high=series.high, low=series.low,
                     close=series.close, volume=series.volume)
            rounds: dict[str, list[dict]] = {}
            for k in range(args.rounds):
                print(f"{label}: round {k + 1}/{args.rounds}", file=sys.stderr, flush=True)
                rounds.setdefault("tradetree", []).append(_tradetree(bars_file, None, args.anchor_timeout_secs))
                if args.previous_tree is not None:
                    rounds.setdefault("previous", []).append(
                        _tradetree(bars_file, args.previous_tree.resolve(), args.anchor_timeout_secs))
                for name in anchors:
                    rounds.setdefault(name, []).append(_anchor(name, bars_file, args.anchor_timeout_secs))
            engines = {name: _combine(runs) for name, runs in rounds.items()}
            for r in engines.values():
                if "run_secs" in r:
                    r["bars_per_sec"] = r["bars"] / r["run_secs"]
                    r["total_bars_per_sec"] = r["bars"] / r["total_secs"]
            ours = engines["tradetree"]
            for name, r in engines.items():
                if name != "tradetree" and "bars_per_sec" in r and "bars_per_sec" in ours:
                    r["tradetree_speedup"] = ours["bars_per_sec"] / r["bars_per_sec"]
                    r["tradetree_speedup_total"] = ours["total_bars_per_sec"] / r["total_bars_per_sec"]
                    r["agreement"] = _agreement(ours, r)
            report["datasets"].append({"label": label, "source": series.source, "bars": len(series),
                                       "engines": engines})
            _print_table(label, len(series), engines)
    for ds in report["datasets"]:
        for r in ds["engines"].values():
            r.pop("trips", None)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"backtest_speed_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 0


def _print_table(label: str, n: int, engines: dict) -> None:
    print(f"\n{label}: {n:,} bars (medians of alternated rounds; x = tradetree's speed over that engine's)")
    print(f"{'engine':<12} {'prep s':>7} {'run s':>7} {'total s':>8} {'bars/s total':>13} {'x total':>8} "
          f"{'x run':>7} {'trips':>6} {'same':>6} {'net P&L':>14}")
    for name, r in engines.items():
        if "error" in r:
            print(f"{name:<12} error: {r['error']}")
            continue
        x_total = f"{r['tradetree_speedup_total']:.2f}" if "tradetree_speedup_total" in r else "-"
        x_run = f"{r['tradetree_speedup']:.2f}" if "tradetree_speedup" in r else "-"
        same = r.get("agreement", {}).get("identical_round_trips", r["round_trips"])
        print(f"{name:<12} {r['prep_secs']:>7.3f} {r['run_secs']:>7.3f} {r['total_secs']:>8.3f} "
              f"{r['total_bars_per_sec']:>13,.0f} {x_total:>8} {x_run:>7} {r['round_trips']:>6} {same:>6} "
              f"{r['net_pnl']:>14,.2f}")


if __name__ == "__main__":
    sys.exit(main())

"""Parity, paper half: the running tree on an accelerated replay gives the backtester's orders and fills.

The simulator replays a candle file (one per instrument) on a stepped clock:
every market step advances venue time by exactly a quarter candle, so each
step brings exactly one market point, and the replay starts on a candle
boundary, so the host's epoch-aligned bars hold the file's candles. The whole
tree trades it (real Ray actors, real Redis, the gateway over REST and WS):
MeanReversion on the BTC swap and TrendFollowing on the ETH swap. The
backtester then runs each strategy on the same candles, shifted to the venue's
clock, with the simulator's fees, balances and book.

What must agree, order by order: instrument, side, type, size, reduce-only,
final state, filled size; and the strategy's final position in Redis equals the
backtester's. Prices, fees and fills must agree too, except where paper's
decision delay explains the difference (see ``sim/backtest/parity.py``): paper
decides when the host receives the ticker and its order is stamped with the
venue time it arrives, the backtester at the market point itself. An order
that reaches the venue before the next step is matched against the same book,
at the same price; one that arrives after the next point (the host took longer
than a step) meets that point's book. The test tells the two apart by the
paper order's own venue timestamp and requires an exact match for every
order that was not late.

Nothing here depends on how fast the machine starts the tree: the replay
holds at its first point (``hold_replay``) until the test releases it, once
both strategies run, so the tree meets every candle of the file, as the
backtester does. Then it runs in lockstep, a candle at a time: the next
candle comes only once the tree has decided on the bar just closed and Redis
holds every fill, so a busy host is slower, never on another position. The
data opens with a few flat candles, on which neither strategy trades: they
fill the strategies' windows before the first decision that counts. Every
wait is on its condition, with a bound that only decides how long a failure
takes to report.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import ray

from tests.paper_helpers import (
    PAPER_TEST_TIMEOUT_SECS,
    RELEASE_TIMEOUT_SECS,
    SETTLE_TIMEOUT_SECS,
    SUPERVISION,
    store_view,
    wait_for,
    wait_until_released,
)
from tradetree.config import EngineConfig
from tradetree.core.config import StrategyConfig
from tradetree.core.names import gateway_id
from tradetree.runner import EngineRuntime
from tradetree.sim.backtest.book_model import BookModel
from tradetree.sim.backtest.config import BacktestConfig
from tradetree.sim.backtest.data import CandleSeries, synthetic_candles
from tradetree.sim.backtest.parity import run_for_parity
from tradetree.tree import wind_down_for_shutdown

# The suite's 300 s per-test bound is below this test's own waits on a busy machine (the tree's
# start alone may take minutes there); those waits decide when it fails, this only stops a hang.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(PAPER_TEST_TIMEOUT_SECS)]

CANDLE_MS = 6_000
TICK_INTERVAL_MS = 200
TIME_SCALE = 7.5  # 200 ms of wall time = 1 500 ms of venue time = a quarter candle: one point per step
STEP_MS = CANDLE_MS // 4
LEAD_IN_CANDLES = 16  # flat: twice the longest strategy window (the replay holds until the tree is up)
ACTIVE_CANDLES = 60
SEED = 7
FILE_T0_MS = 1_800_000_000_000 - 1_800_000_000_000 % CANDLE_MS  # the file's first candle, on the candle grid

MR = {"class": "MeanReversion", "version": "v1", "venue": "okx", "symbols": ["BTC-USDT-SWAP"],
      "bar_interval_ms": CANDLE_MS,
      "params": {"window_bars": 8, "entry_z": 1.0, "exit_z": 0.2, "stop_z": 6.0, "size": "1"}}
TF = {"class": "TrendFollowing", "version": "v1", "venue": "okx", "symbols": ["ETH-USDT-SWAP"],
      "bar_interval_ms": CANDLE_MS,
      "params": {"fast_bars": 3, "slow_bars": 8, "vol_window_bars": 5, "atr_bars": 5, "atr_stop_mult": 1.5,
                 "size": "2"}}


def _candles(seed: int, price: float, tick: float) -> CandleSeries:
    """Flat lead-in candles, then a seeded, volatile random walk (so both strategies trade often)."""
    active = synthetic_candles(ACTIVE_CANDLES, seed=seed, start_ms=FILE_T0_MS + LEAD_IN_CANDLES * CANDLE_MS,
                               interval_ms=CANDLE_MS, start_price=price, annual_vol=30.0, tick=tick)
    flat = np.full(LEAD_IN_CANDLES, active.open[0])
    ts = np.concatenate([FILE_T0_MS + CANDLE_MS * np.arange(LEAD_IN_CANDLES, dtype=np.int64), active.ts_ms])

    def col(values: np.ndarray, lead: np.ndarray) -> np.ndarray:
        return np.concatenate([lead, values])

    return CandleSeries.from_arrays(
        f"parity(seed={seed})", ts, col(active.open, flat), col(active.high, flat), col(active.low, flat),
        col(active.close, flat), col(active.volume, np.full(LEAD_IN_CANDLES, 10.0)))


def _write_csv(series: CandleSeries, path: Path) -> None:
    lines = ["timestamp_ms,open,high,low,close,volume"]
    for row in zip(series.ts_ms, series.open, series.high, series.low, series.close, series.volume):
        t, o, h, lo, c, v = row
        lines.append(",".join([str(int(t)), *(repr(float(x)) for x in (o, h, lo, c, v))]))
    path.write_text("\n".join(lines) + "\n")


def _shifted(series: CandleSeries, shift_ms: int) -> CandleSeries:
    return CandleSeries.from_arrays(series.source, series.ts_ms + shift_ms, series.open, series.high, series.low,
                                    series.close, series.volume)


def _decided_through(runtime: EngineRuntime, strategy_ids, last_decision_ms: int) -> bool:
    """True once every strategy host has been handed a ticker at or after ``last_decision_ms`` (venue time)
    and the gateway has no ticker delivery to any of them still running: a delivery ends when the host's
    decision on it (orders sent or not) is done, so the tree has decided on every bar the replay closes."""
    ns = runtime.ray_namespace
    seen = [ray.get(ray.get_actor(sid, namespace=ns).stats.remote(), timeout=30)["last_ticker_ms"]
            for sid in strategy_ids]
    if min(seen) < last_decision_ms:
        return False
    subscribers = ray.get(ray.get_actor(gateway_id("okx"), namespace=ns).stats.remote(), timeout=30)["subscribers"]
    return all(subscribers[sid]["in_flight"] == 0 for sid in strategy_ids)


def test_paper_tree_on_accelerated_replay_matches_backtest(ray_session, redis_url, namespace, tmp_path):
    data = {"BTC-USDT-SWAP": _candles(SEED, 60_000.0, 0.1), "ETH-USDT-SWAP": _candles(SEED + 100, 3_000.0, 0.01)}
    for inst_id, series in data.items():  # the spot's file: the simulator lists both, the swap follows it
        _write_csv(series, tmp_path / f"{inst_id.removesuffix('-SWAP')}.csv")
    config = EngineConfig.model_validate({
        "name": f"tt-parity-{uuid.uuid4().hex[:6]}",
        "redis": {"url": redis_url, "namespace": namespace},
        "venues": [{"name": "okx", "instruments": list(data)}],
        "strategies": [MR, TF],
        "supervision": SUPERVISION,
        "simulator": {"seed": SEED, "data_path": str(tmp_path), "stepped_clock": True, "hold_replay": True,
                      "tick_interval_ms": TICK_INTERVAL_MS, "time_scale": TIME_SCALE},
    })
    sim_cfg = config.simulator
    strategy_ids = {StrategyConfig.model_validate(s).id: s for s in (MR, TF)}

    runtime = EngineRuntime(config, include_dashboard=False)
    runtime.start()
    try:
        server = runtime.sim_server
        with server.lock:
            shift = server.source.shift_ms
        active_from = FILE_T0_MS + shift + LEAD_IN_CANDLES * CANDLE_MS
        n_candles = LEAD_IN_CANDLES + ACTIVE_CANDLES
        last_point_ms = FILE_T0_MS + shift + (n_candles - 1) * CANDLE_MS + 3 * STEP_MS

        wait_until_released(redis_url, namespace, strategy_ids, RELEASE_TIMEOUT_SECS)
        with server.lock:
            held, released_at = server.replay_held, server.venue_now_ms()
        assert held, "the replay ran before the test released it"
        assert released_at < active_from, (
            f"the tree released its strategies {(released_at - active_from) / 1000:.1f} s of venue time after "
            f"the active data began: the hold did not hold")
        # Lockstep, a candle at a time: the tree must have decided on the bar the candle's open closed,
        # and Redis applied every fill, before the next candle comes. A fixed pace let a busy host decide
        # the next bar before its last fill was in Redis, i.e. on a position the backtester never had.
        for k in range(n_candles):
            assert server.release_replay(steps=4)
            # The first point came with the start, so four steps end on the next candle's open, the
            # point that closes candle k's bar (the last release ends on the file's last point).
            candle_open = min(FILE_T0_MS + shift + (k + 1) * CANDLE_MS, last_point_ms)

            def caught_up(candle_open=candle_open):
                with server.lock:
                    at_rest = server.replay_held or server.source.exhausted
                if not at_rest or not _decided_through(runtime, strategy_ids, candle_open):
                    return False
                truth = server.account_truth()
                return len(store_view(redis_url, namespace).audit) == len(truth["trades"])

            wait_for(caught_up, 120, f"the tree to catch up with candle {k}", poll_secs=0.05)
        with server.lock:
            assert server.source.exhausted
        wind_down_for_shutdown(config, ray_namespace=runtime.ray_namespace)

        def settled():
            truth = server.account_truth()
            audit = store_view(redis_url, namespace).audit
            return truth if not truth["open_orders"] and len(audit) == len(truth["trades"]) else None

        wait_for(settled, SETTLE_TIMEOUT_SECS, "every venue trade to be applied in Redis", poll_secs=0.2)
        with server.lock:
            views = sorted([*server.engine.order_history(), *server.engine.open_orders()], key=lambda o: int(o.ord_id))
            fills = list(reversed(server.engine.fills()))
        final = store_view(redis_url, namespace, coids=[o.cl_ord_id for o in views])
        owners, positions = final.owners, final.positions
    finally:
        runtime.shutdown()

    report = []
    for sid, spec in strategy_ids.items():
        sc = StrategyConfig.model_validate(spec)
        inst = sc.symbols[0]
        bt = run_for_parity(sc, _shifted(data[inst], shift), BacktestConfig(
            seed=sim_cfg.seed, fees=sim_cfg.fees, initial_balances=dict(sim_cfg.initial_balances),
            leverage=sim_cfg.leverage, instruments=sim_cfg.instruments, latency_ms=sim_cfg.latency_ms,
            book=BookModel(levels=sim_cfg.book_levels)))
        paper = [o for o in views if owners.get(o.cl_ord_id) == sid]
        paper_fills = {}
        for f in fills:
            paper_fills.setdefault(f.ord_id, []).append(f)
        bt_fills = {}
        for f in bt.fills:
            bt_fills.setdefault(f.ord_id, []).append(f)

        assert len(bt.orders) >= 8, f"{sid}: the data should make the strategy trade"
        assert [(o.inst_id, o.side, o.ord_type, o.sz, o.reduce_only, o.state, o.acc_fill_sz) for o in paper] == \
            [(o.inst_id, o.side, o.ord_type, o.sz, o.reduce_only, o.state, o.acc_fill_sz) for o in bt.orders], \
            f"{sid}: paper and backtest placed different orders"

        late, delays = 0, []
        for p, b in zip(paper, bt.orders):
            delay = p.c_time - b.c_time
            delays.append(delay)
            assert delay >= 0, f"{sid}: paper decided before the market point that closed the bar"
            p_fills, b_fills = paper_fills.get(p.ord_id, []), bt_fills.get(b.ord_id, [])
            if delay < STEP_MS:  # reached the venue before the next point: the same book
                assert (p.px, p.avg_px, p.fee) == (b.px, b.avg_px, b.fee), f"{sid}: order at {b.c_time}"
                assert [(f.px, f.sz, f.fee, f.exec_type, f.ts_ms - delay) for f in p_fills] == \
                    [(f.px, f.sz, f.fee, f.exec_type, f.ts_ms) for f in b_fills], f"{sid}: fills at {b.c_time}"
            else:  # explained: the host decided after the next point had arrived, which it then met
                late += 1
        assert late < len(paper), f"{sid}: every paper order was late; nothing was compared exactly"

        redis_qty = sum((p.qty for p in positions if p.strategy_id == sid and p.inst_id == inst), Decimal(0))
        bt_qty = sum((Decimal(f.sz) if f.side == "buy" else -Decimal(f.sz) for f in bt.fills), Decimal(0))
        assert redis_qty == bt_qty, f"{sid}: Redis position {redis_qty} != backtest position {bt_qty}"
        report.append(f"{sid}: {len(paper)} orders, {len(paper) - late} compared exactly, {late} late, "
                      f"decision delay up to {max(delays)} ms of venue time")
    print(f"released {(released_at - FILE_T0_MS - shift) / 1000:.1f} s of venue time into the lead-in (held); "
          + "; ".join(report))

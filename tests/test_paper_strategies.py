"""Every strategy runs in the paper engine: one tree, all five strategies at once.

Real Ray actors, real Redis, the built-in OKX simulator over loopback on its
generated market (accelerated). For each strategy the run must show that it
sent orders and that at least one of its fills was applied in Redis; for the
market maker, that post-only quotes rested, got maker fills and were
canceled on requotes; for StatsArb, that both legs traded. After
``wind_down_for_shutdown`` and settling, Redis positions summed per
instrument equal the simulator's account truth exactly and every simulator
trade is audited once.

Params are the shipped ones scaled down so that each strategy trades within
seconds of its actor starting (see ``_STRATEGIES``): the simulator runs at
60x with a 100 ms step, so one step is ~6 s of market time and a 12 s bar
closes about every 0.2 s of wall time. Most of the test's time is the tree
starting up, which the test waits out (the strategies released) before it
gives them a bound to trade in; on a busy machine both take longer, and
only a failure waits for the bounds. With ``-s`` it prints, per strategy, orders, fills and venue
rejections. All five strategies share BTC-USDT-SWAP on one net-mode account,
so the venue's reduce-only (which applies to the account's net position) must
not refuse a strategy's correct close: the test checks that none was refused
with 51205 (see ``execution/venue_reduce_only.py``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from decimal import Decimal

import pytest

from tests.paper_helpers import (
    PAPER_TEST_TIMEOUT_SECS,
    SETTLE_TIMEOUT_SECS,
    SUPERVISION,
    settled_view,
    store_view,
    summed_positions,
    wait_for,
    wait_until_released,
)
from tradetree.config import EngineConfig
from tradetree.core.types import Liquidity, Order, OrderState, OrderType
from tradetree.runner import EngineRuntime
from tradetree.tree import wind_down_for_shutdown

# The suite's 300 s per-test bound is below this test's own waits on a busy machine (the tree's
# start alone may take minutes there); those waits decide when it fails, this only stops a hang.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(PAPER_TEST_TIMEOUT_SECS)]

BTC, ETH = "BTC-USDT-SWAP", "ETH-USDT-SWAP"
BAR_MS = 12_000  # two ~6 s market steps per bar

# Shipped windows are sized for one-second bars over minutes; here every window is a handful
# of bars so each strategy is warm within ~2-4 s of wall time.
_STRATEGIES = [
    {
        "class": "MeanReversion", "version": "v90", "symbols": [BTC],
        # entry_z 1.0 on an 8-bar window: a random walk crosses it every few bars
        "params": {"window_bars": 8, "entry_z": 1.0, "exit_z": 0.2, "stop_z": 6.0, "size": "1"},
    },
    {
        "class": "TrendFollowing", "version": "v90", "symbols": [BTC],
        # no vol band: the generated market's per-bar vol (~4e-4 calm, ~1e-3 volatile at 12 s bars)
        # is inside the shipped band anyway; the filter is not what this test is about
        "params": {"fast_bars": 3, "slow_bars": 8, "vol_window_bars": 5, "atr_bars": 3,
                   "atr_stop_mult": 2.0, "size": "1", "allow_short": True},
    },
    {
        "class": "SingleVenueMarketMaking", "version": "v90", "symbols": [BTC],
        # half spread 2 bp against a ~3-4 bp move per bar: quotes rest (post-only does not cross the
        # 1-tick book) and get hit within a few bars; requote on a 1 bp fair move, i.e. most bars
        "bar_interval_ms": 6_000,
        "params": {"fair_price": "mid", "half_spread_bps": 2.0, "skew_bps": 1.0, "requote_bps": 1.0,
                   "quote_size": "1", "max_inventory": "3", "tick_size": "0.1", "ack_timeout_ms": 5000},
    },
    {
        "class": "StatsArb", "version": "v90", "symbols": [BTC, ETH],
        # BTC and ETH are independent walks in the generator: a 20-pair OLS still gives a residual
        # whose |z| passes 1.2 often, and beta > 0 much of the time
        "params": {"window_bars": 20, "entry_z": 1.2, "exit_z": 0.3, "stop_z": 5.0, "base_size": "1",
                   "base_contract_value": "0.01", "hedge_contract_value": "0.1", "hedge_lot_size": "0.01"},
    },
    {
        "class": "VolScaledDirectional", "version": "v90", "symbols": [BTC],
        # default forecaster (trailing realized vol); target = the calm per-bar vol, so size ~1
        "params": {"ema_bars": 5, "slope_bars": 2, "signal_threshold_bps": 0.5, "vol_window_bars": 5,
                   "history_bars": 10, "target_vol_per_bar": 0.0004, "size_at_target_vol": "1",
                   "max_size": "3", "lot_size": "0.01", "rebalance_band": 0.25, "allow_short": True},
    },
]


def _paper_config(redis_url: str, namespace: str) -> EngineConfig:
    return EngineConfig.model_validate({
        "name": f"tt-paper-strats-{uuid.uuid4().hex[:6]}",
        "redis": {"url": redis_url, "namespace": namespace},
        "venues": [{"name": "okx", "instruments": [BTC, ETH]}],
        "strategies": [{"venue": "okx", "bar_interval_ms": BAR_MS, **s} for s in _STRATEGIES],
        "supervision": SUPERVISION,
        "simulator": {"seed": 23, "tick_interval_ms": 100, "time_scale": 60.0},
    })


def _venue_orders(runtime: EngineRuntime) -> dict[str, object]:
    """The simulator's own record of every finished order, by client order id (venue truth)."""
    sim = runtime.sim_server
    with sim.lock:
        return {o.cl_ord_id: o for o in sim.engine.order_history() if o.cl_ord_id}


def _mm_evidence(strategy_id: str, audit, events: list[Order], venue_orders: dict) -> dict[str, bool]:
    """What the market maker must have shown, checked against the venue's record of its quotes.

    Redis's LIVE state is no proof of resting (the gateway marks an order LIVE on the venue's ack,
    and a crossing post-only quote is canceled right after), so: a maker fill applied in Redis for a
    post-only quote proves that quote rested and was hit; a quote the venue reports canceled by a
    user request (``cancelSource`` "user", not "post_only") is a cancel the host sent for the
    strategy, which before the wind-down can only be a requote.
    """
    quotes = {o.client_order_id for o in events if o.strategy_id == strategy_id and o.type is OrderType.POST_ONLY}
    maker_fills = [e for e in audit if e.strategy_id == strategy_id and e.fill.liquidity is Liquidity.MAKER
                   and e.fill.client_order_id in quotes]
    ended = [venue_orders[c] for c in quotes if c in venue_orders]
    requote_cancels = [v for v in ended if v.state == "canceled" and v.cancel_source == "user"]
    return {"post-only quote resting and filled as maker (maker fill applied in Redis)": bool(maker_fills),
            "requote cancel carried out at the venue": bool(requote_cancels)}


def _missing(config: EngineConfig, audit, events: list[Order], venue_orders: dict) -> list[str]:
    """Per strategy, what the run has not shown yet (empty: everything is there)."""
    missing = []
    for s in config.strategies:
        sent = {o.client_order_id for o in events if o.strategy_id == s.id}
        fills = [e for e in audit if e.strategy_id == s.id]
        if not sent:
            missing.append(f"{s.id}: sent no order")
        if not fills:
            missing.append(f"{s.id}: no fill applied in Redis ({len(sent)} orders sent)")
        if s.class_name == "SingleVenueMarketMaking":
            evidence = _mm_evidence(s.id, audit, events, venue_orders)
            missing += [f"{s.id}: no {what}" for what, ok in evidence.items() if not ok]
        if s.class_name == "StatsArb":
            legs = {e.fill.inst_id for e in fills}
            missing += [f"{s.id}: no fill on its {leg} leg" for leg in s.symbols if leg not in legs]
    return missing


def _summary(config: EngineConfig, audit, events: list[Order], start_ms: int) -> str:
    """Per strategy: orders sent, fills applied (and when the first one was, from engine start),
    rejections by venue code; printed for the record and in failure messages."""
    lines = []
    for s in config.strategies:
        mine = [o for o in events if o.strategy_id == s.id]
        rejected = {o.client_order_id: o.reject_reason for o in mine if o.state is OrderState.REJECTED}
        codes = Counter(re.search(r'sCode":"(\d+)', r).group(1) if re.search(r'sCode":"(\d+)', r) else r[:60]
                        for r in rejected.values())
        fills = [e.applied_ms for e in audit if e.strategy_id == s.id]
        first = f"first at +{(min(fills) - start_ms) / 1000:.1f}s" if fills else "none yet"
        lines.append(f"{s.id}: {len({o.client_order_id for o in mine})} orders, {len(fills)} fills "
                     f"({first}), {len(rejected)} rejected {dict(codes)}")
    return "\n".join(lines)


def _host_stats(config: EngineConfig, ray_namespace: str) -> str:
    """Each strategy host's own counters (denials and why, last error), for a failure message."""
    import ray

    lines = []
    for s in config.strategies:
        try:
            info = ray.get(ray.get_actor(s.id, namespace=ray_namespace).stats.remote(), timeout=5)
            lines.append(f"{s.id}: denials={info['denials']} last_denial={info['last_denial']} "
                         f"last_error={info['last_error']!r}")
        except (ValueError, ray.exceptions.RayError) as exc:
            lines.append(f"{s.id}: host unreachable ({type(exc).__name__})")
    return "\n".join(lines)


def test_every_strategy_trades_in_the_paper_engine(ray_session, redis_url, namespace):
    config = _paper_config(redis_url, namespace)
    assert {s.class_name for s in config.strategies} == {
        "MeanReversion", "TrendFollowing", "SingleVenueMarketMaking", "StatsArb", "VolScaledDirectional"}
    runtime = EngineRuntime(config, include_dashboard=False)
    start_ms = int(time.time() * 1000)
    runtime.start()
    started_secs = time.time() - start_ms / 1000
    try:
        last: list[str] = ["(no Redis read yet)"]
        summary = [""]

        def all_traded():
            view = store_view(redis_url, namespace, events=True)
            last[:] = _missing(config, view.audit, view.events, _venue_orders(runtime))
            summary[0] = _summary(config, view.audit, view.events, start_ms)
            return not last

        wait_until_released(redis_url, namespace, [s.id for s in config.strategies])
        released_secs = time.time() - start_ms / 1000
        # Each strategy trades within seconds of its release when the machine is idle; the bound is
        # generous because a busy machine delays every decision, not because trading may take that long.
        wait_for(all_traded, 240, lambda: "every strategy to trade; still missing: " + "; ".join(last)
                 + "\n" + summary[0] + "\n" + _host_stats(config, runtime.ray_namespace), poll_secs=0.5)
        print(f"\ntree started in {started_secs:.1f}s, strategies released at +{released_secs:.1f}s\n{summary[0]}")
        wind_down_for_shutdown(config, ray_namespace=runtime.ray_namespace)

        def settled():
            truth = runtime.sim_server.account_truth()
            view = store_view(redis_url, namespace)
            return (truth, view.positions, view.audit) if settled_view(truth, view) else None

        truth, positions, audit = wait_for(settled, SETTLE_TIMEOUT_SECS, "fills to settle after the wind-down")
        venue_positions = {k: Decimal(v) for k, v in truth["positions"].items() if Decimal(v) != 0}
        assert summed_positions(positions) == venue_positions

        audited = Counter(e.fill.trade_id for e in audit)
        assert all(n == 1 for n in audited.values())
        assert set(audited) == {t["trade_id"] for t in truth["trades"]}
        assert {e.strategy_id for e in audit} <= {s.id for s in config.strategies}
        # strategies sharing a netted instrument close without the venue refusing a reduce-only (51205):
        # the gateway sends the venue's flag only where the account's net allows it
        events = store_view(redis_url, namespace, events=True).events
        refused = [o for o in events if o.state is OrderState.REJECTED and "51205" in o.reject_reason]
        assert not refused, f"{len(refused)} close(s) refused by the venue: {refused[0].reject_reason}"
        # the maker's fills in Redis are the venue's maker executions of its quotes
        mm = next(s.id for s in config.strategies if s.class_name == "SingleVenueMarketMaking")
        mm_coids = {e.fill.client_order_id for e in audit if e.strategy_id == mm}
        assert {t["exec_type"] for t in truth["trades"] if t["cl_ord_id"] in mm_coids} == {"M"}
    finally:
        runtime.shutdown()

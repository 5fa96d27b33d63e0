"""Market data: seeded generator, candle replay, candle aggregation."""

from __future__ import annotations

import gzip
from decimal import Decimal as D

import pytest

from tradetree.sim.config import SimInstrument, default_instruments
from tradetree.sim.market_data import (
    CandleAggregator,
    CandleReplay,
    GeneratedMarket,
    GeneratorParams,
    MarketTick,
    PublicTrade,
    load_candle_source,
    load_candles,
)
from tradetree.sim.matching import MatchingEngine, OrderRequest

INSTS = default_instruments()
BTC = next(i for i in INSTS if i.inst_id == "BTC-USDT")


def _path(market: GeneratedMarket, steps: int, dt_ms: int = 1000) -> list[tuple[str, int, D, tuple]]:
    out = []
    for _ in range(steps):
        out += [(t.inst_id, t.ts_ms, t.price, t.trades) for t in market.advance(dt_ms)]
    return out


def test_generated_market_is_deterministic_for_a_seed():
    a = _path(GeneratedMarket(INSTS, seed=11, start_ms=0), 200)
    b = _path(GeneratedMarket(INSTS, seed=11, start_ms=0), 200)
    c = _path(GeneratedMarket(INSTS, seed=12, start_ms=0), 200)
    assert a == b
    assert [x[2] for x in a] != [x[2] for x in c]


def test_each_instrument_has_its_own_stream():
    alone = _path(GeneratedMarket([BTC], seed=5, start_ms=0), 100)
    together = [x for x in _path(GeneratedMarket(INSTS, seed=5, start_ms=0), 100) if x[0] == "BTC-USDT"]
    assert alone == together


def test_ticks_are_on_tick_size_with_lot_sized_trades_ending_at_the_price():
    market = GeneratedMarket(INSTS, seed=2, start_ms=1_000)
    cfg = {i.inst_id: i for i in INSTS}
    for _ in range(50):
        for t in market.advance(250):
            assert t.ts_ms == market.now_ms
            inst = cfg[t.inst_id]
            assert t.price % inst.tick_size == 0
            assert t.trades and t.trades[-1].price == t.price
            assert all(tr.size > 0 and tr.size % inst.lot_size == 0 for tr in t.trades)
            assert t.volume == sum(tr.size for tr in t.trades)


def test_swap_follows_its_spot_with_a_small_basis():
    market = GeneratedMarket(INSTS, seed=3, start_ms=0)
    for _ in range(2000):
        ticks = {t.inst_id: t.price for t in market.advance(60_000)}
        ratio = ticks["BTC-USDT-SWAP"] / ticks["BTC-USDT"]
        assert abs(ratio - 1) < D("0.004")
    # Over 33 hours of 1m steps the spot has really moved.
    assert abs(market.last_price("BTC-USDT") / BTC.initial_price - 1) > D("0.001")


def test_regimes_switch_and_jumps_happen():
    params = GeneratorParams(jump_rate_per_hour=2.0, jump_sigma=0.02)
    market = GeneratedMarket([BTC], seed=9, start_ms=0, params=params)
    regimes = set()
    biggest = 0.0
    prev = float(BTC.initial_price)
    for _ in range(3 * 24 * 60):
        (t,) = market.advance(60_000)
        regimes.add(market.regime("BTC-USDT"))
        biggest = max(biggest, abs(float(t.price) / prev - 1))
        prev = float(t.price)
    stats = market.stats("BTC-USDT")
    assert regimes == {"calm", "volatile"}
    assert stats["regime_switches"] >= 10 and stats["jumps"] >= 50
    # A 1m calm step has a stdev of ~0.08%; jumps of 2% stand out.
    assert biggest > 0.02


def test_volatile_regime_moves_more_than_calm():
    params = GeneratorParams(jump_rate_per_hour=0.0)
    market = GeneratedMarket([BTC], seed=4, start_ms=0, params=params)
    moves: dict[str, list[float]] = {"calm": [], "volatile": []}
    prev = float(BTC.initial_price)
    for _ in range(5000):
        regime = market.regime("BTC-USDT")
        (t,) = market.advance(60_000)
        if market.regime("BTC-USDT") == regime:
            moves[regime].append(abs(float(t.price) / prev - 1))
        prev = float(t.price)
    mean = {k: sum(v) / len(v) for k, v in moves.items()}
    assert mean["volatile"] > 2 * mean["calm"]


def test_freeze_stops_prices_but_not_time():
    market = GeneratedMarket(INSTS, seed=1, start_ms=0)
    market.advance(1000)
    before = market.last_price("BTC-USDT")
    market.freeze()
    assert market.advance(5000) == [] and market.now_ms == 6000
    assert market.last_price("BTC-USDT") == before and market.frozen
    market.freeze(False)
    assert len(market.advance(1000)) == len(INSTS)
    with pytest.raises(ValueError):
        market.advance(0)


CSV = """timestamp_ms,open,high,low,close,volume
1700000000000,100,110,95,105,8
1700000060000,105,106,90,92,4
"""


def test_load_candles_csv_and_gz(tmp_path):
    plain = tmp_path / "c.csv"
    plain.write_text(CSV)
    gz = tmp_path / "c.csv.gz"
    gz.write_bytes(gzip.compress(CSV.encode()))
    a, b = load_candles(plain), load_candles(gz)
    assert a == b and len(a) == 2
    assert a[0].open == D("100") and a[1].close == D("92") and a[1].ts_ms == 1700000060000


@pytest.mark.parametrize(
    "text",
    [
        "timestamp_ms,open,high,low,close\n1,1,1,1,1\n",  # no volume column
        "timestamp_ms,open,high,low,close,volume\n1,1,x,1,1,1\n",  # bad number
        "timestamp_ms,open,high,low,close,volume\n1,10,9,8,10,1\n",  # high below open/close
        "timestamp_ms,open,high,low,close,volume\n",  # no rows
    ],
)
def test_load_candles_rejects_bad_files(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match="bad.csv"):
        load_candles(path)


SOL = SimInstrument(inst_id="SOL-USDT", initial_price=D("100"), tick_size=D("0.01"), lot_size=D("0.01"),
                    min_size=D("0.01"))
SOL_SWAP = SimInstrument(inst_id="SOL-USDT-SWAP", initial_price=D("100"), tick_size=D("0.01"),
                         lot_size=D("1"), min_size=D("1"), contract_value=D("0.1"))


def test_replay_turns_candles_into_ordered_intrabar_points(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(CSV)
    replay = CandleReplay(load_candle_source(path, ["SOL-USDT"]), [SOL])
    ticks: list[MarketTick] = []
    while not replay.exhausted:
        ticks += replay.advance(5_000)
    # Rising candle: open, low, high, close; falling: open, high, low, close.
    assert [t.price for t in ticks] == [D(x) for x in ("100", "95", "110", "105", "105", "106", "90", "92")]
    assert [t.ts_ms - 1700000000000 for t in ticks[:4]] == [0, 15000, 30000, 45000]
    assert all(t.trades[0].size == D("2") for t in ticks[:4])
    assert replay.advance(60_000) == [] and replay.last_price("SOL-USDT") == D("92")


def test_replay_shift_and_swap_follows_spot_file(tmp_path):
    (tmp_path / "SOL-USDT.csv").write_text(CSV)
    data = load_candle_source(tmp_path, ["SOL-USDT", "SOL-USDT-SWAP"])
    assert list(data) == ["SOL-USDT"]
    replay = CandleReplay(data, [SOL, SOL_SWAP], start_ms=5_000)
    ticks = replay.advance(1)
    assert {(t.inst_id, t.ts_ms, t.price) for t in ticks} == {("SOL-USDT", 5000, D("100")),
                                                              ("SOL-USDT-SWAP", 5000, D("100"))}
    with pytest.raises(ValueError, match="ETH-USDT"):
        CandleReplay(data, [SOL, next(i for i in INSTS if i.inst_id == "ETH-USDT")])


def test_replay_freeze_resumes_where_it_stopped(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(CSV)
    replay = CandleReplay(load_candle_source(path, ["SOL-USDT"]), [SOL], start_ms=0)
    assert [t.price for t in replay.advance(1)] == [D("100")]
    replay.freeze()
    assert replay.advance(100_000) == []
    replay.freeze(False)
    ticks = replay.advance(15_000)
    assert [t.price for t in ticks] == [D("95")]
    assert ticks[0].ts_ms == 15_000 + 100_000  # shifted by the time spent frozen


def test_limit_order_inside_a_replayed_bar_fills(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(CSV)
    replay = CandleReplay(load_candle_source(path, ["SOL-USDT"]), [SOL], start_ms=0)
    engine = MatchingEngine([SOL], initial_balances={"USDT": D("10000")})
    for t in replay.advance(1):
        engine.on_market(t)
    order = engine.submit(OrderRequest("SOL-USDT", "buy", "limit", D("1"), px=D("97")), replay.now_ms).order
    assert order.state == "live"
    events = []
    while not replay.exhausted:
        for t in replay.advance(5_000):
            events += engine.on_market(t)
    assert events[-1].order.state == "filled" and events[-1].fill.px == D("97")


def test_candle_aggregator_bars_confirm_and_resample():
    agg = CandleAggregator([BTC])
    rows = []
    for i, px in enumerate(["100", "101", "99", "102", "103", "98"]):
        ts = i * 40_000  # 0, 40s, 80s, 120s, 160s, 200s
        trade = PublicTrade(str(i), D(px), D("1"), "buy", ts)
        rows = agg.on_tick(MarketTick("BTC-USDT", ts, D(px), D("1"), (trade,)))
    latest = agg.candles("BTC-USDT", limit=10)
    assert [r.ts_ms for r in latest] == [180_000, 120_000, 60_000, 0]  # newest first
    assert [r.confirmed for r in latest] == [False, True, True, True]
    assert (latest[1].open, latest[1].high, latest[1].low, latest[1].close) == (D("102"), D("103"), D("102"), D("103"))
    assert latest[1].quote_volume == D("205")
    assert rows[0].confirmed and rows[0].ts_ms == 120_000 and not rows[-1].confirmed
    three = agg.candles("BTC-USDT", bar_ms=180_000)
    assert [(r.ts_ms, r.open, r.high, r.low, r.close, r.volume) for r in three] == [
        (180_000, D("98"), D("98"), D("98"), D("98"), D("1")),
        (0, D("100"), D("103"), D("99"), D("103"), D("5")),
    ]
    assert [r.ts_ms for r in agg.candles("BTC-USDT", after_ms=120_000)] == [60_000, 0]
    assert [r.ts_ms for r in agg.candles("BTC-USDT", before_ms=60_000)] == [180_000, 120_000]
    assert agg.stats_24h("BTC-USDT") == (D("100"), D("103"), D("98"), D("6"), D("603"))
    with pytest.raises(ValueError):
        agg.candles("BTC-USDT", bar_ms=90_000)

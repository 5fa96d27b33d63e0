"""The backtest's market path is the simulator's CandleReplay, point for point."""

from __future__ import annotations

from decimal import Decimal

import numpy as np

from tradetree.sim.backtest.book_model import BookModel, ReplayPath
from tradetree.sim.backtest.data import CandleSeries, synthetic_candles
from tradetree.sim.backtest.prepare import prepare_path
from tradetree.sim.config import SimInstrument, default_instruments
from tradetree.sim.market_data import CandleReplay
from tradetree.sim.matching import MatchingEngine


def _replay_ticks(series: CandleSeries, inst: SimInstrument):
    replay = CandleReplay({inst.inst_id: series.to_candles()}, [inst], start_ms=None)
    ticks = replay.advance(1)
    while not replay.exhausted:
        ticks += replay.advance(1_000)
    return ticks


def test_replay_path_equals_candle_replay_including_a_gap_and_coarse_prices():
    series = synthetic_candles(60, seed=9, start_price=1234.5678, tick=0.0001)
    keep = np.ones(60, dtype=bool)
    keep[[20, 21, 22]] = False  # a hole in the data stretches the candle before it
    series = series.take(np.flatnonzero(keep))
    inst = next(i for i in default_instruments() if i.inst_id == "ETH-USDT-SWAP")  # tick 0.01: prices rounded
    path = ReplayPath(inst, prepare_path(series, inst.inst_id, inst.tick_size))
    ours = [path.tick(i, j) for i in range(len(series)) for j in range(4)]
    theirs = _replay_ticks(series, inst)
    assert ours == theirs


def test_frictionless_book_fills_at_the_point_price():
    inst = next(i for i in default_instruments() if i.inst_id == "BTC-USDT")
    engine = MatchingEngine([inst], initial_balances={"USDT": Decimal("1e9")}, book_levels=1,
                            book_shape=BookModel.frictionless().shape())
    path = ReplayPath(inst, prepare_path(synthetic_candles(3, seed=1, start_price=60_000.0), inst.inst_id,
                                         inst.tick_size))
    engine.on_market(path.tick(1, 3))
    book = engine.book("BTC-USDT")
    assert book.bids[0][0] == book.asks[0][0] == path.point_price(1, 3)


def test_default_book_model_is_the_simulators():
    from tradetree.sim.matching import BookShape

    assert BookModel().shape() == BookShape()

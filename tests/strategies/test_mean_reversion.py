from decimal import Decimal

import pytest

from tradetree.core.config import StrategyConfig
from tradetree.core.errors import ConfigError
from tradetree.core.types import Bar, Side
from tradetree.strategies import MeanReversion, StrategyContext, build_strategy


def _cfg(**params):
    base = {"window_bars": 5, "entry_z": 1.5, "exit_z": 0.3, "stop_z": 3.0, "size": "2"}
    base.update(params)
    return StrategyConfig.model_validate(
        {"class": "MeanReversion", "version": "v10", "venue": "okx", "symbols": ["BTC-USDT-SWAP"], "params": base}
    )


def _bar(i, close):
    return Bar(venue="okx", inst_id="BTC-USDT-SWAP", ts_ms=i * 1000, interval_ms=1000,
               open=Decimal(close), high=Decimal(close), low=Decimal(close), close=Decimal(close))


def _run(strategy, closes, position=Decimal(0)):
    out = []
    for i, c in enumerate(closes):
        out = strategy.on_bar(_bar(i, c), StrategyContext(now_ms=i, positions={"BTC-USDT-SWAP": position}))
    return out


def test_id_is_class_version_base():
    assert build_strategy(_cfg()).id == "MeanReversion_v10_BTC"


def test_enters_long_on_a_drop_and_short_on_a_spike():
    s = MeanReversion(_cfg())
    intents = _run(s, [100, 101, 100, 101, 90])
    assert [(i.side, i.size) for i in intents] == [(Side.BUY, Decimal(2))]
    s = MeanReversion(_cfg())
    intents = _run(s, [100, 101, 100, 101, 112])
    assert [(i.side, i.size) for i in intents] == [(Side.SELL, Decimal(2))]


def test_no_short_when_not_allowed():
    s = MeanReversion(_cfg(allow_short=False))
    assert _run(s, [100, 101, 100, 101, 112]) == []


def test_exits_long_when_z_reverts():
    s = MeanReversion(_cfg())
    _run(s, [100, 101, 100, 101, 90])
    out = s.on_bar(_bar(9, 100), StrategyContext(now_ms=9, positions={"BTC-USDT-SWAP": Decimal(2)}))
    assert len(out) == 1 and out[0].side is Side.SELL and out[0].reduce_only and out[0].size == 2


def test_stop_then_stays_out_until_z_back_inside_exit():
    s = MeanReversion(_cfg(window_bars=10, entry_z=1.0, exit_z=0.2, stop_z=2.5))
    pos = {"BTC-USDT-SWAP": Decimal(-2)}
    for i, c in enumerate([100, 100.5, 99.5, 100, 100.5, 99.5, 100, 100.5, 99.5]):
        s.on_bar(_bar(i, c), StrategyContext(now_ms=i, positions=pos))
    out = s.on_bar(_bar(20, 130), StrategyContext(now_ms=20, positions=pos))
    assert out and out[0].side is Side.BUY and "stop" in out[0].reason
    # still far away: no re-entry while stopped
    assert s.on_bar(_bar(21, 131), StrategyContext(now_ms=21, positions={})) == []


def test_pending_orders_count_as_exposure():
    s = MeanReversion(_cfg())
    for i, c in enumerate([100, 101, 100, 101]):
        s.on_bar(_bar(i, c), StrategyContext(now_ms=i))
    ctx = StrategyContext(now_ms=5, positions={}, pending={"BTC-USDT-SWAP": Decimal(2)})
    assert s.on_bar(_bar(5, 90), ctx) == []


def test_flip_splits_into_reduce_only_close_and_open():
    from tradetree.strategies.base import orders_toward_target

    s = MeanReversion(_cfg())
    out = orders_toward_target(s, "BTC-USDT-SWAP", Decimal(-2),
                               StrategyContext(now_ms=0, positions={"BTC-USDT-SWAP": Decimal(2)}), reason="x")
    assert [(o.side, o.size, o.reduce_only) for o in out] == [(Side.SELL, 2, True), (Side.SELL, 2, False)]


@pytest.mark.parametrize("params,field", [
    ({"size": "-1"}, "size"),
    ({"exit_z": 3.0}, "exit_z"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_params_name_the_field(params, field):
    with pytest.raises(ConfigError) as err:
        MeanReversion(_cfg(**params))
    assert "MeanReversion_v10_BTC" in str(err.value)
    assert field in str(err.value)


def test_unknown_class_is_a_config_error():
    cfg = StrategyConfig.model_validate({"class": "Nope", "version": "v1", "venue": "okx", "symbols": ["X"]})
    with pytest.raises(ConfigError, match="unknown strategy class 'Nope'"):
        build_strategy(cfg)


def test_no_entry_when_already_beyond_the_stop():
    s = MeanReversion(_cfg(window_bars=10, entry_z=1.0, exit_z=0.2, stop_z=2.5))
    for i, c in enumerate([100, 100.5, 99.5, 100, 100.5, 99.5, 100, 100.5, 99.5]):
        s.on_bar(_bar(i, c), StrategyContext(now_ms=i))
    assert s.on_bar(_bar(20, 130), StrategyContext(now_ms=20)) == []
    assert s.last_z is not None and s.last_z > 2.5


def test_stop_close_that_did_not_fill_is_sent_again():
    # the stop's close was rejected (e.g. the venue refused it): the position is still there and nothing
    # is in flight; once |z| is back under stop_z (but not inside exit_z) the strategy must close again,
    # not hold an unmanaged position until z reverts
    s = MeanReversion(_cfg(window_bars=10, entry_z=1.0, exit_z=0.2, stop_z=2.5))
    pos = {"BTC-USDT-SWAP": Decimal(-2)}
    for i, c in enumerate([100, 100.5, 99.5, 100, 100.5, 99.5, 100, 100.5, 99.5]):
        s.on_bar(_bar(i, c), StrategyContext(now_ms=i, positions=pos))
    assert "stop" in s.on_bar(_bar(20, 130), StrategyContext(now_ms=20, positions=pos))[0].reason
    out = s.on_bar(_bar(21, 108), StrategyContext(now_ms=21, positions=pos))
    assert 0.2 < abs(s.last_z) < 2.5
    assert [(i.side, i.size, i.reduce_only) for i in out] == [(Side.BUY, Decimal(2), True)]
    assert "stop" in out[0].reason
    # the close in flight counts: not sent twice
    assert s.on_bar(_bar(22, 108), StrategyContext(now_ms=22, positions=pos,
                                                   pending={"BTC-USDT-SWAP": Decimal(2)})) == []

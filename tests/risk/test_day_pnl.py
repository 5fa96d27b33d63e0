"""Day baselines shared by the risk monitor and the strategy hosts (fakeredis), and the pure day rule."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tradetree.actors.risk_monitor import RiskMonitor
from tradetree.core.errors import StoreUnavailable
from tradetree.core.redis_keys import RedisKeys
from tradetree.core.store import PNL_DAY_TTL_SECS, RedisStore
from tradetree.core.types import Position
from tradetree.risk.config import RiskConfig
from tradetree.risk.day_pnl import candidate_baselines, daily_pnl_by_strategy, utc_day

DAY_MS = 86_400_000
NOON = 19_000 * DAY_MS + DAY_MS // 2  # 2022-01-08 12:00 UTC


def _pos(sid: str, realized: str, fees: str = "0", inst: str = "BTC-USDT-SWAP") -> Position:
    return Position(strategy_id=sid, venue="okx", inst_id=inst, qty=D(1), realized_pnl=D(realized), fees=D(fees))


def pnl_day_key(namespace: str, now_ms: int) -> str:
    return RedisKeys(namespace).risk_pnl_day(utc_day(now_ms))


class DayBaselines:
    """What a host does with the store and ``risk.day_pnl``, as the tests call it."""

    def __init__(self, client, namespace: str) -> None:
        self.store = RedisStore(client, namespace)

    async def baselines(self, positions, now_ms: int) -> dict[str, D]:
        return await self.store.day_pnl_baselines(utc_day(now_ms), candidate_baselines(positions))

    async def daily_pnl(self, positions, now_ms: int) -> dict[str, D]:
        positions = list(positions)
        return daily_pnl_by_strategy(positions, await self.baselines(positions, now_ms))


class _NoAlerts:
    async def alert(self, *args):
        pass


def test_utc_day_turns_at_midnight_utc():
    assert utc_day(NOON) == "20220108"
    assert utc_day(19_001 * DAY_MS - 1) == "20220108"
    assert utc_day(19_001 * DAY_MS) == "20220109"
    assert utc_day(0) == "19700101"


def test_candidates_are_each_positions_net_pnl_by_position_id_first_listed_wins():
    a, b = _pos("S1", "10", fees="1"), _pos("S2", "-3", inst="ETH-USDT-SWAP")
    assert candidate_baselines([a, b, _pos("S1", "99")]) == {
        "S1:okx:BTC-USDT-SWAP": D(9), "S2:okx:ETH-USDT-SWAP": D(-3)}
    assert candidate_baselines([_pos("S:1", "1")]) == {"S%3A1:okx:BTC-USDT-SWAP": D(1)}, "ids escaped as in Redis"


def test_key_is_per_utc_day():
    assert pnl_day_key("ns", NOON) == "ns:ctl:risk_pnl_day:20220108"
    assert pnl_day_key("ns", 19_001 * DAY_MS - 1) == "ns:ctl:risk_pnl_day:20220108"
    assert pnl_day_key("ns", 19_001 * DAY_MS) == "ns:ctl:risk_pnl_day:20220109"


async def test_first_observation_sets_the_baseline_and_later_ones_do_not_move_it(fake_redis):
    days = DayBaselines(fake_redis, "t")
    assert await days.daily_pnl([_pos("S1", "10", fees="1")], NOON) == {"S1": D(0)}
    assert await days.daily_pnl([_pos("S1", "4", fees="2"), _pos("S2", "-3")], NOON + 1) == {
        "S1": D(-7), "S2": D(0)}  # S1: 2 - 9; S2 first seen now
    assert await days.daily_pnl([_pos("S2", "-5")], NOON + 2) == {"S2": D(-2)}
    assert 0 < await fake_redis.ttl(pnl_day_key("t", NOON)) <= PNL_DAY_TTL_SECS
    # the next UTC day starts from zero
    assert await days.daily_pnl([_pos("S1", "4", fees="2")], NOON + DAY_MS) == {"S1": D(0)}


async def test_risk_monitor_and_host_share_one_baseline(fake_redis):
    mon = RiskMonitor(RiskConfig(), namespace="t", alerts=_NoAlerts(), client=fake_redis)
    await mon._connect()
    # the monitor observes first; the host's later look neither moves nor ignores that baseline
    await mon._day_baselines([_pos("S1", "10")], NOON)
    assert await fake_redis.exists(pnl_day_key("t", NOON)), "the day key the hosts read"
    assert await DayBaselines(fake_redis, "t").daily_pnl([_pos("S1", "3")], NOON + 5) == {"S1": D(-7)}
    # and the other way round
    await DayBaselines(fake_redis, "t").baselines([_pos("S2", "1")], NOON)
    baselines = await mon._day_baselines([_pos("S2", "-1")], NOON + 5)
    assert baselines == {"S1:okx:BTC-USDT-SWAP": D(10), "S2:okx:BTC-USDT-SWAP": D(1)}


async def test_redis_down_raises_store_unavailable(fake_redis, monkeypatch):
    async def down(self, *args, **kwargs):
        raise RedisConnectionError("refused")

    monkeypatch.setattr(type(fake_redis.pipeline()), "execute", down)
    with pytest.raises(StoreUnavailable):
        await DayBaselines(fake_redis, "t").daily_pnl([_pos("S1", "1")], NOON)

"""Control-state keys come from RedisKeys and keep the exact form deployed Redis data has."""

from __future__ import annotations

import pytest

from tradetree.core.redis_keys import RedisKeys


@pytest.mark.parametrize(("key", "expected"), [
    (lambda k: k.ctl_verified("okx"), "ns:ctl:verified:okx"),
    (lambda k: k.ctl_discrepancy("okx"), "ns:ctl:discrepancy:okx"),
    (lambda k: k.ctl_venue_pause("okx"), "ns:ctl:venue_pause:okx"),
    (lambda k: k.ctl_breakers, "ns:ctl:breakers"),
    (lambda k: k.ctl_strategy_pause, "ns:ctl:strategy_pause"),
    (lambda k: k.ctl_cursor("okx", "BTC-USDT-SWAP"), "ns:ctl:cursor:okx:BTC-USDT-SWAP"),
    (lambda k: k.kill_progress("strategy:MR_v10"), "ns:ctl:kill:strategy:MR_v10"),
    (lambda k: k.kill_log("global"), "ns:ctl:kill_log:global"),
    (lambda k: k.kills, "ns:ctl:kills"),
    (lambda k: k.risk_pnl_day("20260101"), "ns:ctl:risk_pnl_day:20260101"),
])
def test_control_keys_keep_their_historical_form(key, expected):
    assert key(RedisKeys("ns")) == expected


def test_every_key_is_under_the_namespace_scan_pattern():
    keys = RedisKeys("ns")
    assert keys.ctl_cursor("okx", "X").startswith(keys.scan_pattern.rstrip("*"))

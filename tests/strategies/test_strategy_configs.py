"""Every shipped strategy config loads and builds into its class."""

from pathlib import Path

import pytest

from tradetree.core.config import load_strategy_config
from tradetree.strategies import (
    SingleVenueMarketMaking,
    StatsArb,
    TrendFollowing,
    VolScaledDirectional,
    build_strategy,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "strategies"


@pytest.mark.parametrize("filename,cls,symbols", [
    ("TrendFollowing_v1_BTC.yaml", TrendFollowing, ("BTC-USDT-SWAP",)),
    ("SingleVenueMarketMaking_v1_BTC.yaml", SingleVenueMarketMaking, ("BTC-USDT-SWAP",)),
    ("StatsArb_v1_BTC.yaml", StatsArb, ("BTC-USDT-SWAP", "ETH-USDT-SWAP")),
    ("VolScaledDirectional_v1_BTC.yaml", VolScaledDirectional, ("BTC-USDT-SWAP",)),
])
def test_shipped_config_loads_and_builds(filename, cls, symbols):
    config = load_strategy_config(CONFIGS / filename)
    strategy = build_strategy(config)
    assert type(strategy) is cls
    assert strategy.id == filename.removesuffix(".yaml")  # <class>_<version>_<base>
    assert config.venue == "okx" and config.symbols == symbols
    assert config.bar_interval_ms == 1000


def test_every_shipped_config_builds():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert len(files) >= 6
    for path in files:
        build_strategy(load_strategy_config(path))

"""Resolve a strategy class by the name a config gives it."""

from __future__ import annotations

from tradetree.core import ConfigError, StrategyConfig
from tradetree.strategies.base import Strategy
from tradetree.strategies.market_making import SingleVenueMarketMaking
from tradetree.strategies.mean_reversion import MeanReversion
from tradetree.strategies.stats_arb import StatsArb
from tradetree.strategies.trend_following import TrendFollowing
from tradetree.strategies.vol_scaled import VolScaledDirectional

__all__ = ["STRATEGY_CLASSES", "strategy_class", "build_strategy"]

STRATEGY_CLASSES: dict[str, type[Strategy]] = {
    "MeanReversion": MeanReversion,
    "TrendFollowing": TrendFollowing,
    "SingleVenueMarketMaking": SingleVenueMarketMaking,
    "StatsArb": StatsArb,
    "VolScaledDirectional": VolScaledDirectional,
}


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as ``name``. Raises ConfigError listing the known ones."""
    try:
        return STRATEGY_CLASSES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGY_CLASSES))
        raise ConfigError(f"unknown strategy class {name!r} (known: {known})") from None


def build_strategy(config: StrategyConfig) -> Strategy:
    """Instantiate the configured strategy. Raises ConfigError on a bad class or params."""
    return strategy_class(config.class_name)(config)

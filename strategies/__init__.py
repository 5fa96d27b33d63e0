"""Pure strategies: market events and fills in, order intents out."""

from strategies.base import Strategy, StrategyContext, StrategyParams, orders_toward_target
from strategies.market_making import SingleVenueMarketMaking, SingleVenueMarketMakingParams
from strategies.mean_reversion import MeanReversion, MeanReversionParams
from strategies.stats_arb import StatsArb, StatsArbParams
from strategies.trend_following import TrendFollowing, TrendFollowingParams
from strategies.vol_scaled import (
    RealizedVolForecaster,
    VolatilityForecaster,
    VolScaledDirectional,
    VolScaledDirectionalParams,
)
from strategies.registry import STRATEGY_CLASSES, build_strategy, strategy_class

__all__ = [
    "Strategy",
    "StrategyContext",
    "StrategyParams",
    "orders_toward_target",
    "MeanReversion",
    "MeanReversionParams",
    "TrendFollowing",
    "TrendFollowingParams",
    "SingleVenueMarketMaking",
    "SingleVenueMarketMakingParams",
    "StatsArb",
    "StatsArbParams",
    "VolScaledDirectional",
    "VolScaledDirectionalParams",
    "VolatilityForecaster",
    "RealizedVolForecaster",
    "STRATEGY_CLASSES",
    "build_strategy",
    "strategy_class",
]

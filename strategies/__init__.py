"""Pure strategies: market events and fills in, order intents out."""

# The folder sits at the repository root but installs as tradetree.strategies; loading it
# under a second name would give every class and module-level state two copies.
if __name__ != "tradetree.strategies":
    raise ImportError(f"import tradetree.strategies, not {__name__}")

from tradetree.strategies.base import Strategy, StrategyContext, StrategyParams, orders_toward_target
from tradetree.strategies.market_making import SingleVenueMarketMaking, SingleVenueMarketMakingParams
from tradetree.strategies.mean_reversion import MeanReversion, MeanReversionParams
from tradetree.strategies.registry import STRATEGY_CLASSES, build_strategy, strategy_class
from tradetree.strategies.stats_arb import StatsArb, StatsArbParams
from tradetree.strategies.trend_following import TrendFollowing, TrendFollowingParams
from tradetree.strategies.vol_scaled import (
    RealizedVolForecaster,
    VolatilityForecaster,
    VolScaledDirectional,
    VolScaledDirectionalParams,
)

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

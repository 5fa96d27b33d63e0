"""Pure strategies: market events and fills in, order intents out."""

from strategies.base import Strategy, StrategyContext, StrategyParams, orders_toward_target
from strategies.mean_reversion import MeanReversion, MeanReversionParams
from strategies.registry import STRATEGY_CLASSES, build_strategy, strategy_class

__all__ = [
    "Strategy",
    "StrategyContext",
    "StrategyParams",
    "orders_toward_target",
    "MeanReversion",
    "MeanReversionParams",
    "STRATEGY_CLASSES",
    "build_strategy",
    "strategy_class",
]

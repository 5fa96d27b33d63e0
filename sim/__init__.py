"""tradetree's built-in paper venue: an OKX v5-compatible simulator on 127.0.0.1.

One :class:`MatchingEngine` (pure, also driven by the backtester) behind OKX v5
REST + WS that unmodified ccxt trades against, with fault injection.
"""

# The folder sits at the repository root but installs as tradetree.sim; loading it
# under a second name would give every class and module-level state two copies.
if __name__ != "tradetree.sim":
    raise ImportError(f"import tradetree.sim, not {__name__}")

from tradetree.sim.config import (
    DEFAULT_API_KEY,
    DEFAULT_PASSPHRASE,
    DEFAULT_SECRET,
    FeeSchedule,
    SimInstrument,
    SimulatorConfig,
    default_instruments,
)
from tradetree.sim.faults import FaultInjector, FaultSettings
from tradetree.sim.market_data import (
    Candle,
    CandleAggregator,
    CandleReplay,
    GeneratedMarket,
    GeneratorParams,
    MarketSource,
    MarketTick,
    PublicTrade,
    load_candle_source,
    load_candles,
)
from tradetree.sim.matching import (
    BookShape,
    FillView,
    MatchingEngine,
    OrderEvent,
    OrderRequest,
    OrderView,
    PositionView,
)
from tradetree.sim.server import SimulatorServer, SimulatorThread, banner, serve_forever

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_PASSPHRASE",
    "DEFAULT_SECRET",
    "FeeSchedule",
    "SimInstrument",
    "SimulatorConfig",
    "default_instruments",
    "FaultInjector",
    "FaultSettings",
    "Candle",
    "CandleAggregator",
    "CandleReplay",
    "GeneratedMarket",
    "GeneratorParams",
    "MarketSource",
    "MarketTick",
    "PublicTrade",
    "load_candle_source",
    "load_candles",
    "BookShape",
    "FillView",
    "MatchingEngine",
    "OrderEvent",
    "OrderRequest",
    "OrderView",
    "PositionView",
    "SimulatorServer",
    "SimulatorThread",
    "banner",
    "serve_forever",
]

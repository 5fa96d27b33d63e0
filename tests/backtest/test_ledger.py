"""The backtest's position ledger: the store's accounting, on exact decimals."""

from decimal import Decimal as D

from tradetree.core.types import Position
from tradetree.sim.backtest.ledger import PositionLedger


def test_add_reduce_flip_and_fees():
    led = PositionLedger("s", "okx", {"X-SWAP": D("0.01")})
    assert led.apply("X-SWAP", True, D(100), D(2), D("0.1"), 1) == 0
    led.apply("X-SWAP", True, D(110), D(2), D("0.1"), 2)  # avg 105
    assert led.avg_price("X-SWAP") == D(105)
    pnl = led.apply("X-SWAP", False, D(120), D(5), D("0.2"), 3)  # closes 4 (+0.6), opens short 1 at 120
    assert pnl == D(4) * D("0.01") * D(15)
    assert (led.qty("X-SWAP"), led.avg_price("X-SWAP")) == (D(-1), D(120))
    assert led.realized_total == D("0.6") and led.fees_total == D("0.4")
    before = led.quantities
    led.apply("X-SWAP", True, D(100), D(1), D(0), 4)
    assert before == {"X-SWAP": D(-1)} and led.quantities == {"X-SWAP": D(0)}  # snapshots are replaced
    (pos,) = led.positions()
    assert pos == Position.model_validate(pos.model_dump())
    assert (pos.qty, pos.avg_price, pos.fill_count, pos.updated_ms) == (D(0), D(0), 4, 4)
    assert pos.realized_pnl == D("0.6") + D("0.2")

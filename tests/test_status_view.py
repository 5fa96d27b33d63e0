import json
import re
from decimal import Decimal as D

from rich.console import Console

from tradetree.core import Mark, Position, value_positions
from tradetree.risk import RiskConfig
from tradetree.status import positions_json, positions_text, render_snapshot, snapshot_text

NOW = 1_700_000_100_000
RULES = RiskConfig(contract_values={"okx:BTC-USDT-SWAP": D("0.01"), "okx:ETH-USDT-SWAP": D("0.1")})


def _snap():
    return {
        "strategies": {"MeanReversion_v10_BTC": "RUNNING"},
        "positions": [{"strategy_id": "MeanReversion_v10_BTC", "venue": "okx", "inst_id": "BTC-USDT-SWAP",
                       "qty": "-2", "avg_price": "60000.5", "realized_pnl": "12.5", "fees": "0.6",
                       "fill_count": 3, "updated_ms": 1}],
        "fills_by_layer": {"ws": {"applied": 3, "delivered": 3}, "poll": {"applied": 0, "delivered": 7}},
        "kill_flag": None,
        "heartbeats": {},
        "actors": {"VenueGateway[okx]": {"state": "running", "restarts": 1, "detail": "ws_private: [down]"}},
    }


def _valued_snap(eth_mark_age_ms: int = 1_000):
    positions = [
        Position(strategy_id="MeanReversion_v10_BTC", venue="okx", inst_id="BTC-USDT-SWAP", qty=D(-2),
                 avg_price=D("60000.5"), realized_pnl=D("12.5"), fees=D("0.6"), fill_count=3),
        Position(strategy_id="TrendFollowing_v1_BTC", venue="okx", inst_id="ETH-USDT-SWAP", qty=D(3),
                 avg_price=D("3000"), fees=D("0.25"), fill_count=1),
    ]
    marks = {("okx", "BTC-USDT-SWAP"): Mark(price=D("59000"), ts_ms=NOW - 1_500, recv_ms=NOW - 1_500),
             ("okx", "ETH-USDT-SWAP"): Mark(price=D("3100"), ts_ms=NOW - eth_mark_age_ms,
                                            recv_ms=NOW - eth_mark_age_ms)}
    snap = _snap()
    snap["strategies"]["TrendFollowing_v1_BTC"] = "PAUSED"
    snap["positions"] = [r.model_dump(mode="json")
                         for r in value_positions(positions, marks, now_ms=NOW, rules=RULES)]
    return snap


def _row(text: str, needle: str) -> list[str]:
    (line,) = [ln for ln in text.splitlines() if re.search(rf"│ {re.escape(needle)} +│", ln)]
    return [c.strip() for c in line.strip("│┃ ").split("│")]


def test_status_view_shows_names_with_brackets_and_every_section():
    console = Console(width=160, record=True)
    console.print(render_snapshot(_snap(), elapsed_secs=5))
    text = console.export_text()
    for needle in ("VenueGateway[okx]", "MeanReversion_v10_BTC", "BTC-USDT-SWAP", "RUNNING", "-2", "ws_private: [down]",
                   "kill flag clear"):
        assert needle in text


def test_positions_json_is_stable():
    rows = _snap()["positions"]
    assert positions_json(rows) == positions_json(list(reversed(rows)))
    assert '"qty": "-2"' in positions_json(rows)


def test_the_table_shows_mark_notional_and_pnl_per_position_and_strategy():
    text = snapshot_text(_valued_snap())
    # short 2 at 60000.5, mark 59000: (59000 - 60000.5) * -2 * 0.01 = 20.01; 2 * 59000 * 0.01 = 1180
    # total 12.5 + 20.01 - 0.6 = 31.91
    assert _row(text, "BTC-USDT-SWAP") == ["MeanReversion_v10_BTC", "okx", "BTC-USDT-SWAP", "-2", "60,000.50",
                                          "59,000", "1.5s", "1,180.00", "20.01", "12.50", "0.60", "31.91", "3"]
    # long 3 at 3000, mark 3100: 100 * 3 * 0.1 = 30; total 30 - 0.25
    assert _row(text, "ETH-USDT-SWAP")[5:12] == ["3,100", "1.0s", "930.00", "30.00", "0.00", "0.25", "29.75"]
    # Strategies: strategy, state, realized, fees, unrealized, total, notional
    assert _row(text, "RUNNING") == ["MeanReversion_v10_BTC", "RUNNING", "12.50", "0.60", "20.01", "31.91",
                                    "1,180.00"]
    assert _row(text, "PAUSED")[4:] == ["30.00", "29.75", "930.00"]


def test_an_unvalued_position_shows_dashes_its_reason_and_an_incomplete_strategy():
    text = snapshot_text(_valued_snap(eth_mark_age_ms=45_000))
    row = _row(text, "ETH-USDT-SWAP")
    assert row[5:9] == ["-", "45.0s stale", "-", "-"] and row[11] == "-"
    assert "no usable mark for okx:ETH-USDT-SWAP: last mark 45.0 s old, max 30 s" in text
    assert _row(text, "PAUSED")[4:] == ["incomplete: 0.00 + 1 unvalued"] * 3
    assert "0.00" not in _row(text, "ETH-USDT-SWAP")[7]


def test_plain_position_rows_render_unknown_valuation_as_dashes():
    text = positions_text(_snap()["positions"])
    row = _row(text, "BTC-USDT-SWAP")
    assert row[5] == "-" and row[7:9] == ["-", "-"] and row[9] == "12.50" and row[11] == "-"


def test_piped_text_is_as_wide_as_the_tables_need_and_has_no_colour_codes():
    text = snapshot_text(_valued_snap(eth_mark_age_ms=45_000))
    assert max(len(line) for line in text.splitlines()) > 80
    assert "…" not in text and "\x1b[" not in text
    assert all(line == line.rstrip() for line in text.splitlines())
    assert "incomplete: 0.00 + 1 unvalued" in text and "TrendFollowing_v1_BTC" in text
    narrow = snapshot_text(_valued_snap(), width=80)
    assert max(len(line) for line in narrow.splitlines()) <= 80  # a width given is kept


def test_positions_json_carries_the_valuation():
    rows = _valued_snap()["positions"]
    (btc,) = [r for r in json.loads(positions_json(rows)) if r["inst_id"] == "BTC-USDT-SWAP"]
    assert D(btc["unrealized_pnl"]) == D("20.01") and D(btc["total_pnl"]) == D("31.91")
    assert D(btc["notional"]) == D(1180) and D(btc["mark_price"]) == D(59000) and btc["mark_age_ms"] == 1_500

from rich.console import Console

from tradetree.status import positions_json, render_snapshot


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

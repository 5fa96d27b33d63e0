"""The rich rendering of the status snapshot the run loop shows each second.

The snapshot itself is ``tradetree.core.snapshot.collect_snapshot``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table

__all__ = ["render_snapshot", "positions_table", "positions_json"]


def _fmt(x: Any, places: int = 4) -> str:
    d = Decimal(str(x))
    return f"{d:,.{places}f}" if d != d.to_integral_value() else f"{d:,.0f}"


def positions_table(positions: list[dict[str, Any]]) -> Table:
    t = Table(title="Positions (Redis)", expand=False)
    for col in ("strategy", "venue", "instrument", "qty", "avg price", "realized P&L", "fees", "fills"):
        left = col in ("strategy", "venue", "instrument")
        t.add_column(col, justify="left" if left else "right", no_wrap=True)
    for p in sorted(positions, key=lambda p: (p["strategy_id"], p["venue"], p["inst_id"])):
        t.add_row(escape(p["strategy_id"]), escape(p["venue"]), escape(p["inst_id"]), _fmt(p["qty"]), _fmt(p["avg_price"], 2),
                  _fmt(p["realized_pnl"], 2), _fmt(p["fees"], 2), str(p["fill_count"]))
    return t


def positions_json(positions: list[dict[str, Any]]) -> str:
    rows = sorted(positions, key=lambda p: (p["strategy_id"], p["venue"], p["inst_id"]))
    return json.dumps(rows, indent=2, sort_keys=True)


def render_snapshot(snap: dict[str, Any], *, elapsed_secs: float | None = None) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_row(
        f"[bold]tradetree[/bold]{'' if elapsed_secs is None else f'  t+{elapsed_secs:,.0f}s'}",
        "[red bold]KILL FLAG: " + snap["kill_flag"] + "[/]" if snap.get("kill_flag") else "[green]kill flag clear[/]",
    )

    strat = Table(title="Strategies")
    for col in ("strategy", "state", "realized P&L", "fees"):
        strat.add_column(col)
    pnl: dict[str, tuple[Decimal, Decimal]] = {}
    for p in snap["positions"]:
        r, f = pnl.get(p["strategy_id"], (Decimal(0), Decimal(0)))
        pnl[p["strategy_id"]] = (r + Decimal(str(p["realized_pnl"])), f + Decimal(str(p["fees"])))
    for sid in sorted(set(snap["strategies"]) | set(pnl)):
        r, f = pnl.get(sid, (Decimal(0), Decimal(0)))
        strat.add_row(escape(sid), snap["strategies"].get(sid, "-"), _fmt(r, 2), _fmt(f, 2))

    layers = Table(title="Fills by layer")
    layers.add_column("layer")
    layers.add_column("applied", justify="right")
    layers.add_column("delivered", justify="right")
    for layer, counts in sorted(snap["fills_by_layer"].items()):
        layers.add_row(layer, str(counts.get("applied", 0)), str(counts.get("delivered", 0)))

    actors = Table(title="Actors")
    actors.add_column("actor")
    actors.add_column("state")
    actors.add_column("restarts", justify="right")
    actors.add_column("detail")
    for name, info in sorted(snap["actors"].items()):
        state = str(info.get("state", "?"))
        colour = "green" if state.upper() == "RUNNING" else "yellow"
        actors.add_row(escape(name), f"[{colour}]{escape(state)}[/]", str(info.get("restarts", 0)),
                       escape(str(info.get("detail", ""))[:80]))

    return Group(head, strat, positions_table(snap["positions"]), layers, actors)

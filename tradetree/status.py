"""The rich rendering of the status snapshot the run loop shows each second, and its plain text.

The snapshot itself is ``tradetree.core.snapshot.collect_snapshot``; its
``positions`` are the valued rows of ``tradetree.core.read_book`` (a row
without valuation fields, a plain ``Position`` dump, renders with "-" where
the valuation would be). Unknown values are "-", never 0, and a strategy
whose positions are not all valued says "incomplete".

``snapshot_text`` / ``positions_text`` render to a string at a given width,
or at the width the tables need, so output piped to a file or ``less`` is
never cut at 80 columns.

While the root supervisor is UNREACHABLE, the components still heartbeating
in Redis (the snapshot's ``heartbeats``) are listed as ORPHAN actors: alive,
but with nobody to restart them (``orphans``); the header says when the
root's own heartbeat is stale (``risk.root_unsupervised_reason``).
"""

from __future__ import annotations

import io
import json
import time
from decimal import Decimal
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table

from tradetree.core import ROOT_HEARTBEAT_KEY, ROOT_HEARTBEAT_STALE_SECS, ROOT_ID, StrategyValue, strategy_values
from tradetree.risk import root_unsupervised_reason

__all__ = ["orphans", "positions_json", "positions_table", "positions_text", "render_snapshot", "render_text",
           "snapshot_text"]

_UNKNOWN = "[yellow]-[/]"


def _fmt(x: Any, places: int = 4) -> str:
    d = Decimal(str(x))
    return f"{d:,.{places}f}" if d != d.to_integral_value() else f"{d:,.0f}"


def _money(x: Any, places: int = 2) -> str:
    """Money to ``places`` decimals (not trimmed: columns line up); unknown as "-"."""
    if x is None:
        return _UNKNOWN
    return f"{Decimal(str(x)):,.{places}f}"


def _price(x: Any) -> str:
    return _UNKNOWN if x is None else _fmt(x, 2)


def _age(row: dict[str, Any]) -> str:
    age_ms = row.get("mark_age_ms")
    if age_ms is None:
        return _UNKNOWN
    text = f"{age_ms / 1000:,.1f}s"
    return text if row.get("mark_price") is not None else f"[yellow]{text} stale[/]"


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda p: (p["strategy_id"], p["venue"], p["inst_id"]))


def positions_table(positions: list[dict[str, Any]]) -> Table:
    """One row per position; a caption says why each unvalued one is."""
    t = Table(title="Positions (Redis)", expand=False)
    columns = ("strategy", "venue", "instrument", "qty", "avg price", "mark", "mark age", "notional",
               "unrealized P&L", "realized P&L", "fees", "total P&L", "fills")
    for col in columns:
        left = col in ("strategy", "venue", "instrument")
        t.add_column(col, justify="left" if left else "right", no_wrap=True)
    why: dict[str, str] = {}
    for p in _sorted(positions):
        t.add_row(escape(p["strategy_id"]), escape(p["venue"]), escape(p["inst_id"]), _fmt(p["qty"]),
                  _fmt(p["avg_price"], 2), _price(p.get("mark_price")), _age(p), _money(p.get("notional")),
                  _money(p.get("unrealized_pnl")), _money(p["realized_pnl"]), _money(p["fees"]),
                  _money(p.get("total_pnl")), str(p["fill_count"]))
        if p.get("unvalued_reason"):
            why.setdefault(f"{p['venue']}:{p['inst_id']}", p["unvalued_reason"])
    if why:
        t.caption = "\n".join(escape(text) for _, text in sorted(why.items()))
        t.caption_justify = "left"
    return t


def positions_json(positions: list[dict[str, Any]]) -> str:
    """The rows (valued or not) as stable JSON: sorted rows, sorted keys."""
    return json.dumps(_sorted(positions), indent=2, sort_keys=True)


def _summed(value: Decimal | None, known: Decimal, unvalued: int) -> str:
    if value is not None:
        return _money(value)
    return f"[yellow]incomplete[/]: {_money(known)} + {unvalued} unvalued"


def _strategies_table(snap: dict[str, Any]) -> Table:
    strat = Table(title="Strategies")
    for col in ("strategy", "state", "realized P&L", "fees", "unrealized P&L", "total P&L", "notional"):
        strat.add_column(col, justify="left" if col in ("strategy", "state") else "right", no_wrap=True)
    sums = strategy_values(snap.get("positions") or [])
    for sid in sorted(set(snap.get("strategies") or {}) | set(sums)):
        s = sums.get(sid) or StrategyValue(strategy_id=sid)
        n = len(s.unvalued)
        strat.add_row(escape(sid), escape(str((snap.get("strategies") or {}).get(sid, "-"))),
                      _money(s.realized_pnl), _money(s.fees),
                      _summed(s.unrealized_pnl, s.unrealized_pnl_known, n),
                      _summed(s.total_pnl, s.total_pnl_known, n), _summed(s.notional, s.notional_known, n))
    return strat


def orphans(actors: dict[str, Any], heartbeats: dict[str, int], now_ms: int,
            stale_secs: float = ROOT_HEARTBEAT_STALE_SECS) -> dict[str, float]:
    """Components alive without a root: heartbeat field -> its age in seconds, for every heartbeat
    fresher than ``stale_secs`` other than the root's, while the root is UNREACHABLE; else empty."""
    root = actors.get(ROOT_ID) or {}
    if str(root.get("state", "")).upper() != "UNREACHABLE":
        return {}
    return {name: max(0, now_ms - ts) / 1000 for name, ts in sorted(heartbeats.items())
            if name != ROOT_HEARTBEAT_KEY and now_ms - ts <= stale_secs * 1000}


def render_snapshot(snap: dict[str, Any], *, elapsed_secs: float | None = None,
                    now_ms: int | None = None) -> Group:
    """The snapshot as rich tables; ``now_ms`` (default: the wall clock) ages the heartbeats."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    heartbeats = snap.get("heartbeats") or {}
    head = Table.grid(padding=(0, 2))
    cells = [
        f"[bold]tradetree[/bold]{'' if elapsed_secs is None else f'  t+{elapsed_secs:,.0f}s'}",
        "[red bold]KILL FLAG: " + escape(str(snap["kill_flag"])) + "[/]" if snap.get("kill_flag")
        else "[green]kill flag clear[/]",
    ]
    if ROOT_HEARTBEAT_KEY in heartbeats:  # absent: no root that heartbeats has run (or it was not read)
        unsupervised = root_unsupervised_reason(heartbeats[ROOT_HEARTBEAT_KEY], now)
        if unsupervised is not None:
            cells.append(f"[red bold]{escape(unsupervised.upper()[:1] + unsupervised[1:])}[/]")
    head.add_row(*cells)

    layers = Table(title="Fills by layer")
    layers.add_column("layer")
    layers.add_column("applied", justify="right")
    layers.add_column("delivered", justify="right")
    for layer, counts in sorted((snap.get("fills_by_layer") or {}).items()):
        layers.add_row(layer, str(counts.get("applied", 0)), str(counts.get("delivered", 0)))

    rows = sorted((snap.get("actors") or {}).items())
    # On a cluster, where each actor runs is what an operator looks at after a node loss.
    nodes = {str(info.get("node_id") or "") for _, info in rows} - {""}
    by_node = len(nodes) > 1
    actors = Table(title="Actors")
    actors.add_column("actor")
    actors.add_column("state")
    actors.add_column("restarts", justify="right")
    if by_node:
        actors.add_column("node")
    actors.add_column("detail")
    for name, info in rows:
        state = str(info.get("state", "?"))
        colour = "green" if state.upper() == "RUNNING" else "yellow"
        cells = [escape(name), f"[{colour}]{escape(state)}[/]", str(info.get("restarts", 0))]
        if by_node:
            cells.append(escape(str(info.get("node_id") or "-")[:8]))
        actors.add_row(*cells, escape(str(info.get("detail", ""))[:80]))
    for name, age in orphans(snap.get("actors") or {}, heartbeats, now).items():
        actors.add_row(escape(name), "[red]ORPHAN[/]", "-", *(["-"] if by_node else []),
                       f"heartbeat {age:,.1f}s ago; {ROOT_ID} unreachable: nothing restarts it")

    return Group(head, _strategies_table(snap), positions_table(snap.get("positions") or []), layers, actors)


def render_text(renderable: RenderableType, *, width: int | None = None) -> str:
    """``renderable`` as plain text (no colour codes) at ``width`` columns; None: as wide as it needs."""
    if width is None:
        probe = Console(file=io.StringIO(), width=10_000, color_system=None)
        width = max(40, probe.measure(renderable).maximum)
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, force_terminal=False, force_jupyter=False,
            force_interactive=False, legacy_windows=False).print(renderable)
    # rich pads every line to the width; a pipe or a file has no use for the padding
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines())


def snapshot_text(snap: dict[str, Any], *, width: int | None = None, elapsed_secs: float | None = None,
                  now_ms: int | None = None) -> str:
    """``render_snapshot`` as plain text (see ``render_text``)."""
    return render_text(render_snapshot(snap, elapsed_secs=elapsed_secs, now_ms=now_ms), width=width)


def positions_text(positions: list[dict[str, Any]], *, width: int | None = None) -> str:
    """``positions_table`` as plain text (see ``render_text``)."""
    return render_text(positions_table(positions), width=width)

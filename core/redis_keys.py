"""Redis key naming: every key tradetree writes, all under ``{namespace}:``.

One place builds key names so that the store, its Lua scripts and any tool
that inspects Redis agree on them. Components that come from outside
(strategy ids, instrument ids, trade ids, client order ids) are escaped
(``%`` -> ``%25``, ``:`` -> ``%3A``) so a colon inside an id can never make
two different triples map to the same key. Ids without ``%`` or ``:`` (every
id OKX and Binance produce) appear verbatim, so ``fill_id`` equals
``Fill.key`` for them.

Layout (``ns`` is the namespace):

    ns:fill:{venue}:{inst}:{trade}     hash   one applied fill (its presence is the dedup mark)
    ns:order:{coid}                    hash   order snapshot (json) + strategy_id, venue, rev
    ns:order_applied:{coid}            string atoms of applied fills of the order (INCRBY)
    ns:order_fills:{coid}              zset   fill ids of the order, score ts_ms
    ns:venue_order:{venue}:{void}      string venue order id -> client order id
    ns:open:{venue}                    set    client order ids the poller still tracks
    ns:open_venues                     set    venues that ever had a tracked order
    ns:pos:{strategy}:{venue}:{inst}   hash   position state
    ns:pos_fills:{position id}         zset   fill ids of the position by ts_ms (canonical order)
    ns:pos_ledger:{position id}        hash   fill id -> accounting details of the fill
    ns:pos_after:{position id}         hash   fill id -> position state right after that fill
    ns:positions                       set    position ids
    ns:audit                           stream one entry per applied fill
    ns:fill_layers                     hash   "{venue}:{layer}:delivered|applied" -> count
    ns:heartbeats                      hash   component -> ts_ms
    ns:strategy_states                 hash   strategy_id -> state
    ns:kill                            hash   reason, ts_ms (present = kill flag set)
    ns:marks:{venue}                   hash   inst_id -> last ticker price (json: px, ts_ms, recv_ms)
    ns:ctl:kill:{scope}                hash   a kill's progress (json) + state, reason, updated_ms
    ns:ctl:kill_log:{scope}            stream a kill's audit trail of steps (json)
    ns:ctl:kills                       set    scopes that were ever killed
    ns:ctl:kill_lease                  hash   owner, expires_ms of the executor running kills
    ns:ctl:risk_pnl_day:{YYYYMMDD}     hash   position id -> net P&L at its first sight that UTC day
    ns:ctl:risk_cursor                 string the risk monitor's read position in order_events
    ns:ctl:risk_streaks                string the risk monitor's rejection streaks (json)
    ns:ctl:operator_log                stream operator actions: who, when, what, why, outcome
    ns:engine                          string how to reach the running engine (json, no secrets)
"""

from __future__ import annotations

import re

from tradetree.core.types import escape_component

__all__ = ["NAMESPACE_PATTERN", "RedisKeys", "escape_component"]

# Same rule as core.config.RedisConfig.namespace: no ':' (a namespace must not
# be a prefix of another one's keys) and no glob characters (SCAN MATCH).
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")


class RedisKeys:
    """Key names of one namespace.

    Raises:
        ValueError: ``namespace`` is empty or has characters outside
            ``[A-Za-z0-9_.-]``.
    """

    def __init__(self, namespace: str) -> None:
        if not NAMESPACE_PATTERN.match(namespace):
            raise ValueError(
                f"invalid Redis namespace {namespace!r}: use letters, digits, '_', '.', '-'"
            )
        self.namespace = namespace
        self._p = namespace + ":"

    @property
    def prefix(self) -> str:
        """``{namespace}:``, the head of every key: ``apply_fill.lua`` builds the names of
        keys it finds only while it runs (the order an index points to, the position of
        the strategy it attributes to) from it with the same escaping."""
        return self._p

    # -- scanning -----------------------------------------------------------

    @property
    def scan_pattern(self) -> str:
        """SCAN MATCH pattern of every key of the namespace (namespace has no glob chars)."""
        return self._p + "*"

    @property
    def unused(self) -> str:
        """A key the scripts never touch; fills a KEYS slot that does not apply to a call."""
        return self._p + "unused"

    # -- fills ---------------------------------------------------------------

    @staticmethod
    def fill_id(venue: str, inst_id: str, trade_id: str) -> str:
        """The identity of a venue trade: ``venue:inst_id:trade_id`` (escaped)."""
        return ":".join(escape_component(c) for c in (venue, inst_id, trade_id))

    def fill(self, fill_id: str) -> str:
        return f"{self._p}fill:{fill_id}"

    @property
    def audit(self) -> str:
        return self._p + "audit"

    @property
    def fill_layers(self) -> str:
        return self._p + "fill_layers"

    @property
    def order_events(self) -> str:
        """Stream of every order write (record and update), for the risk monitor."""
        return self._p + "order_events"

    # -- orders ----------------------------------------------------------------

    def order(self, client_order_id: str) -> str:
        return f"{self._p}order:{escape_component(client_order_id)}"

    def order_applied(self, client_order_id: str) -> str:
        return f"{self._p}order_applied:{escape_component(client_order_id)}"

    def order_fills(self, client_order_id: str) -> str:
        return f"{self._p}order_fills:{escape_component(client_order_id)}"

    def venue_order(self, venue: str, venue_order_id: str) -> str:
        return f"{self._p}venue_order:{escape_component(venue)}:{escape_component(venue_order_id)}"

    def open_orders(self, venue: str) -> str:
        return f"{self._p}open:{escape_component(venue)}"

    @property
    def open_venues(self) -> str:
        return self._p + "open_venues"

    # -- positions -------------------------------------------------------------

    def position(self, position_id: str) -> str:
        return f"{self._p}pos:{position_id}"

    def position_fills(self, position_id: str) -> str:
        return f"{self._p}pos_fills:{position_id}"

    def position_ledger(self, position_id: str) -> str:
        return f"{self._p}pos_ledger:{position_id}"

    def position_after(self, position_id: str) -> str:
        return f"{self._p}pos_after:{position_id}"

    @property
    def positions(self) -> str:
        return self._p + "positions"

    # -- liveness and control -------------------------------------------------

    @property
    def heartbeats(self) -> str:
        return self._p + "heartbeats"

    @property
    def strategy_states(self) -> str:
        return self._p + "strategy_states"

    @property
    def kill(self) -> str:
        return self._p + "kill"

    # -- market data ------------------------------------------------------------

    def marks(self, venue: str) -> str:
        """Hash of the last ticker price per instrument of ``venue`` (written by its gateway)."""
        return f"{self._p}marks:{escape_component(venue)}"

    # -- control state (core.control_state; the kill journal and day P&L of risk) ---------------
    #
    # These keys were always written with their parts joined as given, unescaped, by the
    # modules that own them; they keep that form so a deployed Redis reads the same keys.
    # (A kill scope such as ``strategy:<id>`` carries a ':' of its own.)

    def _ctl(self, *parts: str) -> str:
        return ":".join((self.namespace, "ctl", *parts))

    def ctl_verified(self, venue: str) -> str:
        """String: when ``venue``'s positions were last verified against the venue (ms)."""
        return self._ctl("verified", venue)

    def ctl_discrepancy(self, venue: str) -> str:
        """Hash: open discrepancies of ``venue``, by key."""
        return self._ctl("discrepancy", venue)

    def ctl_venue_pause(self, venue: str) -> str:
        """Hash: ``venue``'s pauses, by source."""
        return self._ctl("venue_pause", venue)

    @property
    def ctl_breakers(self) -> str:
        """Hash: open breakers, by name."""
        return self._ctl("breakers")

    @property
    def ctl_strategy_pause(self) -> str:
        """Hash: why each paused strategy is paused, by strategy id."""
        return self._ctl("strategy_pause")

    def ctl_cursor(self, venue: str, inst_id: str) -> str:
        """String: the REST polling cursor of ``venue`` / ``inst_id``."""
        return self._ctl("cursor", venue, inst_id)

    # -- kill switch and risk monitor ----------------------------------------------

    def kill_progress(self, scope: str) -> str:
        """``scope`` is ``risk.kill_switch.kill_scope``'s, already escaped."""
        return self._ctl("kill", scope)

    def kill_log(self, scope: str) -> str:
        return self._ctl("kill_log", scope)

    @property
    def kills(self) -> str:
        return self._ctl("kills")

    @property
    def kill_lease(self) -> str:
        return self._ctl("kill_lease")

    def risk_pnl_day(self, day: str) -> str:
        """Day baselines of the UTC day ``day`` (``YYYYMMDD``, ``risk.day_pnl.utc_day``)."""
        return self._ctl("risk_pnl_day", day)

    @property
    def risk_cursor(self) -> str:
        return self._ctl("risk_cursor")

    @property
    def risk_streaks(self) -> str:
        return self._ctl("risk_streaks")

    @property
    def operator_log(self) -> str:
        """Stream: every operator action (clear-kill, reset-breaker, release-venue, resume ...)."""
        return self._ctl("operator_log")

    @property
    def engine(self) -> str:
        """String: the running engine's ``core.engine_record.EngineRecord`` (json)."""
        return f"{self.namespace}:engine"

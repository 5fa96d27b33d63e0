"""Risk configuration: freshness thresholds, limits and the risk monitor's timers.

Frozen, unknown fields rejected, units in the field names. Money is in the
quote currency of the positions (USDT for the OKX instruments we trade);
quantities are in the venue's native unit (contracts for swaps).

A limit left at ``None`` is not enforced. Thresholds that make the freshness
gate fail closed (verification and market-data age) have no "off" value.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["RiskConfig", "instrument_key"]


def instrument_key(venue: str, inst_id: str) -> str:
    """The key of ``contract_values`` and ``max_position_qty_by_inst``: ``venue:inst_id``."""
    return f"{venue}:{inst_id}"


class RiskConfig(BaseModel):
    """Limits and thresholds of the pre-trade checks and the risk monitor.

    Attributes:
        max_verification_age_secs: the venue's positions must have been
            verified against the venue (by the reconciler) at most this long
            ago, or the freshness gate refuses new orders.
        max_market_data_age_secs: market data older than this refuses orders,
            reduce-only wind-down orders included.
        max_order_notional: notional of one non-reduce-only order.
        max_strategy_notional: gross notional of one strategy after the order
            (positions plus in-flight orders plus the order).
        max_global_notional: the same over every strategy.
        max_position_qty: absolute position of one strategy on one instrument,
            in venue units, for instruments without an entry in
            ``max_position_qty_by_inst`` (keyed ``venue:inst_id``).
        max_daily_loss_per_strategy: realized loss today (P&L net of fees,
            UTC day) at or beyond which a strategy takes no new risk.
        max_daily_loss_global: the same summed over every strategy.
        max_mark_age_secs: a price used to value exposure for the notional
            limits (the strategy host's own last ticker, or the last ticker
            price a gateway recorded in Redis) counts as unknown when it was
            received longer ago than this, so the notional check refuses
            (fail closed). Notional limits are about size, not timing: a mark
            a few seconds old values a position well enough, but an
            instrument whose feed stopped must not be valued at a price from
            before it stopped. The default is well above the gateways' 1 s
            write cadence and their 10 s market-data probe.
        contract_values: base units per contract, keyed ``venue:inst_id``.
            Instruments not listed count as unknown for notional limits (the
            check fails closed), so list every instrument you trade when a
            notional limit is set (spot: 1).
        rejection_streak_limit: consecutive venue rejections of one strategy
            that open its ``rejections`` breaker.
        flip_order_window_secs: a terminal order explains a position sign
            change only if it ended at most this long before the position's
            last update.
        loop_interval_secs: the risk monitor's timer.
        loop_stale_after_secs: the monitor's ``loop_fresh`` probe fails when
            no loop completed for this long.
        order_events_batch: order events read per XREAD.
        alert_outbox_max: alerts kept for retry while the alerter is
            unreachable (oldest dropped beyond it, and logged).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_verification_age_secs: float = Field(default=10.0, gt=0)
    max_market_data_age_secs: float = Field(default=5.0, gt=0)

    max_order_notional: Decimal | None = Field(default=None, gt=0)
    max_strategy_notional: Decimal | None = Field(default=None, gt=0)
    max_global_notional: Decimal | None = Field(default=None, gt=0)
    max_position_qty: Decimal | None = Field(default=None, gt=0)
    max_position_qty_by_inst: dict[str, Decimal] = Field(default_factory=dict)
    max_daily_loss_per_strategy: Decimal | None = Field(default=None, gt=0)
    max_daily_loss_global: Decimal | None = Field(default=None, gt=0)
    max_mark_age_secs: float = Field(default=30.0, gt=0)
    contract_values: dict[str, Decimal] = Field(default_factory=dict)

    rejection_streak_limit: int = Field(default=5, ge=1)
    flip_order_window_secs: float = Field(default=300.0, gt=0)

    loop_interval_secs: float = Field(default=0.5, gt=0)
    loop_stale_after_secs: float = Field(default=5.0, gt=0)
    order_events_batch: int = Field(default=500, ge=1)
    alert_outbox_max: int = Field(default=100, ge=1)

    @field_validator("max_position_qty_by_inst", "contract_values")
    @classmethod
    def _positive_by_instrument(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        for key, value in v.items():
            if ":" not in key:
                raise ValueError(f"key {key!r} must be 'venue:inst_id'")
            if value <= 0:
                raise ValueError(f"{key}: must be positive, got {value}")
        return v

    @property
    def notional_limits_set(self) -> bool:
        return any(
            v is not None
            for v in (self.max_order_notional, self.max_strategy_notional, self.max_global_notional)
        )

    @property
    def global_limits_set(self) -> bool:
        """A limit over every strategy is set: the checks need every strategy's positions."""
        return self.max_global_notional is not None or self.max_daily_loss_global is not None

    def position_limit(self, venue: str, inst_id: str) -> Decimal | None:
        """The absolute position limit of ``venue:inst_id`` (None = not enforced)."""
        return self.max_position_qty_by_inst.get(instrument_key(venue, inst_id), self.max_position_qty)

    def contract_value(self, venue: str, inst_id: str) -> Decimal | None:
        """Base units per contract of ``venue:inst_id``, None when not configured."""
        return self.contract_values.get(instrument_key(venue, inst_id))

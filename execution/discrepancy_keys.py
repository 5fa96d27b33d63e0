"""The keys of the discrepancies the reconciler opens in Redis (``ControlState``), built and read here only.

A discrepancy key is ``{kind}:{subject}``: ``drift:{inst_id}`` (the drift
check) or ``fill_gap:{client_order_id}`` (the fill-health layer). It is also
the key of the condition's alerts.
"""

from __future__ import annotations

__all__ = ["DRIFT", "FILL_GAP", "discrepancy_subject", "drift_key", "fill_gap_key"]

DRIFT = "drift"  # venue position and Redis disagree on an instrument
FILL_GAP = "fill_gap"  # an order's applied fills are behind its venue status


def drift_key(inst_id: str) -> str:
    return f"{DRIFT}:{inst_id}"


def fill_gap_key(client_order_id: str) -> str:
    return f"{FILL_GAP}:{client_order_id}"


def discrepancy_subject(key: str, kind: str) -> str | None:
    """The instrument (``DRIFT``) or order (``FILL_GAP``) that ``key`` names; None when it is of another kind."""
    head = f"{kind}:"
    return key[len(head):] if key.startswith(head) else None

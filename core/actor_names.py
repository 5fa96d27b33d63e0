"""Names of the tree's singleton actors that code outside the tree wiring must reach.

The alert sinks (risk monitor, reconciler) look the alerter up by this name,
and the tree names its child with it, so the two can never disagree.
"""

from __future__ import annotations

__all__ = ["ALERTER_ID"]

ALERTER_ID = "Alerter"

"""Venue adapters: one folder per venue (``adapters/okx``), each with the same shape.

``VenueOrderReport`` and ``apply_report`` are venue-neutral and re-exported
here, so callers (gateway, reconciler) need not name a venue to use them.
"""

from adapters.okx.reports import VenueOrderReport, apply_report

__all__ = ["VenueOrderReport", "apply_report"]

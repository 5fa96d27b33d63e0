"""Venue adapters: one folder per venue (``adapters/okx``), each with the same shape.

``VenueOrderReport`` and ``apply_report`` are venue-neutral and re-exported
here, so callers (gateway, reconciler) need not name a venue to use them.
"""

# The folder sits at the repository root but installs as tradetree.adapters; loading it
# under a second name would give every class and module-level state two copies.
if __name__ != "tradetree.adapters":
    raise ImportError(f"import tradetree.adapters, not {__name__}")

from tradetree.adapters.okx.reports import VenueOrderReport, apply_report

__all__ = ["VenueOrderReport", "apply_report"]

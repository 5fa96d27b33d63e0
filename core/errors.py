"""The whole tradetree exception tree, drawn in one place.

Errors from ccxt, websockets and redis are translated at the boundary (the
adapters and the store) into these, so callers never catch a library's
exception type.

    TradetreeError
    ├── ConfigError                 a config file or value is invalid
    ├── StoreError                  Redis state could not be read or written
    │   └── StoreUnavailable        Redis does not answer
    ├── InvalidOrderTransition      an order state change the state machine forbids
    └── VenueError                  a venue call failed
        ├── VenueAuthError          credentials rejected (never retried)
        ├── VenueUnavailable        5xx, timeouts, connection refused (retryable)
        │   └── VenueRateLimited    429 / rate-limit codes (retryable, back off)
        ├── OrderRejected           the venue refused an order (not retryable as is)
        │   └── InsufficientFunds
        ├── OrderNotFound           the venue does not know the order
        └── VenueProtocolError      a garbled or unexpected venue message
"""

from __future__ import annotations

__all__ = [
    "TradetreeError",
    "ConfigError",
    "StoreError",
    "StoreUnavailable",
    "InvalidOrderTransition",
    "VenueError",
    "VenueAuthError",
    "VenueUnavailable",
    "VenueRateLimited",
    "OrderRejected",
    "InsufficientFunds",
    "OrderNotFound",
    "VenueProtocolError",
]


class TradetreeError(Exception):
    """Base class of every error tradetree raises on purpose."""


class ConfigError(TradetreeError):
    """A configuration file or value is invalid.

    The message names the file (when there is one) and the dotted path of the
    offending field, e.g. ``configs/paper.yaml: venues.0.rest_url: ...``.
    """


class StoreError(TradetreeError):
    """Redis state could not be read or written as required."""


class StoreUnavailable(StoreError):
    """Redis does not answer (refused, timed out, or went away)."""


class InvalidOrderTransition(TradetreeError):
    """An order state change that the order state machine does not allow."""


class VenueError(TradetreeError):
    """A call to a venue failed. ``venue`` names it."""

    def __init__(self, message: str, *, venue: str = "", code: str = "") -> None:
        super().__init__(message)
        self.venue = venue
        self.code = code


class VenueAuthError(VenueError):
    """The venue rejected our credentials. Never retried automatically."""


class VenueUnavailable(VenueError):
    """The venue did not answer usefully (5xx, timeout, refused). Retryable.

    For an order submission the outcome is unknown: look the order up by its
    client order id before assuming it was not placed.
    """


class VenueRateLimited(VenueUnavailable):
    """The venue asked us to slow down. Retryable after a back-off."""


class OrderRejected(VenueError):
    """The venue refused an order. Retrying the same order will not help."""


class InsufficientFunds(OrderRejected):
    """The venue refused an order for lack of balance or margin."""


class OrderNotFound(VenueError):
    """The venue does not know the order (or it is already final on cancel)."""


class VenueProtocolError(VenueError):
    """A venue message could not be parsed or broke the protocol's rules."""

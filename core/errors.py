"""The whole tradetree exception tree, drawn in one place.

Errors from ccxt, websockets, redis and Ray are translated at the boundary
(the adapters, the store, ``supervisor.actor_client`` and the supervisor's
``RayBackend``) into these, so callers never catch a library's exception type.

    TradetreeError
    ├── ConfigError                 a config file or value is invalid
    ├── StoreError                  Redis state could not be read or written
    │   └── StoreUnavailable        Redis does not answer
    ├── DuplicateClientOrderId      an order with that client order id is already recorded
    ├── InvalidOrderTransition      an order state change the state machine forbids
    ├── CanaryTimeout               a canary order did not fill within its deadline
    ├── Refused                     an action was refused because a precondition failed;
    │   │                           nothing was done (``reasons`` names each failed check)
    │   ├── RestartRefused          a restarted child's probes did not pass (also a SupervisorError)
    │   ├── VenueReleaseRefused     a venue's pause was not lifted: a probe fails
    │   └── ProbesFailing           an operator action waits on a failing probe (also a ControlError)
    ├── BackendError                a call to a named actor (through Ray) failed
    │   ├── ActorNotFound           no actor holds that name in the namespace
    │   ├── ActorClassNotFound      an actor class's "module:Attr" path does not import
    │   ├── ActorNameTaken          a live actor already holds the name
    │   ├── ActorDied               Ray reports the actor dead (``intended``: it exited on purpose)
    │   ├── CallTimeout             no answer within the call's timeout (the actor may be hung)
    │   └── CallFailed              the method raised, or Ray could not deliver the call
    ├── SupervisorError             a supervisor operation could not be carried out
    │                               (its subclasses live in ``supervisor.supervisor``)
    ├── ControlError                an operator action could not be carried out
    └── VenueError                  a venue call failed
        ├── VenueAuthError          credentials rejected (never retried)
        ├── VenueUnavailable        5xx, timeouts, connection refused (retryable)
        │   └── VenueRateLimited    429 / rate-limit codes (retryable, back off)
        ├── OrderRejected           the venue refused an order (not retryable as is)
        │   └── InsufficientFunds
        ├── OrderNotFound           the venue does not know the order
        └── VenueProtocolError      a garbled or unexpected venue message

Package-local families hang off ``TradetreeError`` too, next to the code that
raises them: ``supervisor.spec.SpecError`` (invalid child or supervisor specs),
``supervisor.restart_policy.InvalidLifecycleTransition``, ``ml.errors.MLError``.
"""
from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "TradetreeError",
    "ConfigError",
    "StoreError",
    "StoreUnavailable",
    "DuplicateClientOrderId",
    "InvalidOrderTransition",
    "CanaryTimeout",
    "Refused",
    "RestartRefused",
    "VenueReleaseRefused",
    "ProbesFailing",
    "BackendError",
    "ActorNotFound",
    "ActorClassNotFound",
    "ActorNameTaken",
    "ActorDied",
    "CallTimeout",
    "CallFailed",
    "SupervisorError",
    "ControlError",
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


class DuplicateClientOrderId(TradetreeError):
    """An order with this client order id is already recorded; nothing was sent.

    Not a ``StoreError``: Redis answered, and the answer is that the
    idempotency key is taken (a resend, or two senders minting the same id).
    """


class InvalidOrderTransition(TradetreeError):
    """An order state change that the order state machine does not allow."""


class CanaryTimeout(TradetreeError):
    """A canary order did not fill within its deadline.

    Not a ``VenueError``: the venue answered every call; the pipeline did not
    deliver the fill in time, which is what the canary is there to find out.
    """


class Refused(TradetreeError):
    """An action was refused because a precondition failed; nothing was done.

    ``reasons`` holds one line per failed check (e.g. ``"okx reconciler:
    fills_flowing: no fills for 30s"``); the message says what was refused.
    """

    def __init__(self, message: str, *, reasons: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.reasons: tuple[str, ...] = tuple(reasons)


class SupervisorError(TradetreeError):
    """A supervisor operation could not be carried out."""


class ControlError(TradetreeError):
    """A control action could not be carried out (unknown name, actor unreachable)."""


class RestartRefused(Refused, SupervisorError):
    """``restart_child``: the fresh incarnation's probes did not pass in time (message names them)."""


class VenueReleaseRefused(Refused):
    """A venue's pause was not lifted because a probe fails (named in the message)."""


class ProbesFailing(Refused, ControlError):
    """An operator action was refused because a probe it depends on is failing. The message names it."""


class BackendError(TradetreeError):
    """A call to a named actor, or to the actor runtime, failed."""


class ActorNotFound(BackendError):
    """No actor holds the name in the namespace (not started yet, or dead and not re-created)."""


class ActorClassNotFound(BackendError):
    """The ``module:Attr`` import path of an actor class does not resolve."""


class ActorNameTaken(BackendError):
    """A live actor already holds the name."""


class ActorDied(BackendError):
    """The actor is dead. ``intended`` is True when it exited on purpose (clean stop)."""

    def __init__(self, message: str, *, intended: bool = False) -> None:
        super().__init__(message)
        self.intended = intended


class CallTimeout(BackendError):
    """The actor did not answer within the timeout."""


class CallFailed(BackendError):
    """The method raised (the message carries its error) or could not be delivered."""


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

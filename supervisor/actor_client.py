"""The one way to call a named actor: lookup by name, a timeout on every call, Ray errors translated.

Every caller outside the supervisor's own backend (strategies sending orders,
the control API, the runner, the metrics exporter, the tree's SAFE MODE and
shutdown helpers, the model-server forecaster) goes through ``ActorClient``,
so a call can neither wait forever nor leak a Ray exception type.

Contract of ``call`` / ``call_sync``:

- The actor is looked up by name in the client's namespace (``None``: the
  caller's own) and its handle cached; any failure that says the handle is
  stale (not found, died, unavailable) drops it, so the next call finds an
  actor the supervisor re-created under the same name.
- Every call waits at most ``timeout_secs`` (the client's default, from
  ``ActorCallConfig``, unless the call gives its own); for ``call`` the
  bound covers the lookup too. There is no "no timeout": ``None`` and
  non-positive values are refused.
- An exception from the ``TradetreeError`` tree that the method itself raised
  reaches the caller as is (the callee's own contract, e.g. a
  ``DuplicateClientOrderId`` from the gateway). Everything else becomes a
  ``BackendError`` from ``core.errors`` through ``translate_ray_error``, the
  one translation table for Ray.

The supervisor's ``RayBackend`` holds its children's handles itself and calls
them through the same handle-level ``call_handle`` / ``tell_handle``, with
one difference: a project error a child raised is a ``CallFailed`` there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from tradetree.core import (
    ActorCallConfig,
    ActorDied,
    ActorNotFound,
    BackendError,
    CallFailed,
    CallTimeout,
    TradetreeError,
)

__all__ = [
    "ActorClient",
    "call_handle",
    "tell_handle",
    "translate_ray_error",
    "actor_died_error",
    "INTENDED_EXIT_MARKER",
]

log = logging.getLogger(__name__)

# Ray's message for an actor that called exit_actor() (checked on ray 2.60).
INTENDED_EXIT_MARKER = "INTENDED_USER_EXIT"

Lookup = Callable[[str, "str | None"], Any]
Getter = Callable[[Any, float], Any]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def actor_died_error(exc: BaseException) -> ActorDied:
    """The ``ActorDied`` for a Ray actor error, ``intended`` when the actor exited on purpose."""
    text = str(exc)
    if INTENDED_EXIT_MARKER in text:
        return ActorDied("actor exited on purpose", intended=True)
    if getattr(exc, "actor_init_failed", False):
        return ActorDied(f"actor constructor raised: {text.splitlines()[-1] if text else ''}")
    last = text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
    return ActorDied(f"actor died: {last}")


def translate_ray_error(exc: BaseException, what: str, *, timeout_secs: float | None = None) -> BackendError:
    """The ``core.errors`` exception for a Ray failure of ``what`` (e.g. ``"gateway.submit_order()"``).

    Returns (never raises):
        CallTimeout: ``TimeoutError`` (Ray's ``GetTimeoutError`` is one).
        CallFailed: the actor is temporarily unavailable, or the method raised
            (a ``RayTaskError`` whose cause is not an actor death), or any other Ray error.
        ActorDied: Ray reports the actor dead (``intended`` when it exited on purpose).
        ActorNotFound: ``ValueError`` from a lookup by name.
    """
    from ray.exceptions import ActorUnavailableError, RayActorError, RayError, RayTaskError

    if isinstance(exc, BackendError):
        return exc
    # First: Ray makes a method's exception an instance of its cause's class too, so a
    # ValueError or TimeoutError the method raised must not read as "not found" / "timed out".
    if isinstance(exc, RayTaskError):
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        if isinstance(cause, RayActorError):
            return actor_died_error(cause)
        return CallFailed(f"{what} raised {type(cause).__name__}: {_first_line(cause)}")
    if isinstance(exc, TimeoutError):
        within = f" within {timeout_secs:g}s" if timeout_secs is not None else ""
        return CallTimeout(f"{what} did not answer{within}")
    if isinstance(exc, ActorUnavailableError):
        return CallFailed(f"{what}: actor unavailable: {_first_line(exc)}")
    if isinstance(exc, RayActorError):  # ActorDiedError is one
        return actor_died_error(exc)
    if isinstance(exc, RayError):
        return CallFailed(f"{what}: {type(exc).__name__}: {_first_line(exc)}")
    if isinstance(exc, ValueError):
        return ActorNotFound(f"{what}: {_first_line(exc)}")
    return CallFailed(f"{what}: {type(exc).__name__}: {_first_line(exc)}")


def _method_error(exc: BaseException) -> TradetreeError | None:
    """The project exception a called method raised, if that is what ``exc`` carries."""
    from ray.exceptions import RayTaskError

    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        return cause if isinstance(cause, TradetreeError) else None
    return None


def _call_error(exc: BaseException, what: str, timeout_secs: float, *, pass_method_errors: bool) -> TradetreeError:
    """What a failed call of ``what`` raises: the method's own project error when passed through, else a BackendError."""
    raised = _method_error(exc) if pass_method_errors else None
    return raised if raised is not None else translate_ray_error(exc, what, timeout_secs=timeout_secs)


def _method(handle: Any, method: str, what: str) -> Any:
    try:
        return getattr(handle, method)
    except AttributeError:
        raise CallFailed(f"{what}: the actor has no such method") from None


async def call_handle(handle: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, what: str,
                      timeout_secs: float, pass_method_errors: bool = True) -> Any:
    """``handle.method(*args, **kwargs)``: submitted, awaited at most ``timeout_secs``, failures translated.

    ``what`` names the call in messages. With ``pass_method_errors`` a ``TradetreeError`` the
    method raised reaches the caller as is (``ActorClient``: the callee's own contract);
    without, it is a ``CallFailed`` like any other failure (``RayBackend``: the supervisor
    judges the child, not the child's domain errors).

    Raises:
        TradetreeError: the method raised it (only with ``pass_method_errors``).
        ActorNotFound, ActorDied, CallTimeout, CallFailed: from ``translate_ray_error``.
    """
    bound = _method(handle, method, what)
    try:
        ref = bound.remote(*args, **kwargs)

        async def _result() -> Any:
            return await ref

        return await asyncio.wait_for(_result(), timeout=timeout_secs)
    except Exception as exc:
        raise _call_error(exc, what, timeout_secs, pass_method_errors=pass_method_errors) from None


def tell_handle(handle: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, what: str) -> bool:
    """Fire and forget ``handle.method(*args, **kwargs)``: never waits, never raises. False when not sent."""
    try:
        getattr(handle, method).remote(*args, **kwargs)
    except Exception as exc:  # a lost notification must not break the caller
        log.warning("tell %s not sent: %s", what, exc)
        return False
    return True


def _ray_lookup(name: str, namespace: str | None) -> Any:
    import ray

    return ray.get_actor(name, namespace=namespace)


def _ray_get(ref: Any, timeout_secs: float) -> Any:
    import ray

    return ray.get(ref, timeout=timeout_secs)


def _check_timeout(timeout_secs: float | None) -> float:
    if timeout_secs is None or not timeout_secs > 0:
        raise ValueError(f"an actor call needs a positive timeout, got {timeout_secs!r}")
    return float(timeout_secs)


class ActorClient:
    """Calls methods of named actors in Ray namespace ``namespace`` (None: the caller's).

    ``config`` gives the default per-call timeout; ``lookup(name, namespace)``
    and ``get(ref, timeout_secs)`` default to Ray's and are injected by tests.
    """

    def __init__(self, namespace: str | None = None, *, config: ActorCallConfig | None = None,
                 timeout_secs: float | None = None, lookup: Lookup | None = None,
                 get: Getter | None = None) -> None:
        self.namespace = namespace
        default = timeout_secs if timeout_secs is not None else (config or ActorCallConfig()).call_timeout_secs
        self.timeout_secs = _check_timeout(default)
        self._lookup = lookup or _ray_lookup
        self._get = get or _ray_get
        self._handles: dict[str, Any] = {}

    def handle(self, name: str) -> Any:
        """The handle of the actor ``name`` (cached). Blocks on a short GCS call when not cached.

        Raises:
            ActorNotFound: no actor holds the name in the namespace.
            BackendError: Ray could not be asked.
        """
        cached = self._handles.get(name)
        if cached is not None:
            return cached
        try:
            handle = self._lookup(name, self.namespace)
        except Exception as exc:  # ValueError when absent; Ray errors when the GCS is unreachable
            err = translate_ray_error(exc, f"lookup of {name!r}")
            if isinstance(err, ActorNotFound):
                err = ActorNotFound(f"no actor named {name!r} in namespace {self.namespace!r}")
            raise err from None
        self._handles[name] = handle
        return handle

    def forget(self, name: str) -> None:
        """Drop the cached handle: the next call looks ``name`` up again."""
        self._handles.pop(name, None)

    async def call(self, name: str, method: str, *args: Any, timeout_secs: float | None = None,
                   **kwargs: Any) -> Any:
        """``name.method(*args, **kwargs)``, lookup included, awaited at most ``timeout_secs`` (default: the client's).

        Raises:
            TradetreeError: the method raised it (passed through as is).
            ActorNotFound, ActorDied, CallTimeout, CallFailed: as their names say.
        """
        timeout = _check_timeout(self.timeout_secs if timeout_secs is None else timeout_secs)
        what = f"{name}.{method}()"
        try:
            # One bound for the lookup and the call. call_handle's own bound is as long and
            # starts later, so this one decides when a slow lookup ate part of the time.
            async with asyncio.timeout(timeout):
                handle = self._handles.get(name)
                if handle is None:
                    handle = await asyncio.to_thread(self.handle, name)
                return await call_handle(handle, method, args, kwargs, what=what, timeout_secs=timeout)
        except TimeoutError as exc:
            self.forget(name)
            raise translate_ray_error(exc, what, timeout_secs=timeout) from None
        except BackendError:
            self.forget(name)
            raise

    def call_sync(self, name: str, method: str, *args: Any, timeout_secs: float | None = None,
                  **kwargs: Any) -> Any:
        """As ``call``, blocking (for drivers: the CLI, the runner, threads). Never from an event loop."""
        timeout = _check_timeout(self.timeout_secs if timeout_secs is None else timeout_secs)
        what = f"{name}.{method}()"
        try:
            ref = _method(self.handle(name), method, what).remote(*args, **kwargs)
            return self._get(ref, timeout)
        except Exception as exc:
            err = _call_error(exc, what, timeout, pass_method_errors=True)
            if isinstance(err, BackendError):
                self.forget(name)
            raise err from None

    def tell(self, name: str, method: str, *args: Any, **kwargs: Any) -> bool:
        """Fire and forget: submit the call, never wait, never raise. False when it was not sent."""
        what = f"{name}.{method}()"
        try:
            handle = self.handle(name)
        except BackendError as exc:
            log.warning("tell %s not sent: %s", what, exc)
            return False
        if tell_handle(handle, method, args, kwargs, what=what):
            return True
        self.forget(name)
        return False

"""Attaching this process to a running Ray cluster: token authentication, a bound, a clear error.

``tradetree run --address``, ``tradetree up`` and every control command attach through
``attach_ray``: Ray's own ``ray.init(address=...)`` retries a dead or refusing cluster for
minutes and, with an explicit address, does not send the cluster's token unless
``RAY_AUTH_MODE=token`` is set.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

import ray

from tradetree.core import ControlError

__all__ = ["attach_ray", "prepare_ray_auth"]


def attach_ray(address: str, namespace: str, *, timeout_secs: float, auth_mode: str | None = None,
               runtime_env: dict[str, Any] | None = None) -> str:
    """``ray.init(address)`` with token auth prepared and within ``timeout_secs``; what was decided about auth.

    ``runtime_env`` becomes the job's: every actor this process creates, and every actor those
    create (the tree's children), runs in it, including after Ray re-creates one elsewhere.

    Raises:
        ControlError: nothing answers, the token is missing, or Ray did not accept in time.
    """
    tried = prepare_ray_auth(auth_mode)
    _init_bounded(address, namespace, timeout_secs, tried, runtime_env)
    return tried


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path).is_file() if path else (Path.home() / ".ray" / "auth_token").is_file()


def prepare_ray_auth(auth_mode: str | None) -> str:
    """Turn Ray's token authentication on for this process when the cluster wants it; what was decided.

    Ray 2.60 turns token authentication on for a cluster ``ray.init`` starts,
    but a client given an explicit address does not send the token unless
    ``RAY_AUTH_MODE=token`` is set: it then retries ``InvalidAuthToken`` for
    a long while. A token sent to a cluster without authentication is ignored,
    so any local token is used.
    """
    explicit = os.environ.get("RAY_AUTH_MODE")
    if explicit is not None:
        return f"RAY_AUTH_MODE={explicit} (from the environment)"
    if auth_mode == "token" and not _token_available():
        raise ControlError("the tree's Ray cluster uses token authentication and no token is here: copy the "
                           "cluster's token (`ray get-auth-token` on its head node) to ~/.ray/auth_token, or set "
                           "RAY_AUTH_TOKEN")
    if auth_mode == "token" or _token_available():
        os.environ["RAY_AUTH_MODE"] = "token"
        try:  # Ray caches its config at import: refresh it, as Ray does when it turns tokens on itself
            from ray._raylet import Config  # type: ignore[attr-defined]

            Config.initialize("")
        except ImportError:  # pragma: no cover - a Ray without token authentication
            pass
        return "token authentication (token found locally)"
    return "no token authentication (no token found locally)"


class _NoSigtermWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


_NO_SIGTERM_WARNING = _NoSigtermWarning()


def _init_bounded(address: str, namespace: str, timeout_secs: float, auth: str,
                  runtime_env: dict[str, Any] | None = None) -> None:
    """``ray.init(address)`` within ``timeout_secs``: Ray itself retries a dead or refusing cluster for minutes."""
    host, _, port = address.rpartition(":")
    if host and port.isdigit():
        try:
            socket.create_connection((host, int(port)), timeout=min(5.0, timeout_secs)).close()
        except OSError as exc:
            raise ControlError(f"nothing answers at Ray address {address} ({exc}); tried: {auth}. "
                               "Is the tree running? `tradetree run` prints its address.") from None
    outcome: dict[str, BaseException | None] = {}

    def _init() -> None:
        try:
            ray.init(address=address, namespace=namespace, log_to_driver=False, configure_logging=False,
                     runtime_env=runtime_env or None)
            outcome["error"] = None
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    # Attaching off the main thread (so it can be bounded) makes Ray warn that it set no SIGTERM
    # handler; the CLI handles its own signals, so the warning only misleads an operator.
    logging.getLogger("ray._private.worker").addFilter(_NO_SIGTERM_WARNING)
    thread = threading.Thread(target=_init, name="tradetree-attach", daemon=True)
    thread.start()
    thread.join(timeout_secs)
    if "error" not in outcome:
        raise ControlError(f"Ray at {address} did not accept the connection within {timeout_secs:g}s; tried: "
                           f"{auth}. A token mismatch looks like this (Ray logs InvalidAuthToken): use the "
                           "cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN.")
    if outcome["error"] is not None:
        raise ControlError(f"could not attach to Ray at {address}: {type(outcome['error']).__name__}: "
                           f"{outcome['error']}; tried: {auth}") from None



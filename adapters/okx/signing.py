"""OKX v5 request signatures.

REST requests are signed by ccxt itself; this module signs what tradetree
sends on its own, the WebSocket ``login`` (okx_protocol.md section 6):
``sign = base64(HMAC_SHA256(secret, timestamp + "GET" + "/users/self/verify"))``
with ``timestamp`` in Unix **seconds**.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from tradetree.core import VenueCredentials

__all__ = ["sign", "ws_login_signature", "ws_login_request"]

_WS_LOGIN_PATH = "/users/self/verify"


def sign(secret: str, prehash: str) -> str:
    """``base64(HMAC_SHA256(secret, prehash))``, the one signature OKX uses everywhere."""
    digest = hmac.new(secret.encode(), prehash.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def ws_login_signature(secret: str, timestamp_secs: int) -> str:
    """The ``sign`` field of a WS login for a timestamp in Unix seconds."""
    return sign(secret, f"{timestamp_secs}GET{_WS_LOGIN_PATH}")


def ws_login_request(credentials: VenueCredentials, timestamp_secs: int) -> dict:
    """The full ``{"op": "login", ...}`` message.

    The returned dict holds the API key and passphrase: send it, never log it.
    """
    return {
        "op": "login",
        "args": [
            {
                "apiKey": credentials.api_key.get_secret_value(),
                "passphrase": credentials.passphrase.get_secret_value(),
                "timestamp": str(timestamp_secs),
                "sign": ws_login_signature(credentials.secret_key.get_secret_value(), timestamp_secs),
            }
        ],
    }

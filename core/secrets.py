"""Secrets are read where they are used: in the actor's own process, from a source the config names.

Ray stores an actor's constructor arguments in its GCS (to re-create it) and the
dashboard and state API show what a job carries (its ``runtime_env``), so no
password or key travels as an argument. What does travel is a *locator*: the
Redis URL without its password, plus the names of the sources (a file mounted
from a Kubernetes Secret, an environment variable set on every node) that the
process holding it reads with ``resolve_redis_locator``. On one host (``tradetree
run``) the driver's environment is every worker's, so the same names work.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

from tradetree.core.errors import ConfigError, StoreUnavailable

__all__ = [
    "DRIVER_REDIS_PASSWORD_ENV",
    "read_secret_file",
    "redis_locator",
    "redis_password_sources",
    "resolve_redis_locator",
    "resolve_secret",
    "with_password_from_sources",
]

# Where a driver that starts Ray itself puts a password it was given inline (redis.url or
# $REDIS_URL), before Ray starts: the raylet and every worker inherit its environment.
DRIVER_REDIS_PASSWORD_ENV = "TRADETREE_DRIVER_REDIS_PASSWORD"
_FRAGMENT_KEYS = ("password_file", "password_env", "password_required")


def read_secret_file(path: str | Path) -> SecretStr:
    """The secret in ``path``, without the trailing newline editors and ``kubectl`` leave.

    Raises:
        ConfigError: the file cannot be read or is empty (the message names the file, never its content).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read secret file: {exc.__class__.__name__}") from None
    value = text.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{path}: secret file is empty")
    return SecretStr(value)


def resolve_secret(*, file: str | Path | None, env: str | None,
                   environ: Mapping[str, str] | None = None) -> SecretStr | None:
    """The secret from ``file`` when named (it must then be readable), else ``$env``; None when neither has it."""
    if file is not None:
        return read_secret_file(file)
    environ = os.environ if environ is None else environ
    value = environ.get(env) if env else None
    return SecretStr(value) if value else None


def with_password_from_sources(url: str, *, password_file: str | Path | None, password_env: str | None,
                               environ: Mapping[str, str] | None = None) -> str:
    """``url`` for a process of the operator's (the driver, the CLI): the password it carries, else
    the one the named sources hold here. A named file that is absent here is not an error: an
    operator's shell need not mount what the cluster's pods do (Redis answers NOAUTH if it matters).
    """
    if urlsplit(url).password is not None:
        return url
    usable_file = password_file if password_file is not None and Path(password_file).is_file() else None
    if usable_file is None and not password_env:
        return url
    try:
        return resolve_redis_locator(redis_locator(url, password_file=usable_file, password_env=password_env,
                                                   required=False), environ)
    except StoreUnavailable as exc:
        raise ConfigError(str(exc)) from None


def redis_password_sources(url: str) -> dict[str, str]:
    """The password sources a locator names (empty for a plain URL)."""
    fragment = urlsplit(url).fragment
    return {k: v for k, v in parse_qsl(fragment) if k in _FRAGMENT_KEYS}


def redis_locator(url: str, *, password_file: str | Path | None, password_env: str | None,
                  required: bool) -> str:
    """``url`` without its password, naming where a process finds it; safe as an actor argument.

    ``required``: Redis was given a password, so a process that finds none must say so rather than
    meet ``NOAUTH`` later.
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if parts.username:
        netloc = f"{quote(parts.username, safe='')}@{netloc}"
    names = {}
    if password_file is not None:
        names["password_file"] = str(password_file)
    if password_env:
        names["password_env"] = password_env
    if required:
        names["password_required"] = "1"
    return urlunsplit(parts._replace(netloc=netloc, fragment=urlencode(names)))


def resolve_redis_locator(locator: str, environ: Mapping[str, str] | None = None) -> str:
    """The URL to connect with, in this process: the locator's password from the sources it names.

    A plain URL (no sources named) is returned as it is.

    Raises:
        StoreUnavailable: a password is required and none of the named sources has it here
            (the message names the sources and the host, never a value).
    """
    sources = redis_password_sources(locator)
    parts = urlsplit(locator)
    if not sources:
        return locator
    plain = urlunsplit(parts._replace(fragment=""))
    if parts.password is not None:
        return plain
    try:
        password = resolve_secret(file=sources.get("password_file"), env=sources.get("password_env"),
                                  environ=environ)
    except ConfigError as exc:
        raise StoreUnavailable(f"Redis password: {exc}") from None
    if password is None:
        if sources.get("password_required") == "1":
            named = " or ".join(f"${v}" if k == "password_env" else v
                                for k, v in sources.items() if k != "password_required")
            raise StoreUnavailable(f"Redis at {parts.hostname}:{parts.port} needs a password and this process "
                                   f"({os.uname().nodename}) has none: set {named or 'redis.password_file'} here "
                                   "(on a cluster: on every node, e.g. from a Kubernetes Secret)")
        return plain
    user = quote(parts.username, safe="") if parts.username else ""
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{user}:{quote(password.get_secret_value(), safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc, fragment=""))

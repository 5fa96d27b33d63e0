"""Secrets are read in the process that uses them: the Redis locator and the secret sources."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tradetree.core import (
    ConfigError,
    StoreUnavailable,
    read_secret_file,
    redis_locator,
    resolve_redis_locator,
    resolve_secret,
    with_password_from_sources,
)


def test_a_locator_carries_no_password_and_resolves_from_a_file_first(tmp_path) -> None:
    (tmp_path / "pw").write_text("s3cret-from-file\n")  # kubectl and editors leave a newline
    loc = redis_locator("redis://app:inline-pw@redis.svc:6380/2", password_file=tmp_path / "pw",
                        password_env="REDIS_PASSWORD", required=True)
    assert "inline-pw" not in loc and "s3cret" not in loc
    assert urlsplit(loc).username == "app" and urlsplit(loc).port == 6380
    url = resolve_redis_locator(loc, environ={"REDIS_PASSWORD": "from-env"})
    parts = urlsplit(url)
    assert (parts.username, parts.password, parts.hostname, parts.path, parts.fragment) == \
        ("app", "s3cret-from-file", "redis.svc", "/2", "")


def test_a_locator_falls_back_to_the_env_and_says_which_sources_it_tried() -> None:
    loc = redis_locator("redis://:pw@h:1/0", password_file=None, password_env="MY_REDIS_PW", required=True)
    assert urlsplit(resolve_redis_locator(loc, environ={"MY_REDIS_PW": "x"})).password == "x"
    with pytest.raises(StoreUnavailable, match=r"needs a password.*\$MY_REDIS_PW") as err:
        resolve_redis_locator(loc, environ={})
    assert "pw@" not in str(err.value)


def test_a_named_file_that_cannot_be_read_is_an_error_not_a_silent_fallback(tmp_path) -> None:
    loc = redis_locator("redis://:pw@h:1/0", password_file=tmp_path / "absent", password_env="P", required=True)
    with pytest.raises(StoreUnavailable, match="cannot read secret file"):
        resolve_redis_locator(loc, environ={"P": "x"})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_secret_file(tmp_path / "empty")


def test_a_plain_url_and_an_optional_password_pass_through() -> None:
    assert resolve_redis_locator("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    loc = redis_locator("redis://127.0.0.1:6379/0", password_file=None, password_env="P", required=False)
    assert resolve_redis_locator(loc, environ={}) == "redis://127.0.0.1:6379/0"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"),
               min_size=1, max_size=40))
def test_any_password_leaves_the_locator_and_round_trips_through_the_environment(password: str) -> None:
    template = redis_locator("redis://:x@127.0.0.1:6379/0", password_file=None, password_env="PW", required=True)
    assume(password not in template and quote(password, safe="") not in template)
    loc = redis_locator(f"redis://:{quote(password, safe='')}@127.0.0.1:6379/0", password_file=None,
                        password_env="PW", required=True)
    assert loc == template
    url = resolve_redis_locator(loc, environ={"PW": password})
    assert unquote(urlsplit(url).password or "") == password


def test_the_operators_shell_uses_a_source_only_when_it_has_one(tmp_path) -> None:
    assert with_password_from_sources("redis://:a@h:1/0", password_file=None, password_env="P",
                                      environ={"P": "b"}) == "redis://:a@h:1/0"
    # A file named for the cluster's pods need not exist in the operator's shell.
    assert with_password_from_sources("redis://h:1/0", password_file=tmp_path / "absent", password_env="P",
                                      environ={}) == "redis://h:1/0"
    assert urlsplit(with_password_from_sources("redis://h:1/0", password_file=None, password_env="P",
                                               environ={"P": "b"})).password == "b"


def test_resolve_secret_prefers_the_file_and_treats_empty_env_as_unset(tmp_path) -> None:
    (tmp_path / "s").write_text("from-file")
    assert resolve_secret(file=tmp_path / "s", env="E", environ={"E": "e"}).get_secret_value() == "from-file"
    assert resolve_secret(file=None, env="E", environ={"E": ""}) is None
    assert resolve_secret(file=None, env=None, environ={"E": "e"}) is None


def test_the_operators_url_takes_the_password_from_the_configured_file(tmp_path, monkeypatch) -> None:
    from tradetree.core import RedisConfig

    monkeypatch.delenv("REDIS_URL", raising=False)
    (tmp_path / "pw").write_text("from-the-file\n")
    cfg = RedisConfig(url="redis://redis.svc:6379/0", password_file=tmp_path / "pw")
    assert urlsplit(cfg.url_here()).password == "from-the-file"
    assert RedisConfig().url_here() is None  # the embedded Redis

"""The redactor as a pure function: what it removes, proved over generated credentials (hypothesis)."""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tradetree.telemetry.alerts import redact

# Credentials as users choose them: printable, no blank (a blank ends a URL or a bare value).
_CRED_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
credential = st.text(_CRED_CHARS, min_size=1, max_size=40)
host = st.from_regex(r"[a-z0-9][a-z0-9.\-]{0,20}", fullmatch=True)
scheme = st.sampled_from(["redis", "rediss", "https", "http", "postgresql", "amqp", "wss"])


@settings(max_examples=300, deadline=None)
@given(scheme=scheme, user=st.text(string.ascii_letters + string.digits + "_-.", max_size=12),
       password=credential, host=host)
@example(scheme="redis", user="", password="p@ss:w/rd", host="127.0.0.1")
def test_the_user_info_of_a_url_goes_whole(scheme, user, password, host):
    text = f"connect {scheme}://{user}:{password}@{host}:6379/0 failed"
    assert redact(text) == f"connect {scheme}://***@{host}:6379/0 failed"


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["apiKey", "api_key", "API-KEY", "secret", "secretKey", "secret_key", "passphrase",
                             "password", "sign", "signature", "OK-ACCESS-KEY", "OK-ACCESS-SIGN",
                             "OK-ACCESS-PASSPHRASE", "token", "access_token", "OKX_SECRET_KEY", "x-api-key"]),
       sep=st.sampled_from(["=", ": ", " = ", " : ", ":\t"]),
       value=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="'\"&,;)}]"),
                     min_size=1, max_size=40))
def test_a_value_named_like_a_credential_goes(name, sep, value):
    assert redact(f"GET /x?{name}{sep}{value}&n=1") == f"GET /x?{name}{sep}***&n=1"
    assert redact(f"failed ({name}{sep}{value})") == f"failed ({name}{sep}***)"


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["OK-ACCESS-SIGN", "passphrase", "apiKey", "Authorization", "secret"]),
       quote=st.sampled_from(["'", '"']), data=st.data())
def test_a_quoted_value_goes_whole_blanks_and_all(name, quote, data):
    value = data.draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=quote),
                              max_size=40))
    text = f"headers {{{quote}{name}{quote}: {quote}{value}{quote}, {quote}n{quote}: 1}}"
    assert redact(text) == f"headers {{{quote}{name}{quote}: {quote}***{quote}, {quote}n{quote}: 1}}"


@settings(max_examples=200, deadline=None)
@given(token=st.from_regex(r"[A-Za-z0-9\-._~+/]{1,60}={0,2}", fullmatch=True))
def test_bearer_and_basic_credentials_go(token):
    assert redact(f"sent Bearer {token} to okx") == "sent Bearer *** to okx"
    assert redact(f"Authorization: Bearer {token}") == "Authorization: ***"
    assert redact(f"Authorization: Basic {token}") == "Authorization: ***"


@settings(max_examples=300, deadline=None)
@given(before=st.text(max_size=30), secret=st.text(min_size=1, max_size=30).filter(lambda s: "*" not in s),
       after=st.text(max_size=30))
def test_a_given_secret_never_survives(before, secret, after):
    assert secret not in redact(before + secret + after + secret, [secret])


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=120) | st.lists(st.sampled_from(
    ["redis://", ":", "@", "pw", " ", "apiKey", "=", "'", '"', "Bearer ", "secret", "xoxb-1", "&", "/"]),
    max_size=20).map("".join))
def test_redacting_twice_is_redacting_once(text):
    once = redact(text)
    assert redact(once) == once


@pytest.mark.parametrize("text", [
    "5 poll cycles in a row failed; positions are no longer verified",
    "strategy MR_BTC daily loss -120 reached the limit 100. Strategies paused: MR_BTC.",
    "VenueGateway[okx] is running after restart 2",
    "design: ok; tokens: 3; key: okx:drift:BTC-USDT-SWAP; see https://www.okx.com/docs-v5/en/#overview",
    "redis://127.0.0.1:6379/0 is unreachable",
    # alert keys and ids join on a bare ':', whatever their parts are called
    "strategy:MR_sign:loss", "StrategySupervisor:token:exit", "okx:drift:SECRET-USDT-SWAP",
])
def test_a_text_without_credentials_is_left_alone(text):
    assert redact(text) == text


def test_slack_shapes_still_go():
    text = "post to https://hooks.slack.com/services/T0/B0/abc failed, token xoxb-12-ab, app xapp-1-A0-9"
    assert redact(text) == "post to https://hooks.slack.com/services/*** failed, token ***, app ***"

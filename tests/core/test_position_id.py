"""``core.types.position_id`` and ``escape_component``: the id rule risk and the store share."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tradetree.core.redis_keys import RedisKeys
from tradetree.core.redis_keys import escape_component as keys_escape
from tradetree.core.types import escape_component, position_id


def test_ids_without_separators_appear_verbatim_and_colons_are_escaped():
    assert position_id("MR_v10_BTC", "okx", "BTC-USDT-SWAP") == "MR_v10_BTC:okx:BTC-USDT-SWAP"
    assert position_id("a:b", "okx", "X") == "a%3Ab:okx:X"
    assert position_id("a%3Ab", "okx", "X") == "a%253Ab:okx:X"  # an escaped-looking id stays distinct
    assert escape_component("50%:x") == "50%25%3Ax"


@given(st.tuples(st.text(), st.text(), st.text()), st.tuples(st.text(), st.text(), st.text()))
def test_different_triples_never_share_an_id(a, b):
    assert (position_id(*a) == position_id(*b)) == (a == b)


def test_the_store_keys_positions_by_the_same_rule():
    assert RedisKeys("ns").position(position_id("S", "okx", "X")) == "ns:pos:S:okx:X"
    assert keys_escape is escape_component

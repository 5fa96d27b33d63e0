from __future__ import annotations

from tradetree.core.names import ALERTER_ID


def test_the_tree_names_its_alerter_with_the_shared_constant():
    from tradetree import tree

    assert tree.ALERTER_ID is ALERTER_ID == "Alerter"

"""The exception tree drawn in core/errors.py is the tree the classes form."""

from __future__ import annotations

import re

from tradetree.core import errors


def _drawn() -> dict[str, str]:
    """class -> parent, read from the drawing in the module docstring."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    doc = errors.__doc__ or ""
    drawing = doc[doc.index("    TradetreeError\n"):].split("\n\n")[0]
    for line in drawing.splitlines():
        m = re.match(r"^[ │]*(?:[├└]── )?([A-Z][A-Za-z]+)(?:\s|$)", line)
        if not m:
            continue
        name = m.group(1)
        depth = m.start(1)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def test_every_exported_error_is_drawn_under_its_real_parent():
    drawn = _drawn()
    assert set(drawn) == set(errors.__all__) - {"TradetreeError"}
    for name, parent in drawn.items():
        assert issubclass(getattr(errors, name), getattr(errors, parent)), (name, parent)


def test_refusals_are_one_idea_and_carry_their_reasons():
    for cls in (errors.RestartRefused, errors.VenueReleaseRefused, errors.ProbesFailing):
        exc = cls("resume refused", reasons=["okx reconciler: fills_flowing: no fills"])
        assert isinstance(exc, errors.Refused) and exc.reasons == ("okx reconciler: fills_flowing: no fills",)
    assert errors.RestartRefused("x").reasons == ()
    assert issubclass(errors.RestartRefused, errors.SupervisorError)
    assert issubclass(errors.ProbesFailing, errors.ControlError)


def test_duplicate_order_id_and_canary_timeout_are_their_own_errors():
    assert not issubclass(errors.DuplicateClientOrderId, errors.StoreError)
    assert not issubclass(errors.CanaryTimeout, errors.VenueError)


def test_refusals_survive_pickling_with_their_reasons():
    import pickle

    exc = pickle.loads(pickle.dumps(errors.ProbesFailing("refused", reasons=["a", "b"])))
    assert str(exc) == "refused" and exc.reasons == ("a", "b")
    died = pickle.loads(pickle.dumps(errors.ActorDied("gone", intended=True)))
    assert died.intended

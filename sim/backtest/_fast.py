"""Building frozen pydantic models from values the backtester made itself, without re-validating them.

Validation is what makes a pydantic model safe to build from outside input; the
backtester's hot path builds hundreds of thousands of bars and contexts from
values that already have the right types (decimals from the data, ints it
counted), and validating them again was the largest single cost per bar. An
object built here is equal (``==``) to the validated model of the same values;
tests check that for every model built this way.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["unvalidated", "SET_DICT", "SET_FIELDS_SET", "SET_EXTRA", "SET_PRIVATE", "BarDecimal", "bar_decimal",
           "bar_decimals_of_ticks", "bar_decimals_of_texts"]

M = TypeVar("M", bound=BaseModel)

# The four per-instance slots of every pydantic model, set through their descriptors directly.
SET_DICT = BaseModel.__dict__["__dict__"].__set__
SET_FIELDS_SET = BaseModel.__dict__["__pydantic_fields_set__"].__set__
SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__
_new = object.__new__


def unvalidated(cls: type[M], values: dict[str, Any], fields_set: set[str]) -> M:
    """An instance of ``cls`` holding ``values`` as they are; ``values`` must name every field.

    ``fields_set`` is shared between instances (frozen models never change it).
    """
    obj = _new(cls)
    SET_DICT(obj, values)
    SET_FIELDS_SET(obj, fields_set)
    SET_EXTRA(obj, None)
    SET_PRIVATE(obj, None)
    return obj


class BarDecimal(Decimal):
    """A ``Decimal`` that carries its ``float``: the prices of the bars the backtester prepares.

    Strategies take ``float(bar.close)`` (and high, low...) on every bar, and
    CPython's ``Decimal.__float__`` formats the number and parses the string
    back, about three times the cost of returning a stored float. Otherwise
    this is the ``Decimal`` of the same value: equal, same hash, same ``str``
    and ``repr``; arithmetic gives plain ``Decimal``s, and pydantic validation
    and pickling turn it into a plain ``Decimal``, so it never leaves the
    prepared bars. Build it with :func:`bar_decimal`.
    """

    __slots__ = ("_float",)
    _float: float

    def __float__(self) -> float:
        try:
            return self._float
        except AttributeError:  # made some other way (e.g. copied): compute it
            return Decimal.__float__(self)


_decimal_new = Decimal.__new__


def bar_decimal(value: Decimal) -> BarDecimal:
    """``value`` as a :class:`BarDecimal` (the same number; its float computed once, here)."""
    out = _decimal_new(BarDecimal, value)
    out._float = Decimal.__float__(value)
    return out


def bar_decimals_of_ticks(ticks: list[int], exp: int, floats: list[float]) -> list[BarDecimal]:
    """One :class:`BarDecimal` per tick count: ``tick_decimal(t, exp)`` carrying ``floats[k]``.

    The caller passes the exact floats (``prepare.ticks_to_float``), so nothing is parsed twice.
    The text is built here because one ``Decimal(str)`` is cheaper than ``Decimal(int).scaleb``.
    """
    out: list[BarDecimal] = []
    append = out.append
    if exp < 0:
        scale, width = 10 ** -exp, -exp
        for t, f in zip(ticks, floats):
            d = _decimal_new(BarDecimal, f"{t // scale}.{t % scale:0{width}d}")
            d._float = f
            append(d)
    else:
        for t, f in zip(ticks, floats):
            d = _decimal_new(BarDecimal, Decimal(t).scaleb(exp))
            d._float = f
            append(d)
    return out


def bar_decimals_of_texts(texts: list[str], floats: list[float]) -> list[BarDecimal]:
    """One :class:`BarDecimal` per decimal text, carrying the float that text round-trips to."""
    out: list[BarDecimal] = []
    append = out.append
    for t, f in zip(texts, floats):
        d = _decimal_new(BarDecimal, t)
        d._float = f
        append(d)
    return out

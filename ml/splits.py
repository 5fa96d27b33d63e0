"""Walk-forward splits with a purge gap and an embargo.

Rows are identified by their bar position (index in the candle frame), so
gaps left by dropped rows (warm-up, ties, missing cross-asset bars) never
shrink the gap between training and test. Guarantees for every split:

- every training row precedes the test block, with
  ``max(train bar) + horizon_bars + embargo_bars < min(test bar)``: no training
  label (bars ``i+1 .. i+horizon``) reaches into the test block, and
  ``embargo_bars`` more bars separate them against serial correlation;
- test blocks are disjoint, in time order, each ``test_bars`` bars long (the
  last one takes any remainder when ``test_bars`` is left to default);
- with ``max_train_bars`` the training window rolls; otherwise it expands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tradetree.ml.config import WalkForwardSpec
from tradetree.ml.errors import DataError

__all__ = ["Split", "walk_forward_splits"]


@dataclass(frozen=True)
class Split:
    """One fold: row indices (into the dataset) to train on and to test on."""

    fold: int
    train: np.ndarray
    test: np.ndarray


def walk_forward_splits(
    bar_positions: np.ndarray, *, horizon_bars: int, spec: WalkForwardSpec
) -> list[Split]:
    """Split rows whose bar positions are ``bar_positions`` (strictly increasing).

    Raises:
        DataError: the rows span too few bars for ``spec`` (no room for the
            minimum training window plus ``n_splits`` test blocks), or a fold
            would have no training or no test rows.
    """
    bars = np.asarray(bar_positions, dtype=np.int64)
    if len(bars) > 1 and (np.diff(bars) <= 0).any():
        raise DataError("bar positions must strictly increase")
    if len(bars) == 0:
        raise DataError("walk-forward needs rows, got none")
    first, last = int(bars[0]), int(bars[-1])
    test_start = first + spec.min_train_bars
    room = last - test_start + 1
    test_bars = spec.test_bars if spec.test_bars is not None else room // spec.n_splits
    if test_bars < 1 or test_bars * spec.n_splits > room:
        raise DataError(
            f"walk-forward needs {spec.min_train_bars} training bars + {spec.n_splits} test blocks "
            f"of {test_bars} bars; the data span {last - first + 1} bars"
        )
    gap = horizon_bars + spec.embargo_bars
    splits = []
    for k in range(spec.n_splits):
        lo = test_start + k * test_bars
        hi = last if (k == spec.n_splits - 1 and spec.test_bars is None) else lo + test_bars - 1
        train_hi = lo - gap - 1
        train_lo = first if spec.max_train_bars is None else max(first, train_hi - spec.max_train_bars + 1)
        train = np.flatnonzero((bars >= train_lo) & (bars <= train_hi))
        test = np.flatnonzero((bars >= lo) & (bars <= hi))
        if len(train) == 0 or len(test) == 0:
            raise DataError(f"walk-forward fold {k}: {len(train)} training rows, {len(test)} test rows")
        splits.append(Split(fold=k, train=train, test=test))
    return splits

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradetree.ml.config import WalkForwardSpec
from tradetree.ml.errors import DataError
from tradetree.ml.splits import walk_forward_splits


@settings(max_examples=150, deadline=None)
@given(
    n_bars=st.integers(200, 3000),
    horizon=st.integers(1, 30),
    embargo=st.integers(0, 30),
    n_splits=st.integers(1, 6),
    rolling=st.one_of(st.none(), st.integers(10, 400)),
    drop_seed=st.integers(0, 1000),
)
def test_purge_embargo_and_ordering(n_bars, horizon, embargo, n_splits, rolling, drop_seed):
    rng = np.random.default_rng(drop_seed)
    # rows with gaps: warm-up dropped, ties and missing bars dropped here and there
    bars = np.flatnonzero(rng.random(n_bars) > 0.1) + 50
    spec = WalkForwardSpec(n_splits=n_splits, min_train_bars=100, embargo_bars=embargo, max_train_bars=rolling)
    try:
        splits = walk_forward_splits(bars, horizon_bars=horizon, spec=spec)
    except DataError:
        # refused only when the test blocks would be (nearly) empty
        assert (bars[-1] - bars[0] + 1 - 100) // n_splits < 5
        return
    assert [s.fold for s in splits] == list(range(n_splits))
    previous_test_end = -1
    for s in splits:
        train_bars, test_bars = bars[s.train], bars[s.test]
        # no training label (bars i+1..i+horizon) reaches the test block, plus the embargo
        assert train_bars.max() + horizon + embargo < test_bars.min()
        assert test_bars.min() > previous_test_end  # disjoint, in time order
        previous_test_end = test_bars.max()
        if rolling is not None:
            assert train_bars.max() - train_bars.min() < rolling
        else:
            assert train_bars.min() == bars[0]
    assert set(np.concatenate([s.test for s in splits])) <= set(range(len(bars)))


def test_default_test_blocks_cover_the_rest_and_the_gap_is_exact():
    bars = np.arange(1000)
    splits = walk_forward_splits(bars, horizon_bars=5, spec=WalkForwardSpec(n_splits=3, min_train_bars=400, embargo_bars=2))
    assert [(s.test[0], s.test[-1]) for s in splits] == [(400, 599), (600, 799), (800, 999)]
    # last training row is exactly horizon + embargo + 1 bars before the test block
    assert [s.train[-1] for s in splits] == [392, 592, 792]


def test_too_little_data_is_refused():
    with pytest.raises(DataError, match="walk-forward"):
        walk_forward_splits(np.arange(300), horizon_bars=5, spec=WalkForwardSpec(n_splits=5, min_train_bars=298))
    with pytest.raises(DataError, match="walk-forward"):
        walk_forward_splits(np.arange(300), horizon_bars=5, spec=WalkForwardSpec(n_splits=2, min_train_bars=100, test_bars=150))

import pytest

from tradetree.ml.dataset import build_dataset
from tradetree.ml.errors import MissingDependency
from tradetree.ml.evaluation import walk_forward_evaluate
from tradetree.ml.plots import matplotlib_available, plot_evaluation

from .conftest import small_config


def test_plots_are_written_or_the_missing_dependency_is_named(tmp_path, regime_market):
    config = small_config(task="direction", walk_forward=small_config().walk_forward.model_copy(update={"n_splits": 2}))
    result = walk_forward_evaluate(build_dataset(regime_market.candles.iloc[:4000], config), config)
    if not matplotlib_available():
        with pytest.raises(MissingDependency, match="matplotlib"):
            plot_evaluation(result, tmp_path)
        return
    paths = plot_evaluation(result, tmp_path, prefix="d_")
    assert [p.name for p in paths] == ["d_precision_thresholds.png", "d_mcc_by_fold.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

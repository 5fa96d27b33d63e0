import importlib

from tradetree import ml

MODULES = ["config", "data", "features", "targets", "dataset", "splits", "baselines", "metrics", "evaluation",
           "leakage", "models", "registry", "pipeline", "forecaster", "plots", "cli", "errors", "rolling", "synthetic"]


def test_public_surface_is_what_it_claims():
    for name in ml.__all__:
        home = getattr(getattr(ml, name), "__module__", None)  # constants have none
        assert home is None or home.startswith("tradetree.ml."), name
    for module in MODULES:
        mod = importlib.import_module(f"tradetree.ml.{module}")
        for name in mod.__all__:
            assert hasattr(mod, name), f"ml.{module}.{name}"


def test_errors_derive_from_the_project_tree():
    from tradetree.core.errors import TradetreeError
    from tradetree.ml import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), TradetreeError)

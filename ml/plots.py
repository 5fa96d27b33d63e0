"""Plots of a walk-forward evaluation (PNG files). Needs matplotlib.

matplotlib is an optional dependency: every function raises
``MissingDependency`` naming it when it is not importable, and nothing else
in ``ml`` imports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tradetree.ml.errors import MissingDependency
from tradetree.ml.evaluation import MODEL_COLUMN, EvaluationResult

__all__ = ["matplotlib_available", "plot_evaluation"]


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependency("plots need matplotlib, which is not installed; add it to the environment") from None
    return plt


def plot_evaluation(result: EvaluationResult, out_dir: str | Path, *, prefix: str = "") -> list[Path]:
    """Write the evaluation's plots into ``out_dir`` and return their paths.

    Volatility: forecast vs realized scatter for the model and each baseline,
    and R² per fold. Direction: long/short precision against the threshold
    (with the base rate, the "50 % ceiling"), and MCC per fold.

    Raises:
        MissingDependency: matplotlib is not installed.
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = result.model_names
    key = "r2" if result.task == "volatility" else "mcc"
    paths: list[Path] = []

    if result.task == "volatility":
        fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False)
        y = result.predictions["y"].to_numpy()
        for ax, name in zip(axes[0], names, strict=True):
            ax.scatter(result.predictions[name], y, s=2, alpha=0.3)
            lo, hi = float(np.nanmin(y)), float(np.nanmax(y))
            ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8)
            ax.set_title(f"{name}: R² {result.metrics[name]['r2']:.3f}")
            ax.set_xlabel("forecast ln vol")
            ax.set_ylabel("realized ln vol")
        paths.append(_save(fig, out / f"{prefix}vol_scatter.png", plt))
    else:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for name in names:
            table = result.precision[name]
            t = [row["threshold"] for row in table]
            axes[0].plot(t, [row["long_precision"] for row in table], marker="o", label=f"{name} long")
            axes[0].plot(t, [row["short_precision"] for row in table], marker="x", linestyle="--", label=f"{name} short")
            axes[1].plot(t, [row["long_coverage"] + row["short_coverage"] for row in table], marker="o", label=name)
        base = result.precision[MODEL_COLUMN][0]["base_rate_up"]
        axes[0].axhline(base, color="grey", linewidth=0.8, label="base rate (up)")
        axes[0].set_xlabel("probability threshold")
        axes[0].set_ylabel("precision")
        axes[0].legend(fontsize=7)
        axes[1].set_xlabel("probability threshold")
        axes[1].set_ylabel("share of bars traded")
        axes[1].legend(fontsize=7)
        paths.append(_save(fig, out / f"{prefix}precision_thresholds.png", plt))

    folds = sorted({row["fold"] for row in result.fold_metrics})
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [next(r[key] for r in result.fold_metrics if r["fold"] == f and r["model"] == name) for f in folds]
        ax.bar(np.arange(len(folds)) + i * width, values, width=width, label=name)
    ax.set_xticks(np.arange(len(folds)) + 0.4 - width / 2, [str(f) for f in folds])
    ax.set_xlabel("fold")
    ax.set_ylabel(key)
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / f"{prefix}{key}_by_fold.png", plt))
    return paths


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

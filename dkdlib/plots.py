"""Figures for the notebooks: training curves, confusion matrices, image grids, augmentation views.

Every function builds its own figure and returns it (the `Figure`), so a notebook cell can show it,
save it (`fig.savefig(...)`) or tweak it. Nothing here trains or changes state.

One convention for every figure (`figure`): a `matplotlib.figure.Figure` made outside pyplot, with
constrained layout. pyplot's figures show twice in Jupyter (once as the cell's value, once when
pyplot flushes them) or not at all (under `MPLBACKEND=Agg`, as nbconvert runs); a pyplot-free figure
is shown exactly once, as the cell's value, under any backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

if TYPE_CHECKING:
    from .data import Data
    from .train import Run

__all__ = [
    "figure",
    "METRIC_LABELS",
    "plot_history",
    "plot_confusion",
    "plot_per_class_accuracy",
    "show_images",
    "plot_class_balance",
    "show_augmentations",
    "plot_temperature",
]

# Readable names of the columns of `Run.history`.
METRIC_LABELS = {
    "train_loss": "training loss",
    "train_acc": "training accuracy",
    "val_loss": "validation loss (CE)",
    "val_acc": "validation accuracy",
    "test_loss": "test loss (CE)",
    "test_acc": "test accuracy",
    "lr": "learning rate",
    "distill_weight": "distillation weight (warm-up)",
    "images_per_s": "training throughput (images/s)",
    "seconds": "epoch time (s)",
}


def figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **subplots) -> tuple[Figure, Any]:
    """A figure outside pyplot, with constrained layout, and its axes (`Figure.subplots` arguments)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(nrows, ncols, **subplots)


def _history(run: Run | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The per-epoch rows of a `Run` or of a plain list of dicts."""
    return list(run.history if hasattr(run, "history") else run)


def _is_accuracy(metric: str) -> bool:
    return metric.endswith("_acc")


def plot_history(
    runs: Mapping[str, Run | Sequence[Mapping[str, Any]]],
    metrics: Sequence[str] = ("train_loss", "val_acc"),
    title: str | None = None,
) -> Figure:
    """One panel per metric, one line per run (labelled by its key), against the epoch."""
    metrics = list(metrics)
    fig, axes = figure(5.2 * len(metrics), 3.8, 1, len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for label, run in runs.items():
            rows = [r for r in _history(run) if metric in r]
            if not rows:
                continue
            epochs = [r["epoch"] for r in rows]
            ax.plot(epochs, [r[metric] for r in rows], marker="o", markersize=3, label=label)
        name = METRIC_LABELS.get(metric, metric)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if _is_accuracy(metric):
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_confusion(
    confusion: np.ndarray,
    classes: Sequence[str],
    normalize: bool = True,
    title: str = "Confusion matrix (test set)",
) -> Figure:
    """Seaborn heatmap of a confusion matrix (rows: true class, columns: predicted class)."""
    import seaborn as sns

    cm = np.asarray(confusion, dtype=float)
    if normalize:
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.5, 0.55 * len(classes) + 2)
    fig, ax = figure(size + 1, size)
    sns.heatmap(
        cm,
        annot=len(classes) <= 12,
        fmt=".2f" if normalize else ".0f",
        cmap="Blues",
        vmin=0,
        vmax=1 if normalize else None,
        square=True,
        xticklabels=classes,
        yticklabels=classes,
        cbar_kws={"label": "fraction of the true class" if normalize else "images"},
        annot_kws={"fontsize": 8},
        ax=ax,
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=45)
    ax.tick_params(axis="y", labelrotation=0)
    return fig


def plot_per_class_accuracy(
    per_class: Mapping[str, Sequence[float]] | Sequence[float],
    classes: Sequence[str],
    title: str = "Per-class test accuracy",
) -> Figure:
    """Grouped bars of per-class accuracy; pass a dict {label: accuracies} to compare runs."""
    import pandas as pd
    import seaborn as sns

    series = dict(per_class) if isinstance(per_class, Mapping) else {"model": per_class}
    frame = pd.DataFrame(
        [
            {"class": c, "run": label, "accuracy": float(a)}
            for label, accs in series.items()
            for c, a in zip(classes, accs, strict=True)
        ]
    )
    fig, ax = figure(max(6.0, 0.7 * len(classes) * max(1, len(series)) ** 0.5), 3.8)
    sns.barplot(frame, x="class", y="accuracy", hue="run", ax=ax, legend=len(series) > 1)
    if len(series) > 1:
        ax.legend(title="run", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(0, 1)
    ax.set_xlabel("class")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=45)
    return fig


def show_images(
    x: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    per_class: int = 8,
    title: str | None = None,
) -> Figure:
    """A grid of uint8 N×H×W×C images: one row per class, the first `per_class` images of each."""
    x, y = np.asarray(x), np.asarray(y)
    k = len(classes)
    fig, axes = figure(0.75 * per_class + 1.4, 0.75 * k, k, per_class, squeeze=False)
    fig.set_layout_engine(None)  # a tight grid of images: spacing set by hand below
    for c, row in enumerate(axes):
        idx = np.flatnonzero(y == c)[:per_class]
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(idx):
                ax.imshow(x[idx[j]], interpolation="nearest")
        row[0].set_ylabel(classes[c], rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(
        wspace=0.05, hspace=0.05, left=0.15, right=0.99, bottom=0.01, top=0.93 if title else 0.99
    )
    return fig


def plot_class_balance(data: Data, title: str = "Images per class and split") -> Figure:
    """Bar chart of the number of images of each class in the train, validation and test splits."""
    import pandas as pd
    import seaborn as sns

    rows = []
    for split, y in (("train", data.y_train), ("val", data.y_val), ("test", data.y_test)):
        counts = np.bincount(np.asarray(y, np.int64), minlength=data.num_classes)
        rows += [
            {"class": c, "split": f"{split} ({len(y):,})", "images": int(n)}
            for c, n in zip(data.classes, counts, strict=True)
        ]
    fig, ax = figure(max(6.0, 0.8 * data.num_classes), 3.8)
    sns.barplot(pd.DataFrame(rows), x="class", y="images", hue="split", ax=ax)
    ax.set_xlabel("class")
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=45)
    ax.legend(title="split (images)", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def show_augmentations(data: Data, index: int = 0, n: int = 8, seed: int = 0) -> Figure:
    """One training image and `n` random crop (pad 4) + flip views made by `dkdlib.data.crop_flip`."""
    from .data import PAD, crop_flip

    g = torch.Generator().manual_seed(seed)
    dy = torch.randint(0, 2 * PAD + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * PAD + 1, (n,), generator=g)
    flip = torch.randint(0, 2, (n,), generator=g)
    image = torch.from_numpy(np.ascontiguousarray(data.x_train[index])).permute(2, 0, 1)  # C×H×W
    views = crop_flip(image[None].expand(n, -1, -1, -1), dy, dx, flip).permute(0, 2, 3, 1).numpy()
    fig, axes = figure(1.45 * (n + 1), 2.1, 1, n + 1)
    axes[0].imshow(data.x_train[index], interpolation="nearest")
    axes[0].set_title(f"original\n{data.classes[int(data.y_train[index])]}", fontsize=9)
    for i, ax in enumerate(axes[1:]):
        ax.imshow(views[i], interpolation="nearest")
        # cropping at offset d moves the content by PAD - d pixels (x: right, y: down)
        shift = f"({PAD - int(dx[i]):+d}, {PAD - int(dy[i]):+d})"
        ax.set_title(f"moved {shift}\n{'flipped' if flip[i] else 'not flipped'}", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"Random crop (zero padding {PAD} px) + horizontal flip: {n} views of one image", fontsize=10
    )
    return fig


def plot_temperature(
    logits: np.ndarray | torch.Tensor,
    classes: Sequence[str],
    temperatures: Sequence[float] = (1, 2, 4, 8),
    title: str = "softmax(z / T) of one teacher output",
) -> Figure:
    """Bars of softmax(logits / T) for each temperature: higher T flattens the distribution."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    fig, axes = figure(3.3 * len(temperatures), 3.4, 1, len(temperatures), sharey=True)
    axes = np.atleast_1d(axes)
    top = int(z.argmax())
    for ax, t in zip(axes, temperatures, strict=True):
        p = torch.softmax(z / t, dim=0).numpy()
        colors = ["tab:orange" if i == top else "tab:blue" for i in range(len(p))]
        ax.bar(range(len(p)), p, color=colors)
        ax.set_xticks(range(len(p)), classes, rotation=90, fontsize=8)
        ax.set_title(f"T = {t:g}")
        ax.set_ylim(0, 1)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[0].set_ylabel("probability")
    fig.suptitle(f"{title} (orange: the teacher's top class)")
    return fig

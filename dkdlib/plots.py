"""Figures for the notebooks: training curves, confusion matrices, image grids, augmentation views.

Every function builds its own figure and returns it (the `Figure`), so a notebook cell can show it,
save it (`fig.savefig(...)`) or tweak it. Nothing here trains or changes state.

One convention for every figure (`figure`): a `matplotlib.figure.Figure` made outside pyplot, with
constrained layout. pyplot's figures show twice in Jupyter (once as the cell's value, once when
pyplot flushes them) or not at all (under `MPLBACKEND=Agg`, as nbconvert runs); a pyplot-free figure
is shown exactly once, as the cell's value, under any backend.

Honest figures, everywhere:
- a figure made from synthetic data says so in its title (`mark_synthetic`; the functions here do it
  themselves when they know the data);
- a curve with fewer than 5 points is drawn as points, not a line (`curve_style`);
- an accuracy axis spans at least 10 points, so a single seed's noise does not fill the panel
  (`accuracy_axis`);
- a diverging colour map has one meaning (`plot_confusion_delta`: green is "better" everywhere);
- no synthetic bar stands beside a CIFAR-10 reference marker (`plot_bars`, `plot_sweep`);
- students are compared as differences from a baseline, every seed drawn, the axis zoomed to the data
  (`plot_vs_baseline`); a sweep or a grid says how large its range is beside the seed spread
  (`plot_sweep`, `plot_grid`);
- a value clipped to fit an axis is counted and labelled (`plot_suppression`, `plot_tckd_vs_nckd`);
- legends sit outside the axes, so no legend hides a point (`legend_below`);
- no "-0" or "+0" in a figure's text: a difference that rounds to zero reads "0" (`signed`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, PercentFormatter

from .verdicts import compare_seeds, signed

if TYPE_CHECKING:
    from .config import Config
    from .data import Data
    from .train import Run

__all__ = [
    "figure",
    "signed",
    "legend_below",
    "differences_from",
    "plot_vs_baseline",
    "range_note",
    "plot_target_probability",
    "plot_suppression",
    "plot_tckd_vs_nckd",
    "plot_dark_knowledge",
    "plot_class_delta",
    "plot_grid",
    "SYNTHETIC_NOTE",
    "is_synthetic",
    "mark_synthetic",
    "curve_style",
    "accuracy_axis",
    "plot_lr_schedule",
    "plot_warmup",
    "plot_confusion_delta",
    "plot_sweep",
    "plot_bars",
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


def legend_below(fig: Figure, axes: Any = None, ncols: int = 2, **kwargs) -> Any:
    """One legend for the figure, below its axes (outside them, so it hides no point), with each label
    once, collected from `axes` (default: all of the figure's). None when nothing is labelled."""
    axes = fig.axes if axes is None else np.atleast_1d(axes).ravel()
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if not handles:
        return None
    ncols = max(1, min(ncols, len(handles)))
    return fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=ncols,
                      fontsize="small", **kwargs)  # fmt: skip


SYNTHETIC_NOTE = "SYNTHETIC images (fast mode), not CIFAR-10"
MIN_POINTS_FOR_LINE = 5  # fewer points than this are drawn as points: a line would invent a trend
MIN_ACCURACY_SPAN = 0.10  # an accuracy axis spans at least 10 points (as a fraction of 1)


def is_synthetic(source: Any) -> bool:
    """Whether `source` — a dataset name, a `Data`, a `Config`, a `Run`, or a collection of them — is
    (or holds) synthetic data."""
    if source is None:
        return False
    if isinstance(source, str):
        return source == "synthetic"
    if isinstance(source, Mapping):
        return any(is_synthetic(v) for v in source.values())
    for attr in ("config", "dataset", "name"):  # Run → Config → dataset name; Data.name
        if hasattr(source, attr) and not isinstance(source, (list, tuple)):
            value = getattr(source, attr)
            if attr != "name" or isinstance(value, str):
                return is_synthetic(value)
    if isinstance(source, Iterable):
        return any(is_synthetic(v) for v in source)
    return False


def mark_synthetic(fig: Figure, source: Any) -> Figure:
    """Add "SYNTHETIC images (fast mode), not CIFAR-10" to the figure's title when `source` is synthetic
    (see `is_synthetic`). Returns the figure, so a cell can end with `mark_synthetic(plot_x(...), data)`."""
    if not is_synthetic(source):
        return fig
    current = fig._suptitle.get_text() if fig._suptitle is not None else ""
    if SYNTHETIC_NOTE not in current:
        fig.suptitle(f"{current}\n{SYNTHETIC_NOTE}" if current else SYNTHETIC_NOTE, color="firebrick")
    return fig


def curve_style(points: int) -> dict[str, Any]:
    """Line keyword arguments for a curve of `points` points: markers only below 5 points."""
    if points < MIN_POINTS_FOR_LINE:
        return {"linestyle": "none", "marker": "o", "markersize": 6}
    return {"marker": "o", "markersize": 3}


def accuracy_axis(ax: Any, scale: float = 1.0, axis: str = "y") -> None:
    """Widen an accuracy axis (`scale` 1: fractions, 100: %) to span at least 10 points, inside [0, scale]."""
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    span = MIN_ACCURACY_SPAN * scale
    if hi - lo < span:
        mid = (lo + hi) / 2
        lo, hi = mid - span / 2, mid + span / 2
        lo, hi = (0.0, span) if lo < 0 else (scale - span, scale) if hi > scale else (lo, hi)
        (ax.set_ylim if axis == "y" else ax.set_xlim)(lo, hi)


def _history(run: Run | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The per-epoch rows of a `Run` or of a plain list of dicts."""
    return list(run.history if hasattr(run, "history") else run)


def _is_accuracy(metric: str) -> bool:
    return metric.endswith("_acc")


def plot_history(
    runs: Mapping[str, Run | Sequence[Mapping[str, Any]]],
    metrics: Sequence[str] = ("train_loss", "val_acc"),
    title: str | None = None,
    dataset: str | None = None,
) -> Figure:
    """One panel per metric, one curve per run (labelled by its key), against the epoch.

    Curves of fewer than 5 epochs are drawn as points; accuracy axes span at least 10 points; one legend
    for all panels, below them. The title
    says "synthetic" when a run (or `dataset`) is.
    """
    metrics = list(metrics)
    fig, axes = figure(5.2 * len(metrics), 3.8, 1, len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for label, run in runs.items():
            rows = [r for r in _history(run) if metric in r]
            if not rows:
                continue
            epochs = [r["epoch"] for r in rows]
            ax.plot(epochs, [r[metric] for r in rows], label=label, **curve_style(len(rows)))
        name = METRIC_LABELS.get(metric, metric)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(x=0.08)  # points at the first and last epoch stay off the frame
        if _is_accuracy(metric):
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            accuracy_axis(ax)
    legend_below(fig, ncols=min(len(runs), 4))  # outside the panels: no legend hides a point
    if title:
        fig.suptitle(title)
    return mark_synthetic(fig, dataset or list(runs.values()))


def plot_confusion(
    confusion: np.ndarray,
    classes: Sequence[str],
    normalize: bool = True,
    title: str = "Confusion matrix (test set)",
    dataset: str | None = None,
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
    return mark_synthetic(fig, dataset)


def plot_per_class_accuracy(
    per_class: Mapping[str, Sequence[float]] | Sequence[float],
    classes: Sequence[str],
    title: str = "Per-class test accuracy",
    dataset: str | None = None,
) -> Figure:
    """Grouped bars of per-class accuracy; pass a dict {label: accuracies} to compare runs."""
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
    return mark_synthetic(fig, dataset)


def show_images(
    x: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    per_class: int = 8,
    title: str | None = None,
    dataset: str | None = None,
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
    mark_synthetic(fig, dataset)
    top = 0.99 if fig._suptitle is None else 0.93 if "\n" not in fig._suptitle.get_text() else 0.89
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=0.15, right=0.99, bottom=0.01, top=top)
    return fig


def plot_class_balance(data: Data, title: str = "Images per class and split") -> Figure:
    """Bar chart of the number of images of each class in the train, validation and test splits."""
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
    return mark_synthetic(fig, data)


def show_augmentations(data: Data, index: int = 0, n: int = 8, seed: int = 0) -> Figure:
    """One training image and `n` random crop (pad 4) + flip views made by `dkdlib.data.crop_flip`."""
    from .data import PAD, crop_flip, random_views

    dy, dx, flip = random_views(n, torch.Generator().manual_seed(seed))
    image = torch.from_numpy(np.ascontiguousarray(data.x_train[index])).permute(2, 0, 1)  # C×H×W
    views = crop_flip(image[None].expand(n, -1, -1, -1), dy, dx, flip).permute(0, 2, 3, 1).numpy()
    fig, axes = figure(1.45 * (n + 1), 2.1, 1, n + 1)
    axes[0].imshow(data.x_train[index], interpolation="nearest")
    axes[0].set_title(f"original\n{data.classes[int(data.y_train[index])]}", fontsize=9)
    for i, ax in enumerate(axes[1:]):
        ax.imshow(views[i], interpolation="nearest")
        # Cropping at offset d moves the content by PAD - d pixels (x: right, y: down). The flip comes
        # after the crop, so against the mirror image a flipped view's content moved by d - PAD in x.
        sx = int(dx[i]) - PAD if flip[i] else PAD - int(dx[i])
        shift = f"({sx:+d}, {PAD - int(dy[i]):+d})"
        ax.set_title(f"{'flipped' if flip[i] else 'not flipped'}\nmoved {shift}", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"Random crop (zero padding {PAD} px) + horizontal flip: {n} views of one image", fontsize=10
    )
    return mark_synthetic(fig, data)


def plot_temperature(
    logits: np.ndarray | torch.Tensor,
    classes: Sequence[str],
    temperatures: Sequence[float] = (1, 2, 4, 8),
    title: str = "softmax(z / T) of one teacher output",
    dataset: str | None = None,
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
    return mark_synthetic(fig, dataset)


def plot_lr_schedule(configs: Mapping[str, Config], steps_per_epoch: int) -> Figure:
    """The learning rate of every optimisation step (what `fit` sets), against the epoch, per config.

    Drawn from the run's own optimizer and scheduler on a stand-in parameter, step by step: a one-cycle
    schedule shows its warm-up to the peak and the decay, however few the epochs.
    """
    from torch import nn

    from .train import make_optimizer, make_scheduler

    fig, ax = figure(6.5, 3.4)
    for label, cfg in configs.items():
        optimizer = make_optimizer(cfg, nn.Linear(1, 1))
        scheduler = make_scheduler(cfg, optimizer, steps_per_epoch)
        rates = []
        for _ in range(cfg.epochs * steps_per_epoch):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        x = np.arange(len(rates)) / steps_per_epoch
        peak = int(np.argmax(rates))
        ax.plot(x, rates, label=f"{label}: {cfg.schedule}, peak {rates[peak]:.3g} at epoch {x[peak]:.2f}")
        ax.plot(x[peak], rates[peak], marker="o", color="black")
    ax.set_xlabel("epoch (steps / steps per epoch)")
    ax.set_ylabel("learning rate")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Learning rate at every step ({steps_per_epoch} steps per epoch)")
    legend_below(fig, ncols=1)
    return fig


def plot_warmup(configs: Mapping[str, Config]) -> Figure:
    """The distillation weight min(epoch / warmup, 1) per epoch, for each labelled config."""
    from .train import distill_weight

    fig, ax = figure(6.5, 3.4)
    for label, cfg in configs.items():
        epochs = np.arange(1, cfg.epochs + 1)
        ax.plot(epochs, [distill_weight(cfg, int(e)) for e in epochs], **curve_style(len(epochs)),
                label=f"{label}: warmup {cfg.setting('warmup')}, {cfg.epochs} epochs")  # fmt: skip
    ax.set_xlabel("epoch (counted from 1)")
    ax.set_ylabel("weight of α·TCKD + β·NCKD")
    ax.set_ylim(0, 1.05)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("DKD warm-up: min(epoch / warmup, 1)")
    legend_below(fig, ncols=1)
    return fig


def plot_confusion_delta(
    confusion_base: np.ndarray,
    confusion_other: np.ndarray,
    classes: Sequence[str],
    labels: tuple[str, str] = ("CE", "DKD"),
    dataset: str | None = None,
) -> Figure:
    """Where the second model beats the first, cell by cell, in points of the true class (rows normalised).

    One colour, one meaning: green is "better" everywhere — more correct on the diagonal, fewer of
    that mistake off it; pink is "worse". A cell shows +(other − base) on the diagonal and
    −(other − base) off it.
    """
    import seaborn as sns

    def norm(c: np.ndarray) -> np.ndarray:
        c = np.asarray(c, float)
        return c / np.maximum(c.sum(1, keepdims=True), 1)

    change = 100 * (norm(confusion_other) - norm(confusion_base))
    better = np.where(np.eye(len(classes), dtype=bool), change, -change)
    limit = max(float(np.abs(better).max()), 1e-9)
    k = len(classes)
    size = max(5.0, 0.6 * k + 2)
    fig, ax = figure(size + 1.2, size)
    bar = f"{labels[1]} better (+) or worse (−) than {labels[0]}, points"
    text = np.where(np.abs(better) < 0.5, "0", np.char.mod("%+.0f", better)) if k <= 12 else False
    sns.heatmap(better, annot=text, fmt="", cmap="PiYG", vmin=-limit, vmax=limit, square=True,
                xticklabels=classes, yticklabels=classes, annot_kws={"fontsize": 7}, ax=ax,
                cbar_kws={"label": bar})  # fmt: skip
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(
        f"Where {labels[1]} beats {labels[0]} (green) or loses (pink)\n"
        "diagonal: more correct; off it: fewer of that mistake",
        fontsize=10,
    )
    ax.grid(False)
    ax.tick_params(axis="x", labelrotation=45)
    ax.tick_params(axis="y", labelrotation=0)
    return mark_synthetic(fig, dataset)


def plot_sweep(
    summary: pd.DataFrame,
    x: str,
    ax_title: str,
    reference: Mapping[float, float] | None = None,
    xlabel: str | None = None,
    ax: Any = None,
    dataset: str | None = None,
    seed_range: float | None = None,
) -> Figure:
    """Mean ± std test accuracy (%) against one hyper-parameter; optional reference points {x: acc %}.

    Fewer than 5 points are drawn as points; the accuracy axis spans at least 10 points; reference
    points (CIFAR-10) are left out when the runs are synthetic. `seed_range` (points: max − min over the
    seeds of one recipe, e.g. DKD's) draws a band that tall around the sweep's mean and says in the
    title whether the sweep's own range (max − min of its means) is within it (noise) or beyond it.
    """
    fig = None
    if ax is None:
        fig, ax = figure(5.0, 3.6)
    data = summary.sort_values(x)
    single = "runs" not in data or bool((data["runs"] <= 1).all())
    style = curve_style(len(data))
    ax.errorbar(data[x], data["test_mean"], yerr=data["test_std"].fillna(0), capsize=4, **style,
                label="ours (one run per point)" if single else "ours (mean ± std over seeds)")  # fmt: skip
    if reference and not is_synthetic(dataset):
        xs = sorted(reference)
        ax.plot(xs, [reference[v] for v in xs], color="black", label="reference (CIFAR-10, 100 ep)",
                **{**curve_style(len(xs)), "marker": "D"} if len(xs) < MIN_POINTS_FOR_LINE
                else {"linestyle": "--", "marker": "D"})  # fmt: skip
    if seed_range is not None and np.isfinite(seed_range) and len(data):
        middle = float(data["test_mean"].mean())
        ax.axhspan(middle - seed_range / 2, middle + seed_range / 2, color="tab:gray", alpha=0.2,
                   label=f"seed range of one recipe ({seed_range:.2f} points), around the mean")  # fmt: skip
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel("test accuracy (%)")
    ax.margins(x=0.1)
    accuracy_axis(ax, 100)
    ax.set_title(f"{ax_title}\n{range_note(data['test_mean'], seed_range, 'over ' + (xlabel or x))}"
                 if len(data) > 1 else ax_title, fontsize=10)  # fmt: skip
    if fig is None:
        fig = ax.figure
        ax.legend(fontsize="small", loc="best")
    else:
        legend_below(fig, ncols=1)
    return mark_synthetic(fig, dataset)


def plot_bars(
    summary: pd.DataFrame,
    reference: Mapping[str, float] | None = None,
    title: str | None = None,
    dataset: str | None = None,
) -> Figure:
    """Horizontal bars of mean ± std test accuracy (%) per row label, with reference values as diamonds.

    reference: the reference's test accuracy per row label (`reports.reference_accuracy`); where
    `summary` has a `ref_test` column (`reports.summarize_runs`), each bar's own value from it instead,
    so a fair baseline of the reference (CE trained as long as DKD) gets no diamond although its label is
    "CE". The reference markers (CIFAR-10) are drawn only beside runs on real data: never beside
    synthetic bars, which measure nothing comparable.
    """

    data = summary.reset_index(drop=True)
    fig, ax = figure(8.0, 0.45 * len(data) + 2.2)
    y = np.arange(len(data))
    runs = data["runs"] if "runs" in data else pd.Series(1, index=data.index)
    ax.barh(y, data["test_mean"], color="tab:blue", alpha=0.75, label="ours: last-epoch test accuracy")
    several = (runs > 1) & data["test_std"].notna()
    if several.any():
        ax.errorbar(data["test_mean"][several], y[several], xerr=data["test_std"][several], fmt="none",
                    ecolor="black", capsize=3, label="± std over seeds")  # fmt: skip
    if reference and not is_synthetic(dataset):
        if "ref_test" in data:
            ref = data["ref_test"].to_numpy(dtype=float)
        else:
            ref = np.array([reference.get(r, np.nan) for r in data["row"]], dtype=float)
        if np.isfinite(ref).any():
            ax.scatter(ref, y, marker="D", color="black", zorder=3,
                       label="reference table (CIFAR-10, its own recipe and epochs)")  # fmt: skip
    labels = [f"{r} ({int(e)} ep, {int(n)} run{'s' if n > 1 else ''})"
              for r, e, n in zip(data["row"], data["epochs"], runs, strict=True)]  # fmt: skip
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(title or "Test accuracy by recipe")
    fig.legend(loc="outside lower center", ncols=2, fontsize="small")
    return mark_synthetic(fig, dataset)


def differences_from(frame: pd.DataFrame, baseline: str = "CE", value: str = "test_acc") -> pd.DataFrame:
    """Each run's accuracy minus the baseline's, in points: one row per run of `frame` (columns `row`,
    `seed`, `value` as a fraction of 1, as `runs_frame` and `gather_runs` give them).

    A run is paired with the baseline's run of the same seed where there is one (`paired` True: the two
    saw the same initial weights and batches), else set against the mean of the baseline's seeds. The
    baseline's own runs come first, as their distance from their mean: the spread of the baseline.
    The teacher (row "teacher") is left out. Columns: row, seed, acc (%), diff (points), paired.
    """
    frame = frame[frame["row"] != "teacher"]
    base = frame[frame["row"] == baseline]
    if base.empty:
        raise ValueError(f"no {baseline!r} runs to take differences from")
    by_seed = dict(zip(base["seed"].astype(int), 100 * base[value].astype(float), strict=True))
    mean = float(np.mean(list(by_seed.values())))
    rows = [
        {"row": baseline, "seed": seed, "acc": acc, "diff": acc - mean, "paired": False}
        for seed, acc in by_seed.items()
    ]
    for _, run in frame[frame["row"] != baseline].iterrows():
        seed, acc = int(run["seed"]), 100 * float(run[value])
        paired = seed in by_seed
        rows.append({"row": run["row"], "seed": seed, "acc": acc, "paired": paired,
                     "diff": acc - (by_seed[seed] if paired else mean)})  # fmt: skip
    return pd.DataFrame(rows, columns=["row", "seed", "acc", "diff", "paired"])


def plot_vs_baseline(
    frame: pd.DataFrame,
    baseline: str = "CE",
    value: str = "test_acc",
    title: str | None = None,
    dataset: str | None = None,
) -> Figure:
    """Students as differences from `baseline` (points), one dot per seed, zoomed to the data.

    Each row (recipe) shows its seeds' differences (`differences_from`: paired by seed with the baseline
    where it can be), their mean (a black tick) and their range (a grey line: the seed spread the rule of
    `dkdlib.verdicts.compare_seeds` reads); the label gives the mean, the seeds and the rule's verdict
    against the baseline. The baseline's row shows its own seeds around its mean. The teacher (a row
    "teacher" in `frame`) is a dashed line where it falls inside the axis, otherwise its distance is
    said in the title, and a recipe whose mean is above it is remarked on. Says "synthetic" when the
    runs (or `dataset`) are.
    """
    diffs = differences_from(frame, baseline, value)
    names = list(dict.fromkeys(diffs["row"]))
    fig, ax = figure(7.5, 0.55 * len(names) + 2.4)
    base_acc = diffs.loc[diffs["row"] == baseline, "acc"].to_numpy()
    labels = []
    for i, name in enumerate(names):
        block = diffs[diffs["row"] == name]
        d = block["diff"].to_numpy()
        jitter = np.linspace(-0.12, 0.12, len(d)) if len(d) > 1 else np.zeros(1)
        colour = "tab:gray" if name == baseline else "tab:blue"
        dot = "one seed" if name != baseline else f"one {baseline} seed (from {baseline}'s mean)"
        ax.scatter(d, i + jitter, s=28, color=colour, alpha=0.85, zorder=3, label=dot)
        if len(d) > 1:
            ax.plot([d.min(), d.max()], [i, i], color="tab:gray", linewidth=3, alpha=0.5, zorder=2,
                    label="range over seeds")  # fmt: skip
        ax.plot([d.mean()] * 2, [i - 0.3, i + 0.3], color="black", linewidth=2, zorder=4, label="mean")
        if name == baseline:
            spread = f"range {np.ptp(d):.2f}" if len(d) > 1 else "one seed"
            labels.append(f"{name}: {len(d)} seed{'s' * (len(d) > 1)}, {spread}")
        else:
            verdict = compare_seeds(base_acc, block["acc"].to_numpy())
            judged = "cannot tell" if verdict.beyond is None else (
                "beyond the seed spread" if verdict.beyond else "within the seed spread")  # fmt: skip
            labels.append(f"{name}: {signed(d.mean())} ({len(d)} seed{'s' * (len(d) > 1)}, {judged})")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(names)), labels, fontsize=8)
    ax.invert_yaxis()
    lo, hi = float(min(diffs["diff"].min(), 0.0)), float(max(diffs["diff"].max(), 0.0))
    pad = max(0.1 * (hi - lo), 0.25)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_xlabel(f"{METRIC_LABELS.get(value, value)} − {baseline}'s (points; same seed where there is one)")
    lines = [title or f"Each recipe's {METRIC_LABELS.get(value, value)} minus {baseline}'s, per seed"]
    teacher = frame.loc[frame["row"] == "teacher", value].astype(float)
    if len(teacher):
        t = 100 * float(teacher.mean()) - float(np.mean(base_acc))
        if lo - pad <= t <= hi + pad:
            ax.axvline(t, color="firebrick", linestyle="--", linewidth=1, label="the teacher")
        else:
            lines.append(f"the teacher is {signed(t)} points from {baseline}, off this scale")
        teacher_acc = 100 * float(teacher.mean())
        means = diffs.groupby("row", sort=False)["acc"].mean()
        above = [f"{n} ({signed(m - teacher_acc)})" for n, m in means.items() if m > teacher_acc]
        if above:
            lines.append(f"above its teacher: {', '.join(above)} points")
    ax.set_title("\n".join(lines), fontsize=10)
    legend_below(fig, ncols=4)
    return mark_synthetic(fig, dataset or (frame["dataset"].tolist() if "dataset" in frame else None))


# DKD figures: the decomposition, dark knowledge and sweeps over recorded runs


def _fig(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    return figure(width, height, 1, ncols)


def plot_target_probability(p_t: Mapping[str, np.ndarray], title: str | None = None) -> Figure:
    """Histograms of the teacher's probability of the true class, one per temperature (dict label → p_t)."""
    fig, ax = _fig(6.5, 3.8)
    bins = np.linspace(0, 1, 41)
    for label, values in p_t.items():
        values = np.asarray(values)
        ax.hist(values, bins=bins, alpha=0.55, label=f"{label} (median {np.median(values):.2f})")
    ax.set_xlabel("teacher's probability of the true class, $p_t^{\\mathcal{T}}$")
    ax.set_ylabel("test images")
    ax.set_title(title or "How confident is the teacher? (test set)")
    legend_below(fig)
    return fig


def plot_suppression(frame: pd.DataFrame, temperature: float = 4.0, bins: int = 10) -> Figure:
    """NCKD per sample vs the teacher's p_t, with and without KD's weight (1 − p_t), and binned shares."""
    fig, (ax, ax2) = _fig(11, 4.0, 2)
    floor = 1e-6
    _floor_note(ax, [frame["nckd"], frame["kd_nckd"]], floor, axis="y")
    ax.scatter(frame["p_t"], frame["nckd"].clip(lower=floor), s=6, alpha=0.35, color="tab:gray",
               label="NCKD (what DKD weights by β)")  # fmt: skip
    ax.scatter(frame["p_t"], frame["kd_nckd"].clip(lower=floor), s=6, alpha=0.45, color="tab:red",
               label="(1 − $p_t$)·NCKD (what KD keeps)")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel(f"teacher's $p_t$ (T = {temperature:g})")
    ax.set_ylabel("per-sample loss (nats, no T²)")
    ax.set_title("KD shrinks NCKD on confident samples")
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(frame["p_t"], edges) - 1, 0, bins - 1)
    nckd = np.bincount(which, frame["nckd"], minlength=bins)
    kept = np.bincount(which, frame["kd_nckd"], minlength=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    width = 0.9 / bins
    total = max(float(nckd.sum()), 1e-12)
    ax2.bar(centers, nckd / total, width=width, color="tab:gray", alpha=0.6, label="NCKD (DKD)")
    ax2.bar(
        centers, kept / total, width=width * 0.6, color="tab:red", alpha=0.85, label="(1 − $p_t$)·NCKD (KD)"
    )
    ax2.set_xlabel(f"teacher's $p_t$ (bins of {1 / bins:.1f})")
    ax2.set_ylabel("share of the test set's total NCKD")
    ax2.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax2.set_title("Where the non-target signal sits, and what KD keeps")
    legend_below(fig, ncols=4, markerscale=3)
    return fig


def plot_tckd_vs_nckd(frame: pd.DataFrame, temperature: float = 4.0) -> Figure:
    """Per-sample TCKD against NCKD (log–log), coloured by the teacher's p_t."""
    fig, ax = _fig(6.2, 4.6)
    floor = 1e-7
    _floor_note(ax, [frame["nckd"]], floor, axis="x")
    _floor_note(ax, [frame["tckd"]], floor, axis="y")
    points = ax.scatter(frame["nckd"].clip(lower=floor), frame["tckd"].clip(lower=floor), c=frame["p_t"],
                        cmap="viridis", vmin=0, vmax=1, s=7, alpha=0.6)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor log labels overlap
    ax.set_xlabel("NCKD (nats)")
    ax.set_ylabel("TCKD (nats)")
    ax.set_title(f"Per-sample TCKD vs NCKD, teacher vs student (T = {temperature:g})")
    fig.colorbar(points, ax=ax, label="teacher's $p_t$")
    return fig


def plot_dark_knowledge(matrix: np.ndarray, classes: Sequence[str], temperature: float = 4.0) -> Figure:
    """Heatmap of the teacher's mean non-target distribution p̂ for each true class (diagonal blank)."""

    return _class_heatmap(
        matrix, classes, xlabel="non-target class",
        title=f"Dark knowledge: the teacher's non-target distribution (T = {temperature:g})",
        mask=~np.isfinite(matrix), fmt=".2f", cmap="magma_r", vmin=0,
        cbar_kws={"label": "mean $\\hat p$ (share of the non-target mass)"},
    )  # fmt: skip


def _floor_note(ax: Any, values: Sequence[Any], floor: float, axis: str = "y") -> int:
    """Mark the floor that values below it are clipped to on a log axis, with how many were: a dotted
    line, labelled 'N of M values < floor, drawn at it'. Nothing when none is clipped. Returns N."""
    arrays = [np.asarray(v, dtype=float) for v in values]
    clipped, total = sum(int((a < floor).sum()) for a in arrays), sum(a.size for a in arrays)
    if clipped:
        text = f"{clipped:,} of {total:,} values < {floor:g}, drawn at {floor:g}"
        if axis == "y":
            ax.axhline(floor, color="black", linestyle=":", linewidth=0.8)
            ax.annotate(text, (0.01, floor), xycoords=("axes fraction", "data"), xytext=(0, 3),
                        textcoords="offset points", fontsize=7, va="bottom")  # fmt: skip
        else:
            ax.axvline(floor, color="black", linestyle=":", linewidth=0.8)
            ax.annotate(text, (floor, 0.99), xycoords=("data", "axes fraction"), xytext=(3, 0),
                        textcoords="offset points", fontsize=7, va="top", rotation=90)  # fmt: skip
    return clipped


def _class_heatmap(matrix: np.ndarray, classes: Sequence[str], xlabel: str, title: str, **heatmap) -> Figure:
    """A square class × class heatmap (rows: true class), annotated when there are few classes."""
    import seaborn as sns

    k = len(classes)
    size = max(5.0, 0.6 * k + 2)
    fig, ax = _fig(size + 1.2, size)
    sns.heatmap(matrix, annot=k <= 12, square=True, xticklabels=classes, yticklabels=classes,
                annot_kws={"fontsize": 7}, ax=ax, **heatmap)  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel("true class")
    ax.set_title(title)
    ax.grid(False)
    ax.tick_params(axis="x", labelrotation=45)
    ax.tick_params(axis="y", labelrotation=0)
    return fig


def plot_class_delta(
    per_class: Mapping[str, Sequence[float]], baseline: str, classes: Sequence[str]
) -> Figure:
    """Per-class test accuracy of each run minus `baseline`'s, in percentage points."""
    base = np.asarray(per_class[baseline], float)
    others = [k for k in per_class if k != baseline]
    fig, ax = _fig(max(6.5, 0.75 * len(classes)), 3.8)
    width = 0.8 / max(len(others), 1)
    x = np.arange(len(classes))
    for i, label in enumerate(others):
        delta = 100 * (np.asarray(per_class[label], float) - base)
        ax.bar(x + (i - (len(others) - 1) / 2) * width, delta, width=width, label=f"{label} − {baseline}")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, classes, rotation=45, ha="right")
    ax.set_xlabel("class")
    ax.set_ylabel("test accuracy difference (points)")
    ax.set_title(f"Per-class test accuracy relative to {baseline}")
    legend_below(fig, ncols=max(1, len(others)))
    return fig


def plot_grid(
    frame: pd.DataFrame, value: str = "test_acc", title: str | None = None, seed_range: float | None = None
) -> Figure:
    """α×β heatmap of mean test accuracy (in %) over DKD runs in `frame` (columns alpha, beta).

    The title says how large the grid's range is (best − worst cell, in points) beside `seed_range`
    (max − min over the seeds of one recipe, in points): a range within it is noise (`range_note`).
    """
    import seaborn as sns

    grid = frame.groupby(["alpha", "beta"])[value].mean().unstack("beta") * 100
    fig, ax = _fig(1.3 * grid.shape[1] + 3.6, 1.0 * grid.shape[0] + 2.6)
    sns.heatmap(grid, annot=True, fmt=".1f", cmap="viridis", ax=ax,
                cbar_kws={"label": "test accuracy (%)"})  # fmt: skip
    ax.set_xlabel("β (NCKD weight)")
    ax.set_ylabel("α (TCKD weight)")
    ax.tick_params(axis="y", labelrotation=0)
    note = range_note(grid.to_numpy().ravel(), seed_range, "over the grid")
    ax.set_title(f"{title or 'DKD test accuracy over α × β'}\n{note}", fontsize=10)
    ax.grid(False)
    return mark_synthetic(fig, frame["dataset"].tolist() if "dataset" in frame else None)


def range_note(values: Sequence[float], seed_range: float | None, what: str = "") -> str:
    """'range over the grid 1.00 points, within the seed range of 1.60: noise' (or 'beyond the seed
    range of …', or '…; one seed each: the seed range is unknown'), from values in points."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    span = float(np.ptp(values)) if values.size else float("nan")
    head = f"range {what} {span:.2f} points".replace("  ", " ")
    if seed_range is None or not np.isfinite(seed_range):
        return f"{head}; the seed range is unknown (one seed)"
    if span <= seed_range:
        return f"{head}, within the seed range of {seed_range:.2f}: noise"
    return f"{head}, beyond the seed range of {seed_range:.2f}"

"""Serves the chapters: their figures. Each function returns a new `Figure` and changes no state.

Figures are made outside pyplot (`figure`), so Jupyter shows each exactly once under any backend.
Honest figures: synthetic data says so in the title (`mark_synthetic`); fewer than 5 points are drawn
as points (`curve_style`); an accuracy axis spans at least 10 points (`accuracy_axis`); a diverging
colour map has one meaning; differences from a baseline show every seed (`plot_vs_baseline`); a sweep
says its range beside the seed spread (`range_note`); clipped values are counted (`_floor_note`);
legends sit below the axes (`legend_below`); no "-0" in any text (`signed`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import zip_longest
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, PercentFormatter

from .verdicts import compare_seeds, signed

if TYPE_CHECKING:
    from .config import Config
    from .data import Data
    from .train import Run

METRIC_LABELS = {  # readable names of `Run.history`'s columns
    "train_loss": "training loss", "train_acc": "training accuracy", "val_loss": "validation loss (CE)",
    "val_acc": "validation accuracy", "test_loss": "test loss (CE)", "test_acc": "test accuracy",
    "lr": "learning rate", "distill_weight": "distillation weight (warm-up)",
    "images_per_s": "training throughput (images/s)", "seconds": "epoch time (s)",
}  # fmt: skip
SYNTHETIC_NOTE = "SYNTHETIC images (fast mode), not CIFAR-10"
MIN_POINTS_FOR_LINE = 5  # fewer points than this are drawn as points: a line would invent a trend


def figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **subplots) -> tuple[Figure, Any]:
    """A figure outside pyplot, with constrained layout, and its axes (`Figure.subplots` arguments)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(nrows, ncols, **subplots)


def legend_below(fig: Figure, ncols: int = 2, **kwargs) -> Any:
    """One legend below the axes (so it hides no point), each label once; None when nothing is labelled."""
    handles: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        return fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                          ncols=max(1, min(ncols, len(handles))), fontsize="small", **kwargs)  # fmt: skip
    return None


def is_synthetic(source: Any) -> bool:
    """Whether `source` (a dataset name, `Data`, `Config`, `Run`, or a collection of them) is synthetic."""
    if source is None or isinstance(source, str):
        return source == "synthetic"
    if isinstance(source, Mapping):
        return any(map(is_synthetic, source.values()))
    for attr in ("config", "dataset", "name"):  # Run → Config → dataset name; Data.name
        value = getattr(source, attr, None) if not isinstance(source, (list, tuple)) else None
        if value is not None and (attr != "name" or isinstance(value, str)):
            return is_synthetic(value)
    return isinstance(source, Iterable) and any(map(is_synthetic, source))


def mark_synthetic(fig: Figure, source: Any) -> Figure:
    """Add `SYNTHETIC_NOTE` to the figure's title when `source` is synthetic; returns the figure."""
    current = fig._suptitle.get_text() if fig._suptitle is not None else ""
    if is_synthetic(source) and SYNTHETIC_NOTE not in current:
        fig.suptitle(f"{current}\n{SYNTHETIC_NOTE}" if current else SYNTHETIC_NOTE, color="firebrick")
    return fig


def curve_style(points: int) -> dict[str, Any]:
    """Line keyword arguments for a curve of `points` points: markers only below 5 points."""
    if points < MIN_POINTS_FOR_LINE:
        return {"linestyle": "none", "marker": "o", "markersize": 6}
    return {"marker": "o", "markersize": 3}


def accuracy_axis(ax: Any, scale: float = 1.0) -> None:
    """Widen a y accuracy axis (`scale` 1: fractions, 100: %) to span at least 10 points, in [0, scale]."""
    lo, hi = ax.get_ylim()
    span = 0.1 * scale
    if hi - lo < span:
        lo = min(max((lo + hi - span) / 2, 0.0), scale - span)
        ax.set_ylim(lo, lo + span)


def plot_history(runs: Mapping[str, Run | Sequence[Mapping[str, Any]]],
                 metrics: Sequence[str] = ("train_loss", "val_acc"), title: str | None = None,
                 dataset: str | None = None) -> Figure:  # fmt: skip
    """One panel per metric, one curve per run (a `Run` or its history rows), against the epoch."""
    fig, axes = figure(5.2 * len(metrics), 3.8, 1, len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for label, run in runs.items():
            rows = [r for r in getattr(run, "history", run) if metric in r]
            if rows:
                ax.plot([r["epoch"] for r in rows], [r[metric] for r in rows], label=label,
                        **curve_style(len(rows)))  # fmt: skip
        name = METRIC_LABELS.get(metric, metric)
        ax.set(title=name, xlabel="epoch", ylabel=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(x=0.08)  # points at the first and last epoch stay off the frame
        if metric.endswith("_acc"):
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            accuracy_axis(ax)
    legend_below(fig, ncols=min(len(runs), 4))
    if title:
        fig.suptitle(title)
    return mark_synthetic(fig, dataset or list(runs.values()))


def _class_heatmap(matrix: np.ndarray, classes: Sequence[str], title: str, xlabel: str = "predicted class",
                   **heatmap) -> Figure:  # fmt: skip
    """A square class × class seaborn heatmap (rows: true class), annotated when there are few classes."""
    k = len(classes)
    size = max(5.0, 0.6 * k + 2)
    fig, ax = figure(size + 1.2, size)
    heatmap = {"annot": k <= 12, **heatmap}
    sns.heatmap(matrix, square=True, xticklabels=classes, yticklabels=classes, annot_kws={"fontsize": 7},
                ax=ax, **heatmap)  # fmt: skip
    ax.set(xlabel=xlabel, ylabel="true class")
    ax.set_title(title, fontsize=10)
    ax.grid(False)
    ax.tick_params(axis="x", labelrotation=45)
    ax.tick_params(axis="y", labelrotation=0)
    return fig


def _row_normalised(confusion: np.ndarray) -> np.ndarray:
    c = np.asarray(confusion, dtype=float)
    return c / np.maximum(c.sum(1, keepdims=True), 1)


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], normalize: bool = True,
                   title: str = "Confusion matrix (test set)",
                   dataset: str | None = None) -> Figure:  # fmt: skip
    """Heatmap of a confusion matrix (rows: true class, columns: predicted class)."""
    cm = _row_normalised(confusion) if normalize else np.asarray(confusion, dtype=float)
    label = "fraction of the true class" if normalize else "images"
    fig = _class_heatmap(cm, classes, title, fmt=".2f" if normalize else ".0f", cmap="Blues", vmin=0,
                         vmax=1 if normalize else None, cbar_kws={"label": label})  # fmt: skip
    return mark_synthetic(fig, dataset)


def plot_confusion_delta(confusion_base: np.ndarray, confusion_other: np.ndarray, classes: Sequence[str],
                         labels: tuple[str, str] = ("CE", "DKD"),
                         dataset: str | None = None) -> Figure:  # fmt: skip
    """Where the second model beats the first, in points of the true class: green is "better" everywhere
    (more correct on the diagonal, fewer of that mistake off it), pink "worse"."""
    change = 100 * (_row_normalised(confusion_other) - _row_normalised(confusion_base))
    better = np.where(np.eye(len(classes), dtype=bool), change, -change)
    limit = max(float(np.abs(better).max()), 1e-9)
    text = np.where(np.abs(better) < 0.5, "0", np.char.mod("%+.0f", better)) if len(classes) <= 12 else False
    title = (f"Where {labels[1]} beats {labels[0]} (green) or loses (pink)\n"
             "diagonal: more correct; off it: fewer of that mistake")  # fmt: skip
    bar = f"{labels[1]} better (+) or worse (−) than {labels[0]}, points"
    fig = _class_heatmap(better, classes, title, annot=text, fmt="", cmap="PiYG", vmin=-limit, vmax=limit,
                         cbar_kws={"label": bar})  # fmt: skip
    return mark_synthetic(fig, dataset)


def plot_dark_knowledge(matrix: np.ndarray, classes: Sequence[str], temperature: float = 4.0) -> Figure:
    """Heatmap of the teacher's mean non-target distribution p̂ for each true class (diagonal blank)."""
    return _class_heatmap(
        matrix, classes, xlabel="non-target class",
        title=f"Dark knowledge: the teacher's non-target distribution (T = {temperature:g})",
        mask=~np.isfinite(matrix), fmt=".2f", cmap="magma_r", vmin=0,
        cbar_kws={"label": "mean $\\hat p$ (share of the non-target mass)"},
    )  # fmt: skip


def _class_bars(frame: pd.DataFrame, y: str, hue: str, title: str, legend: str | None) -> tuple[Figure, Any]:
    """Seaborn bars of `y` per class, one colour per `hue`; the legend (titled `legend`) beside the axes."""
    k, groups = frame["class"].nunique(), frame[hue].nunique()
    fig, ax = figure(max(6.0, 0.7 * k * max(1, groups) ** 0.5), 3.8)
    sns.barplot(frame, x="class", y=y, hue=hue, ax=ax, legend=legend is not None)
    if legend is not None:
        ax.legend(title=legend, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set(xlabel="class", title=title)
    ax.tick_params(axis="x", labelrotation=45)
    return fig, ax


def plot_per_class_accuracy(per_class: Mapping[str, Sequence[float]] | Sequence[float],
                            classes: Sequence[str], title: str = "Per-class test accuracy",
                            dataset: str | None = None) -> Figure:  # fmt: skip
    """Bars of per-class accuracy; a dict {label: accuracies} compares runs."""
    series = dict(per_class) if isinstance(per_class, Mapping) else {"model": per_class}
    frame = pd.DataFrame([{"class": c, "run": label, "accuracy": float(a)} for label, accs in series.items()
                          for c, a in zip(classes, accs, strict=True)])  # fmt: skip
    fig, ax = _class_bars(frame, "accuracy", "run", title, "run" if len(series) > 1 else None)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(ylim=(0, 1), ylabel="test accuracy")
    return mark_synthetic(fig, dataset)


def plot_class_balance(data: Data, title: str = "Images per class and split") -> Figure:
    """Bars of the number of images of each class in the train, validation and test splits."""
    rows = []
    for split, y in (("train", data.y_train), ("val", data.y_val), ("test", data.y_test)):
        counts = np.bincount(np.asarray(y, np.int64), minlength=data.num_classes)
        rows += [{"class": c, "split": f"{split} ({len(y):,})", "images": int(n)}
                 for c, n in zip(data.classes, counts, strict=True)]  # fmt: skip
    fig, ax = _class_bars(pd.DataFrame(rows), "images", "split", title, "split (images)")
    ax.set_ylabel("images")
    return mark_synthetic(fig, data)


def show_images(x: np.ndarray, y: np.ndarray, classes: Sequence[str], per_class: int = 8,
                title: str | None = None, dataset: str | None = None) -> Figure:  # fmt: skip
    """A grid of uint8 N×H×W×C images: one row per class, the first `per_class` images of each."""
    x, y = np.asarray(x), np.asarray(y)
    fig, axes = figure(0.75 * per_class + 1.4, 0.75 * len(classes), len(classes), per_class, squeeze=False)
    fig.set_layout_engine(None)  # a tight grid of images: spacing set by hand below
    for c, row in enumerate(axes):
        for ax, i in zip_longest(row, np.flatnonzero(y == c)[:per_class]):
            ax.set(xticks=[], yticks=[])
            ax.spines[:].set_visible(False)
            if i is not None:
                ax.imshow(x[i], interpolation="nearest")
        row[0].set_ylabel(classes[c], rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    mark_synthetic(fig, dataset)
    top = 0.99 if fig._suptitle is None else 0.93 if "\n" not in fig._suptitle.get_text() else 0.89
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=0.15, right=0.99, bottom=0.01, top=top)
    return fig


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
        # Cropping at offset d moves the content by PAD - d pixels; a flip comes after the crop, so
        # against the mirror image a flipped view's content moved by d - PAD in x.
        sx = int(dx[i]) - PAD if flip[i] else PAD - int(dx[i])
        moved = f"moved ({sx:+d}, {PAD - int(dy[i]):+d})"
        ax.set_title(f"{'flipped' if flip[i] else 'not flipped'}\n{moved}", fontsize=8)
    for ax in axes:
        ax.set(xticks=[], yticks=[])
    fig.suptitle(
        f"Random crop (zero padding {PAD} px) + horizontal flip: {n} views of one image", fontsize=10
    )
    return mark_synthetic(fig, data)


def plot_temperature(logits: np.ndarray | torch.Tensor, classes: Sequence[str],
                     temperatures: Sequence[float] = (1, 2, 4, 8),
                     title: str = "softmax(z / T) of one teacher output",
                     dataset: str | None = None) -> Figure:  # fmt: skip
    """Bars of softmax(logits / T) for each temperature: higher T flattens the distribution."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    fig, axes = figure(3.3 * len(temperatures), 3.4, 1, len(temperatures), sharey=True, squeeze=False)
    colors = ["tab:orange" if i == int(z.argmax()) else "tab:blue" for i in range(len(z))]
    for ax, t in zip(axes[0], temperatures, strict=True):
        ax.bar(range(len(z)), torch.softmax(z / t, dim=0).numpy(), color=colors)
        ax.set_xticks(range(len(z)), classes, rotation=90, fontsize=8)
        ax.set(title=f"T = {t:g}", ylim=(0, 1))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[0, 0].set_ylabel("probability")
    fig.suptitle(f"{title} (orange: the teacher's top class)")
    return mark_synthetic(fig, dataset)


def plot_lr_schedule(configs: Mapping[str, Config], steps_per_epoch: int) -> Figure:
    """The learning rate of every optimisation step, drawn from each config's own optimizer and scheduler
    (what `fit` sets) on a stand-in parameter: a one-cycle schedule shows its rise and decay."""
    from .train import make_optimizer, make_scheduler

    fig, ax = figure(6.5, 3.4)
    for label, cfg in configs.items():
        optimizer = make_optimizer(cfg, torch.nn.Linear(1, 1))
        scheduler = make_scheduler(cfg, optimizer, steps_per_epoch)
        rates = []
        for _ in range(cfg.epochs * steps_per_epoch):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        x, peak = np.arange(len(rates)) / steps_per_epoch, int(np.argmax(rates))
        ax.plot(x, rates, label=f"{label}: {cfg.schedule}, peak {rates[peak]:.3g} at epoch {x[peak]:.2f}")
        ax.plot(x[peak], rates[peak], marker="o", color="black")
    ax.set(xlabel="epoch (steps / steps per epoch)", ylabel="learning rate", ylim=(0, None),
           title=f"Learning rate at every step ({steps_per_epoch} steps per epoch)")  # fmt: skip
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
    ax.set(xlabel="epoch (counted from 1)", ylabel="weight of α·TCKD + β·NCKD", ylim=(0, 1.05),
           title="DKD warm-up: min(epoch / warmup, 1)")  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    legend_below(fig, ncols=1)
    return fig


def range_note(values: Sequence[float], seed_range: float | None, what: str = "") -> str:
    """'range over the grid 1.00 points, within the seed range of 1.60: noise' (or 'beyond …', or '…;
    the seed range is unknown (one seed)'), from values in points."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    head = f"range {what} {np.ptp(values) if values.size else float('nan'):.2f} points".replace("  ", " ")
    if seed_range is None or not np.isfinite(seed_range):
        return f"{head}; the seed range is unknown (one seed)"
    if values.size and np.ptp(values) <= seed_range:
        return f"{head}, within the seed range of {seed_range:.2f}: noise"
    return f"{head}, beyond the seed range of {seed_range:.2f}"


def plot_sweep(summary: pd.DataFrame, x: str, ax_title: str, xlabel: str | None = None,
               dataset: str | None = None, seed_range: float | None = None) -> Figure:  # fmt: skip
    """Mean ± std test accuracy (%) of a `reports.summarize_runs` frame against one hyper-parameter.

    `seed_range` (points, max − min over the seeds of one recipe) draws a band that tall around the
    sweep's mean, and the title says whether the sweep's own range is within it (noise) or beyond it.
    """
    fig, ax = figure(5.0, 3.6)
    data = summary.sort_values(x)
    single = "runs" not in data or bool((data["runs"] <= 1).all())
    label = "ours (one run per point)" if single else "ours (mean ± std over seeds)"
    ax.errorbar(data[x], data["test_mean"], yerr=data["test_std"].fillna(0), capsize=4, label=label,
                **curve_style(len(data)))  # fmt: skip
    if seed_range is not None and np.isfinite(seed_range) and len(data):
        middle = float(data["test_mean"].mean())
        ax.axhspan(middle - seed_range / 2, middle + seed_range / 2, color="tab:gray", alpha=0.2,
                   label=f"seed range of one recipe ({seed_range:.2f} points), around the mean")  # fmt: skip
    ax.set(xlabel=xlabel or x, ylabel="test accuracy (%)")
    ax.margins(x=0.1)
    accuracy_axis(ax, 100)
    note = f"\n{range_note(data['test_mean'], seed_range, 'over ' + (xlabel or x))}" if len(data) > 1 else ""
    ax.set_title(ax_title + note, fontsize=10)
    legend_below(fig, ncols=1)
    return mark_synthetic(fig, dataset)


def differences_from(frame: pd.DataFrame, baseline: str = "CE", value: str = "test_acc") -> pd.DataFrame:
    """Each run's `value` minus the baseline's, in points: columns row, seed, acc (%), diff, paired.

    A run is paired with the baseline's run of its seed where there is one (same initial weights and
    batches), else set against the baseline's mean; the baseline's runs come first, as their distance
    from their mean (its spread). The teacher (row "teacher") is left out.
    """
    frame = frame[frame["row"] != "teacher"]
    base = frame[frame["row"] == baseline]
    if base.empty:
        raise ValueError(f"no {baseline!r} runs to take differences from")
    by_seed = dict(zip(base["seed"].astype(int), 100 * base[value].astype(float), strict=True))
    mean = float(np.mean(list(by_seed.values())))
    rows = [(baseline, seed, acc, acc - mean, False) for seed, acc in by_seed.items()]
    for row, seed, acc in zip(frame["row"], frame["seed"].astype(int), 100 * frame[value].astype(float),
                              strict=True):  # fmt: skip
        if row != baseline:
            rows.append((row, seed, acc, acc - by_seed.get(seed, mean), seed in by_seed))
    return pd.DataFrame(rows, columns=["row", "seed", "acc", "diff", "paired"])


def plot_vs_baseline(frame: pd.DataFrame, baseline: str = "CE", value: str = "test_acc",
                     title: str | None = None, dataset: str | None = None) -> Figure:  # fmt: skip
    """Students as differences from `baseline` (`differences_from`), one dot per seed, zoomed to the data.

    Per recipe: its seeds, their mean (black tick) and range (grey line), and in its label the mean and
    the verdict of `verdicts.compare_seeds` against the baseline. A "teacher" row of `frame` is a dashed
    line where it falls inside the axis, else its distance is in the title (`_teacher_lines`).
    """
    diffs = differences_from(frame, baseline, value)
    names = list(dict.fromkeys(diffs["row"]))
    fig, ax = figure(7.5, 0.55 * len(names) + 2.4)
    base_acc = diffs.loc[diffs["row"] == baseline, "acc"].to_numpy()
    labels = []
    for i, name in enumerate(names):
        block = diffs[diffs["row"] == name]
        d, n = block["diff"].to_numpy(), f"{len(block)} seed{'s' * (len(block) > 1)}"
        dot = "one seed" if name != baseline else f"one {baseline} seed (from {baseline}'s mean)"
        jitter = np.linspace(-0.12, 0.12, len(d)) if len(d) > 1 else 0.0
        ax.scatter(d, i + jitter, s=28, alpha=0.85, zorder=3, label=dot,
                   color="tab:gray" if name == baseline else "tab:blue")  # fmt: skip
        if len(d) > 1:
            ax.plot([d.min(), d.max()], [i, i], color="tab:gray", linewidth=3, alpha=0.5, zorder=2,
                    label="range over seeds")  # fmt: skip
        ax.plot([d.mean()] * 2, [i - 0.3, i + 0.3], color="black", linewidth=2, zorder=4, label="mean")
        if name == baseline:
            labels.append(f"{name}: {n}, {f'range {np.ptp(d):.2f}' if len(d) > 1 else 'one seed'}")
        else:
            beyond = compare_seeds(base_acc, block["acc"].to_numpy()).beyond
            judged = {None: "cannot tell", True: "beyond the seed spread", False: "within the seed spread"}
            labels.append(f"{name}: {signed(d.mean())} ({n}, {judged[beyond]})")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(names)), labels, fontsize=8)
    ax.invert_yaxis()
    lo, hi = float(min(diffs["diff"].min(), 0.0)), float(max(diffs["diff"].max(), 0.0))
    pad = max(0.1 * (hi - lo), 0.25)
    ax.set_xlim(lo - pad, hi + pad)
    what = METRIC_LABELS.get(value, value)
    ax.set_xlabel(f"{what} − {baseline}'s (points; same seed where there is one)")
    lines = [title or f"Each recipe's {what} minus {baseline}'s, per seed"]
    lines += _teacher_lines(ax, frame, diffs, value, baseline, float(np.mean(base_acc)))
    ax.set_title("\n".join(lines), fontsize=10)
    legend_below(fig, ncols=4)
    return mark_synthetic(fig, dataset or (frame["dataset"].tolist() if "dataset" in frame else None))


def _teacher_lines(ax: Any, frame: pd.DataFrame, diffs: pd.DataFrame, value: str, baseline: str,
                   base_mean: float) -> list[str]:  # fmt: skip
    """The teacher as a dashed line where it falls inside the axis, else a title line with its distance;
    and a title line naming the recipes whose mean is above it."""
    teacher = frame.loc[frame["row"] == "teacher", value].astype(float)
    if teacher.empty:
        return []
    acc = 100 * float(teacher.mean())
    lines = []
    lo, hi = ax.get_xlim()
    if lo <= acc - base_mean <= hi:
        ax.axvline(acc - base_mean, color="firebrick", linestyle="--", linewidth=1, label="the teacher")
    else:
        lines.append(f"the teacher is {signed(acc - base_mean)} points from {baseline}, off this scale")
    means = diffs.groupby("row", sort=False)["acc"].mean()
    above = [f"{n} ({signed(m - acc)})" for n, m in means.items() if m > acc]
    return lines + ([f"above its teacher: {', '.join(above)} points"] if above else [])


# DKD figures: the decomposition, dark knowledge and sweeps over recorded runs


def plot_target_probability(p_t: Mapping[str, np.ndarray], title: str | None = None) -> Figure:
    """Histograms of the teacher's probability of the true class, one per temperature (dict label → p_t)."""
    fig, ax = figure(6.5, 3.8)
    for label, values in p_t.items():
        values = np.asarray(values)
        ax.hist(
            values, bins=np.linspace(0, 1, 41), alpha=0.55, label=f"{label} (median {np.median(values):.2f})"
        )
    ax.set(xlabel="teacher's probability of the true class, $p_t^{\\mathcal{T}}$", ylabel="test images",
           title=title or "How confident is the teacher? (test set)")  # fmt: skip
    legend_below(fig)
    return fig


def plot_suppression(frame: pd.DataFrame, temperature: float = 4.0, bins: int = 10) -> Figure:
    """NCKD per sample vs the teacher's p_t, with and without KD's weight (1 − p_t), and binned shares."""
    fig, (ax, ax2) = figure(11, 4.0, 1, 2)
    floor, dkd, kd = 1e-6, "NCKD (what DKD weights by β)", "(1 − $p_t$)·NCKD (what KD keeps)"
    _floor_note(ax, [frame["nckd"], frame["kd_nckd"]], floor, axis="y")
    ax.scatter(frame["p_t"], frame["nckd"].clip(lower=floor), s=6, alpha=0.35, color="tab:gray", label=dkd)
    ax.scatter(frame["p_t"], frame["kd_nckd"].clip(lower=floor), s=6, alpha=0.45, color="tab:red", label=kd)
    ax.set(yscale="log", xlabel=f"teacher's $p_t$ (T = {temperature:g})",
           ylabel="per-sample loss (nats, no T²)", title="KD shrinks NCKD on confident samples")  # fmt: skip
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(frame["p_t"], edges) - 1, 0, bins - 1)
    total = max(float(frame["nckd"].sum()), 1e-12)
    centers, width = (edges[:-1] + edges[1:]) / 2, 0.9 / bins
    bars = (
        ("nckd", "tab:gray", 0.6, 1.0, "NCKD (DKD)"),
        ("kd_nckd", "tab:red", 0.85, 0.6, "(1 − $p_t$)·NCKD (KD)"),
    )
    for column, colour, alpha, w, label in bars:
        share = np.bincount(which, frame[column], minlength=bins) / total
        ax2.bar(centers, share, width=width * w, color=colour, alpha=alpha, label=label)
    ax2.set(xlabel=f"teacher's $p_t$ (bins of {1 / bins:.1f})", ylabel="share of the test set's total NCKD",
            title="Where the non-target signal sits, and what KD keeps")  # fmt: skip
    ax2.yaxis.set_major_formatter(PercentFormatter(1.0))
    legend_below(fig, ncols=4, markerscale=3)
    return fig


def plot_tckd_vs_nckd(frame: pd.DataFrame, temperature: float = 4.0) -> Figure:
    """Per-sample TCKD against NCKD (log–log), coloured by the teacher's p_t."""
    fig, ax = figure(6.2, 4.6)
    floor = 1e-7
    _floor_note(ax, [frame["nckd"]], floor, axis="x")
    _floor_note(ax, [frame["tckd"]], floor, axis="y")
    points = ax.scatter(frame["nckd"].clip(lower=floor), frame["tckd"].clip(lower=floor), c=frame["p_t"],
                        cmap="viridis", vmin=0, vmax=1, s=7, alpha=0.6)  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="NCKD (nats)", ylabel="TCKD (nats)",
           title=f"Per-sample TCKD vs NCKD, teacher vs student (T = {temperature:g})")  # fmt: skip
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor log labels overlap
    fig.colorbar(points, ax=ax, label="teacher's $p_t$")
    return fig


def _floor_note(ax: Any, values: Sequence[Any], floor: float, axis: str = "y") -> int:
    """On a log axis, a dotted line at the floor that smaller values are clipped to, labelled 'N of M
    values < floor, drawn at it' (nothing when none is). Returns N."""
    arrays = [np.asarray(v, dtype=float) for v in values]
    clipped, total = sum(int((a < floor).sum()) for a in arrays), sum(a.size for a in arrays)
    if clipped:
        text = f"{clipped:,} of {total:,} values < {floor:g}, drawn at {floor:g}"
        style = dict(textcoords="offset points", fontsize=7)
        if axis == "y":
            ax.axhline(floor, color="black", linestyle=":", linewidth=0.8)
            ax.annotate(
                text, (0.01, floor), xycoords=("axes fraction", "data"), xytext=(0, 3), va="bottom", **style
            )
        else:
            ax.axvline(floor, color="black", linestyle=":", linewidth=0.8)
            ax.annotate(text, (floor, 0.99), xycoords=("data", "axes fraction"), xytext=(3, 0), va="top",
                        rotation=90, **style)  # fmt: skip
    return clipped


def plot_class_delta(
    per_class: Mapping[str, Sequence[float]], baseline: str, classes: Sequence[str]
) -> Figure:
    """Per-class test accuracy of each run minus `baseline`'s, in percentage points."""
    base = np.asarray(per_class[baseline], float)
    delta = pd.DataFrame({f"{k} − {baseline}": 100 * (np.asarray(v, float) - base)
                          for k, v in per_class.items() if k != baseline}, index=list(classes))  # fmt: skip
    fig, ax = figure(max(6.5, 0.75 * len(classes)), 3.8)
    delta.plot.bar(ax=ax, width=0.8, legend=False, rot=45)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set(xlabel="class", ylabel="test accuracy difference (points)",
           title=f"Per-class test accuracy relative to {baseline}")  # fmt: skip
    legend_below(fig, ncols=max(1, delta.shape[1]))
    return fig


def plot_grid(
    frame: pd.DataFrame, value: str = "test_acc", title: str | None = None, seed_range: float | None = None
) -> Figure:
    """α×β heatmap of mean test accuracy (%) over DKD runs in `frame` (columns alpha, beta); the title
    gives the grid's range beside `seed_range` (points; `range_note`)."""
    grid = frame.groupby(["alpha", "beta"])[value].mean().unstack("beta") * 100
    fig, ax = figure(1.3 * grid.shape[1] + 3.6, 1.0 * grid.shape[0] + 2.6)
    sns.heatmap(grid, annot=True, fmt=".1f", cmap="viridis", ax=ax, cbar_kws={"label": "test accuracy (%)"})
    ax.set(xlabel="β (NCKD weight)", ylabel="α (TCKD weight)")
    ax.tick_params(axis="y", labelrotation=0)
    note = range_note(grid.to_numpy().ravel(), seed_range, "over the grid")
    ax.set_title(f"{title or 'DKD test accuracy over α × β'}\n{note}", fontsize=10)
    ax.grid(False)
    return mark_synthetic(fig, frame["dataset"].tolist() if "dataset" in frame else None)

"""Each figure helper runs on small synthetic inputs and returns a Figure with the expected panels."""

import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from dkdlib import plots
from dkdlib.data import load_data


@pytest.fixture(scope="module")
def data():
    return load_data("synthetic", val_size=100, train_size=300, test_size=200)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _history(n=3, shift=0.0):
    return [{"epoch": e, "train_loss": 2.0 / e + shift, "val_acc": 0.1 * e} for e in range(1, n + 1)]


def test_plot_history():
    fig = plots.plot_history({"a": _history(), "b": _history(shift=0.1)}, metrics=("train_loss", "val_acc"))
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]


def test_plot_confusion():
    cm = np.arange(9).reshape(3, 3)
    fig = plots.plot_confusion(cm, ["a", "b", "c"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # heatmap + colour bar
    fig = plots.plot_confusion(cm, ["a", "b", "c"], normalize=False)
    assert isinstance(fig, Figure)


def test_plot_per_class_accuracy():
    fig = plots.plot_per_class_accuracy({"x": [0.5, 0.6], "y": [0.7, 0.8]}, ["a", "b"])
    assert isinstance(fig, Figure) and len(fig.axes) == 1


def test_show_images(data):
    fig = plots.show_images(data.x_train, data.y_train, data.classes, per_class=4)
    assert isinstance(fig, Figure) and len(fig.axes) == data.num_classes * 4


def test_plot_class_balance(data):
    fig = plots.plot_class_balance(data)
    assert isinstance(fig, Figure) and len(fig.axes) == 1


def test_show_augmentations(data):
    fig = plots.show_augmentations(data, index=0, n=5, seed=1)
    assert isinstance(fig, Figure) and len(fig.axes) == 6


def test_augmentation_titles_say_where_the_content_moved(data):
    """One white pixel: each view's title must give its displacement (against the mirror image when
    the view is flipped). The flipped views' x-shift once had the wrong sign."""
    data = dataclasses.replace(data, x_train=np.zeros_like(data.x_train[:1]))
    row, col = 10, 6
    data.x_train[0, row, col] = 255
    fig = plots.show_augmentations(data, index=0, n=12, seed=0)
    flips = set()
    for ax in fig.axes[1:]:
        flipped, moved = ax.get_title().split("\n")
        sx, sy = (int(v) for v in moved.removeprefix("moved (").removesuffix(")").split(", "))
        view = ax.get_images()[0].get_array()[..., 0]
        start = 31 - col if flipped == "flipped" else col
        assert tuple(np.argwhere(view == 255)[0]) == (row + sy, start + sx), ax.get_title()
        flips.add(flipped)
    assert flips == {"flipped", "not flipped"}


def test_plot_temperature(data):
    fig = plots.plot_temperature(np.linspace(-2, 5, data.num_classes), data.classes, (1, 4))
    assert isinstance(fig, Figure) and len(fig.axes) == 2


# Honest figures (issue #14): synthetic data named in the title, short curves as points, accuracy axes
# that do not stretch a single seed's noise, one meaning per colour.


def test_synthetic_figures_say_so(data):
    fig = plots.plot_class_balance(data)
    assert plots.SYNTHETIC_NOTE in fig._suptitle.get_text()
    real = plots.plot_confusion(np.eye(3), ["a", "b", "c"], dataset="cifar10")
    assert real._suptitle is None
    titled = plots.mark_synthetic(plots.plot_history({"a": _history()}, title="curves"), "synthetic")
    assert titled._suptitle.get_text() == f"curves\n{plots.SYNTHETIC_NOTE}"
    assert plots.is_synthetic([data]) and not plots.is_synthetic("cifar10") and not plots.is_synthetic(None)


def test_short_curves_are_points_and_long_ones_lines():
    short = plots.plot_history({"a": _history(4)}, metrics=("val_acc",)).axes[0].lines[0]
    long_ = plots.plot_history({"a": _history(5)}, metrics=("val_acc",)).axes[0].lines[0]
    assert short.get_linestyle() == "None" and short.get_marker() == "o"
    assert long_.get_linestyle() == "-"


def test_accuracy_axis_spans_ten_points():
    rows = [{"epoch": e, "val_acc": 0.500 + 0.002 * e} for e in range(1, 4)]  # a 0.4-point change
    ax = plots.plot_history({"a": rows}, metrics=("val_acc",)).axes[0]
    lo, hi = ax.get_ylim()
    assert hi - lo >= 0.1 - 1e-9 and lo <= 0.502 and hi >= 0.506


def test_lr_schedule_reaches_its_peak():
    from dkdlib.config import Config

    cfg = Config(epochs=2, lr=0.1, schedule="onecycle")
    fig = plots.plot_lr_schedule({"teacher": cfg}, steps_per_epoch=8)
    rates = fig.axes[0].lines[0].get_ydata()
    assert len(rates) == 16 and max(rates) == pytest.approx(0.1) and rates[-1] < 0.01


def test_confusion_delta_green_means_better_everywhere():
    base = np.array([[8, 2], [3, 7]])
    other = np.array([[9, 1], [3, 7]])  # class 0: one more correct, one fewer mistake
    fig = plots.plot_confusion_delta(base, other, ["a", "b"], labels=("CE", "DKD"))
    values = fig.axes[0].collections[0].get_array().reshape(2, 2)
    assert values[0, 0] == pytest.approx(10) and values[0, 1] == pytest.approx(10)  # both "better"
    assert values[1, 0] == 0 and values[1, 1] == 0


# Figures that tell the truth at a glance (issue #21): differences from CE with every seed, ranges beside
# the seed spread, clipped values labelled, legends outside the axes, no "-0".


def _runs():
    import pandas as pd

    rows = [("teacher", 0, 0.50), ("CE", 0, 0.40), ("CE", 1, 0.42), ("CE", 2, 0.41), ("DKD", 0, 0.43),
            ("DKD", 1, 0.45), ("DKD", 2, 0.44), ("KD", 0, 0.41), ("KD", 5, 0.47)]  # fmt: skip
    return pd.DataFrame(rows, columns=["row", "seed", "test_acc"]).assign(dataset="cifar10")


def test_differences_from_pair_by_seed_and_keep_the_baseline_spread():
    d = plots.differences_from(_runs(), "CE")
    assert "teacher" not in set(d["row"])
    ce = d[d["row"] == "CE"]
    assert np.allclose(ce["diff"], [-1.0, 1.0, 0.0])  # CE's seeds around CE's mean (41%)
    dkd = d[d["row"] == "DKD"]
    assert dkd["paired"].all() and np.allclose(dkd["diff"], [3.0, 3.0, 3.0])  # same-seed differences
    kd = d[d["row"] == "KD"].set_index("seed")
    assert kd.loc[0, "paired"] and kd.loc[0, "diff"] == pytest.approx(1.0)
    assert not kd.loc[5, "paired"] and kd.loc[5, "diff"] == pytest.approx(6.0)  # no CE seed 5: CE's mean
    with pytest.raises(ValueError):
        plots.differences_from(_runs(), "nothing")


def test_plot_vs_baseline_draws_every_seed_the_range_and_the_verdict():
    fig = plots.plot_vs_baseline(_runs(), "CE")
    ax = fig.axes[0]
    xs = np.sort(np.concatenate([c.get_offsets()[:, 0] for c in ax.collections]))
    assert np.allclose(xs, [-1, 0, 1, 1, 3, 3, 3, 6])  # every run but the teacher, in points
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "CE: 3 seeds, range 2.00"
    assert labels[1] == "DKD: +3.00 (3 seeds, beyond the seed spread)"  # gap 3 > the larger range 2
    assert labels[2].startswith("KD: +3.50 (2 seeds, within the seed spread)")
    lo, hi = ax.get_xlim()
    assert -2 < lo < -1 and 6 < hi < 8  # zoomed to the data, not drawn from 0 %
    title = ax.get_title()
    assert "teacher is +9.00 points from CE, off this scale" in title and "above its teacher" not in title
    assert ax.get_legend() is None and fig.legends  # the legend sits below the axes
    assert fig._suptitle is None  # real data: no synthetic note


def test_plot_vs_baseline_remarks_a_student_above_its_teacher():
    frame = _runs()
    frame.loc[frame["row"] == "teacher", "test_acc"] = 0.44
    fig = plots.plot_vs_baseline(frame.assign(dataset="synthetic"), "CE")
    ax = fig.axes[0]
    assert "above its teacher" not in ax.get_title()  # DKD and KD average 44 %: level with it, not above
    assert any(line.get_label() == "the teacher" for line in ax.lines)  # inside the axis: drawn
    assert plots.SYNTHETIC_NOTE in fig._suptitle.get_text()
    frame.loc[frame["row"] == "teacher", "test_acc"] = 0.435
    title = plots.plot_vs_baseline(frame, "CE").axes[0].get_title()
    assert "above its teacher: DKD (+0.50), KD (+0.50) points" in title


def test_signed_has_no_negative_zero():
    assert plots.signed(-0.001) == "0.00" and plots.signed(0.004) == "0.00" and plots.signed(0.0) == "0.00"
    assert (
        plots.signed(1.234) == "+1.23" and plots.signed(-0.4) == "-0.40" and plots.signed(-0.04, 1) == "0.0"
    )
    assert plots.signed(float("nan")) == "nan"


def test_grid_says_its_range_beside_the_seed_spread():
    import pandas as pd

    grid = pd.DataFrame({"alpha": [0.5, 0.5, 1.0, 1.0], "beta": [2.0, 8.0, 2.0, 8.0],
                         "test_acc": [0.480, 0.485, 0.490, 0.475]})  # fmt: skip
    title = plots.plot_grid(grid, seed_range=1.6).axes[0].get_title()
    assert "range over the grid 1.50 points, within the seed range of 1.60: noise" in title
    title = plots.plot_grid(grid, seed_range=1.0).axes[0].get_title()
    assert "range over the grid 1.50 points, beyond the seed range of 1.00" in title
    assert "the seed range is unknown" in plots.plot_grid(grid).axes[0].get_title()
    texts = [t.get_text() for t in plots.plot_grid(grid).axes[0].texts]
    assert texts and not any(t.startswith("-0") or t.startswith("+0") for t in texts)


def test_sweep_band_and_range_note():
    import pandas as pd

    summary = pd.DataFrame({"T": [2, 4, 8], "test_mean": [48.0, 49.0, 48.5], "test_std": [np.nan] * 3})
    fig = plots.plot_sweep(summary, x="T", ax_title="DKD vs T", seed_range=1.6)
    ax = fig.axes[0]
    assert "range over T 1.00 points, within the seed range of 1.60: noise" in ax.get_title()
    band = [p for p in ax.patches if "seed range" in p.get_label()]
    assert len(band) == 1
    assert ax.get_legend() is None and fig.legends


def test_clipped_values_are_counted_and_labelled():
    import pandas as pd

    frame = pd.DataFrame({"p_t": [0.2, 0.5, 0.9, 0.99], "nckd": [0.1, 0.2, 0.3, 0.4],
                          "tckd": [0.01, 1e-9, 0.0, 0.02], "kd_nckd": [0.08, 0.1, 0.03, 0.004]})  # fmt: skip
    ax = plots.plot_tckd_vs_nckd(frame).axes[0]
    assert any("2 of 4 values < 1e-07, drawn at 1e-07" in t.get_text() for t in ax.texts)
    ax = plots.plot_suppression(frame).axes[0]
    assert not ax.texts  # nothing below the floor: no note


def test_legends_sit_outside_the_axes():
    fig = plots.plot_history({"a": _history(), "b": _history(shift=0.1)}, metrics=("train_loss", "val_acc"))
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["a", "b"]  # each run once, not once per panel

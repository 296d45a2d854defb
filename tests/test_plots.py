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
# that do not stretch a single seed's noise, one meaning per colour, no reference beside synthetic bars.


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


def test_no_reference_beside_synthetic_bars():
    import pandas as pd

    summary = pd.DataFrame({"row": ["CE", "DKD α=1 β=8"], "epochs": [2, 2], "runs": [1, 1],
                            "test_mean": [40.0, 41.0], "test_std": [np.nan, np.nan]})  # fmt: skip
    reference = {"CE": 80.49, "DKD α=1 β=8": 87.21}
    fake = plots.plot_bars(summary, reference=reference, dataset="synthetic")
    real = plots.plot_bars(summary, reference=reference, dataset="cifar10")
    assert len(fake.axes[0].collections) == 0 and len(real.axes[0].collections) == 1  # the diamonds
    assert plots.SYNTHETIC_NOTE in fake._suptitle.get_text()
    sweeps = [
        plots.plot_sweep(summary.assign(T=[2, 4]), x="T", ax_title="T", reference={2: 80.0, 4: 81.0},
                         dataset=name)
        for name in ("synthetic", "cifar10")
    ]  # fmt: skip
    labels = [[line.get_label() for line in fig.axes[0].lines] for fig in sweeps]
    assert not any("reference" in label for label in labels[0])
    assert any("reference" in label for label in labels[1])


def test_selection_plots_the_change_per_run_not_a_diagonal():
    import pandas as pd

    frame = pd.DataFrame({"row": ["CE", "CE", "DKD α=1 β=8"], "dataset": ["synthetic"] * 3,
                          "test_acc": [0.40, 0.42, 0.45],
                          "test_acc_at_best_val": [0.40, 0.43, 0.44]})  # fmt: skip
    fig = plots.plot_selection(frame)
    ax = fig.axes[0]
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections])
    assert np.allclose(sorted(xs), [-1.0, 0.0, 1.0])  # best-val − last, in points
    assert "1 of 3 runs picked their last epoch" in ax.get_title()
    assert plots.SYNTHETIC_NOTE in fig._suptitle.get_text()

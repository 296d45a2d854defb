"""Each figure helper runs on small synthetic inputs and returns a Figure with the expected panels."""

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


def test_plot_temperature(data):
    fig = plots.plot_temperature(np.linspace(-2, 5, data.num_classes), data.classes, (1, 4))
    assert isinstance(fig, Figure) and len(fig.axes) == 2

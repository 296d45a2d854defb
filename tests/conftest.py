import pytest

from dkdlib import load_data


@pytest.fixture(scope="session")
def tiny_data():
    """Synthetic (not CIFAR) data small enough to train on in seconds: 600 train, 200 val, 200 test."""
    return load_data("synthetic", val_size=200, train_size=600, test_size=200)

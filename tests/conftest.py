import os

import pytest
import torch

from dkdlib import load_data

if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker (conftest.py at the root says why)
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_data():
    """Synthetic (not CIFAR) data small enough to train on in seconds: 600 train, 200 val, 200 test."""
    return load_data("synthetic", val_size=200, train_size=600, test_size=200)

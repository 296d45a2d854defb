"""Real learning on real images: a short CPU run of ResNet8 on CIFAR-10.

Uses the decoded CIFAR-10 in ../shared/data/cifar10 (a development copy next to the repository);
skipped cleanly where it is absent. The project itself never needs it.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from dkdlib import Config, fit, load_data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (SHARED / "to_npz.py").is_file(), reason=f"no CIFAR-10 copy at {SHARED}"),
]


@pytest.fixture(scope="module")
def cifar10_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifar10") / "cifar10.npz"
    subprocess.run([sys.executable, str(SHARED / "to_npz.py"), str(path)], check=True, capture_output=True)
    return path


def test_resnet8_learns_real_cifar10_on_cpu(cifar10_npz, tmp_path):
    data = load_data("cifar10", npz=cifar10_npz, val_size=1000, train_size=8000, test_size=2000)
    assert data.classes[:3] == ["airplane", "automobile", "bird"] and len(data.y_train) == 8000
    cfg = Config(model="resnet8", dataset="cifar10", data=str(cifar10_npz), epochs=3, batch_size=64,
                 lr=0.05, val_size=1000, train_size=8000, test_size=2000, out_dir=str(tmp_path),
                 device="cpu")  # fmt: skip
    run = fit(cfg, data=data, progress=False)
    # Measured on the 2-core CPU (2026-11-26, seed 0): test accuracy 0.464 after 3 epochs; chance 0.10.
    assert run.metrics["test_acc"] > 0.40
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]

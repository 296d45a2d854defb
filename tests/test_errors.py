"""Bad input at the library's boundary: one DKDError naming the problem and the fix, nothing written.

(Loss-, data-, model- and CLI-level cases live in test_losses, test_data, test_models and test_cli.)
"""

import warnings

import pytest
import torch

from dkdlib import Config, DKDError, fit
from dkdlib.checkpoint import load_checkpoint, load_model, save_checkpoint
from dkdlib.models import create_model
from dkdlib.train import pick_device


def tiny(tmp_path, **kw):
    base = dict(dataset="synthetic", epochs=1, batch_size=32, val_size=100, train_size=200, test_size=100,
                out_dir=str(tmp_path / "out"))  # fmt: skip
    return Config(**{**base, **kw})


def fake_checkpoint(path, num_classes, dataset):
    model = create_model("resnet8", num_classes)
    save_checkpoint(path, {"model_name": "resnet8", "num_classes": num_classes, "dataset": dataset,
                           "config": {"epochs": 1}, "epoch": 1, "complete": True,
                           "model": model.state_dict()})  # fmt: skip
    return path


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": "vgg99"}, "unknown model 'vgg99'; choose one of: resnet14, resnet18"),
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'; choose one of: cifar10, cifar100, synthetic"),
        ({"method": "crd"}, "unknown method 'crd'; choose one of: ce, kd, dkd, tckd, nckd"),
        ({"optimizer": "lamb"}, "unknown optimizer 'lamb'"),
        ({"schedule": "poly"}, "unknown schedule 'poly'"),
        ({"alpha": -1.0}, "alpha must be >= 0"),
        ({"beta": -8.0}, "beta must be >= 0"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"temperature": -4.0}, "temperature must be > 0"),
        ({"warmup": -1}, "warmup must be an integer number of epochs >= 0"),
        ({"epochs": 0}, "epochs must be an integer > 0"),
        ({"epochs": 2.5}, "epochs must be an integer > 0"),
        ({"batch_size": 0}, "batch_size must be an integer > 0"),
        ({"batch_size": 4096}, "batch_size=4096 is larger than the 200 training images"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"method": "dkd"}, "method 'dkd' distils from a teacher: set teacher="),
        (
            {"method": "kd", "teacher": "no/such/teacher.pt"},
            "teacher checkpoint no/such/teacher.pt does not exist",
        ),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"dataset": "cifar10", "data": "no/such/file.npz"}, "data file no/such/file.npz does not exist"),
    ],
)
def test_bad_config_one_clear_error_and_nothing_written(tmp_path, overrides, message):
    with pytest.raises(DKDError, match=message.replace("(", "\\(").replace(")", "\\)")):
        fit(tiny(tmp_path, **overrides), progress=False)
    assert not (tmp_path / "out" / "checkpoints").exists()
    assert not (tmp_path / "out" / "results").exists()


def test_teacher_with_other_classes_is_refused(tmp_path):
    teacher = fake_checkpoint(tmp_path / "c100.pt", 100, "cifar100")
    with pytest.raises(DKDError, match="predicts 100 classes \\(cifar100\\) but 10 are needed"):
        fit(tiny(tmp_path, method="dkd", teacher=str(teacher)), progress=False)
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_cifar100_checkpoint_for_cifar10(tmp_path):
    path = fake_checkpoint(tmp_path / "c100.pt", 100, "cifar100")
    with pytest.raises(DKDError, match="100 classes \\(cifar100\\) but 10 are needed here \\(cifar10\\)"):
        load_model(path, num_classes=10, dataset="cifar10")
    same_classes = fake_checkpoint(tmp_path / "s10.pt", 10, "synthetic")
    with pytest.raises(DKDError, match="was trained on synthetic, not cifar10"):
        load_model(same_classes, num_classes=10, dataset="cifar10")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_truncated_or_corrupted_checkpoint(tmp_path, damage):
    path = fake_checkpoint(tmp_path / "ok.pt", 10, "cifar10")
    blob = path.read_bytes()
    path.write_bytes({"truncate": blob[: len(blob) // 2], "garbage": b"\x00junk" * 100, "empty": b""}[damage])
    with pytest.raises(DKDError, match="truncated or corrupted.*delete it and retrain"):
        load_checkpoint(path)


def test_not_a_dkdlib_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(DKDError, match="not a dkdlib checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_cuda_request_without_cuda_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert pick_device("cuda") == torch.device("cpu")
    assert any("CUDA was requested but this machine has none" in str(w.message) for w in caught)
    assert pick_device("auto").type in ("cpu", "mps")


def test_data_and_config_must_agree(tmp_path):
    from dkdlib import load_data

    data = load_data("synthetic", val_size=100, train_size=200, test_size=100)
    with pytest.raises(
        DKDError, match="the data given are 'synthetic' but the config says dataset='cifar10'"
    ):
        fit(tiny(tmp_path, dataset="cifar10"), data=data, progress=False)

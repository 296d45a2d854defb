"""Chapter 1's ImageNet-pretrained teacher: the weights are found (a file the test plants where torch.hub
looks), `fit` starts from them, and offline the chapter gets one clear message."""

import torch
import torchvision

from dkdlib import fit
from dkdlib.notebook import imagenet_weights
from dkdlib.recipes import finetune_config, teacher_config

WEIGHTS = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1 file


def _plant(tmp_path, value: float = 0.125) -> None:
    reference = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        reference.conv1.weight.fill_(value)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / WEIGHTS)


def test_finetune_recipe_is_the_teacher_recipe_on_the_imagenet_resnet18():
    for fast in (True, False):
        cfg, teacher = finetune_config(fast), teacher_config(fast)
        assert (cfg.model, cfg.pretrained, cfg.lr) == ("resnet18_imagenet", True, 0.01)
        changed = {k for k, v in cfg.to_dict().items() if teacher.to_dict()[k] != v}
        assert changed == {"model", "pretrained", "lr"}


def test_offline_gives_one_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache

    def no_network(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    ok, message = imagenet_weights()
    # one plain sentence for a learner: no URL error, no file name
    assert not ok and "CIFAR-stem teacher only" in message
    assert "urlopen" not in message and WEIGHTS not in message
    monkeypatch.setenv("DKDLIB_IMAGENET", "0")
    assert imagenet_weights() == (False, "ImageNet-pretrained teacher skipped (DKDLIB_IMAGENET=0): "
                                  "the CIFAR-stem teacher only.")  # fmt: skip


def test_fit_finetunes_from_the_planted_weights(monkeypatch, tmp_path, tiny_data):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _plant(tmp_path)
    ok, message = imagenet_weights()
    assert ok, message
    cfg = finetune_config(True, epochs=1, batch_size=100, out_dir=str(tmp_path / "out"),
                          train_size=600, val_size=200, test_size=200)  # fmt: skip
    run = fit(cfg, data=tiny_data, progress=False, save=False)
    conv1 = run.model.conv1.weight.detach()
    # A fresh (Kaiming) init has mean ~0; one epoch at lr <= 0.01 keeps the planted 0.125 close.
    assert abs(float(conv1.mean()) - 0.125) < 0.02, float(conv1.mean())
    assert run.model.fc.out_features == tiny_data.num_classes


def test_full_mode_on_a_cpu_skips_the_finetune_unless_its_run_is_at_hand(monkeypatch, tmp_path):
    """Hours of ResNet18 training on a CPU are never started by opening chapter 1 in full mode; a
    finished finetune (an output folder's checkpoint, or committed weights) is still shown."""
    monkeypatch.delenv("DKDLIB_MODE", raising=False)
    monkeypatch.setenv("DKDLIB_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("DKDLIB_WEIGHTS", "0")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _plant(tmp_path)  # the ImageNet weights are here, yet the CPU does not finetune
    ok, message = imagenet_weights()
    assert not ok and "Full mode on a CPU" in message and "would take hours" in message
    path = finetune_config().checkpoint_path
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a finished run")  # only its existence is asked here
    assert imagenet_weights()[0]

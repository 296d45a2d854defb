"""Model shapes, parameter counts (as in the official DKD code) and the pretrained path offline."""

import pytest
import torch
import torchvision

from dkdlib import DKDError, count_macs, count_parameters, create_model
from dkdlib.models import MODELS

PARAMS = {  # (10 classes, 100 classes), from REFERENCE.md §4
    "resnet8": (78_042, 83_892),
    "resnet20": (272_474, 278_324),
    "resnet56": (855_770, 861_620),
    "resnet8x4": (1_210_410, 1_233_540),
    "resnet32x4": (7_410_730, 7_433_860),
    "resnet18": (11_173_962, 11_220_132),
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts(name):
    assert count_parameters(create_model(name, 10)) == PARAMS[name][0]
    assert count_parameters(create_model(name, 100)) == PARAMS[name][1]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_shape(name):
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_macs_of_student_and_teacher():
    assert count_macs(create_model("resnet8")) == 12_501_632  # ≈ 12.5 M
    assert count_macs(create_model("resnet18")) == 555_422_720  # ≈ 555 M


def test_unknown_model_lists_valid_names():
    with pytest.raises(DKDError, match="unknown model 'resnet9'.*resnet18.*resnet8"):
        create_model("resnet9")


def test_pretrained_only_for_imagenet_resnet18():
    with pytest.raises(DKDError, match="no pretrained weights"):
        create_model("resnet8", pretrained=True)


def test_pretrained_without_network_says_how_to_get_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache → a download would be needed

    def no_network(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(DKDError, match="could not fetch the ImageNet weights.*resnet18-f37072fd.pth"):
        create_model("resnet18_imagenet", pretrained=True)


def test_pretrained_loads_weights_from_the_torch_hub_cache(monkeypatch, tmp_path):
    """Users download the weights once; offline we plant a file where torch.hub looks for it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        reference.conv1.weight.fill_(0.125)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    model = create_model("resnet18_imagenet", num_classes=10, pretrained=True)
    assert torch.equal(model.conv1.weight, reference.conv1.weight)  # ImageNet body loaded
    assert model.fc.out_features == 10  # new head for our classes


def plant_imagenet_weights(monkeypatch, tmp_path) -> dict:
    """A torchvision ResNet18 state where every tensor is distinct, planted where torch.hub looks."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = torchvision.models.resnet18(weights=None).state_dict()
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in state.items()}
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    return state


def test_cifar_resnet18_pretrained_takes_imagenet_weights_but_conv1_and_fc(monkeypatch, tmp_path):
    """The reference's teacher: CIFAR stem (3x3, no max-pool) and new head fresh, the rest ImageNet."""
    imagenet = plant_imagenet_weights(monkeypatch, tmp_path)
    torch.manual_seed(0)
    scratch = create_model("resnet18", 10)
    torch.manual_seed(0)
    model = create_model("resnet18", 10, pretrained=True)
    assert count_parameters(model) == 11_173_962
    own = model.state_dict()
    assert torch.equal(own["bn1.weight"], imagenet["bn1.weight"])
    assert torch.equal(own["layers.0.conv1.weight"], imagenet["layer1.0.conv1.weight"])
    assert torch.equal(own["layers.3.bn2.running_var"], imagenet["layer2.1.bn2.running_var"])
    assert torch.equal(own["layers.6.shortcut.0.weight"], imagenet["layer4.0.downsample.0.weight"])
    assert torch.equal(own["layers.7.conv2.weight"], imagenet["layer4.1.conv2.weight"])
    taken = [k for k in own if not k.startswith(("conv1.", "fc."))]
    assert len(taken) == len(imagenet) - 3  # all but conv1.weight, fc.weight, fc.bias
    for k in ("conv1.weight", "fc.weight", "fc.bias"):  # fresh, as the same seed makes them from scratch
        assert torch.equal(own[k], scratch.state_dict()[k]), k
    assert own["conv1.weight"].shape == (64, 3, 3, 3) and own["fc.weight"].shape == (10, 512)


def test_cifar_resnet18_pretrained_without_network_says_how_to_get_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(DKDError, match="could not fetch the ImageNet weights.*resnet18-f37072fd.pth"):
        create_model("resnet18", pretrained=True)

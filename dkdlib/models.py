"""CIFAR-sized ResNets as in the official DKD code (mdistiller: 3x3 stem, stages of basic blocks, average
pooling, linear head), plus torchvision's ImageNet ResNet18; `create_model` is the one entry point."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .errors import DKDError

__all__ = ["MODELS", "create_model", "count_parameters", "count_macs"]


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a 1x1 conv + BN shortcut when stride or width changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 images: 3x3 stem, one stage per width, stride 2 between stages, no max-pool."""

    def __init__(self, stem: int, widths: list[int], blocks: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        layers, in_planes = [], stem
        for i, width in enumerate(widths):
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(in_planes, width, stride))
                in_planes = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def resnet18_imagenet(num_classes: int = 10, pretrained: bool = False) -> nn.Module:
    """torchvision's ResNet18 (7x7 stem, max-pool), optionally with ImageNet weights, and a new head."""
    import torchvision

    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1 if pretrained else None
    try:
        model = torchvision.models.resnet18(weights=weights)
    except Exception as err:  # (with weights) URLError, HTTPError, SSL errors, hash mismatch...
        raise DKDError("could not fetch the ImageNet weights for resnet18_imagenet "
                       f"({type(err).__name__}: {err}). Connect to the internet once, or copy "
                       f"'{weights.url.rsplit('/', 1)[-1]}' into {torch.hub.get_dir()}/checkpoints/, or "
                       "use pretrained=False.") from err  # fmt: skip
    model.fc = nn.Linear(model.fc.in_features, num_classes)  # new head for our classes
    return model


def _imagenet_resnet18_state() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet18 weights (from the torch hub cache, downloaded once)."""
    return resnet18_imagenet(pretrained=True).state_dict()


def imagenet_weights_error() -> str | None:
    """None when the ImageNet ResNet18 weights load here (from the torch hub cache, downloading them
    once, about 45 MB); otherwise why not, with what to do about it."""
    try:
        _imagenet_resnet18_state()
    except DKDError as err:
        return str(err)
    return None


def _imagenet_key(name: str) -> str | None:
    """The torchvision ResNet18 entry our CIFAR-stem ResNet18's `name` takes its value from (blocks 0..7
    here, layer1..layer4 there); None for the stem conv and the head, which keep their initialisation."""
    if name.startswith(("conv1.", "fc.")):
        return None
    if name.startswith("layers."):
        _, index, rest = name.split(".", 2)
        block = int(index)
        rest = rest.replace("shortcut.", "downsample.")
        return f"layer{block // 2 + 1}.{block % 2}.{rest}"
    return name  # the stem's BatchNorm, bn1: same shape, kept (as the reference did)


def cifar_resnet18_imagenet_init(model: nn.Module) -> nn.Module:
    """Load ImageNet weights into a CIFAR-stem ResNet18 in all but conv1 and fc (the reference's teacher)."""
    source = _imagenet_resnet18_state()
    mapped = {}
    for name, value in model.state_dict().items():
        key = _imagenet_key(name)
        if key is None:
            continue
        if key not in source or source[key].shape != value.shape:
            raise DKDError(f"the ImageNet ResNet18 weights do not fit {name} (looked for {key}); "
                           "the weights file is not torchvision's resnet18")  # fmt: skip
        mapped[name] = source[key]
    model.load_state_dict(mapped, strict=False)  # conv1 and fc keep their initialisation
    return model


# name -> (stem width, stage widths, basic blocks per stage)
_CIFAR_RESNETS = {
    "resnet8": (16, [16, 32, 64], 1),
    "resnet14": (16, [16, 32, 64], 2),
    "resnet20": (16, [16, 32, 64], 3),
    "resnet32": (16, [16, 32, 64], 5),
    "resnet56": (16, [16, 32, 64], 9),
    "resnet8x4": (32, [64, 128, 256], 1),
    "resnet32x4": (32, [64, 128, 256], 5),
    "resnet18": (64, [64, 128, 256, 512], 2),  # CIFAR stem: 3x3 conv, no max-pool
}

MODELS: dict[str, Callable[..., nn.Module]] = {
    name: (lambda num_classes, spec=spec: CifarResNet(*spec, num_classes=num_classes))
    for name, spec in _CIFAR_RESNETS.items()
}
MODELS["resnet18_imagenet"] = lambda num_classes, pretrained=False: resnet18_imagenet(num_classes, pretrained)


def create_model(name: str, num_classes: int = 10, pretrained: bool = False) -> nn.Module:
    """Build a model by name, e.g. ``create_model("resnet8", num_classes=10)``; pretrained: ImageNet
    weights, for "resnet18_imagenet" and "resnet18" (in every layer but conv1 and fc)."""
    if name not in MODELS:
        raise DKDError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise DKDError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if name == "resnet18_imagenet":
        return MODELS[name](num_classes, pretrained=pretrained)
    if pretrained and name != "resnet18":
        raise DKDError(f"no pretrained weights exist for {name!r}; only 'resnet18' (CIFAR stem, ImageNet "
                       "body) and 'resnet18_imagenet' have them (ImageNet). Train it from scratch with "
                       "pretrained=False.")  # fmt: skip
    model = MODELS[name](num_classes)
    return cifar_resnet18_imagenet_init(model) if pretrained else model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, image_size: int = 32) -> int:
    """Multiply-accumulates of one forward pass on one image (torch's FLOP counter / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size, device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2

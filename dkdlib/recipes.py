"""The experiments of the tutorial series and of the reference table, as plain `Config`s.

Two scales of the same recipes:
- full (default): real CIFAR-10, the schedules the chapters discuss; minutes on a GPU.
- fast (`DKDLIB_FAST=1`, or `fast=True`): synthetic data, tiny subsets, two epochs; seconds on a CPU.
  Same code path, smaller numbers — for CI (nbval) and for reading the notebooks without a GPU.
"""

from __future__ import annotations

import os
from dataclasses import replace

from .train import Config

__all__ = ["fast_mode", "base", "teacher_config", "student_config", "REFERENCE", "reference_configs"]


def fast_mode() -> bool:
    """True when the environment variable DKDLIB_FAST is set to 1/true/yes."""
    return os.environ.get("DKDLIB_FAST", "").strip().lower() in ("1", "true", "yes")


def base(fast: bool | None = None, **overrides) -> Config:
    """Data settings shared by every run of the series.

    Full: CIFAR-10 (torchvision download into data/, or the .npz named by DKDLIB_DATA), 45k/5k/10k.
    Fast: SYNTHETIC images (not CIFAR), 1000 train / 500 val / 500 test, batch 32, two epochs.
    """
    fast = fast_mode() if fast is None else fast
    out_dir = os.environ.get("DKDLIB_OUT", "data")
    if fast:
        cfg = Config(dataset="synthetic", val_size=500, train_size=1000, test_size=500, epochs=2,
                     batch_size=32, warmup=2, out_dir=out_dir)  # fmt: skip
    else:
        cfg = Config(dataset="cifar10", data=os.environ.get("DKDLIB_DATA") or None, out_dir=out_dir)
    return replace(cfg, **overrides)


def teacher_config(fast: bool | None = None, **overrides) -> Config:
    """The teacher: CIFAR-stem ResNet18 from scratch, SGD + one-cycle, 15 epochs.

    Fast mode trains a ResNet20 instead: a ResNet18 trains at only ~30 images/s on a 2-core CPU.
    """
    if fast_mode() if fast is None else fast:
        cfg = base(True, model="resnet20", method="ce", lr=0.1)
    else:
        cfg = base(False, model="resnet18", method="ce", batch_size=256, lr=0.1, epochs=15)
    return replace(cfg, **overrides)


def student_config(
    method: str = "ce", teacher: str | None = None, fast: bool | None = None, **overrides
) -> Config:
    """A ResNet8 student: SGD + one-cycle, batch 128, 30 epochs; the same schedule for every method.

    method: ce | kd | dkd | tckd | nckd. KD uses the official weights (CE 0.1, KD 0.9, no warm-up);
    DKD uses α=1, β=8, T=4 and a 20-epoch warm-up (2 in fast mode).
    """
    teacher = teacher if method != "ce" else None
    if fast_mode() if fast is None else fast:
        cfg = base(True, model="resnet8", method=method, teacher=teacher, lr=0.05)
    else:
        cfg = base(False, model="resnet8", method=method, teacher=teacher, batch_size=128, lr=0.05, epochs=30)
    if method == "kd":
        cfg = replace(cfg, ce_weight=0.1, kd_weight=0.9, warmup=0)
    return replace(cfg, **overrides)


# The reference table (CIFAR-10 test accuracy; val in brackets where reported). The reference's
# recipe: Adam, batch 128; its teacher was an ImageNet-pretrained ResNet18, finetuned for 50 epochs.
REFERENCE = [
    # row name,        method, epochs, alpha, beta, test,   val
    ("teacher",        "ce",   50,     None,  None, 0.9110, 0.9122),
    ("student",        "ce",   50,     None,  None, 0.8049, 0.8014),
    ("dkd_100",        "dkd",  100,    1.0,   8.0,  0.8721, 0.8766),
    ("dkd_200",        "dkd",  200,    1.0,   8.0,  0.8769, 0.8858),
    ("tckd_a1",        "tckd", 100,    1.0,   0.0,  0.8422, None),
    ("tckd_a0.5",      "tckd", 100,    0.5,   0.0,  0.8482, None),
    ("tckd_a0.25",     "tckd", 100,    0.25,  0.0,  0.8302, None),
    ("nckd_b2",        "nckd", 100,    0.0,   2.0,  0.8387, None),
    ("nckd_b4",        "nckd", 100,    0.0,   4.0,  0.8295, None),
    ("nckd_b8",        "nckd", 100,    0.0,   8.0,  0.8317, None),
]  # fmt: skip


def reference_configs(
    teacher: str | None, seed: int = 0, scale: float = 1.0, teacher_overrides: dict | None = None, **overrides
) -> dict[str, Config]:
    """One Config per reference row (Adam lr 1e-3, batch 128), epochs multiplied by `scale`.

    The teacher row trains the CIFAR-stem ResNet18 from scratch, as ImageNet weights may not be at
    hand; teacher_overrides=dict(model="resnet18_imagenet", pretrained=True) follows the reference.
    Two fair baselines are added at the distilled students' 100 epochs: CE and classic KD.
    `overrides` apply to every row (e.g. data=..., train_size=...).
    """
    rows = list(REFERENCE) + [
        ("ce_100", "ce", 100, None, None, None, None),
        ("kd_100", "kd", 100, None, None, None, None),
    ]
    configs = {}
    for name, method, epochs, alpha, beta, _, _ in rows:
        cfg = base(False, method=method, epochs=max(1, round(epochs * scale)), optimizer="adam",
                   lr=1e-3, weight_decay=0.0, schedule="constant", batch_size=128, seed=seed,
                   model="resnet8", teacher=None if method == "ce" else teacher, tag=f"ref:{name}",
                   warmup=max(1, round(20 * scale)) if method in ("dkd", "tckd", "nckd") else 0)  # fmt: skip
        if alpha is not None:
            cfg = replace(cfg, alpha=alpha, beta=beta)
        if method == "kd":
            cfg = replace(cfg, ce_weight=0.1, kd_weight=0.9)
        if name == "teacher":
            cfg = replace(cfg, model="resnet18", **(teacher_overrides or {}))
        configs[name] = replace(cfg, **overrides)
    return configs

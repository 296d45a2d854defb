"""The experiments of the tutorial series and of the reference table, as plain `Config`s.

Three scales of the same recipes, chosen by environment variables (so a notebook needs no edits):
- full (default): real CIFAR-10, the chapters' schedules; minutes on a GPU.
- reduced (`DKDLIB_REDUCED=1`): real CIFAR-10, a 5k-image subset, ResNet20 teacher, 4 epochs —
  the full pipeline on real images in minutes on a CPU. Numbers far below the full ones.
- fast (`DKDLIB_FAST=1`): SYNTHETIC images (not CIFAR), 1k images, two epochs; seconds on a CPU.
  For CI (nbval) and quick reading. Same code path, smaller numbers.
Full mode reads CIFAR-10 from the .npz named by `DKDLIB_DATA` when set, else downloads it.
"""

from __future__ import annotations

import os
from dataclasses import replace

from .config import Config

__all__ = [
    "mode", "base", "teacher_config", "finetune_config", "student_config", "ABLATION_SIZES", "ablation_specs",
    "series_configs", "REFERENCE", "reference_configs",
]  # fmt: skip


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def mode() -> str:
    """ "fast" if DKDLIB_FAST is set, else "reduced" if DKDLIB_REDUCED is set, else "full"."""
    return "fast" if _flag("DKDLIB_FAST") else "reduced" if _flag("DKDLIB_REDUCED") else "full"


def _mode(fast: bool | None) -> str:
    return mode() if fast is None else ("fast" if fast else "full")


def base(fast: bool | None = None, **overrides) -> Config:
    """Data settings shared by every run of the series (fast=None: from the environment)."""
    m = _mode(fast)
    out_dir = os.environ.get("DKDLIB_OUT", "data")
    npz = os.environ.get("DKDLIB_DATA") or None
    if m == "fast":
        cfg = Config(dataset="synthetic", val_size=500, train_size=1000, test_size=500, epochs=2,
                     batch_size=32, warmup=2, out_dir=out_dir)  # fmt: skip
    elif m == "reduced":
        cfg = Config(dataset="cifar10", data=npz, val_size=1000, train_size=5000, test_size=2000,
                     epochs=4, batch_size=64, warmup=2, out_dir=out_dir)  # fmt: skip
    else:
        cfg = Config(dataset="cifar10", data=npz, out_dir=out_dir)
    return replace(cfg, **overrides)


def teacher_config(fast: bool | None = None, **overrides) -> Config:
    """The teacher: CIFAR-stem ResNet18 from scratch, SGD + one-cycle, batch 256, 15 epochs.

    Fast and reduced modes train a ResNet20 instead: a ResNet18 trains at ~30 images/s on a 2-core CPU.
    """
    if _mode(fast) == "full":
        cfg = base(fast, model="resnet18", method="ce", batch_size=256, lr=0.1, epochs=15)
    else:
        cfg = base(fast, model="resnet20", method="ce", lr=0.1)
    return replace(cfg, **overrides)


def finetune_config(fast: bool | None = None, **overrides) -> Config:
    """Chapter 1's second teacher: torchvision's ImageNet-pretrained ResNet18 (7×7 stem, new 10-class
    head), finetuned with the teacher's schedule at a tenth of its peak learning rate (0.01): the
    pretrained body needs nudging, not relearning. Needs the ImageNet weights (a download, once)."""
    cfg = teacher_config(fast, model="resnet18_imagenet", pretrained=True, lr=0.01)
    return replace(cfg, **overrides)


def student_config(
    method: str = "ce", teacher: str | None = None, fast: bool | None = None, **overrides
) -> Config:
    """A ResNet8 student: SGD + one-cycle, batch 128, 30 epochs; the same schedule for every method.

    method: ce | kd | dkd | tckd | nckd. KD uses the official weights (CE 0.1, KD 0.9, no warm-up);
    DKD uses α=1, β=8, T=4 and a 20-epoch warm-up (2 in fast and reduced modes).
    """
    teacher = teacher if method != "ce" else None
    cfg = base(fast, model="resnet8", method=method, teacher=teacher, lr=0.05)
    if _mode(fast) == "full":
        cfg = replace(cfg, batch_size=128, epochs=30)
    if method == "kd":
        cfg = replace(cfg, ce_weight=0.1, kd_weight=0.9, warmup=0)
    return replace(cfg, **overrides)


# Chapter 6's sweeps: their sizes in full mode, and a small version for the fast and reduced modes.
ABLATION_SIZES = {
    "full": dict(
        grid_alpha=(0.5, 1.0, 2.0),
        grid_beta=(2.0, 4.0, 8.0),
        temperatures=(1.0, 2.0, 4.0, 8.0),
        seeds=(0, 1, 2),
    ),
    "small": dict(grid_alpha=(0.5, 1.0), grid_beta=(2.0, 8.0), temperatures=(2.0, 4.0), seeds=(0, 1)),
}
ALPHAS, BETAS = (1.0, 0.5, 0.25), (2.0, 4.0, 8.0)  # the reference's TCKD-only and NCKD-only rows


def ablation_specs(mode_name: str | None = None) -> dict[str, dict]:
    """Chapter 6's student sweeps, {sweep: {label: (method, overrides of student_config)}}.

    mode_name: "full", "reduced" or "fast" (None: `mode()`); the latter two get the small sizes.
    """
    size = ABLATION_SIZES["full" if (mode_name or mode()) == "full" else "small"]
    return {
        "tckd": {f"α={a:g}": ("tckd", dict(alpha=a, beta=0.0)) for a in ALPHAS},
        "nckd": {f"β={b:g}": ("nckd", dict(alpha=0.0, beta=b)) for b in BETAS},
        "context": {"CE": ("ce", {}), "DKD": ("dkd", {})},
        "grid": {
            f"α={a:g} β={b:g}": ("dkd", dict(alpha=a, beta=b))
            for a in size["grid_alpha"]
            for b in size["grid_beta"]
        },
        "temperature": {f"T={t:g}": ("dkd", dict(temperature=t)) for t in size["temperatures"]},
        "seeds": {f"{m} seed {s}": (m, dict(seed=s)) for m in ("ce", "kd", "dkd") for s in size["seeds"]},
    }


def series_configs(teacher: str | None = None, fast: bool | None = None) -> dict[str, Config]:
    """Every run the chapters train, in the chapters' order and once each: {label: Config}.

    The teacher (chapter 1), the CE, KD and DKD students (chapters 2–5), then chapter 6's sweeps
    (`ablation_specs`). Students distil from `teacher` (default: the series teacher's checkpoint).
    Chapter 1's optional ImageNet-pretrained teacher is left out: it needs internet.
    """
    m = _mode(fast)
    teacher_cfg = teacher_config(fast)
    teacher = teacher or str(teacher_cfg.checkpoint_path)
    configs = {"teacher": teacher_cfg}
    for method in ("ce", "kd", "dkd"):
        configs[method] = student_config(method, teacher, fast)
    for sweep, specs in ablation_specs(m).items():
        for label, (method, overrides) in specs.items():
            configs[f"{sweep} {label}"] = student_config(method, teacher, fast, **overrides)
    seen: set[str] = set()
    unique = {}
    for label, cfg in configs.items():  # a run shown in several chapters trains once
        if cfg.run_name() not in seen:
            seen.add(cfg.run_name())
            unique[label] = cfg
    return unique


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
            cfg = replace(cfg, **{"model": "resnet18", **(teacher_overrides or {})})
        configs[name] = replace(cfg, **overrides)
    return configs

"""Notebook conveniences: one `setup()` call at the top of every chapter.

It says which mode the series runs in (full, reduced or fast: see `dkdlib.recipes`),
which device and library versions are in use, points run outputs at one folder shared by all chapters
(Google Drive on Colab when asked, so a disconnect loses nothing) and sets a readable plot style.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .recipes import mode

__all__ = ["setup", "in_colab", "BANNERS"]

BANNERS = {
    "fast": "FAST MODE (DKDLIB_FAST=1): synthetic images (not CIFAR-10), tiny runs. "
    "The numbers below are smoke-test outputs, not results.",
    "reduced": "REDUCED MODE (DKDLIB_REDUCED=1): real CIFAR-10, but a 5k-image subset, a ResNet20 "
    "teacher and 4 epochs — far below full-schedule accuracy.",
    "full": "FULL MODE: CIFAR-10 and the chapters' full schedules.",
}


def in_colab() -> bool:
    return "google.colab" in sys.modules


def setup(drive: bool = False, quiet: bool = False) -> dict:
    """Pick the output folder, set the plot style and print mode, device and versions.

    drive: on Colab, keep checkpoints and results in Google Drive (MyDrive/dkdlib).
    Returns a dict with mode, device and out_dir.
    """
    import matplotlib
    import seaborn as sns
    import torch

    from .train import pick_device

    if "DKDLIB_OUT" not in os.environ:
        if in_colab() and drive:
            from google.colab import drive as gdrive  # type: ignore[import-not-found]

            gdrive.mount("/content/drive")
            os.environ["DKDLIB_OUT"] = "/content/drive/MyDrive/dkdlib"
        elif Path.cwd().name == "notebooks" and (Path.cwd().parent / "dkdlib").is_dir():
            os.environ["DKDLIB_OUT"] = str(Path.cwd().parent / "data")  # the repo's data/
        else:
            os.environ["DKDLIB_OUT"] = "data"
    sns.set_theme(context="notebook", style="whitegrid")
    matplotlib.rcParams["figure.dpi"] = 90
    m = mode()
    device = pick_device("auto")
    info = {"mode": m, "device": str(device), "out_dir": os.environ["DKDLIB_OUT"]}
    if not quiet:
        print(BANNERS[m])
        if device.type == "cuda":
            print(f"device: {torch.cuda.get_device_name()} (CUDA)")
        else:
            print(f"device: {device.type} — no GPU.", end=" ")
            if in_colab():
                print("In Colab: Runtime → Change runtime type → GPU, then run again.")
            elif m == "full":
                print("Full mode is slow on a CPU; set DKDLIB_FAST=1 for a quick smoke run.")
            else:
                print()
        print(f"torch {torch.__version__}; outputs in {info['out_dir']}")
    return info

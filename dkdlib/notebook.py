"""Notebook conveniences: one `setup()` call at the top of every chapter.

It says which mode the series runs in (full: CIFAR-10; fast: synthetic smoke runs, `DKDLIB_FAST=1`),
which device and library versions are in use, points run outputs at one folder shared by all chapters
(Google Drive on Colab when asked, so a disconnect loses nothing) and sets a readable plot style.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .recipes import fast_mode

__all__ = ["setup", "in_colab", "FAST_BANNER"]

FAST_BANNER = (
    "FAST MODE (DKDLIB_FAST=1): synthetic images (not CIFAR-10), tiny models and runs. "
    "The numbers below are smoke-test outputs on a CPU, not results."
)


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
    fast = fast_mode()
    device = pick_device("auto")
    info = {"mode": "fast" if fast else "full", "device": str(device), "out_dir": os.environ["DKDLIB_OUT"]}
    if not quiet:
        print(FAST_BANNER if fast else "FULL MODE: CIFAR-10 and the chapters' full schedules.")
        if device.type == "cuda":
            print(f"device: {torch.cuda.get_device_name()} (CUDA)")
        else:
            print(f"device: {device.type} — no GPU.", end=" ")
            if in_colab():
                print("In Colab: Runtime → Change runtime type → GPU, then run again.")
            elif not fast:
                print("Full mode is slow on a CPU; set DKDLIB_FAST=1 for a quick smoke run.")
            else:
                print()
        print(f"torch {torch.__version__}; outputs in {info['out_dir']}")
    return info

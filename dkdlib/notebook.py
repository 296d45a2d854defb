"""Notebook conveniences: one `setup()` call at the top of every chapter, and where Colab finds dkdlib.

`setup()` says which mode the series runs in (full, reduced or fast: see `dkdlib.recipes`), which
device and library versions are in use, points run outputs at one folder shared by all chapters
(Google Drive on Colab, so a disconnect or a new Colab VM loses nothing), shows figures inline and
sets a readable plot style.

`REPOSITORY` is the one place that says where the package lives on GitHub: every chapter's
"Open in Colab" badge and its Colab install cell are made from it (`badge`, `INSTALL`).
`python scripts/colab_links.py` rewrites them after a change, and a test checks they agree.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .config import env_flag, repo_root
from .recipes import mode

__all__ = [
    "setup", "in_colab", "use_drive", "BANNERS", "REPOSITORY", "BRANCH", "INSTALL", "colab_url", "badge",
    "DRIVE_FOLDER", "imagenet_weights",
]  # fmt: skip

# Where the package lives on GitHub (owner/name), and the branch whose notebooks the badges open.
REPOSITORY = "dkdlib/dkdlib"
BRANCH = "main"
# The install line of every chapter's Colab cell: the repository's default branch (Colab's torch is kept).
INSTALL = f'%pip install -q "dkdlib @ git+https://github.com/{REPOSITORY}"'
DRIVE_FOLDER = "/content/drive/MyDrive/dkdlib"

BANNERS = {
    "fast": "FAST MODE (DKDLIB_FAST=1): synthetic images (not CIFAR-10), tiny runs. "
    "The numbers below are smoke-test outputs, not results.",
    "reduced": "REDUCED MODE (DKDLIB_REDUCED=1): real CIFAR-10, but a 5k-image subset, a ResNet20 "
    "teacher and 4 epochs — far below full-schedule accuracy.",
    "full": "FULL MODE: CIFAR-10 and the chapters' full schedules.",
}


def colab_url(notebook: str) -> str:
    """The Colab address that opens `notebook` (a file name in notebooks/) from GitHub."""
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/notebooks/{notebook}"


def badge(notebook: str) -> str:
    """The "Open in Colab" badge (Markdown) of a chapter."""
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)})"
    )


def in_colab() -> bool:
    return "google.colab" in sys.modules


def use_drive(drive: bool | None = None) -> bool:
    """Whether outputs go to Google Drive: only on Colab; there by default, unless `drive=False` or the
    environment variable DKDLIB_DRIVE=0."""
    if not in_colab():
        return False
    if drive is not None:
        return drive
    return env_flag("DKDLIB_DRIVE", default=True)


def imagenet_weights() -> tuple[bool, str]:
    """Can chapter 1 finetune the ImageNet-pretrained ResNet18 here? (ok, one line saying so or why not).

    Loads the weights from the torch hub cache, downloading them once (about 45 MB) when there is a
    network. DKDLIB_IMAGENET=0 skips them (the CIFAR-stem teacher is the series' teacher either way).
    Full mode on a CPU skips the finetune too, unless its finished run is at hand (an output folder's
    checkpoint or committed weights): 15 epochs of a ResNet18 would take hours there.
    """
    from .models import imagenet_weights_error
    from .recipes import finetune_config
    from .train import pick_device
    from .weights import committed

    if not env_flag("DKDLIB_IMAGENET", default=True):
        return False, "ImageNet-pretrained teacher skipped (DKDLIB_IMAGENET=0): the CIFAR-stem teacher only."
    cfg = finetune_config()
    if mode() == "full" and pick_device("auto").type == "cpu":
        if not cfg.checkpoint_path.exists() and committed(cfg) is None:
            return False, (
                "Full mode on a CPU: finetuning the ImageNet ResNet18 for 15 epochs would take hours here, "
                "so this chapter skips it (a GPU runs it in minutes); the CIFAR-stem teacher only."
            )
    why = imagenet_weights_error()
    if why is not None:
        return False, (
            "No ImageNet weights here (offline?), so this chapter trains the CIFAR-stem teacher only; "
            f"the rest of the series uses that one anyway. To finetune too: {why}"
        )
    return True, "ImageNet weights for ResNet18 loaded: finetuning it next to the CIFAR-stem teacher."


def _inline_figures() -> None:
    """Show figures inline in a Jupyter kernel, whatever MPLBACKEND says (nbconvert sets Agg)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
        shell.run_line_magic("matplotlib", "inline")


def setup(drive: bool | None = None, quiet: bool = False) -> dict:
    """Pick the output folder, show figures inline, set the plot style and print mode, device, versions.

    drive: keep checkpoints and results in Google Drive (MyDrive/dkdlib), so every chapter — each its
    own Colab VM — finds the runs of the earlier ones. Default: yes on Colab, unless DKDLIB_DRIVE=0;
    `setup(drive=False)` opts out. Ignored outside Colab, and when DKDLIB_OUT is set.
    Returns a dict with mode, device and out_dir.
    """
    import matplotlib
    import seaborn as sns
    import torch

    from .train import pick_device
    from .weights import weights_dir

    if "DKDLIB_OUT" not in os.environ:
        if use_drive(drive):
            from google.colab import drive as gdrive  # type: ignore[import-not-found]

            gdrive.mount("/content/drive")
            os.environ["DKDLIB_OUT"] = DRIVE_FOLDER
        elif Path.cwd().name == "notebooks" and repo_root(Path.cwd().parent):
            os.environ["DKDLIB_OUT"] = str(Path.cwd().parent / "data")  # the repo's data/
        else:
            os.environ["DKDLIB_OUT"] = "data"
    _inline_figures()
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
        folder = weights_dir()
        committed = sorted(folder.glob("*.pt")) if folder is not None else []
        if committed:
            print(f"{len(committed)} finished runs committed in {folder}: the chapters load those instead of "
                  "training them (DKDLIB_WEIGHTS=0 trains everything here)")  # fmt: skip
        if in_colab():
            print(
                "Google Drive keeps the runs, so later chapters find them (setup(drive=False) or "
                "DKDLIB_DRIVE=0: keep them on this VM only)."
                if info["out_dir"] == DRIVE_FOLDER
                else "Outputs stay on this Colab VM and are lost when it stops (setup() keeps them in Drive)."
            )
    return info

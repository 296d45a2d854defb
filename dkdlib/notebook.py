"""Serves the chapters: `setup()` at the top of every chapter (on Colab: Drive, CIFAR-10, the weights)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .config import env_flag, repo_root
from .recipes import mode

DRIVE_FOLDER = "/content/drive/MyDrive/dkdlib"
# On Colab: what stays on the machine's own disk (CIFAR-10 and the fetched committed weights); only
# checkpoints and records go to Drive.
LOCAL_FOLDER = "/content/dkdlib-local"

BANNERS = {
    "fast": "FAST MODE (DKDLIB_MODE=fast): synthetic images (not CIFAR-10), tiny runs. "
    "The numbers below are smoke-test outputs, not results.",
    "cpu": "CPU SCALE (DKDLIB_MODE=cpu): full CIFAR-10 (45k train / 5k val / 10k test), a ResNet20 teacher "
    "(25 epochs) and ResNet8 students (20 epochs): schedules sized for a 2-core CPU.",
    "full": "FULL MODE: CIFAR-10 and the chapters' full schedules.",
}


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
    DKDLIB_IMAGENET=0 skips it; so does full mode on a CPU, unless its finished run is at hand."""
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
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        why = imagenet_weights_error()  # the hub's download messages and URL errors stay out of the chapter
    if why is not None:
        return False, (
            "The ImageNet weights could not be downloaded here, so this chapter trains the CIFAR-stem "
            "teacher only (the one the rest of the series uses anyway)."
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


def choose_scale(scale: str | None) -> str:
    """Make `scale` (one of `recipes.MODES`) the series' mode unless the environment chooses one (tests and
    scripts/run_series.py do); returns the mode in force."""
    from .recipes import MODES

    if scale is not None:
        if scale not in MODES:
            raise ValueError(f"scale must be one of {', '.join(MODES)}; got {scale!r}")
        if not os.environ.get("DKDLIB_MODE", "").strip():
            os.environ["DKDLIB_MODE"] = scale
    return mode()


def local_cifar10(folder: str | os.PathLike = LOCAL_FOLDER) -> Path:
    """CIFAR-10 as one .npz on this machine's disk (downloaded once into `folder`): on Colab `setup()`
    points DKDLIB_DATA at it, so the images never go to Google Drive."""
    import numpy as np

    from .data import load_data

    folder = Path(folder)
    npz = folder / "cifar10.npz"
    if not npz.is_file():
        data = load_data("cifar10", root=folder, val_size=0)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "cifar10.tmp.npz"
        np.savez(tmp, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test,
                 class_names=np.array(data.classes))  # fmt: skip
        os.replace(tmp, npz)
    return npz


def fetch_weights(folder: str | os.PathLike) -> str | None:
    """Where a `pip install` lacks the committed weights (cpu and full modes), fetch them into `folder` and
    point DKDLIB_WEIGHTS there; one line saying what happened, or None when nothing was needed."""
    from .weights import OFF, fetch, weights_dir

    if mode() not in ("cpu", "full") or weights_dir() is not None:
        return None
    if os.environ.get("DKDLIB_WEIGHTS", "").strip().lower() in OFF:
        return None
    got, line = fetch(folder)
    if got is not None:
        os.environ["DKDLIB_WEIGHTS"] = str(got)
    return line


def setup(drive: bool | None = None, quiet: bool = False, scale: str | None = None) -> dict:
    """Pick the scale and the output folder, show figures inline, set the plot style and print mode,
    device, versions; returns {mode, device, out_dir}.

    scale: "cpu", "full" or "fast", unless the environment chooses (`choose_scale`).
    drive: on Colab, keep checkpoints and records in Google Drive (MyDrive/dkdlib), so every chapter (each
    its own Colab VM) finds the earlier ones' runs; default yes unless DKDLIB_DRIVE=0. CIFAR-10 and
    fetched weights stay on the machine's disk.
    """
    import matplotlib
    import seaborn as sns

    from .train import pick_device

    choose_scale(scale)
    if "DKDLIB_OUT" not in os.environ:
        os.environ["DKDLIB_OUT"] = _out_dir(drive)
    _inline_figures()
    sns.set_theme(context="notebook", style="whitegrid")
    matplotlib.rcParams["figure.dpi"] = 90
    info = {"mode": mode(), "device": str(pick_device("auto")), "out_dir": os.environ["DKDLIB_OUT"]}
    local = Path(LOCAL_FOLDER) if in_colab() else Path(info["out_dir"])
    if in_colab() and info["mode"] != "fast" and not os.environ.get("DKDLIB_DATA"):
        os.environ["DKDLIB_DATA"] = str(local_cifar10(local))  # on this machine's disk, not in Drive
    fetched = fetch_weights(local / "weights")
    if not quiet:
        _describe(info, fetched)
    return info


def _out_dir(drive: bool | None) -> str:
    """Where the chapters' runs go: Google Drive on Colab, the repository's data/ from its notebooks/."""
    if use_drive(drive):
        from google.colab import drive as gdrive  # type: ignore[import-not-found]

        gdrive.mount("/content/drive")
        return DRIVE_FOLDER
    if Path.cwd().name == "notebooks" and repo_root(Path.cwd().parent):
        return str(Path.cwd().parent / "data")
    return "data"


def _describe(info: dict, fetched: str | None) -> None:
    """Print the mode, the device, the versions and where runs come from and go."""
    import torch

    from .weights import weights_dir

    print(BANNERS[info["mode"]])
    if info["device"].startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name()} (CUDA)")
    else:
        hint = "In Colab: Runtime → Change runtime type → GPU, then run again." if in_colab() else ""
        if not in_colab() and info["mode"] == "full":
            hint = "Full mode is meant for a GPU; on a CPU use DKDLIB_MODE=cpu (or fast: a smoke run)."
        print(f"device: {info['device']} — no GPU. {hint}".rstrip())
    print(f"torch {torch.__version__}; outputs in {info['out_dir']}")
    if fetched:
        print(fetched)
    folder = weights_dir()
    committed = sorted(folder.glob("*.pt")) if folder is not None else []
    if committed:
        where = os.path.relpath(folder)  # relative: a committed output names no folder of this machine
        print(f"{len(committed)} finished runs committed in {where}: the chapters load those instead of "
              "training them (DKDLIB_WEIGHTS=0 trains everything here)")  # fmt: skip
    if in_colab():
        print("Google Drive keeps the checkpoints and records, so later chapters find them; CIFAR-10 stays "
              "on this machine (setup(drive=False) or DKDLIB_DRIVE=0: keep everything on this VM only)."
              if info["out_dir"] == DRIVE_FOLDER else
              "Outputs stay on this Colab VM and are lost when it stops (setup() keeps them in Drive)."
              )  # fmt: skip

"""Checkpoints: plain dicts (model, config and, to resume, epoch, optimizer, scheduler, scaler, history;
no random state: the data seed and the epoch decide every batch), written atomically, read back with
`weights_only=True`; and the committed weights (`dkdlib.weights`) that train-or-load finds."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import OFF, Config, repo_root
from .errors import DKDError
from .models import create_model

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "atomic_write", "model_only", "weights_dir",
           "committed", "materialise"]  # fmt: skip

FORMAT = "dkdlib-checkpoint-v1"
MANIFEST = "weights.json"  # the committed weights' list: run, accuracy, checksum (`dkdlib.weights`)


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call `write(tmp_path)`, fsync, then rename the temp file (same folder: same file system) over
    `path`: readers see old or new, never half, and a crash mid-write leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes it private (0600); a checkpoint or record is an ordinary file
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: never leave the temp file behind
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Save a checkpoint dict (see `dkdlib.train.fit`) atomically."""
    return atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint safely (tensors and plain Python values only; no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise DKDError(f"checkpoint {path} does not exist; train one first or check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, pickle refused by weights_only
        raise DKDError(f"checkpoint {path} is truncated or corrupted ({type(err).__name__}); delete it and "
                       "retrain, or resume from another copy") from err  # fmt: skip
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DKDError(f"{path} is not a dkdlib checkpoint (no '{FORMAT}' marker)")
    return state


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", *, num_classes: int | None = None,
    dataset: str | None = None, state: dict | None = None,
) -> nn.Module:  # fmt: skip
    """Rebuild the model saved in a checkpoint (or in `state`, already read), in eval mode; optionally
    check its classes and dataset."""
    state = load_checkpoint(path) if state is None else state
    if num_classes is not None and state["num_classes"] != num_classes:
        raise DKDError(f"checkpoint {path} predicts {state['num_classes']} classes ({state['dataset']}) but "
                       f"{num_classes} are needed here{f' ({dataset})' if dataset else ''}; use a checkpoint "
                       "trained on the same dataset")  # fmt: skip
    if dataset is not None and state["dataset"] != dataset:
        raise DKDError(f"checkpoint {path} was trained on {state['dataset']}, not {dataset}; use a "
                       "checkpoint trained on the same dataset")  # fmt: skip
    model = create_model(state["model_name"], state["num_classes"])
    model.load_state_dict(state["model"])
    if "mean" in state and "std" in state:  # what it was trained on: evaluate it with the same
        model.normalization = (tuple(state["mean"]), tuple(state["std"]))
    return model.to(device).eval()


def model_only(checkpoint: dict) -> dict:
    """A finished run's checkpoint without optimizer, scheduler and scaler states, for a GPU window and
    `dkdlib.weights`. Only conv and linear weights become fp16: a running variance in fp16 shifts its
    channel (measured: one test image in 2,000 lost). Loading casts back to fp32."""
    keep = ("format", "model_name", "num_classes", "classes", "dataset", "mean", "std", "config", "epoch",
            "complete", "history", "metrics")  # fmt: skip
    state = {k: checkpoint[k] for k in keep if k in checkpoint}
    state["model"] = {k: v.half() if v.is_floating_point() and v.ndim > 1 else v
                      for k, v in checkpoint["model"].items()}  # fmt: skip
    state["weights"] = "fp16 (conv and linear weights; the rest fp32), model only"
    return state


def weights_dir() -> Path | None:
    """Where committed weights are looked for: DKDLIB_WEIGHTS (a folder; 0 = nowhere), else the
    repository's data/weights/ next to the package (a clone; a `pip install` has none)."""
    env = os.environ.get("DKDLIB_WEIGHTS", "").strip()
    if env:
        return None if env.lower() in OFF else Path(env)
    root = repo_root()
    folder = root / "data" / "weights" if root else None
    return folder if folder is not None and folder.is_dir() else None


def committed(cfg: Config) -> Path | None:
    """The committed weights of `cfg`'s run, or None."""
    folder = weights_dir()
    path = folder / f"{cfg.run_name()}.pt" if folder is not None else None
    return path if path is not None and path.is_file() else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def materialise(cfg: Config) -> Path | None:
    """Copy the committed weights of `cfg`'s run (checked against the manifest) to its checkpoint path
    unless a checkpoint is there; that path, or None."""
    if cfg.checkpoint_path.exists():
        return None
    source = committed(cfg)
    if source is None:
        return None
    manifest = source.parent / MANIFEST
    entry = json.loads(manifest.read_text()).get(source.stem) if manifest.is_file() else None
    if entry is not None and file_sha256(source) != entry["sha256"]:
        raise DKDError(f"committed weights {source} do not match their checksum in {manifest} (a partial "
                       "checkout, or a Git LFS pointer?): check out the file again, or set DKDLIB_WEIGHTS=0 "
                       "to train the run here")  # fmt: skip
    atomic_write(cfg.checkpoint_path, lambda tmp: shutil.copyfile(source, tmp))
    where = f", trained on {entry['hardware']}" if entry and entry.get("hardware") else ""
    print(f"using the committed weights {source.name}{where} (DKDLIB_WEIGHTS=0 trains the run here instead)")
    return cfg.checkpoint_path

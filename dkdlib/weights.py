"""Committed weights: finished runs kept in the repository as small fp16 files (`data/weights/`).

They let the full-mode chapters run on a CPU (train-or-load finds every run: evaluation and analysis
only) and give a learner without a GPU a real teacher and real students.

    python scripts/export_weights.py       # after a GPU run: data/checkpoints/ -> data/weights/

`fit(config)` looks for `<run name>.pt` here when its output folder holds no checkpoint of the run,
and copies it into that folder's checkpoints/ (so a student's `teacher=` path exists as usual), then
loads it as finished. DKDLIB_WEIGHTS=0 turns this off (everything trains here); DKDLIB_WEIGHTS=DIR
looks in DIR instead. `weights.json` beside the files lists each run, its accuracy and checksum.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

from .checkpoint import atomic_write, load_checkpoint, model_only
from .config import OFF, Config, repo_root
from .errors import DKDError

__all__ = [
    "weights_dir", "committed", "materialise", "export", "MANIFEST", "MAX_FILE_BYTES", "MAX_TOTAL_BYTES",
]  # fmt: skip

MANIFEST = "weights.json"
# Every GPU window carries the tracked files, 64 MiB in all with half of CIFAR-10's sheets: the folder
# stays small (a ResNet18 teacher in fp16 is about 22.4 MB, a ResNet8 student 0.18 MB).
MAX_FILE_BYTES = 25 * 10**6
MAX_TOTAL_BYTES = 30 * 10**6


def weights_dir() -> Path | None:
    """Where committed weights are looked for: DKDLIB_WEIGHTS (a folder; 0 = nowhere), else the
    repository's data/weights/ next to the package (a clone; a `pip install` has none)."""
    env = os.environ.get("DKDLIB_WEIGHTS", "").strip()
    if env.lower() in OFF:
        return None
    if env:
        return Path(env)
    root = repo_root()
    folder = root / "data" / "weights" if root else None
    return folder if folder is not None and folder.is_dir() else None


def committed(cfg: Config) -> Path | None:
    """The committed weights of `cfg`'s run, or None."""
    folder = weights_dir()
    path = folder / f"{cfg.run_name()}.pt" if folder is not None else None
    return path if path is not None and path.is_file() else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def materialise(cfg: Config) -> Path | None:
    """Copy the committed weights of `cfg`'s run to `cfg.checkpoint_path` when that does not exist yet;
    the new checkpoint's path, or None (no committed weights, or a checkpoint already there)."""
    if cfg.checkpoint_path.exists():
        return None
    source = committed(cfg)
    if source is None:
        return None
    manifest = source.parent / MANIFEST
    entry = json.loads(manifest.read_text()).get(source.stem) if manifest.is_file() else None
    if entry is not None and _sha256(source) != entry["sha256"]:
        raise DKDError(
            f"committed weights {source} do not match their checksum in {manifest} (a partial checkout, or a "
            "Git LFS pointer?): check out the file again, or set DKDLIB_WEIGHTS=0 to train the run here"
        )
    atomic_write(cfg.checkpoint_path, lambda tmp: shutil.copyfile(source, tmp))
    where = f", trained on {entry['hardware']}" if entry and entry.get("hardware") else ""
    print(f"using the committed weights {source}{where} (DKDLIB_WEIGHTS=0 trains the run here instead)")
    return cfg.checkpoint_path


def _newest_records(configs: Mapping[str, Config]) -> dict[str, dict]:
    """{run name: its newest record} over the output folders of `configs` (each folder read once)."""
    from .results import load_records

    newest: dict[str, dict] = {}
    for folder in dict.fromkeys(Path(cfg.out_dir) / "results" for cfg in configs.values()):
        for record in load_records(folder) if folder.is_dir() else []:  # sorted by time: the last wins
            newest[record.get("name")] = record
    return newest


def export(configs: Mapping[str, Config], out: str | os.PathLike) -> dict:
    """Write every finished run of `configs` ({label: Config}, e.g. `recipes.series_configs(fast=False)`)
    into `out` as model-only fp16 files, with the manifest; returns the manifest.

    Runs without a finished checkpoint (at `cfg.checkpoint_path`) are left out and listed. Nothing is
    written when the files would pass the size limits. `.pt` files of runs no longer listed are removed,
    so the folder holds exactly the manifest's runs.
    """
    out = Path(out)
    blobs: dict[str, bytes] = {}
    manifest: dict[str, dict] = {}
    missing = []
    records = _newest_records(configs)
    for label, cfg in configs.items():
        path = cfg.checkpoint_path
        state = load_checkpoint(path) if path.is_file() else None
        if state is None or not state.get("complete"):
            missing.append(f"{label} ({cfg.run_name()})")
            continue
        buf = io.BytesIO()
        torch.save(model_only(state), buf)
        blob = blobs[cfg.run_name()] = buf.getvalue()
        env = records.get(cfg.run_name(), {}).get("environment", {})
        manifest[cfg.run_name()] = {
            "label": label, "model": cfg.model, "method": cfg.method, "epochs": cfg.epochs,
            "test_acc": state.get("metrics", {}).get("test_acc"), "hardware": env.get("hardware"),
            "trained": env.get("date"), "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
        }  # fmt: skip
    too_big = [f"{name}: {len(b) / 1e6:.1f} MB" for name, b in blobs.items() if len(b) > MAX_FILE_BYTES]
    total = sum(map(len, blobs.values()))
    if too_big or total > MAX_TOTAL_BYTES:
        raise DKDError(
            f"the weights would pass the limits (a file {MAX_FILE_BYTES / 1e6:.0f} MB, all "
            f"{MAX_TOTAL_BYTES / 1e6:.0f} MB): {'; '.join(too_big) or f'{total / 1e6:.1f} MB in all'}; "
            "nothing written"
        )
    for name, blob in blobs.items():
        atomic_write(out / f"{name}.pt", lambda tmp, b=blob: Path(tmp).write_bytes(b))
    for stale in out.glob("*.pt"):
        if stale.stem not in blobs:
            stale.unlink()
    text = json.dumps(manifest, indent=1) + "\n"
    atomic_write(out / MANIFEST, lambda tmp: Path(tmp).write_text(text))
    print(f"{len(blobs)} runs, {total / 1e6:.1f} MB in {out}")
    if missing:
        print(f"no finished checkpoint, left out: {', '.join(missing)}")
    return manifest

"""Committed weights: finished runs kept in the repository as small fp16 files (`data/weights/`).

They let the full-mode chapters run on a CPU (train-or-load finds every run: evaluation and analysis
only) and give a learner without a GPU a real teacher and real students.

    python scripts/export_weights.py       # after a GPU run: data/checkpoints/ -> data/weights/

`fit(config)` looks for `<run name>.pt` here when its output folder holds no checkpoint of the run,
and copies it into that folder's checkpoints/ (so a student's `teacher=` path exists as usual), then
loads it as finished. DKDLIB_WEIGHTS=0 turns this off (everything trains here); DKDLIB_WEIGHTS=DIR
looks in DIR instead. `weights.json` beside the files lists each run, its accuracy and checksum.

A `pip install` (Colab) has no data/weights/: `fetch` downloads the files listed in the repository's
`weights.json`, one small file per run, from `raw_url()` (built from `REPOSITORY` and `BRANCH`;
DKDLIB_WEIGHTS_URL overrides it, e.g. with a `file://` folder), checks each one's sha256 against the
manifest and keeps only those that match. Offline it fetches nothing and the chapters train their runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import torch

from .checkpoint import (
    MANIFEST,
    atomic_write,
    committed,
    file_sha256,
    load_checkpoint,
    materialise,
    model_only,
    weights_dir,
)
from .config import OFF, Config
from .errors import DKDError

__all__ = [
    "weights_dir", "committed", "materialise", "export", "add", "fetch", "raw_url", "MANIFEST", "OFF",
    "REPOSITORY", "BRANCH",
    "MAX_FILE_BYTES",
    "MAX_TOTAL_BYTES",
]  # fmt: skip

# Where the package lives on GitHub (owner/name), and the branch whose notebooks the badges open
# (`notebook` re-exports both for the chapters' badges and install line).
REPOSITORY = "dkdlib/dkdlib"
BRANCH = "main"
# Every GPU window carries the tracked files, 64 MiB in all with half of CIFAR-10's sheets: the folder
# stays small (a ResNet18 teacher in fp16 is about 22.4 MB, a ResNet8 student 0.18 MB).
MAX_FILE_BYTES = 25 * 10**6
MAX_TOTAL_BYTES = 30 * 10**6


def _newest_records(configs: Mapping[str, Config]) -> dict[str, dict]:
    """{run name: its newest record} over the output folders of `configs` (each folder read once)."""
    from .results import load_records

    newest: dict[str, dict] = {}
    for folder in dict.fromkeys(Path(cfg.out_dir) / "results" for cfg in configs.values()):
        for record in load_records(folder) if folder.is_dir() else []:  # sorted by time: the last wins
            newest[record.get("name")] = record
    return newest


def _entry(label: str, cfg: Config, state: dict, records: dict[str, dict]) -> tuple[bytes, dict]:
    """A finished run's model-only fp16 file (as bytes) and its line in the manifest."""
    buf = io.BytesIO()
    torch.save(model_only(state), buf)
    blob = buf.getvalue()
    env = records.get(cfg.run_name(), {}).get("environment", {})
    entry = {
        "label": label, "model": cfg.model, "method": cfg.method, "epochs": cfg.epochs,
        "test_acc": state.get("metrics", {}).get("test_acc"), "hardware": env.get("hardware"),
        "trained": env.get("date"), "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
    }  # fmt: skip
    return blob, entry


def add(cfg: Config, label: str, out: str | os.PathLike) -> dict:
    """Write one finished run into `out` (its fp16 file and its line in the manifest, which keeps the
    other runs' lines); returns that line. For a campaign, which adds each run as it finishes."""
    out = Path(out)
    state = load_checkpoint(cfg.checkpoint_path) if cfg.checkpoint_path.is_file() else None
    if state is None or not state.get("complete"):
        raise DKDError(f"{cfg.run_name()} has no finished checkpoint at {cfg.checkpoint_path}")
    blob, entry = _entry(label, cfg, state, _newest_records({label: cfg}))
    if len(blob) > MAX_FILE_BYTES:
        raise DKDError(
            f"{cfg.run_name()}: {len(blob) / 1e6:.1f} MB passes the {MAX_FILE_BYTES / 1e6:.0f} MB limit"
        )
    manifest_path = out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest[cfg.run_name()] = entry
    atomic_write(out / f"{cfg.run_name()}.pt", lambda tmp: Path(tmp).write_bytes(blob))
    text = json.dumps(manifest, indent=1) + "\n"
    atomic_write(manifest_path, lambda tmp: Path(tmp).write_text(text))
    return entry


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
        blobs[cfg.run_name()], manifest[cfg.run_name()] = _entry(label, cfg, state, records)
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


def raw_url() -> str:
    """Where `fetch` reads the committed weights: DKDLIB_WEIGHTS_URL, else the repository's data/weights/
    as raw files (`REPOSITORY` at `BRANCH`)."""
    env = os.environ.get("DKDLIB_WEIGHTS_URL", "").strip()
    if env:
        return env.rstrip("/")
    return f"https://raw.githubusercontent.com/{REPOSITORY}/{BRANCH}/data/weights"


def _download(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (https or file URLs)
        return response.read()


def fetch(dest: str | os.PathLike, url: str | None = None, timeout: float = 30.0) -> tuple[Path | None, str]:
    """Download the committed weights listed in the manifest at `url` (default `raw_url()`) into `dest`.

    Each run is one file, `<run name>.pt`, kept only when its sha256 matches the manifest; files already
    in `dest` with the right checksum are not downloaded again. Returns (dest, one line saying what was
    fetched) or, when the manifest cannot be read (offline, no such repository), (None, why in one line).
    """
    base = (url or raw_url()).rstrip("/")
    dest = Path(dest)
    try:
        manifest = json.loads(_download(f"{base}/{MANIFEST}", timeout))
    except (OSError, ValueError) as err:  # URLError is an OSError; a bad manifest a ValueError
        reason = getattr(err, "reason", None) or type(err).__name__
        why = f"The series' committed weights could not be fetched ({reason}): "
        return None, why + "the chapters train their runs here."
    dest.mkdir(parents=True, exist_ok=True)
    fetched, kept, bad = 0, 0, []
    for name, entry in manifest.items():
        target = dest / f"{name}.pt"
        if target.is_file() and file_sha256(target) == entry.get("sha256"):
            kept += 1
            continue
        try:
            blob = _download(f"{base}/{name}.pt", timeout)
        except OSError:
            blob = None
        if blob is None or hashlib.sha256(blob).hexdigest() != entry.get("sha256"):
            bad.append(name)
            target.unlink(missing_ok=True)  # no file without a checksum that vouches for it
            continue
        atomic_write(target, lambda tmp, b=blob: Path(tmp).write_bytes(b))
        fetched += 1
    good = {name: entry for name, entry in manifest.items() if name not in bad}
    text = json.dumps(good, indent=1) + "\n"
    atomic_write(dest / MANIFEST, lambda tmp: Path(tmp).write_text(text))
    line = f"{fetched + kept} of the series' {len(manifest)} committed runs in {dest}"
    if fetched:
        line += f" ({fetched} fetched from {base})"
    if bad:
        line += f"; {len(bad)} could not be fetched or failed their checksum and will train here"
    return dest, line

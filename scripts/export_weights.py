"""Commit the series' finished runs as small fp16 weights (data/weights/), for train-or-load.

    python scripts/export_weights.py                  # full mode, from data/checkpoints/
    python scripts/export_weights.py --from DIR       # the output folder that holds checkpoints/, results/

Every run the chapters train (`recipes.series_configs`) whose checkpoint is finished is written as a
model-only fp16 file named after the run, with `weights.json` (label, accuracy, hardware, checksum);
runs missing a finished checkpoint are listed. It refuses to write past the size limits below, since
every GPU window carries the tracked files. `scripts/campaign.py` adds each run as it finishes (`add`).
Reading them back (train-or-load, `fetch`) is `dkdlib.weights`'s. See data/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

from dkdlib.checkpoint import MANIFEST, atomic_write, load_checkpoint, model_only  # noqa: E402
from dkdlib.config import Config  # noqa: E402
from dkdlib.errors import DKDError  # noqa: E402
from dkdlib.recipes import MODES  # noqa: E402
from dkdlib.results import load_records  # noqa: E402

# Every GPU window carries the tracked files, 64 MiB in all with half of CIFAR-10's sheets: the folder
# stays small (a ResNet18 teacher in fp16 is about 22.4 MB, a ResNet8 student 0.18 MB).
MAX_FILE_BYTES = 25 * 10**6
MAX_TOTAL_BYTES = 30 * 10**6


def _newest_records(configs: Mapping[str, Config]) -> dict[str, dict]:
    """{run name: its newest record} over the output folders of `configs` (each folder read once)."""
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


def _finished(cfg: Config) -> dict | None:
    """The run's finished checkpoint, or None where it has none (or an unfinished one)."""
    state = load_checkpoint(cfg.checkpoint_path) if cfg.checkpoint_path.is_file() else None
    return state if state is not None and state.get("complete") else None


def _write(out: Path, blobs: dict[str, bytes], manifest: dict) -> None:
    """The runs' files (`<run name>.pt`), then the manifest, each written atomically."""
    for name, blob in blobs.items():
        atomic_write(out / f"{name}.pt", lambda tmp, b=blob: Path(tmp).write_bytes(b))
    text = json.dumps(manifest, indent=1) + "\n"
    atomic_write(out / MANIFEST, lambda tmp: Path(tmp).write_text(text))


def add(cfg: Config, label: str, out: str | os.PathLike) -> dict:
    """Write one finished run into `out` (its fp16 file and its line in the manifest, which keeps the
    other runs' lines); returns that line. For a campaign, which adds each run as it finishes."""
    out = Path(out)
    state = _finished(cfg)
    if state is None:
        raise DKDError(f"{cfg.run_name()} has no finished checkpoint at {cfg.checkpoint_path}")
    blob, entry = _entry(label, cfg, state, _newest_records({label: cfg}))
    if len(blob) > MAX_FILE_BYTES:
        raise DKDError(
            f"{cfg.run_name()}: {len(blob) / 1e6:.1f} MB passes the {MAX_FILE_BYTES / 1e6:.0f} MB limit"
        )
    manifest = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).is_file() else {}
    _write(out, {cfg.run_name(): blob}, manifest | {cfg.run_name(): entry})
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
        state = _finished(cfg)
        if state is None:
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
    _write(out, blobs, manifest)
    for stale in out.glob("*.pt"):
        if stale.stem not in blobs:
            stale.unlink()
    print(f"{len(blobs)} runs, {total / 1e6:.1f} MB in {out}")
    if missing:
        print(f"no finished checkpoint, left out: {', '.join(missing)}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="source", type=Path, default=ROOT / "data",
                   help="the output folder whose checkpoints/ hold the runs (default: data)")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "data" / "weights", help="where the weights go")
    p.add_argument("--mode", default="full", choices=MODES, help="the series' mode")
    args = p.parse_args(argv)
    os.environ["DKDLIB_OUT"] = str(args.source)  # where series_configs puts (and so finds) the runs

    from dkdlib.recipes import series_configs

    try:
        manifest = export(series_configs(fast=args.mode), args.out)
    except DKDError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0 if manifest else 1


if __name__ == "__main__":
    sys.exit(main())

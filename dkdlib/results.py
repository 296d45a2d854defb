"""Run records: one JSON file per finished run (config, metrics, history, commit, hardware, versions,
date, wall time: what it takes to trust a number), uniquely named and written atomically; read back as
a pandas DataFrame."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import atomic_write

__all__ = ["environment", "portable", "summarize", "write_record", "load_records", "load_results"]


def _git_commit() -> str:
    """The commit of this checkout (+ "-dirty"), asked of git; without git (a GPU machine gets the working
    tree alone) DKDLIB_GIT_COMMIT, else "unknown"."""

    def git(*args: str) -> str:
        here = Path(__file__).resolve().parent
        return subprocess.run(
            ["git", *args], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()

    commit = dirty = ""
    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no") if commit else ""
    except (OSError, subprocess.SubprocessError):
        commit = ""
    if commit:
        return commit + ("-dirty" if dirty else "")
    return os.environ.get("DKDLIB_GIT_COMMIT", "").strip() or "unknown"


# Read once, when dkdlib is imported: the commit of the code this process runs. (Asking git when a
# record is written would name whatever the checkout holds by then; a long run outlives many commits.)
_COMMIT_AT_IMPORT = _git_commit()


def environment(device: str = "cpu") -> dict[str, Any]:
    """Hardware, software versions, commit and date, for a record."""
    import torch
    import torchvision

    if str(device).startswith("cuda") and torch.cuda.is_available():
        hardware = torch.cuda.get_device_name(torch.device(device))
    else:
        hardware = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    from . import __version__

    return {"hardware": hardware, "device": str(device), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__, "dkdlib": __version__,
            "platform": platform.platform(), "git_commit": _COMMIT_AT_IMPORT,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip


def portable(config: dict[str, Any]) -> dict[str, Any]:
    """A config as a record or checkpoint keeps it, without the writer's folders: teacher and init as
    `checkpoints/T.pt` or a file name, the data file's name, out_dir "." (identities are unchanged)."""
    out = dict(config)
    root = Path(out.get("out_dir") or ".")
    for key in ("teacher", "init"):  # checkpoints
        if out.get(key):
            path = Path(out[key])
            inside = path.is_relative_to(root) and path.parent.name == "checkpoints"
            out[key] = str(path.relative_to(root)) if inside else path.name
    if out.get("data"):
        out["data"] = Path(out["data"]).name
    out["out_dir"] = "."
    for key in ("note", "tag"):  # free text, e.g. an error message naming a file of this machine
        if out.get(key):
            out[key] = _ABSOLUTE.sub(lambda m: ".../" + m.group(1), out[key])
    return out


# An absolute path (POSIX, or Windows with a drive letter): its folders go, its file name stays.
_ABSOLUTE = re.compile(r"(?<![\w.~])(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\"()]+[/\\])+([^\s/\\'\"(),;]+)")


def summarize(history: list[dict[str, float]]) -> dict[str, Any]:
    """Last-epoch accuracies, and the test accuracy at the epochs with the best validation accuracy and
    the lowest validation loss."""
    last = history[-1]
    metrics: dict[str, Any] = {
        "epochs_run": len(history), "test_acc": last.get("test_acc"), "val_acc": last.get("val_acc"),
        "train_acc": last.get("train_acc"), "train_seconds": round(sum(h["seconds"] for h in history), 2),
        "images_per_s": round(float(np.median([h["images_per_s"] for h in history])), 1),
    }  # fmt: skip
    if "val_acc" in last:
        best = max(history, key=lambda h: h["val_acc"])  # the first epoch wins a tie
        metrics.update(
            best_epoch=best["epoch"], best_val_acc=best["val_acc"], test_acc_at_best_val=best.get("test_acc")
        )
    if "val_loss" in last:  # the reference's selection: the checkpoint with the lowest validation loss
        best = min(history, key=lambda h: h["val_loss"])
        metrics.update(
            best_val_loss_epoch=best["epoch"], best_val_loss=best["val_loss"],
            test_acc_at_best_val_loss=best.get("test_acc"),
        )  # fmt: skip
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()}


def write_record(directory: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write `record` as JSON to a new file in `directory`, named from the UTC time to the microsecond
    (names sort in the order written); return its path."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
    name = record.get("name", "run")
    path = Path(directory) / f"{stamp}-{name}-{uuid.uuid4().hex[:8]}.json"
    text = json.dumps(record, indent=1, default=str)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def load_records(directory: str | os.PathLike = "data/results") -> list[dict[str, Any]]:
    """All records in `directory`, oldest first (their file names start with the time)."""
    return [
        {**json.loads(path.read_text()), "file": path.name} for path in sorted(Path(directory).glob("*.json"))
    ]


PROVENANCE = ("hardware", "git_commit", "date", "torch")  # the environment fields `load_results` keeps


def load_results(directory: str | os.PathLike = "data/results"):
    """One row per run: config fields, metrics and provenance flattened into columns."""
    import pandas as pd

    rows = []
    for rec in load_records(directory):
        row = dict(rec.get("config", {}))
        row.update(name=rec.get("name"), file=rec.get("file"))  # the run name, not Config.name
        row.update({k: v for k, v in _metrics(rec).items() if not isinstance(v, list)})
        env = rec.get("environment", {})
        row.update({k: env.get(k) for k in PROVENANCE}, wall_time_s=rec.get("wall_time_s"))
        rows.append(row)
    return pd.DataFrame(rows)


def _metrics(rec: dict[str, Any]) -> dict[str, Any]:
    """A record's metrics; a record written before a metric existed (e.g. the test accuracy at the
    lowest validation loss) gets it from its history, by the same `summarize` that writes it now."""
    try:
        derived = summarize(rec["history"]) if rec.get("history") else {}
    except (KeyError, TypeError):  # a history without the per-epoch fields summarize reads
        derived = {}
    return {**derived, **rec.get("metrics", {})}

"""What a GPU window's call B sends back, inside the device's limits, and how to read it back.

The device returns at most 8 files from $OUT, each ≤ 16 MiB, 64 MiB in all. Call B writes:
  runs.json        the manifest: every queue entry (done, failed, skipped) with its results record,
                   and for each returned run where its weights lie (shard, offset, length, sha256)
  weights-N.bin    shards: the runs' model-only fp16 checkpoints, byte after byte; a checkpoint larger
                   than a shard's room (the ResNet18 teacher, ~22 MB) continues in the next shard
and the bash wrapper adds the log.

Everything is written atomically (temp file + rename) the moment a run is added, shards first, the
manifest last. Shards only grow, so a call killed at any instant leaves a manifest whose every entry
points at bytes that are there: a timeout loses only the run in progress.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

MiB = 1 << 20
MAX_FILES, MAX_FILE_BYTES, MAX_TOTAL_BYTES, MAX_DEPTH = 8, 16 * MiB, 64 * MiB, 2  # the device's limits
MANIFEST = "runs.json"
# Room kept for the log and the manifest (records with histories: a few kB a run).
RESERVED_FILES, RESERVED_BYTES = 2, 4 * MiB


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_manifest(out: Path, shard_bytes: int = 15 * MiB, **info: Any) -> dict:
    """An empty manifest for $OUT (written at once, so even a call that trains nothing returns one).

    info: anything the reader should know (device, data, speed paths used, budget...).
    """
    manifest = {"format": "dkdlib-gpu-window-v1", "shard_bytes": shard_bytes, "info": info, "runs": []}
    write_manifest(out, manifest)
    return manifest


def write_manifest(out: Path, manifest: dict) -> None:
    _atomic_write(Path(out) / MANIFEST, (json.dumps(manifest, indent=1, default=str) + "\n").encode())


def _shards(manifest: dict) -> list[int]:
    """Bytes used in each shard, from the manifest's pieces."""
    used: dict[str, int] = {}
    for run in manifest["runs"]:
        for piece in run.get("weights") or []:
            used[piece["shard"]] = max(used.get(piece["shard"], 0), piece["offset"] + piece["length"])
    return [used.get(f"weights-{i}.bin", 0) for i in range(1, len(used) + 1)]


def weights_room(manifest: dict) -> int:
    """Bytes of weights that can still be added without breaking a limit (shards fill in order)."""
    size = manifest["shard_bytes"]
    n_max = min(MAX_FILES - RESERVED_FILES, (MAX_TOTAL_BYTES - RESERVED_BYTES) // size)
    return n_max * size - sum(_shards(manifest))


def add_run(out: Path, manifest: dict, entry: dict, weights: bytes | None = None) -> dict:
    """Append one queue entry to the manifest, its weights (if any, and if they fit) to the shards.

    Returns the entry as stored. Weights that would break a limit are left out, and the entry says so
    (its record still comes back).
    """
    out = Path(out)
    entry = dict(entry)
    if weights is not None:
        if len(weights) > weights_room(manifest):
            entry["weights"] = None
            entry["weights_left_out"] = f"{len(weights)} bytes: over the device's return limits"
        else:
            entry["weights"] = _append(out, manifest, weights)
            entry["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    manifest["runs"].append(entry)
    write_manifest(out, manifest)
    return entry


def _append(out: Path, manifest: dict, data: bytes) -> list[dict]:
    """Write `data` after the last shard's bytes, opening new shards as they fill; the pieces."""
    size = manifest["shard_bytes"]
    used = _shards(manifest)
    if not used or used[-1] >= size:
        used.append(0)
    pieces, pos = [], 0
    while pos < len(data):
        if used[-1] >= size:
            used.append(0)
        i, offset = len(used), used[-1]
        chunk = data[pos : pos + size - offset]
        path = out / f"weights-{i}.bin"
        head = path.read_bytes()[:offset] if offset else b""
        _atomic_write(path, head + chunk)
        pieces.append({"shard": path.name, "offset": offset, "length": len(chunk)})
        used[-1] += len(chunk)
        pos += len(chunk)
    return pieces


def read_weights(directory: Path, entry: dict) -> bytes | None:
    """The bytes of a returned run's weights, checked against their sha256; None if not returned."""
    if not entry.get("weights"):
        return None
    data = b"".join(
        (Path(directory) / p["shard"]).read_bytes()[p["offset"] : p["offset"] + p["length"]]
        for p in entry["weights"]
    )
    if hashlib.sha256(data).hexdigest() != entry["weights_sha256"]:
        raise ValueError(f"{entry.get('name')}: the returned weights do not match their checksum")
    return data


def to_bytes(state: dict) -> bytes:
    """A checkpoint dict as the bytes `torch.save` writes."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def check_limits(out: Path) -> list[str]:
    """What in `out` would not come back from the device (empty when all is within the limits)."""
    out = Path(out)
    files = [p for p in out.rglob("*") if p.is_file()]
    problems = []
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files (at most {MAX_FILES})")
    total = sum(p.stat().st_size for p in files)
    if total > MAX_TOTAL_BYTES:
        problems.append(f"{total / MiB:.1f} MiB in all (at most {MAX_TOTAL_BYTES // MiB})")
    for p in files:
        rel = p.relative_to(out)
        if p.stat().st_size > MAX_FILE_BYTES:
            problems.append(f"{rel}: {p.stat().st_size / MiB:.1f} MiB (at most {MAX_FILE_BYTES // MiB})")
        if len(rel.parts) - 1 > MAX_DEPTH:
            problems.append(f"{rel}: deeper than {MAX_DEPTH} folders")
        if not all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts):
            problems.append(f"{rel}: a name with characters other than letters, digits, '.', '_', '-'")
    return problems

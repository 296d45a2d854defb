"""Committed weights: finished runs kept in the repository as small fp16 files (`data/weights/`).

They let the chapters run on a CPU (train-or-load finds every run: evaluation and analysis only) and
give a learner without a GPU a real teacher and real students (`scripts/export_weights.py` writes them).

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
import json
import os
import urllib.request
from pathlib import Path

from .checkpoint import MANIFEST, atomic_write, committed, file_sha256, materialise, weights_dir
from .config import OFF

__all__ = ["weights_dir", "committed", "materialise", "fetch", "raw_url", "MANIFEST", "OFF", "REPOSITORY",
           "BRANCH"]  # fmt: skip

# Where the package lives on GitHub (owner/name), and the branch whose notebooks the badges open
# (scripts/colab_links.py writes the chapters' badges and install line from both).
REPOSITORY = "dkdlib/dkdlib"
BRANCH = "main"


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

"""Commit the series' finished runs as small fp16 weights (data/weights/), for train-or-load.

    python scripts/export_weights.py                  # full mode, from data/checkpoints/
    python scripts/export_weights.py --from DIR       # the output folder that holds checkpoints/, results/

Every run the chapters train (`recipes.series_configs`) whose checkpoint is finished is written as a
model-only fp16 file named after the run, with `weights.json` (label, accuracy, hardware, checksum);
runs missing a finished checkpoint are listed. It refuses to write past the size limits of
`dkdlib.weights` (a file 25 MB, all 30 MB), since every GPU window carries the tracked files.
See data/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dkdlib.recipes import MODES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="source", type=Path, default=ROOT / "data",
                   help="the output folder whose checkpoints/ hold the runs (default: data)")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "data" / "weights", help="where the weights go")
    p.add_argument("--mode", default="full", choices=MODES, help="the series' mode")
    args = p.parse_args(argv)
    os.environ["DKDLIB_OUT"] = str(args.source)  # where series_configs puts (and so finds) the runs

    from dkdlib.errors import DKDError
    from dkdlib.recipes import series_configs
    from dkdlib.weights import export

    try:
        manifest = export(series_configs(fast=args.mode), args.out)
    except DKDError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0 if manifest else 1


if __name__ == "__main__":
    sys.exit(main())

"""Execute the notebook series in order, in one mode and into one output folder, and write every
chapter's outputs into its notebook.

    python scripts/run_series.py --mode cpu --data cifar10.npz          # full CIFAR-10, CPU schedules
    python scripts/run_series.py --mode full --data cifar10.npz         # a GPU: the real schedules
    python scripts/run_series.py --mode fast --chapters 00 01           # a smoke run of two chapters

A mode whose runs data/weights/ holds runs on a CPU in minutes (train-or-load then trains none).

Every chapter runs in a fresh kernel with the same environment: the mode's variable (DKDLIB_MODE),
DKDLIB_OUT (one output folder, so later chapters load the runs of the earlier ones), DKDLIB_DATA (a
decoded CIFAR-10 .npz, optional) and MPLBACKEND=Agg. A chapter's notebook is replaced only when it ran
to the end (written to a temporary file, then renamed), without the metadata of earlier executions
(timestamps); the series stops at the first failing chapter. Each chapter's wall time is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dkdlib.recipes import MODES  # noqa: E402  (the scales, named in one place)

# Cell metadata that only records an execution (nbclient's and Jupyter's timestamps): never written.
EXECUTION_METADATA = ("execution", "ExecuteTime")


def find_chapters(folder: Path, wanted: list[str] | None) -> list[Path]:
    """The chapters NN_*.ipynb in `folder`, in order; `wanted`: numbers or name prefixes ("00", "5")."""
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if wanted:
        prefixes = [w.zfill(2) if w.isdigit() else w for w in wanted]
        paths = [p for p in paths if any(p.name.startswith(w) for w in prefixes)]
        if not paths:
            raise SystemExit(f"no chapter in {folder} matches {wanted}")
    return paths


def series_environment(mode: str, out: Path, data: Path | None, notebooks: Path) -> dict[str, str]:
    """The environment every chapter's kernel gets (the current one, with the series' variables)."""
    skip = ("DKDLIB_MODE", "DKDLIB_OUT")
    env = {k: v for k, v in os.environ.items() if k not in skip}
    env["DKDLIB_MODE"] = mode
    # Relative to the notebooks' folder (the kernels' working directory), so the outputs that print
    # it name no folder of this machine.
    env["DKDLIB_OUT"] = os.path.relpath(out.resolve(), notebooks.resolve())
    env["MPLBACKEND"] = "Agg"
    if data is not None:
        env["DKDLIB_DATA"] = str(data.resolve())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def strip_execution_metadata(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop every cell's execution timestamps (left by earlier runs or by Jupyter), in place."""
    for cell in nb.cells:
        for key in EXECUTION_METADATA:
            cell.metadata.pop(key, None)
    return nb


def execute(path: Path, timeout: int) -> float:
    """Run one chapter top to bottom in a fresh kernel and write its outputs in place; seconds taken."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})  # fmt: skip
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    tmp = path.with_name(f".{path.name}.tmp")
    nbformat.write(strip_execution_metadata(nb), tmp)
    os.replace(tmp, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--out", type=Path, help="the series' output folder (default: data/series-MODE)")
    parser.add_argument("--data", type=Path, help="CIFAR-10 as a decoded .npz (default: $DKDLIB_DATA)")
    parser.add_argument("--chapters", nargs="+", help="chapter numbers to run, e.g. 00 01 (default: all)")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks", help="folder of the chapters")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run")
    args = parser.parse_args(argv)

    data = args.data or (Path(os.environ["DKDLIB_DATA"]) if os.environ.get("DKDLIB_DATA") else None)
    if data is not None and not data.is_file():
        raise SystemExit(f"--data {data}: no such file")
    out = args.out or ROOT / "data" / f"series-{args.mode}"
    out.mkdir(parents=True, exist_ok=True)
    env = series_environment(args.mode, out, data, args.notebooks)
    for name in set(os.environ) - set(env):
        del os.environ[name]
    os.environ.update(env)  # the kernels inherit it
    paths = find_chapters(args.notebooks, args.chapters)
    print(f"{args.mode} mode, outputs in {out}, data: {data or 'download / synthetic'}", flush=True)
    total = 0.0
    for path in paths:
        print(f"{path.name} ...", end=" ", flush=True)
        try:
            seconds = execute(path, args.timeout)
        except Exception as err:  # a failing cell: say which chapter, keep its committed outputs
            print(f"FAILED\n{type(err).__name__}: {err}", file=sys.stderr)
            return 1
        total += seconds
        print(f"{seconds:.0f} s", flush=True)
    print(f"{len(paths)} chapter(s) in {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Prepare a GPU window's two calls: what each carries, and that it fits the device's 64 MiB.

    python scripts/gpu_prepare.py [--source DIR]   # fill .gpu1/ and .gpu2/, set large artifacts aside
    python scripts/gpu_prepare.py --check          # only print what each call would carry
    python scripts/gpu_prepare.py --restore        # after the window: put the set-aside artifacts back

Every call carries the project's tracked files and its untracked, not ignored ones, plus the folder
named in `carry`: call A `.gpu1/` (six of CIFAR-10's twelve WebP sheets), call B `.gpu2/` (the other
six, labels.npz, sha256.json and the decoder to_npz.py). Both also hold `commit`, the commit of HEAD,
which the window passes to dkdlib as DKDLIB_GIT_COMMIT (no .git travels). Large tracked artifacts
(committed weights in data/weights/) are moved into the ignored `.gpu-aside/` for the window, so they do
not eat into the room for the data. Exits 1 if a call would carry more than 64 MiB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from gpu_window import SHEETS_A, SHEETS_B  # noqa: E402

MiB = 1 << 20
LIMIT = 64 * MiB
SET_ASIDE = ("data/weights",)  # tracked artifacts that need not travel to the GPU
ASIDE = ".gpu-aside"
B_EXTRAS = ("labels.npz", "sha256.json", "to_npz.py")


def git(*args: str, root: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def head_commit(root: Path = ROOT) -> str:
    """HEAD, with "-dirty" if tracked files differ from it (the format dkdlib's records use)."""
    dirty = git("status", "--porcelain", "--untracked-files=no", root=root).strip()
    return git("rev-parse", "HEAD", root=root).strip() + ("-dirty" if dirty else "")


def tree_files(root: Path = ROOT) -> list[Path]:
    """What travels with every call: tracked files present on disk, untracked files git does not
    ignore, and a shared/ folder inside the checkout."""
    names = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", root=root).split("\0")
    files = {root / n for n in names if n and (root / n).is_file()}
    if (root / "shared").is_dir():
        files.update(p for p in (root / "shared").rglob("*") if p.is_file())
    return sorted(files)


def size(paths) -> int:
    return sum(p.lstat().st_size for p in paths)


def carry_bytes(root: Path, carry: str) -> tuple[int, int]:
    """(bytes of the tree that travels, bytes of the carried folder) for one call."""
    folder = root / carry
    carried = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    return size(tree_files(root)), size(carried)


def report(root: Path = ROOT) -> bool:
    """Print what each call carries; True if both fit."""
    ok = True
    for call, carry in (("A", ".gpu1"), ("B", ".gpu2")):
        tree, carried = carry_bytes(root, carry)
        total = tree + carried
        verdict = "fits" if total <= LIMIT else "OVER THE LIMIT"
        room = (LIMIT - total) / MiB
        print(f"call {call}: tree {tree / MiB:.1f} MiB + {carry}/ {carried / MiB:.1f} MiB = "
              f"{total / MiB:.1f} MiB of {LIMIT // MiB} MiB ({verdict}; {room:.1f} MiB left)")  # fmt: skip
        ok &= total <= LIMIT
    return ok


def fill(source: Path, root: Path = ROOT) -> None:
    """Copy the sheets into .gpu1/ and .gpu2/, and the commit of HEAD into both."""
    missing = [n for n in SHEETS_A + SHEETS_B + list(B_EXTRAS) if not (source / n).is_file()]
    if missing:
        sys.exit(f"{source} lacks {', '.join(missing)}: pass --source, the folder of CIFAR-10's WebP sheets")
    commit = head_commit(root)
    for folder, names in ((".gpu1", SHEETS_A), (".gpu2", SHEETS_B + list(B_EXTRAS))):
        dest = root / folder
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        for name in names:
            shutil.copyfile(source / name, dest / name)  # not copy2: the sources are read-only
        (dest / "commit").write_text(commit + "\n")
    print(f"filled .gpu1/ and .gpu2/ from {source}; commit {commit}")


def set_aside(root: Path = ROOT) -> None:
    for rel in SET_ASIDE:
        if (root / rel).exists():
            dest = root / ASIDE / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(root / rel, dest)
            print(f"set aside {rel} → {ASIDE}/{rel} (restore with --restore after the window)")


def restore(root: Path = ROOT) -> None:
    for rel in SET_ASIDE:
        src = root / ASIDE / rel
        if src.exists():
            if (root / rel).exists():
                sys.exit(f"both {rel} and {ASIDE}/{rel} exist: merge them by hand")
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, root / rel)
            print(f"restored {rel}")
    shutil.rmtree(root / ASIDE, ignore_errors=True)


def default_source() -> Path:
    for candidate in (ROOT.parent / "shared", ROOT / "shared", Path("/work/shared")):
        if (candidate / "data" / "cifar10").is_dir():
            return candidate / "data" / "cifar10"
    return ROOT.parent / "shared" / "data" / "cifar10"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--source", type=Path, default=None, help="CIFAR-10's WebP sheets (default ../shared/data/cifar10)"
    )
    p.add_argument("--check", action="store_true", help="only print what each call would carry")
    p.add_argument("--restore", action="store_true", help="put the set-aside artifacts back")
    args = p.parse_args(argv)
    if args.restore:
        restore()
        return 0
    if not args.check:
        fill(args.source or default_source())
        set_aside()
    if not report():
        print("refusing: a call would carry more than the device takes; set more aside or carry less")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

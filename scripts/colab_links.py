"""Point every chapter's "Open in Colab" badge and Colab install line at `dkdlib.weights.REPOSITORY`,
the one place that says where the package lives on GitHub (and `BRANCH`, whose notebooks the badges open).

python scripts/colab_links.py          # rewrite them after changing REPOSITORY / BRANCH
python scripts/colab_links.py --check  # exit 1 if a chapter disagrees (the tests check the same)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkdlib.weights import BRANCH, REPOSITORY  # noqa: E402

# The install line of every chapter's Colab cell: the repository's default branch (Colab's torch is kept).
INSTALL = f'%pip install -q "dkdlib @ git+https://github.com/{REPOSITORY}"'

BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/[^)]*\)")
INSTALL_LINE = re.compile(r'%pip install -q "dkdlib @ git\+[^"]*"')


def colab_url(notebook: str) -> str:
    """The Colab address that opens `notebook` (a file name in notebooks/) from GitHub."""
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/notebooks/{notebook}"


def badge(notebook: str) -> str:
    """The "Open in Colab" badge (Markdown) of a chapter."""
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)})"
    )


def relink(nb: dict, name: str) -> dict:
    """The notebook with its badge and install line pointing at REPOSITORY (changed in place)."""
    for cell in nb["cells"]:
        cell["source"] = [
            INSTALL_LINE.sub(lambda _: INSTALL, BADGE.sub(lambda _: badge(name), line))
            for line in cell["source"]
        ]
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only report chapters that disagree")
    args = parser.parse_args(argv)
    stale = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        text = path.read_text()
        new = json.dumps(relink(json.loads(text), path.name), indent=1, ensure_ascii=False) + "\n"
        if new != text:
            stale.append(path.name)
            if not args.check:
                path.write_text(new)
    verb = "disagree with" if args.check else "now point at"
    print(f"{len(stale)} chapter(s) {verb} dkdlib.weights.REPOSITORY: {', '.join(stale) or '-'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

"""The notebooks and dkdlib agree: the series is complete and in order, every chapter follows the
conventions (Colab badge, guarded install cell, setup()), no chapter redefines the library's losses, and
chapter 4 shows the loss code straight from dkdlib.losses — with committed outputs that are current."""

import ast
import importlib.util
import inspect
import json
import re
from pathlib import Path

import pytest

from dkdlib import losses

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
_spec = importlib.util.spec_from_file_location("colab_links", NOTEBOOKS.parent / "scripts" / "colab_links.py")
colab_links = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(colab_links)
INSTALL, badge = colab_links.INSTALL, colab_links.badge
PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
# Chapters that meet issue #14's learner conventions (GPU metadata, exercises, two checked cells).
LEARNER_CHAPTERS = [p for p in PATHS if p.name[:2] in {f"{i:02d}" for i in range(8)}]
LIBRARY_NAMES = {"kd_loss", "dkd_loss", "dkd_terms", "_dkd_terms", "_dkd_loss", "_kd_loss"}


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _code_cells(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def _python(source: str) -> ast.Module:
    """Parse a code cell, with IPython magics and shell lines turned into `pass`."""
    lines = [re.sub(r"^(\s*)[%!].*$", r"\1pass", line) for line in source.splitlines()]
    return ast.parse("\n".join(lines))


def _output_text(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append("".join(out["text"]))
        for kind in ("text/plain", "text/markdown"):
            if kind in out.get("data", {}):
                parts.append("".join(out["data"][kind]))
    return "".join(parts)


def test_all_eight_chapters_exist_in_order():
    names = [p.name for p in PATHS]
    for i in range(8):
        matches = [n for n in names if n.startswith(f"{i:02d}_")]
        assert len(matches) == 1, f"expected one notebook {i:02d}_*.ipynb in notebooks/, found {matches}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_conventions(path):
    nb = _load(path)
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown", "the first cell is the chapter's Markdown introduction"
    text = "".join(first["source"])
    assert badge(path.name) in text, (
        "Open-in-Colab badge (pointing at this file, from dkdlib.weights.REPOSITORY) in the first cell: "
        "run scripts/colab_links.py"
    )
    assert "what you will learn" in text.lower()
    code = _code_cells(nb)
    assert code, "a notebook without code"
    setup_cell = code[0]
    assert 'if "google.colab" in sys.modules:' in setup_cell, "the first code cell guards the Colab install"
    assert INSTALL in setup_cell, "the install line comes from scripts/colab_links.py's INSTALL: run it"
    pip_lines = [line for line in setup_cell.splitlines() if "pip install" in line]
    assert all("torch" not in line for line in pip_lines), "the Colab install must not (re)install torch"
    guarded = setup_cell.split('if "google.colab" in sys.modules:')[1].splitlines()
    assert all(line.startswith((" ", "\t")) or not line.strip() for line in guarded[1:2]), (
        "install is inside the if"
    )
    assert re.search(r"^info = setup\(", "\n".join(code[:2]), re.M), "setup() is called at the top"
    source = "\n".join(code)
    if re.search(r"\bfit\(", source):
        assert 'progress=info["mode"] == "full"' in source, "fit(...) gets progress=info['mode'] == 'full'"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_machinery_comes_from_dkdlib(path):
    nb = _load(path)
    trees = [_python(src) for src in _code_cells(nb)]
    defined = set()
    imports_dkdlib = False
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Assign):
                defined.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dkdlib"):
                imports_dkdlib = True
            elif isinstance(node, ast.Import) and any(a.name.startswith("dkdlib") for a in node.names):
                imports_dkdlib = True
    assert imports_dkdlib, "a chapter imports its machinery from dkdlib"
    redefined = defined & LIBRARY_NAMES
    assert not redefined, f"{path.name} redefines {sorted(redefined)}; import them from dkdlib.losses instead"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_committed_outputs_are_valid_for_nbval(path):
    for cell in _load(path)["cells"]:
        if cell["cell_type"] == "code" and cell.get("outputs"):
            assert cell.get("execution_count") is not None, "a cell with outputs but no execution count"


def _chapter(number: str) -> Path:
    matches = [p for p in PATHS if p.name.startswith(number)]
    if not matches:
        pytest.skip(f"notebook {number}_*.ipynb not there yet")
    return matches[0]


def test_chapter4_shows_the_library_loss_code():
    nb = _load(_chapter("04"))
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    shown = [c for c in cells if "inspect.getsource" in "".join(c["source"])]
    cell = next((c for c in shown if "losses._dkd_terms" in "".join(c["source"])), None)
    assert cell is not None, "chapter 4 shows losses._dkd_terms via inspect.getsource"
    src = "".join(cell["source"])
    assert "losses.dkd_loss" in src
    output = _output_text(cell)
    if output:  # committed outputs must show the library's current code, not a stale copy
        for fn in (losses._dkd_terms, losses.dkd_loss):
            assert inspect.getsource(fn).strip() in output, f"re-run chapter 4: {fn.__name__} changed"


def test_chapter4_checked_cells_say_true():
    nb = _load(_chapter("04"))
    checked = _checked(nb)
    assert len(checked) >= 5, "the identity, gradients, DKD≠KD and log-space checks are nbval-checked"
    for cell in checked:
        text = _output_text(cell)
        if cell.get("outputs"):
            assert "True" in text and "False" not in text, f"a check failed in the committed output:\n{text}"


def _checked(nb: dict) -> list[dict]:
    """The code cells whose output nbval compares under --nbval-lax: those tagged `nbval-check-output`
    (nbval's `# NBVAL_CHECK_OUTPUT` comment is a developer note that `test_no_developer_notes` refuses)."""
    return [
        c
        for c in nb["cells"]
        if c["cell_type"] == "code" and "nbval-check-output" in c["metadata"].get("tags", [])
    ]


# What a learner should not meet in a chapter: notes for developers and for the test machinery.
DEVELOPER_NOTES = [
    "NBVAL_",  # nbval's comment markers: the chapters use cell tags (nbval-check-output, ...)
    "fmt: skip",
    "tests/",
    "GPU window",
    "gpu_window",
    "run_series",
    "before section",
    "version of this chapter",
]
CLEAN_CHAPTERS = [p for p in PATHS if p.name[:2] in {f"{i:02d}" for i in range(8)}]


@pytest.mark.parametrize("path", CLEAN_CHAPTERS, ids=lambda p: p.name)
def test_heading_style(path):
    """One style of chapter heading: '# Chapter N · Title', N the file's number."""
    heading = "".join(_load(path)["cells"][0]["source"]).splitlines()[0]
    assert re.fullmatch(rf"# Chapter {int(path.name[:2])} · \S.*", heading), heading


@pytest.mark.parametrize("path", CLEAN_CHAPTERS, ids=lambda p: p.name)
def test_no_developer_notes(path):
    """Chapters 0–7 show a learner the lesson only: no developer notes in cells, no execution timestamps."""
    nb = _load(path)
    for i, cell in enumerate(nb["cells"]):
        source = "".join(cell["source"])
        found = [s for s in DEVELOPER_NOTES if s in source]
        assert not found, f"cell {i} contains {found}"
        stamps = {"execution", "ExecuteTime"} & set(cell["metadata"])
        assert not stamps, f"cell {i} keeps the metadata of an earlier execution: {stamps}"


def test_nbval_honours_the_check_output_tag(tmp_path):
    """Under --nbval-lax (pyproject's addopts) a cell tagged nbval-check-output is compared, an untagged one
    is not: a tagged cell whose committed output is wrong fails, the same cell untagged passes."""
    import subprocess
    import sys

    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbval")

    def notebook(tags: list[str]) -> Path:
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell('print("computed")')
        cell.metadata["tags"] = tags
        cell.execution_count = 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="committed\n")]
        nb.cells = [cell]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = tmp_path / f"nb_{'_'.join(tags) or 'untagged'}.ipynb"
        nbformat.write(nb, path)
        return path

    def run(path: Path) -> int:
        cmd = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "--nbval-lax", "--nbval-current-env",
               "-p", "no:randomly", "-p", "no:cacheprovider", str(path)]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120).returncode

    assert run(notebook(["nbval-check-output"])) == 1, "a tagged cell's output is compared"
    assert run(notebook([])) == 0, "an untagged cell's output is not"


@pytest.mark.parametrize("path", LEARNER_CHAPTERS, ids=lambda p: p.name)
def test_learner_conventions(path):
    """Colab GPU metadata, at least two output-checked cells, 2–4 exercises with collapsed answers."""
    nb = _load(path)
    assert nb["metadata"].get("accelerator") == "GPU", "Colab opens the chapter on a GPU runtime"
    assert len(_checked(nb)) >= 2, "at least two cells whose output nbval checks"
    markdown = [(c, "".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "markdown"]
    exercises = [text for _, text in markdown if text.startswith("## Exercises")]
    assert len(exercises) == 1, "one Exercises section"
    count = len(re.findall(r"(?m)^\d+\. ", exercises[0]))
    assert 2 <= count <= 4, f"2–4 exercises, found {count}"
    answers = [c for c, text in markdown if text.startswith("### Answers")]
    assert len(answers) == 1 and answers[0]["metadata"].get("jupyter", {}).get("source_hidden"), (
        "the answers are in one collapsed cell"
    )
    assert len(re.findall(r"(?m)^\d+\. ", "".join(answers[0]["source"]))) == count, "one answer per exercise"


def test_colab_links_script_agrees():
    """scripts/colab_links.py would change nothing: every badge and install line follows REPOSITORY."""
    import subprocess
    import sys

    script = NOTEBOOKS.parent / "scripts" / "colab_links.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

"""scripts/run_series.py executes a chapter in fast mode and writes its outputs into the notebook (run on a
temporary copy of chapter 0, the chapter that trains nothing: about 10 s)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_run_series_executes_a_chapter_in_place(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    source = next((ROOT / "notebooks").glob("00_*.ipynb"))
    copy = notebooks / source.name
    nb = json.loads(source.read_text())
    for cell in nb["cells"]:  # start from no outputs, so every output below is this run's
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    copy.write_text(json.dumps(nb))
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_series.py"), "--mode", "fast", "--chapters", "00",
         "--notebooks", str(notebooks), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{source.name} ... " in result.stdout and "1 chapter(s) in" in result.stdout
    ran = json.loads(copy.read_text())
    code = [c for c in ran["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code), "every code cell ran"
    text = "".join("".join(o.get("text", "")) for c in code for o in c["outputs"])
    assert "FAST MODE" in text and "outputs in ../out" in text  # the mode and the one output folder
    images = [o for c in code for o in c["outputs"] if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "figures appear under MPLBACKEND=Agg"
    assert not list(notebooks.glob(".*.tmp")), "no temporary file left behind"

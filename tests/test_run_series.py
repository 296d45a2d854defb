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
        # ... and with the timestamps an earlier execution (nbclient, Jupyter) leaves in the metadata
        cell["metadata"]["execution"] = {"iopub.status.idle": "2020-01-01T00:00:00.000000Z"}
        cell["metadata"]["ExecuteTime"] = {"end_time": "2020-01-01T00:00:00.000000Z"}
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
    stamped = [c for c in ran["cells"] if {"execution", "ExecuteTime"} & set(c["metadata"])]
    assert not stamped, "no execution timestamps written"
    tags = [c["metadata"].get("tags") for c in nb["cells"]]
    assert [c["metadata"].get("tags") for c in ran["cells"]] == tags, "the nbval tags are kept"


def test_every_mode_sets_only_its_variable(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_series", ROOT / "scripts" / "run_series.py")
    run_series = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_series)
    monkeypatch.setenv("DKDLIB_MODE", "full")  # a stale variable of the shell must not pick the mode
    from dkdlib.recipes import MODES

    for mode in MODES:
        env = run_series.series_environment(mode, tmp_path / "out", None, tmp_path)
        assert env["DKDLIB_MODE"] == mode
        monkeypatch.setattr("os.environ", env)
        from dkdlib.recipes import mode as current

        assert current() == mode

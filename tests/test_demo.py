"""`python -m dkdlib demo`: the series' teacher and students, loaded where they exist, one test table."""

from dkdlib.cli import main


def test_demo_trains_then_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DKDLIB_WEIGHTS", "0")
    assert main(["demo", "--fast", "--out-dir", str(tmp_path)]) == 0
    first = capsys.readouterr().out
    assert "teacher resnet20" in first and "DKD − CE" in first
    records = sorted((tmp_path / "results").glob("*.json"))
    assert len(records) == 4  # the teacher and three students
    assert main(["demo", "--fast", "--out-dir", str(tmp_path)]) == 0  # loaded, not trained again
    second = capsys.readouterr().out
    assert sorted((tmp_path / "results").glob("*.json")) == records
    table = [line for line in first.splitlines() if line.strip().startswith(("teacher", "ce", "kd", "dkd"))]
    assert table == [line for line in second.splitlines() if line in table]  # the same accuracies


def test_demo_without_runs_says_how_to_train(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DKDLIB_WEIGHTS", str(tmp_path / "none"))
    assert main(["demo", "--out-dir", str(tmp_path), "--data", str(tmp_path / "absent.npz")]) != 0
    assert "demo --mode cpu --train" in capsys.readouterr().err

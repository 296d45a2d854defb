"""scripts/results_table.py: records in, the README's table out (and nothing from elsewhere)."""

import importlib.util
from pathlib import Path

from dkdlib.results import write_record

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "results_table.py"
spec = importlib.util.spec_from_file_location("results_table", SCRIPT)
results_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results_table)


def record(tag, method, seed, acc, metrics=None, **config):
    cfg = {"model": "resnet8", "method": method, "dataset": "cifar10", "epochs": 3, "seed": seed, "tag": tag,
           "alpha": 1.0, "beta": 8.0, "temperature": 4.0, "train_size": 2000, **config}  # fmt: skip
    env = {"hardware": "CPU test", "git_commit": "abc", "date": "2026-11-26T00:00"}
    metrics = {"test_acc": acc, "test_acc_at_best_val": acc - 0.01, "test_acc_at_best_val_loss": acc - 0.02,
               **(metrics or {})}  # fmt: skip
    return {"name": f"{method}-{seed}-{tag}", "config": cfg, "wall_time_s": 60.0, "environment": env,
            "metrics": metrics}  # fmt: skip


def test_table_from_reproduce_records_only(tmp_path):
    for seed, acc in enumerate([0.50, 0.52, 0.54]):
        write_record(tmp_path, record("ref:dkd_100", "dkd", seed, acc))
        write_record(tmp_path, record("ref:student", "ce", seed, acc - 0.1))
    write_record(tmp_path, record("", "kd", 0, 0.99))  # not a reproduce run: must not appear
    text = results_table.render(tmp_path)
    assert "DKD α=1 β=8, 100 ep" in text and "52.00 ± 2.00 (3 ep, n=3)" in text and "42.00 ± 2.00" in text
    assert "| 87.21 |" in text  # the reference's DKD (100 ep) beside ours
    assert "99.00" not in text and "KD, as long" not in text
    assert "6 runs; total wall time 6.0 min; hardware: CPU test" in text


def test_readings_sit_side_by_side_with_their_fair_baselines_and_notes(tmp_path):
    """Old tags read as described; as-run runs that start from the CE student show its epochs (2+3)."""
    write_record(tmp_path, record("ref:dkd_100", "dkd", 0, 0.50))
    as_run = {"init": "s-best.pt", "temperature": 8.0, "beta": 0.5}
    write_record(tmp_path, record("ref:as_run:dkd_100", "dkd", 0, 0.60, {"init_epochs": 2}, **as_run,
                                  note="teacher: trained from scratch"))  # fmt: skip
    write_record(tmp_path, record("ref:as_run:ce_150", "ce", 0, 0.58, {"init_epochs": 2}, init="s-best.pt"))
    write_record(tmp_path, record("ref:as_described:ce_100", "ce", 0, 0.55))
    text = results_table.render(tmp_path)
    row = next(line for line in text.splitlines() if "DKD α=1 β=8, 100 ep" in line)
    assert row.split(" | ")[2:] == ["87.21", "50.00 (3 ep, n=1)", "48.00 (3 ep, n=1)", "60.00 (2+3 ep, n=1)",
                                    "58.00 (2+3 ep, n=1) |"]  # fmt: skip
    fair = next(line for line in text.splitlines() if "CE, as long as DKD α=1 β=8, 100 ep" in line)
    assert "55.00 (3 ep, n=1)" in fair and "58.00 (2+3 ep, n=1)" in fair
    assert "Note (cifar10, 2,000 training images (reduced), as run: teacher: trained from scratch)" in text


def test_readme_markers_are_filled_and_checked(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        f"intro\n{results_table.START}\nold\n{results_table.END}\nmid\n"
        f"{results_table.CPU_START}\nold\n{results_table.CPU_END}\nrest\n"
    )
    (tmp_path / "results").mkdir()
    import sys

    argv = sys.argv
    try:
        sys.argv = [
            "results_table.py",
            "--dir",
            str(tmp_path / "results"),
            "--readme",
            str(readme),
            "--check",
        ]
        assert results_table.main() == 1  # out of date
        sys.argv = sys.argv[:-1]
        assert results_table.main() == 0
        sys.argv.append("--check")
        assert results_table.main() == 0
    finally:
        sys.argv = argv
    assert "old" not in readme.read_text() and "rest" in readme.read_text()


def test_cpu_table_from_records(tmp_path):
    """The CPU scale's table reads the campaign's records by run name: seeds, spread, DKD − CE."""
    import json

    from dkdlib.recipes import campaign_queue

    names = {label: cfg for _, label, cfg in campaign_queue("cpu")}
    accs = {"ce seed 0": 0.83, "ce seed 1": 0.84, "dkd seed 0": 0.85, "dkd seed 1": 0.855, "teacher": 0.9}
    for i, (label, acc) in enumerate(accs.items()):
        cfg = names[label]
        record = {"name": cfg.run_name(), "config": {"seed": cfg.seed}, "metrics": {"test_acc": acc},
                  "wall_time_s": 1800, "environment": {"hardware": "test cpu"},
                  "history": [{"seconds": 60.0}, {"seconds": 900.0}, {"seconds": 60.0}]}  # fmt: skip
        (tmp_path / f"2026{i:02d}-{cfg.run_name()}.json").write_text(json.dumps(record))
    text = results_table.render_cpu(tmp_path)
    assert "| student alone, CE | 83.50 (83.00–84.00) | 0, 1 | 80.49 |" in text
    assert "| classic KD | not yet | — | — |" in text
    assert (
        "DKD − CE, seed by seed: +2.00, +1.50 points (mean +1.75 ± 0.35, the standard deviation over seeds)"
        in text
    )
    assert "5 runs on test cpu: 1.4 h of training as recorded, 0.2 h at a quiet machine's pace" in text

"""The command line, end to end on tiny data: every subcommand runs and bad input exits cleanly."""

import json
from pathlib import Path

import numpy as np
import pytest

from dkdlib import DKDError
from dkdlib.cli import main
from dkdlib.results import load_records

TINY = ["--dataset", "synthetic", "--train-size", "256", "--val-size", "100", "--test-size", "100",
        "--epochs", "1", "--batch-size", "32", "--no-progress", "--device", "cpu"]  # fmt: skip


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for word in ("train", "distill", "evaluate", "reproduce", "demo", "results", "Examples"):
        assert word in out
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    out = capsys.readouterr().out
    assert "--beta" in out and "NCKD" in out and "--temperature" in out


def test_train_distill_evaluate_results(tmp_path, capsys):
    out_dir = ["--out-dir", tmp_path]
    code, out, _ = run(["train", "--model", "resnet8", "--name", "teacher", *TINY, *out_dir], capsys)
    assert code == 0 and "test acc" in out
    teacher = tmp_path / "checkpoints" / "teacher.pt"
    assert teacher.is_file()
    code, out, _ = run(
        ["distill", "--teacher", teacher, "--method", "dkd", "--beta", "2", *TINY, *out_dir], capsys
    )
    assert code == 0 and "dkd-resnet8-synthetic" in out
    records = load_records(tmp_path / "results")
    assert len(records) == 2 and records[1]["config"]["beta"] == 2.0
    code, out, _ = run(["results", "--dir", tmp_path / "results"], capsys)
    assert code == 0 and "test_acc" in out


def test_evaluate_on_an_npz(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
    y = np.arange(300) % 10
    np.savez(tmp_path / "c10.npz", x_train=x, y_train=y, x_test=x[:50], y_test=y[:50])
    args = ["--dataset", "cifar10", "--data", tmp_path / "c10.npz", "--val-size", "50", "--epochs", "1",
            "--batch-size", "64", "--no-progress", "--out-dir", tmp_path, "--name", "m"]  # fmt: skip
    assert run(["train", *args], capsys)[0] == 0
    code, out, _ = run(
        ["evaluate", tmp_path / "checkpoints" / "m.pt", "--data", tmp_path / "c10.npz"], capsys
    )
    assert code == 0 and "accuracy" in out and "airplane" in out


def tiny_cifar_and_teacher(tmp_path, capsys):
    """A 200-image stand-in for CIFAR-10 as an .npz, and a 1-epoch teacher checkpoint t.pt trained on it."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    y = np.arange(200) % 10
    np.savez(tmp_path / "c10.npz", x_train=x, y_train=y, x_test=x[:40], y_test=y[:40])
    code, out, _ = run(["train", "--model", "resnet8", "--dataset", "cifar10", "--data", tmp_path / "c10.npz",
                        "--val-size", "40", "--epochs", "1", "--no-progress", "--out-dir", tmp_path,
                        "--name", "t"], capsys)  # fmt: skip
    assert code == 0


def test_reproduce_rows_on_tiny_data(tmp_path, capsys):
    tiny_cifar_and_teacher(tmp_path, capsys)
    code, out, _ = run(["reproduce", "--rows", "student", "nckd_b2", "--seeds", "0", "--scale", "0.01",
                        "--teacher", tmp_path / "checkpoints" / "t.pt", "--data", tmp_path / "c10.npz",
                        "--val-size", "40", "--out-dir", tmp_path], capsys)  # fmt: skip
    assert code == 0 and "REDUCED SCHEDULE" in out
    tags = sorted(json.loads(p.read_text())["config"]["tag"] for p in (tmp_path / "results").glob("*.json"))
    assert tags == ["", "ref:as_described:nckd_b2", "ref:as_described:student"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "resnet9"], "unknown model 'resnet9'"),
        (["train", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["train", "--epochs", "0"], "epochs must be an integer > 0"),
        (["distill", "--method", "dkd"], "set teacher= to its checkpoint"),
        (["distill", "--teacher", "nope.pt", "--beta", "-1"], "beta must be >= 0"),
        (
            ["distill", "--teacher", "nope.pt", "--dataset", "synthetic"],
            "teacher checkpoint nope.pt does not exist",
        ),
        (["evaluate", "missing.pt"], "does not exist"),
        (["reproduce", "--rows", "dkd_300"], "unknown rows"),
        (["reproduce", "--rows", "ce_150"], "unknown rows ['ce_150'] for --reading as_described"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    code, _, err = run([*args, "--out-dir", tmp_path] if args[0] != "evaluate" else args, capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_reproduce_trains_a_smaller_teacher_row(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    y = np.arange(200) % 10
    np.savez(tmp_path / "c10.npz", x_train=x, y_train=y, x_test=x[:40], y_test=y[:40])
    code, out, _ = run(["reproduce", "--rows", "teacher", "--seeds", "0", "--scale", "0.01",
                        "--teacher-model", "resnet8", "--teacher-epochs", "2", "--data", tmp_path / "c10.npz",
                        "--val-size", "40", "--no-progress", "--out-dir", tmp_path], capsys)  # fmt: skip
    assert code == 0
    (record,) = (json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json"))
    assert record["config"]["tag"] == "ref:as_described:teacher"
    assert (record["config"]["model"], record["config"]["epochs"]) == ("resnet8", 2)
    assert record["config"]["optimizer"] == "adam"  # still the reference recipe


def test_reproduce_trains_the_rows_with_the_teacher_cache(tmp_path, capsys):
    tiny_cifar_and_teacher(tmp_path, capsys)
    code, out, _ = run(["reproduce", "--rows", "student", "tckd_a1", "nckd_b2", "ce_100", "--seeds", "0",
                        "--scale", "0.02", "--cache-teacher", "--teacher",
                        tmp_path / "checkpoints" / "t.pt", "--data", tmp_path / "c10.npz", "--val-size", "40",
                        "--no-progress", "--out-dir", tmp_path], capsys)  # fmt: skip
    assert code == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    assert sorted(r["config"]["tag"] for r in records if r["config"]["tag"]) == [  # the teacher has none
        "ref:as_described:ce_100",
        "ref:as_described:nckd_b2",
        "ref:as_described:student",
        "ref:as_described:tckd_a1",
    ]
    assert list((tmp_path / "cache").glob("teacher-logits-*.pt"))


def test_reproduce_as_run_starts_from_the_ce_student_and_names_its_reading(tmp_path, capsys):
    """As run: the rows' tags name the reading; DKD and its CE baseline start from the student's
    lowest-val-loss epoch, which is trained first even when not asked for; the teacher must share the
    as-run normalisation (the tiny teacher here is trained with it)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (600, 32, 32, 3), dtype=np.uint8)  # the student trains at batch 512
    y = np.arange(600) % 10
    np.savez(tmp_path / "c10.npz", x_train=x, y_train=y, x_test=x[:40], y_test=y[:40])
    common = ["--data", tmp_path / "c10.npz", "--val-size", "40", "--no-progress", "--out-dir", tmp_path]
    code, out, _ = run(["reproduce", "--reading", "as_run", "--rows", "teacher", "dkd_100", "ce_150",
                        "--seeds", "0", "--scale", "0.02", "--teacher-model", "resnet8",
                        "--teacher-epochs", "1", *common], capsys)  # fmt: skip
    assert code == 0 and "reading as_run" in out
    records = {
        r["config"]["tag"]: r
        for r in map(json.loads, map(Path.read_text, (tmp_path / "results").glob("*.json")))
    }
    assert set(records) == {
        "ref:as_run:teacher",
        "ref:as_run:student",
        "ref:as_run:dkd_100",
        "ref:as_run:ce_150",
    }
    student, dkd, ce = (records[f"ref:as_run:{n}"]["config"] for n in ("student", "dkd_100", "ce_150"))
    assert (
        Path(dkd["init"]).name == Path(ce["init"]).name == f"{records['ref:as_run:student']['name']}-best.pt"
    )
    assert (dkd["temperature"], dkd["alpha"], dkd["beta"], dkd["warmup"]) == (8.0, 1.0, 0.5, 0)
    assert student["batch_size"] == 512 and student["std"] == [0.2023, 0.1994, 0.2010]
    assert Path(dkd["teacher"]).name.endswith("-best.pt")  # distilled from the teacher's saved epoch
    assert records["ref:as_run:dkd_100"]["metrics"]["total_epochs"] == 1 + 2  # the student's 1, its own 2
    assert records["ref:as_run:teacher"]["config"]["pretrained"] is False  # resnet8: no ImageNet weights


def test_reproduce_both_readings_falls_back_to_a_scratch_teacher_with_a_note(tmp_path, capsys, monkeypatch):
    import dkdlib.models as models_mod

    def offline():
        raise DKDError("could not fetch the ImageNet weights for resnet18_imagenet (URLError: offline)")

    monkeypatch.setattr(models_mod, "_imagenet_resnet18_state", offline)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (160, 32, 32, 3), dtype=np.uint8)  # one step of batch 128
    y = np.arange(160) % 10
    np.savez(tmp_path / "c10.npz", x_train=x, y_train=y, x_test=x[:20], y_test=y[:20])
    code, out, _ = run(["reproduce", "--reading", "both", "--rows", "teacher", "--seeds", "0",
                        "--scale", "0.02", "--teacher-epochs", "1", "--data", tmp_path / "c10.npz",
                        "--val-size", "20", "--no-progress", "--out-dir", tmp_path], capsys)  # fmt: skip
    assert code == 0 and "reading as_described" in out and "reading as_run" in out
    assert "NOTE: ImageNet weights could not be fetched" in out
    records = {
        r["config"]["tag"]: r
        for r in map(json.loads, map(Path.read_text, (tmp_path / "results").glob("*.json")))
    }
    assert set(records) == {"ref:as_described:teacher", "ref:as_run:teacher"}
    teacher = records["ref:as_run:teacher"]["config"]
    assert teacher["model"] == "resnet18" and teacher["pretrained"] is False
    assert "trained from scratch, unlike the reference's" in teacher["note"]


def test_reproduce_of_ce_rows_alone_trains_no_teacher(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    y = np.arange(200) % 10
    np.savez(tmp_path / "c10.npz", x_train=x, y_train=y, x_test=x[:40], y_test=y[:40])
    code, _, _ = run(["reproduce", "--rows", "ce_200", "--seeds", "0", "--scale", "0.005", "--data",
                      tmp_path / "c10.npz", "--val-size", "40", "--no-progress", "--out-dir", tmp_path],
                     capsys)  # fmt: skip
    assert code == 0
    (record,) = load_records(tmp_path / "results")
    assert record["config"]["tag"] == "ref:as_described:ce_200" and record["config"]["epochs"] == 1

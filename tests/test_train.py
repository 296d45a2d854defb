"""Training: learning happens, runs are repeatable, checkpoints resume exactly, faults are contained."""

import json
import threading
from dataclasses import replace

import pytest
import torch

import dkdlib.train as train_mod
from dkdlib import Config, DKDError, fit
from dkdlib.checkpoint import load_checkpoint, load_model, save_checkpoint
from dkdlib.results import load_records, load_results, write_record


def cfg(tmp_path, **kw):
    base = dict(model="resnet8", dataset="synthetic", epochs=2, batch_size=32, lr=0.05, val_size=200,
                train_size=600, test_size=200, warmup=2, out_dir=str(tmp_path), device="cpu")  # fmt: skip
    return Config(**{**base, **kw})


TIMING = ("seconds", "images_per_s")


def strip_timing(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_data):
    out = tmp_path_factory.mktemp("teacher")
    return fit(cfg(out, epochs=3, lr=0.1), data=tiny_data, progress=False)


def test_ce_training_learns_on_synthetic_data(teacher):
    h = teacher.history
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert teacher.metrics["test_acc"] > 0.5  # chance is 0.1
    assert {
        "epoch",
        "lr",
        "train_loss",
        "train_acc",
        "val_acc",
        "test_acc",
        "seconds",
        "images_per_s",
    } <= set(h[0])
    m = teacher.metrics
    assert len(m["per_class_acc"]) == 10 and sum(map(sum, m["confusion"])) == 200


@pytest.mark.parametrize("method", ["kd", "dkd", "tckd", "nckd"])
def test_distillation_methods_train(tmp_path, tiny_data, teacher, method):
    run = fit(cfg(tmp_path, method=method, teacher=str(teacher.checkpoint)), data=tiny_data, progress=False)
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"] or run.metrics["test_acc"] > 0.3
    assert run.history[0]["distill_weight"] == 0.5 and run.history[1]["distill_weight"] == 1.0  # warm-up


def test_teacher_is_frozen_and_in_eval_mode(tmp_path, tiny_data, teacher, monkeypatch):
    seen = {}
    original = train_mod.load_teacher

    def spy(*args, **kwargs):
        model = original(*args, **kwargs)
        seen["model"] = model
        seen["before"] = {k: v.clone() for k, v in model.state_dict().items()}
        return model

    monkeypatch.setattr(train_mod, "load_teacher", spy)
    fit(
        cfg(tmp_path, method="dkd", teacher=str(teacher.checkpoint), epochs=1), data=tiny_data, progress=False
    )
    model = seen["model"]
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for k, v in model.state_dict().items():  # BN running stats untouched too
        assert torch.equal(v, seen["before"][k]), k


def test_same_seed_same_run_on_cpu(tmp_path, tiny_data):
    a = fit(cfg(tmp_path / "a", epochs=1), data=tiny_data, progress=False, save=False)
    b = fit(cfg(tmp_path / "b", epochs=1), data=tiny_data, progress=False, save=False)
    c = fit(cfg(tmp_path / "c", epochs=1, seed=1), data=tiny_data, progress=False, save=False)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert strip_timing(a.history) == strip_timing(b.history)
    assert not torch.equal(a.model.fc.weight, c.model.fc.weight)


def test_checkpoint_round_trip_and_train_or_load(tmp_path, tiny_data):
    run = fit(cfg(tmp_path, epochs=1), data=tiny_data, progress=False)
    state = load_checkpoint(run.checkpoint)
    assert state["complete"] and state["model_name"] == "resnet8" and state["dataset"] == "synthetic"
    assert state["config"]["epochs"] == 1 and state["num_classes"] == 10
    model = load_model(run.checkpoint)
    for k, v in run.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    again = fit(cfg(tmp_path, epochs=1), data=tiny_data, progress=False)  # loads, does not retrain
    assert again.record is None and again.history == run.history
    assert len(load_records(tmp_path / "results")) == 1


def test_record_has_provenance(tmp_path, tiny_data):
    run = fit(cfg(tmp_path, epochs=1), data=tiny_data, progress=False)
    rec = json.loads(run.record.read_text())
    assert rec["config"]["seed"] == 0 and rec["data_source"].startswith("SYNTHETIC")
    env = rec["environment"]
    assert {"hardware", "torch", "torchvision", "numpy", "python", "git_commit", "date"} <= set(env)
    assert rec["wall_time_s"] > 0 and len(rec["history"]) == 1
    df = load_results(tmp_path / "results")
    assert df.loc[0, "test_acc"] == rec["metrics"]["test_acc"] and df.loc[0, "model"] == "resnet8"


class Interrupt:
    """Raise KeyboardInterrupt in the middle of a given epoch (as Ctrl-C would)."""

    def __init__(self, monkeypatch, epoch, step):
        self.calls = 0
        original = train_mod.student_loss

        def losses(config):
            loss_fn = original(config)

            def loss(*args):
                self.calls += 1
                steps_per_epoch = 600 // 32
                if self.calls == (epoch - 1) * steps_per_epoch + step:
                    raise KeyboardInterrupt
                return loss_fn(*args)

            return loss

        monkeypatch.setattr(train_mod, "student_loss", losses)


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, tiny_data, teacher, monkeypatch, capsys):
    c = cfg(tmp_path / "straight", epochs=3, method="dkd", teacher=str(teacher.checkpoint))
    straight = fit(c, data=tiny_data, progress=False)
    c2 = replace(c, out_dir=str(tmp_path / "interrupted"))
    with monkeypatch.context() as m:
        Interrupt(m, epoch=3, step=5)
        with pytest.raises(KeyboardInterrupt):
            fit(c2, data=tiny_data, progress=False)
    assert "checkpoint of epoch 2 is intact" in capsys.readouterr().out
    assert load_checkpoint(c2.checkpoint_path)["epoch"] == 2
    resumed = fit(c2, data=tiny_data, progress=False)  # the same call resumes
    for (k, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    assert strip_timing(straight.history) == strip_timing(resumed.history)
    assert straight.metrics["test_acc"] == resumed.metrics["test_acc"]


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"epoch": 1})

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half a file")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the write

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_last_good_checkpoint(
    tmp_path, tiny_data, monkeypatch
):
    calls = {"n": 0}
    original = train_mod.student_loss

    def losses(config):
        loss_fn = original(config)

        def loss(*args):
            calls["n"] += 1
            value = loss_fn(*args)
            return value * float("nan") if calls["n"] == 18 + 7 else value  # epoch 2, step 7

        return loss

    monkeypatch.setattr(train_mod, "student_loss", losses)
    c = cfg(tmp_path, epochs=3)
    with pytest.raises(DKDError, match="became nan at epoch 2, step 7 of 18.*last good epoch is kept"):
        fit(c, data=tiny_data, progress=False)
    state = load_checkpoint(c.checkpoint_path)
    assert state["epoch"] == 1 and all(torch.isfinite(v.float()).all() for v in state["model"].values())


def test_parallel_record_writes_lose_nothing(tmp_path):
    def write(i):
        for j in range(10):
            write_record(tmp_path, {"name": "same-name", "metrics": {"i": i, "j": j}})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = load_records(tmp_path)
    assert len(records) == 40
    assert sorted((r["metrics"]["i"], r["metrics"]["j"]) for r in records) == [
        (i, j) for i in range(4) for j in range(10)
    ]


def test_resuming_with_a_different_config_is_refused(tmp_path, tiny_data):
    fit(cfg(tmp_path, epochs=1, name="run"), data=tiny_data, progress=False)
    with pytest.raises(DKDError, match="belongs to a different run.*lr: 0.05 there, 0.1 here"):
        fit(cfg(tmp_path, epochs=1, name="run", lr=0.1), data=tiny_data, progress=False)
    fit(cfg(tmp_path, epochs=1, name="run", lr=0.1), data=tiny_data, progress=False, fresh=True)


def test_a_record_names_the_commit_of_the_code_that_ran(monkeypatch):
    import dkdlib.results as results_mod

    at_import = results_mod._COMMIT_AT_IMPORT
    monkeypatch.setattr(results_mod, "_git_commit", lambda: "a-later-commit")  # the checkout moved on
    assert results_mod.environment()["git_commit"] == at_import


def test_a_finished_one_cycle_run_keeps_its_last_steps_learning_rate(tmp_path, tiny_data):
    """The scheduler is not stepped after the run's last step: OneCycleLR would extrapolate past its
    end to a negative learning rate, and a finished checkpoint would keep it."""
    run = fit(cfg(tmp_path, epochs=2, schedule="onecycle"), data=tiny_data, progress=False)
    state = load_checkpoint(run.checkpoint)
    steps = state["scheduler"]["total_steps"]
    assert state["scheduler"]["last_epoch"] == steps - 1  # every step but the (non-existent) next
    lr = float(state["optimizer"]["param_groups"][0]["lr"])
    assert 0 < lr <= run.history[-1]["lr"] and lr == pytest.approx(0.05 / 10 / 100, rel=0.05)


def test_checkpoints_and_records_are_ordinary_readable_files(tmp_path, tiny_data):
    """atomic_write's temp file (mkstemp: owner-only) becomes a file others may read, like any other."""
    run = fit(cfg(tmp_path, epochs=1), data=tiny_data, progress=False)
    for path in (run.checkpoint, run.record):
        assert path.stat().st_mode & 0o777 == 0o644, path

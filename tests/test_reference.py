"""What the reference's as-run reading needs: init, plateau, normalisation fields, best-val-loss selection.

Each field is a plain `Config` field; these tests check it trains what it says, keeps earlier runs'
names, and fails with a clear `DKDError` where it cannot work.
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import dkdlib.train as train_mod
from dkdlib import Config, DKDError, fit
from dkdlib.checkpoint import load_checkpoint, load_model
from dkdlib.data import DeviceLoader
from dkdlib.train import PlateauSchedule, evaluate, make_optimizer, summarize

ROOT = Path(__file__).resolve().parents[1]
AS_RUN_STD = (0.2023, 0.1994, 0.2010)


def cfg(tmp_path, **kw):
    base = dict(model="resnet8", dataset="synthetic", epochs=2, batch_size=32, lr=0.05, val_size=200,
                train_size=600, test_size=200, warmup=2, out_dir=str(tmp_path), device="cpu")  # fmt: skip
    return Config(**{**base, **kw})


@pytest.fixture(scope="module")
def ce_run(tmp_path_factory, tiny_data):
    """A finished CE run that keeps its lowest-validation-loss epoch."""
    out = tmp_path_factory.mktemp("ce")
    return fit(cfg(out, epochs=3, best_by="val_loss"), data=tiny_data, progress=False)


def fake_epochs(monkeypatch, losses):
    """Replace training by epochs with the given mean training losses (weights untouched)."""
    it = iter(losses)
    monkeypatch.setattr(train_mod, "train_epoch", lambda *a, **k: {"train_loss": next(it), "train_acc": 0.0})


# --- identity -----------------------------------------------------------------------------------------


def test_committed_records_keep_their_run_names():
    """The new fields join a run's identity only when set: every recorded run keeps its name."""
    records = sorted((ROOT / "data" / "results").glob("*.json"))
    assert records
    for path in records:
        rec = json.loads(path.read_text())
        config = {k: tuple(v) if k == "milestones" else v for k, v in rec["config"].items()}
        assert Config(**config).run_name() == rec["name"], path.name


def test_new_fields_count_in_the_identity_only_when_set(tmp_path):
    c = cfg(tmp_path)
    for field in ("init", "mean", "std", "plateau_factor", "plateau_patience", "best_by", "note"):
        assert field not in c.identity()
    assert replace(c, std=AS_RUN_STD).run_name() != c.run_name()
    assert replace(c, plateau_factor=0.05).run_name() != c.run_name()
    assert replace(c, best_by="val_loss").run_name() != c.run_name()
    assert replace(c, note="anything").run_name() == c.run_name()  # a note does not change what is learned


def test_init_counts_by_file_name(tmp_path):
    c = cfg(tmp_path)
    a = replace(c, init="/drive/one/checkpoints/ce-best.pt")
    assert a.run_name() == replace(c, init="/tmp/elsewhere/ce-best.pt").run_name()
    assert a.run_name() != replace(c, init="/drive/one/checkpoints/other.pt").run_name() != c.run_name()
    assert a.identity()["init"] == "ce-best.pt"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"plateau_factor": 1.5}, "plateau_factor must lie in"),
        ({"plateau_patience": -1}, "plateau_patience must be an integer"),
        ({"std": (0.2, 0.2)}, "std must be None .* or three numbers"),
        ({"std": (0.2, 0.0, 0.2)}, "std must be > 0"),
        ({"best_by": "test_acc"}, "unknown best_by 'test_acc'"),
        ({"best_by": "val_loss", "val_size": 0}, "picks an epoch by validation"),
        ({"init": "/nowhere/ce.pt"}, "init checkpoint /nowhere/ce.pt does not exist"),
        ({"schedule": "plateaux"}, "unknown schedule 'plateaux'.*plateau"),
    ],
)
def test_bad_values_are_named(tmp_path, change, message):
    with pytest.raises(DKDError, match=message):
        cfg(tmp_path, **change).validate()


# --- init -----------------------------------------------------------------------------------------------


def test_init_starts_from_the_checkpoint_and_counts_its_epochs(tmp_path, tiny_data, ce_run, monkeypatch):
    fake_epochs(monkeypatch, [1.0, 1.0])  # no training: the weights must stay the init's
    run = fit(cfg(tmp_path, init=str(ce_run.config.best_path)), data=tiny_data, progress=False)
    best = load_checkpoint(ce_run.config.best_path)
    for k, v in run.model.state_dict().items():
        assert torch.equal(v, best["model"][k]), k
    m = run.metrics
    assert m["init_epochs"] == 3 and m["total_epochs"] == 5 and m["init_epoch"] == best["epoch"]
    # Records are portable: an init outside the run's output folder is named by its file name.
    assert json.loads(run.record.read_text())["config"]["init"] == ce_run.config.best_path.name


def test_init_of_another_architecture_is_refused(tmp_path, tiny_data, ce_run):
    with pytest.raises(DKDError, match="holds a resnet8 with 10 classes, but this run trains a resnet20"):
        fit(cfg(tmp_path, model="resnet20", init=str(ce_run.checkpoint)), data=tiny_data, progress=False)


# --- plateau --------------------------------------------------------------------------------------------


def test_plateau_lowers_the_lr_when_the_training_loss_stalls(tmp_path, tiny_data, monkeypatch):
    fake_epochs(monkeypatch, [1.0, 0.5, 0.6, 0.7, 0.4])
    c = cfg(tmp_path, epochs=5, lr=0.1, schedule="plateau", plateau_factor=0.5, plateau_patience=1)
    run = fit(c, data=tiny_data, progress=False)
    # epoch 3 is the first bad one, epoch 4 the second (> patience 1): epoch 5 runs at half the rate.
    assert [h["lr"] for h in run.history] == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05])


def test_plateau_lowers_a_graphed_steps_lr_tensor_in_place():
    model = torch.nn.Linear(3, 2)
    optimizer = make_optimizer(Config(optimizer="sgd", lr=0.1), model, graph=True)
    rates = [g["lr"] for g in optimizer.param_groups]
    assert all(isinstance(r, torch.Tensor) for r in rates)
    plateau = PlateauSchedule(optimizer, factor=0.05, patience=0)
    plateau.step()  # per batch: nothing
    plateau.end_epoch(1.0)
    plateau.end_epoch(2.0)  # worse: lr × 0.05
    for group, rate in zip(optimizer.param_groups, rates, strict=True):
        assert group["lr"] is rate  # the very tensor a captured graph reads
        assert float(rate) == pytest.approx(0.005)
    again = PlateauSchedule(make_optimizer(Config(optimizer="sgd", lr=0.1), model), 0.05, 0)
    again.load_state_dict(plateau.state_dict())
    assert again.plateau.best == 1.0 and again.plateau.num_bad_epochs == 0


def test_an_interrupted_plateau_run_with_init_and_best_resumes_bit_identical(tmp_path, tiny_data, ce_run):
    init = str(ce_run.config.best_path)
    c = cfg(tmp_path / "straight", epochs=3, init=init, optimizer="adam", lr=3e-3, schedule="plateau",
            plateau_factor=0.05, plateau_patience=0, best_by="val_loss")  # fmt: skip
    straight = fit(c, data=tiny_data, progress=False)
    c2 = replace(c, out_dir=str(tmp_path / "interrupted"))
    original = train_mod.TrainStep.start_epoch

    def start_epoch(self, epoch, weight):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(self, epoch, weight)

    train_mod.TrainStep.start_epoch = start_epoch
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(c2, data=tiny_data, progress=False)
    finally:
        train_mod.TrainStep.start_epoch = original
    resumed = fit(c2, data=tiny_data, progress=False)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert [h["lr"] for h in straight.history] == [h["lr"] for h in resumed.history]
    a, b = load_checkpoint(c.best_path), load_checkpoint(c2.best_path)
    assert a["epoch"] == b["epoch"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


# --- best-val-loss selection ------------------------------------------------------------------------------


def test_summarize_records_the_lowest_val_loss_epoch_beside_the_best_val_acc_one():
    history = [
        {"epoch": 1, "val_acc": 0.5, "val_loss": 1.0, "test_acc": 0.50, "seconds": 1, "images_per_s": 1},
        {"epoch": 2, "val_acc": 0.7, "val_loss": 0.8, "test_acc": 0.69, "seconds": 1, "images_per_s": 1},
        {"epoch": 3, "val_acc": 0.6, "val_loss": 0.7, "test_acc": 0.61, "seconds": 1, "images_per_s": 1},
        {"epoch": 4, "val_acc": 0.7, "val_loss": 0.7, "test_acc": 0.66, "seconds": 1, "images_per_s": 1},
    ]
    m = summarize(history)
    assert (m["best_epoch"], m["test_acc_at_best_val"]) == (2, 0.69)  # first of the tied best accuracies
    assert (m["best_val_loss_epoch"], m["best_val_loss"], m["test_acc_at_best_val_loss"]) == (3, 0.7, 0.61)


def test_best_by_val_loss_keeps_that_epochs_weights(ce_run, tiny_data):
    m = ce_run.metrics
    best = load_checkpoint(ce_run.config.best_path)
    assert best["complete"] and best["best_by"] == "val_loss" and best["epoch"] == m["best_val_loss_epoch"]
    assert best["metrics"]["test_acc_at_best_val_loss"] == m["test_acc_at_best_val_loss"]
    model = load_model(ce_run.config.best_path)
    loader = DeviceLoader(tiny_data.x_test, tiny_data.y_test, 100, mean=tiny_data.mean, std=tiny_data.std,
                          train=False)  # fmt: skip
    assert evaluate(model, loader)["acc"] == pytest.approx(m["test_acc_at_best_val_loss"], abs=1e-6)


# --- normalisation ------------------------------------------------------------------------------------------


def test_normalisation_fields_reach_the_loader_checkpoint_and_teacher_check(tmp_path, tiny_data, monkeypatch):
    seen = {}
    original = train_mod.make_loaders

    def spy(c, data, device):
        train, evals = original(c, data, device)
        seen["stats"] = (train.mean, train.std, evals["test"].std)
        return train, evals

    monkeypatch.setattr(train_mod, "make_loaders", spy)
    mean = (0.5, 0.5, 0.5)
    teacher = fit(
        cfg(tmp_path, epochs=1, mean=mean, std=AS_RUN_STD, name="t"), data=tiny_data, progress=False
    )
    assert seen["stats"] == (mean, AS_RUN_STD, AS_RUN_STD)
    state = load_checkpoint(teacher.checkpoint)
    assert state["mean"] == list(mean) and state["std"] == list(AS_RUN_STD)
    student = cfg(tmp_path, epochs=1, method="dkd", teacher=str(teacher.checkpoint))
    with pytest.raises(DKDError, match="teacher .* was trained with normalisation .* set mean= and std="):
        fit(student, data=tiny_data, progress=False, save=False)
    fit(replace(student, mean=mean, std=AS_RUN_STD), data=tiny_data, progress=False, save=False)  # same: fine


def test_default_normalisation_is_the_datasets_own(tmp_path, tiny_data):
    assert train_mod.norm_stats(cfg(tmp_path), tiny_data) == (tuple(tiny_data.mean), tuple(tiny_data.std))
    from dkdlib.data import STATS

    assert STATS["cifar10"][1] == (0.2470, 0.2435, 0.2616)  # the true CIFAR-10 std, not the copied one


# --- the two readings -----------------------------------------------------------------------------------


def test_as_described_rows_are_the_committed_reproduce_runs():
    """reading="as_described" builds exactly the runs the reduced reproduction recorded (same names)."""
    from dkdlib.recipes import parse_tag, reference_configs

    checked = 0
    for path in sorted((ROOT / "data" / "results").glob("*.json")):
        rec = json.loads(path.read_text())
        c = rec["config"]
        reading, row = parse_tag(c["tag"]) or (None, None)
        if reading != "as_described" or row == "teacher":  # the teacher row ran with its own overrides
            continue
        rows = reference_configs(c["teacher"] or "t.pt", seed=c["seed"], scale=0.04, data=c["data"],
                                 train_size=c["train_size"], val_size=c["val_size"])  # fmt: skip
        assert rows[row].run_name() == rec["name"], path.name
        assert rows[row].tag == f"ref:as_described:{row}"
        checked += 1
    assert checked >= 11


def test_as_run_rows_follow_what_the_reference_code_ran():
    from dkdlib.recipes import AS_RUN_STD, reference_configs, reference_rows

    rows = reference_configs("t-best.pt", reading="as_run")
    assert list(rows) == reference_rows("as_run")
    assert set(rows) - set(reference_rows("as_described")) == {"ce_150", "ce_250"}
    for name, c in rows.items():
        assert c.tag == f"ref:as_run:{name}" and c.optimizer == "adam" and c.lr == 1e-3
        assert (c.schedule, c.plateau_factor, c.plateau_patience) == ("plateau", 0.05, 2)
        assert c.std == AS_RUN_STD and c.mean is None and c.warmup == 0
        assert c.best_by == ("val_acc" if name == "tckd_a0.25" else "val_loss")  # its tested file
        assert c.teacher_batch_stats == (c.method != "ce")
        assert c.init == (None if name in ("teacher", "student") else str(rows["student"].best_path))
    t, s, d = rows["teacher"], rows["student"], rows["dkd_200"]
    assert (t.model, t.pretrained, t.weight_decay, t.epochs) == ("resnet18", True, 1e-4, 50)
    assert (s.batch_size, s.weight_decay, s.epochs) == (512, 1e-4, 50)
    assert (d.ce_weight, d.temperature, d.alpha, d.beta, d.batch_size, d.weight_decay, d.epochs) == (
        1.0, 8.0, 1.0, 0.5, 128, 0.0, 200)  # fmt: skip
    a = rows["tckd_a0.25"]
    assert (a.method, a.ce_weight, a.temperature, a.alpha) == ("tckd", 0.25, 8.0, 1.0)
    b = rows["nckd_b4"]
    assert (b.method, b.ce_weight, b.temperature, b.beta) == ("nckd", 0.25, 4.0, 0.5)
    assert "tckd_a1" not in rows  # it cannot be run again (recipes.AS_RUN_NOT_REPRODUCIBLE)
    assert (rows["ce_150"].method, rows["ce_150"].epochs, rows["ce_250"].epochs) == ("ce", 100, 200)
    small = reference_configs(None, reading="as_run", teacher_overrides={"model": "resnet20"})["teacher"]
    assert small.pretrained is False  # ImageNet weights exist for resnet18 only


def test_tags_name_the_reading_and_old_tags_read_as_described():
    from dkdlib.recipes import parse_tag, reference_configs

    assert parse_tag("ref:as_run:dkd_100") == ("as_run", "dkd_100")
    assert parse_tag("ref:dkd_100") == ("as_described", "dkd_100")
    assert parse_tag("") is None and parse_tag(None) is None and parse_tag("series:ce") is None
    with pytest.raises(DKDError, match="unknown reading 'as_wished'"):
        reference_configs(None, reading="as_wished")


def test_records_written_before_the_val_loss_selection_get_it_from_their_history():
    from dkdlib.results import load_results

    frame = load_results(ROOT / "data" / "results").set_index("file")
    for path in sorted((ROOT / "data" / "results").glob("*.json")):
        rec = json.loads(path.read_text())
        if "test_acc_at_best_val_loss" in rec["metrics"] or not rec["history"]:
            continue
        best = min(rec["history"], key=lambda h: h["val_loss"])
        assert frame.loc[path.name, "test_acc_at_best_val_loss"] == pytest.approx(best["test_acc"])
        assert frame.loc[path.name, "test_acc"] == rec["metrics"]["test_acc"]  # recorded values win


def test_reading_recipes_show_what_each_row_ran_and_what_is_inferred():
    from dkdlib.reports import reading_recipes

    frame = reading_recipes().set_index(["row", "reading"])
    dkd = frame.loc[("dkd_100", "as run")]
    assert (dkd["T"], dkd["β"], dkd["start"], dkd["warm-up"], dkd["inferred"]) == (
        8.0,
        0.5,
        "CE student",
        0,
        "",
    )
    assert frame.loc[("dkd_100", "as described"), "T"] == 4.0
    assert frame.loc[("teacher", "as run"), "start"] == "ImageNet"
    assert "no cell kept" in frame.loc[("tckd_a0.5", "as run"), "inferred"]
    assert frame.loc[("tckd_a0.25", "as run"), "inferred"] == ""
    assert "cannot be run again" in frame.loc[("tckd_a1", "as run"), "inferred"]
    assert frame.loc[("student", "as run"), "batch"] == 512
    assert frame.loc[("ce_150", "as run"), "start"] == "CE student"

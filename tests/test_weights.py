"""Committed weights (dkdlib.weights, scripts/export_weights.py): finished runs exported as fp16 files
are found by train-or-load in a fresh output folder, which then trains nothing."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch

import dkdlib.train as train_mod
import dkdlib.weights as weights
from dkdlib import DKDError, fit
from dkdlib.checkpoint import load_checkpoint
from dkdlib.recipes import series_configs, teacher_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A fast-mode teacher and DKD student trained into one folder, exported into another."""
    base = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DKDLIB_OUT", str(base / "trained"))
        configs = series_configs(fast="fast")
        runs = {label: fit(configs[label], progress=False) for label in ("teacher", "dkd")}
        sys.path.insert(0, str(ROOT / "scripts"))
        import export_weights

        assert (
            export_weights.main(["--from", str(base / "trained"), "--out", str(base / "w"), "--mode", "fast"])
            == 0
        )
    return base, runs


def test_export_writes_the_finished_runs_in_fp16_with_a_manifest(exported):
    base, runs = exported
    manifest = json.loads((base / "w" / weights.MANIFEST).read_text())
    assert {e["label"] for e in manifest.values()} == {"teacher", "dkd"}  # the other runs never trained
    for run in runs.values():
        entry = manifest[run.config.run_name()]
        state = load_checkpoint(base / "w" / f"{run.config.run_name()}.pt")
        assert state["complete"] and "optimizer" not in state and entry["test_acc"] == run.metrics["test_acc"]
        halved = {k for k, v in state["model"].items() if v.dtype == torch.float16}
        assert halved == {
            k for k, v in run.model.state_dict().items() if v.is_floating_point() and v.ndim > 1
        }
        assert (
            entry["hardware"]
            and entry["bytes"] == (base / "w" / f"{run.config.run_name()}.pt").stat().st_size
        )
    assert sorted(p.stem for p in (base / "w").glob("*.pt")) == sorted(manifest)


def test_a_fresh_folder_loads_the_committed_runs_and_trains_nothing(exported, monkeypatch, capsys):
    base, runs = exported
    monkeypatch.setenv("DKDLIB_OUT", str(base / "fresh"))
    monkeypatch.setenv("DKDLIB_WEIGHTS", str(base / "w"))

    def no_training(*args, **kwargs):
        raise AssertionError("trained although committed weights exist")

    monkeypatch.setattr(train_mod, "train_epoch", no_training)
    configs = series_configs(fast="fast")
    teacher = fit(configs["teacher"], progress=False)
    student = fit(configs["dkd"], progress=False)  # its teacher= is the fresh folder's copy
    said = capsys.readouterr().out
    assert f"using the committed weights {configs['teacher'].run_name()}.pt" in said
    assert str(base / "w") not in said  # the file, not a folder of this machine
    assert (
        Path(configs["dkd"].teacher).is_file() and teacher.checkpoint.parent == base / "fresh" / "checkpoints"
    )
    for name, run in (("teacher", teacher), ("dkd", student)):
        assert run.metrics == runs[name].metrics and run.history == runs[name].history
        for key, value in runs[name].model.state_dict().items():
            loaded = run.model.state_dict()[key]
            assert loaded.dtype == value.dtype  # cast back to the model's fp32
            halved = value.is_floating_point() and value.ndim > 1  # BN statistics and biases stay fp32
            assert torch.equal(loaded, value.half().to(value.dtype) if halved else value), key


def test_weights_off_and_a_damaged_file(exported, monkeypatch, tmp_path):
    base, runs = exported
    cfg = teacher_config("fast", out_dir=str(tmp_path / "a"))
    monkeypatch.setenv("DKDLIB_WEIGHTS", "0")
    assert weights.weights_dir() is None and weights.materialise(cfg) is None
    copy = tmp_path / "w"
    copy.mkdir()
    for p in (base / "w").iterdir():
        copy.joinpath(p.name).write_bytes(p.read_bytes())
    monkeypatch.setenv("DKDLIB_WEIGHTS", str(copy))
    damaged = copy / f"{cfg.run_name()}.pt"
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DKDError, match="do not match their checksum"):
        weights.materialise(cfg)
    assert not cfg.checkpoint_path.exists()


def test_export_refuses_to_pass_the_size_limits(exported, monkeypatch, tmp_path, capsys):
    base, _ = exported
    monkeypatch.setenv("DKDLIB_OUT", str(base / "trained"))
    import export_weights  # scripts/, on the path since `exported`

    monkeypatch.setattr(export_weights, "MAX_TOTAL_BYTES", 1000)
    with pytest.raises(DKDError, match="would pass the limits.*nothing written"):
        export_weights.export(series_configs(fast="fast"), tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_setup_says_when_the_chapters_will_load_committed_runs(exported, monkeypatch, capsys, tmp_path):
    from dkdlib.notebook import setup

    base, _ = exported
    monkeypatch.setenv("DKDLIB_OUT", str(tmp_path))
    monkeypatch.setenv("DKDLIB_WEIGHTS", str(base / "w"))
    setup()
    # relative to the working directory: a committed output names no folder of the machine that ran it
    assert f"2 finished runs committed in {os.path.relpath(base / 'w')}:" in capsys.readouterr().out
    monkeypatch.setenv("DKDLIB_WEIGHTS", "0")
    setup()
    assert "committed in" not in capsys.readouterr().out


def _served(exported, tmp_path) -> Path:
    """The exported weights as the repository serves them (a folder reached by a file:// URL), with one
    more run in the manifest whose file is corrupt."""
    import shutil

    base, _ = exported
    remote = tmp_path / "remote"
    shutil.copytree(base / "w", remote)
    manifest = json.loads((remote / weights.MANIFEST).read_text())
    manifest["corrupt-run"] = {"sha256": "0" * 64, "bytes": 3}
    (remote / "corrupt-run.pt").write_bytes(b"bad")
    (remote / weights.MANIFEST).write_text(json.dumps(manifest))
    return remote


def test_fetch_downloads_the_listed_runs_and_checks_their_sha256(exported, tmp_path):
    remote = _served(exported, tmp_path)
    dest, line = weights.fetch(tmp_path / "got", url=remote.as_uri())
    assert dest == tmp_path / "got"
    good = sorted(p.name for p in (exported[0] / "w").glob("*.pt"))
    assert sorted(p.name for p in dest.glob("*.pt")) == good, "the corrupt file is not kept"
    kept = json.loads((dest / weights.MANIFEST).read_text())
    assert "corrupt-run" not in kept and len(kept) == len(good)
    assert f"2 of the series' 3 committed runs in {dest} (2 fetched from" in line
    assert "1 could not be fetched or failed their checksum" in line
    _, again = weights.fetch(dest, url=remote.as_uri())  # present and intact: nothing downloaded again
    assert "fetched from" not in again


def test_fetch_offline_fetches_nothing(tmp_path):
    dest, line = weights.fetch(tmp_path / "got", url=(tmp_path / "nowhere").as_uri())
    assert dest is None and not (tmp_path / "got").exists()
    assert line.startswith("The series' committed weights could not be fetched") and "train" in line


def test_raw_url_is_built_from_the_repository(monkeypatch):
    from dkdlib.weights import BRANCH, REPOSITORY

    monkeypatch.delenv("DKDLIB_WEIGHTS_URL", raising=False)
    assert weights.raw_url() == f"https://raw.githubusercontent.com/{REPOSITORY}/{BRANCH}/data/weights"
    monkeypatch.setenv("DKDLIB_WEIGHTS_URL", "file:///tmp/w/")
    assert weights.raw_url() == "file:///tmp/w"


def test_setup_fetches_the_weights_a_pip_install_lacks(exported, monkeypatch, capsys, tmp_path):
    """No data/weights/ (a pip install): setup() at the cpu scale fetches the committed weights into the
    output folder and the chapters find them there; offline it says so in one line and trains."""
    from dkdlib.notebook import setup

    remote = _served(exported, tmp_path)
    monkeypatch.setattr(os, "environ", dict(os.environ))  # setup() sets variables: keep them in this test
    monkeypatch.setattr(weights, "weights_dir", lambda: None)
    for name in ("DKDLIB_WEIGHTS",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DKDLIB_MODE", "cpu")
    monkeypatch.setenv("DKDLIB_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("DKDLIB_WEIGHTS_URL", (tmp_path / "offline").as_uri())
    setup()
    assert "could not be fetched" in capsys.readouterr().out
    assert "DKDLIB_WEIGHTS" not in os.environ
    monkeypatch.setenv("DKDLIB_WEIGHTS_URL", remote.as_uri())
    setup()
    out = capsys.readouterr().out
    assert "2 fetched from" in out
    assert os.environ["DKDLIB_WEIGHTS"] == str(tmp_path / "out" / "weights")


def test_setup_scale_applies_only_when_the_environment_names_no_mode(monkeypatch, tmp_path):
    from dkdlib.notebook import choose_scale

    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.delenv("DKDLIB_MODE", raising=False)
    assert choose_scale(None) == "full"
    assert choose_scale("cpu") == "cpu"  # the notebook's choice
    monkeypatch.setenv("DKDLIB_MODE", "fast")  # the tests' fast mode wins over the notebook's choice
    assert choose_scale("cpu") == "fast"
    monkeypatch.setenv("DKDLIB_MODE", "cpu")  # so does run_series.py's
    assert choose_scale("full") == "cpu"
    with pytest.raises(ValueError, match="scale must be one of"):
        choose_scale("huge")


def test_a_committed_student_loads_without_its_teachers_file(exported, monkeypatch):
    """Issue 20, defect 4: a finished student needs no teacher checkpoint to be loaded."""
    base, runs = exported
    monkeypatch.setenv("DKDLIB_OUT", str(base / "student-only"))
    monkeypatch.setenv("DKDLIB_WEIGHTS", str(base / "w"))
    monkeypatch.setattr(train_mod, "train_epoch", lambda *a, **k: pytest.fail("trained"))
    cfg = series_configs(fast="fast")["dkd"]
    assert not Path(cfg.teacher).exists()  # the teacher was never loaded into this folder
    assert fit(cfg, progress=False).metrics == runs["dkd"].metrics
    assert not Path(cfg.teacher).exists()


def test_the_campaign_keeps_a_finished_run_in_the_work_tree(exported, monkeypatch, tmp_path):
    """scripts/campaign.py's `keep`: the run's record and its fp16 file (`export_weights.add`) beside the
    other runs' lines of the manifest."""
    import campaign  # scripts/, on the path since `exported`

    base, runs = exported
    for folder in ("results", "weights"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    (tmp_path / "data" / "weights" / "weights.json").write_text('{"other-run": {"label": "x"}}\n')
    monkeypatch.setattr(campaign, "ROOT", tmp_path)
    cfg = runs["dkd"].config
    campaign.keep(cfg, "dkd", base / "trained")
    manifest = json.loads((tmp_path / "data" / "weights" / "weights.json").read_text())
    assert set(manifest) == {"other-run", cfg.run_name()}
    assert manifest[cfg.run_name()]["test_acc"] == runs["dkd"].metrics["test_acc"]
    assert (tmp_path / "data" / "weights" / f"{cfg.run_name()}.pt").is_file()
    assert [p.name for p in (tmp_path / "data" / "results").iterdir()] == [runs["dkd"].record.name]

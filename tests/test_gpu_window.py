"""The GPU window, rehearsed on this CPU (GPU_WINDOW_DRY=1): prepare, call A, call B and unpack, in a
scratch copy of the tree, through the scripts a GPU window runs. What comes back must fit the device's
limits, a run that raises must stop nothing, and the unpacked runs must be finished runs to `fit`.

With CIFAR-10's sheets at ../shared/data/cifar10 (not in CI) the calls carry and decode the real data
(tiny subsets train); without them B trains on synthetic images."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT.parent / "shared" / "data" / "cifar10", Path("/work/shared/data/cifar10")]
SOURCE = next((s for s in SOURCES if (s / "to_npz.py").is_file()), None)


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "scripts"))
    spec.loader.exec_module(module)
    return module


bundle = _module("gpu_bundle")


def _scratch_tree(dest: Path) -> Path:
    """The files a GPU call would send (tracked + untracked, not ignored), as a fresh git checkout."""
    listing = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    names = subprocess.run(listing, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "scratch"]):
        subprocess.run(git + cmd, cwd=dest, check=True, capture_output=True)
    return dest


def _run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    full.pop("DKDLIB_MODE", None)  # the tests' fast mode would leak into the window's recipes
    full["PYTHONPATH"] = str(cwd)
    return subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=400)


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    base = tmp_path_factory.mktemp("window")
    tree = _scratch_tree(base / "tree")
    prep = [sys.executable, "scripts/gpu_prepare.py"] + (["--source", str(SOURCE)] if SOURCE else ["--check"])
    prepared = _run(prep, tree)
    common = dict(GPU_WINDOW_DRY="1", GPU_WINDOW_TMP=str(base / "tmp"))
    a = _run(
        ["bash", "scripts/gpu_window.sh", "A"], tree, OUT=str(base / "A"), GPU_WINDOW_BUDGET_A="30", **common
    )
    b = _run(["bash", "scripts/gpu_window.sh", "B"], tree, OUT=str(base / "B"), GPU_WINDOW_BUDGET="150",
             GPU_WINDOW_FAIL="1", **common)  # fmt: skip
    unpacked = _run(
        [sys.executable, "scripts/gpu_unpack.py", str(base / "B"), "--out", str(base / "data")], tree
    )
    return dict(base=base, tree=tree, prepared=prepared, a=a, b=b, unpacked=unpacked)


def test_each_call_carries_at_most_64_mib(window):
    assert window["prepared"].returncode == 0, window["prepared"].stdout + window["prepared"].stderr
    prepare = _module("gpu_prepare")
    for carry in (".gpu1", ".gpu2"):
        tree, carried = prepare.carry_bytes(window["tree"], carry)
        assert tree + carried <= 64 * 2**20, f"{carry}: {(tree + carried) / 2**20:.1f} MiB"
        if SOURCE:
            assert carried > 40 * 2**20 and (window["tree"] / carry / "commit").is_file()
    assert window["prepared"].stdout.count("fits") == 2


def test_what_comes_back_fits_the_device_limits(window):
    for call in ("A", "B"):
        out = window["base"] / call
        assert window[call.lower()].returncode == 0, window[call.lower()].stdout[-3000:]
        assert (out / f"window-{call}.log").stat().st_size > 0
        assert bundle.check_limits(out) == [], f"call {call} would lose files: {bundle.check_limits(out)}"
    assert (window["base"] / "A" / "env.json").is_file()
    names = {p.name for p in (window["base"] / "B").iterdir()}
    assert "runs.json" in names and "weights-2.bin" in names, names  # dry shards are 1 MiB: several


def test_a_leaves_the_first_half_for_b(window):
    if not SOURCE:
        pytest.skip("no CIFAR-10 sheets here")
    assert len(list((window["base"] / "tmp" / "gpu1").glob("train_*.webp"))) == 6
    info = json.loads((window["base"] / "B" / "runs.json").read_text())["info"]
    assert info["data"].startswith("full CIFAR-10"), info
    assert info["commit"] == (window["tree"] / ".gpu2" / "commit").read_text().strip()


def test_a_failing_run_stops_nothing(window):
    runs = json.loads((window["base"] / "B" / "runs.json").read_text())["runs"]
    assert runs[0]["name"] == "injected-failure" and runs[0]["status"] == "failed"
    assert "no-such-model" in runs[0]["error"]
    done = [r for r in runs if r["status"] == "done"]
    assert len(done) >= 8, [(r["label"], r["status"]) for r in runs]
    assert {r["stage"] for r in done} >= {"series", "reference", "seeds"}
    assert all(r["weights"] for r in done) and all(r["record"]["metrics"] for r in done)


def test_unpacked_runs_are_finished_runs_to_fit(window):
    from dkdlib import DeviceLoader, evaluate, load_data
    from dkdlib.checkpoint import load_model
    from dkdlib.train import Config, fit

    assert window["unpacked"].returncode == 0, window["unpacked"].stderr
    data_dir = window["base"] / "data"
    runs = [
        r
        for r in json.loads((window["base"] / "B" / "runs.json").read_text())["runs"]
        if r["status"] == "done"
    ]
    assert len(list((data_dir / "results").glob("*.json"))) == len(runs)
    npz = window["base"] / "tmp" / "cifar10.npz"
    for entry in runs:
        cfg = Config(**{**entry["config"], "milestones": tuple(entry["config"]["milestones"])})
        cfg = replace(cfg, out_dir=str(data_dir))
        if cfg.teacher:  # where the unpacked teacher lies here
            cfg = replace(cfg, teacher=str(data_dir / "checkpoints" / Path(cfg.teacher).name))
        data = load_data(cfg.dataset, npz=npz if cfg.dataset == "cifar10" else None, val_size=cfg.val_size,
                         train_size=cfg.train_size, test_size=cfg.test_size)  # fmt: skip
        run = fit(cfg, data=data, progress=False)
        assert run.record is None, f"{cfg.run_name()} was trained again instead of loaded"
        assert run.history == entry["record"]["history"]
        model = load_model(cfg.checkpoint_path, num_classes=data.num_classes, dataset=data.name)
        loader = DeviceLoader(data.x_test, data.y_test, 1000, train=False, mean=data.mean, std=data.std)
        acc = evaluate(model, loader)["acc"]
        assert abs(acc - entry["test_acc"]) <= 0.04, (
            f"{cfg.run_name()}: {acc} here, {entry['test_acc']} there"
        )


def test_unpacked_runs_keep_their_names_on_a_machine_that_reads_an_npz(window, tmp_path):
    """Where images are read from is not part of a run's identity: the device's runs are found by
    configs that name a local .npz."""
    from dkdlib.checkpoint import load_checkpoint
    from dkdlib.train import Config

    _module("gpu_unpack").unpack(window["base"] / "B", tmp_path)
    for path in (tmp_path / "checkpoints").glob("*.pt"):
        state = load_checkpoint(path)
        cfg = Config(**{**state["config"], "milestones": tuple(state["config"]["milestones"])})
        assert replace(cfg, data="/data/cifar10.npz").run_name() == path.stem


def test_shards_split_large_weights_and_keep_to_the_limits(tmp_path):
    manifest = bundle.new_manifest(tmp_path, shard_bytes=1000)
    blobs = [os.urandom(n) for n in (700, 2500, 10)]
    for i, blob in enumerate(blobs):
        bundle.add_run(tmp_path, manifest, {"name": f"r{i}", "status": "done"}, blob)
    for entry, blob in zip(manifest["runs"], blobs, strict=True):
        assert bundle.read_weights(tmp_path, entry) == blob
    assert len(manifest["runs"][1]["weights"]) == 4  # 300 + 1000 + 1000 + 200 bytes
    assert sorted(p.name for p in tmp_path.glob("weights-*.bin")) == [
        f"weights-{i}.bin" for i in (1, 2, 3, 4)
    ]
    room = bundle.weights_room(manifest)  # 6 shards at most (8 files, 2 kept for the log and manifest)
    assert room == 6 * 1000 - 3210
    big = bundle.add_run(tmp_path, manifest, {"name": "too-big", "status": "done"}, b"x" * (room + 1))
    assert big["weights"] is None and "limits" in big["weights_left_out"]
    assert bundle.check_limits(tmp_path) == []
    on_disk = json.loads((tmp_path / "runs.json").read_text())
    assert [r["name"] for r in on_disk["runs"]] == ["r0", "r1", "r2", "too-big"]


def test_check_limits_sees_what_the_device_drops(tmp_path):
    for i in range(9):
        (tmp_path / f"f{i}").write_bytes(b"x")
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "file").write_bytes(b"x")
    (tmp_path / "α.json").write_bytes(b"x")
    problems = " ".join(bundle.check_limits(tmp_path))
    assert "11 files" in problems and "deeper than 2" in problems and "α.json" in problems


def test_b_trains_with_the_speed_paths_that_call_a_passed(tmp_path):
    """Call B reads gpu_check's verdicts file (as call A leaves it in /tmp) and trains with the paths
    that passed: here the logit cache, on a CPU (dry, synthetic data)."""
    tree = _scratch_tree(tmp_path / "tree")
    (tmp_path / "tmp").mkdir()
    verdicts = {"device": "cpu", "paths": {"graph": False, "cache": True, "compile": False},
                "checks": [], "seconds": 1.0}  # fmt: skip
    (tmp_path / "tmp" / "verdicts.json").write_text(json.dumps(verdicts))
    b = _run(["bash", "scripts/gpu_window.sh", "B"], tree, OUT=str(tmp_path / "B"), GPU_WINDOW_DRY="1",
             GPU_WINDOW_TMP=str(tmp_path / "tmp"), GPU_WINDOW_BUDGET="60")  # fmt: skip
    assert b.returncode == 0, b.stdout[-2000:] + b.stderr[-2000:]
    manifest = json.loads((tmp_path / "B" / "runs.json").read_text())
    assert manifest["info"]["verdicts"] is True
    assert manifest["info"]["paths"] == verdicts["paths"]
    done = [r["record"] for r in manifest["runs"] if r["status"] == "done"]
    assert done and all(r["config"]["graph"] is False for r in done)
    assert any(r["config"]["cache_teacher"] for r in done), "no run used the logit cache"


def test_a_later_window_leaves_out_the_runs_whose_records_are_committed(tmp_path, monkeypatch):
    """Window 2 goes on where window 1 stopped: the series' finished students are left out, their
    teacher is trained again only while a student still needs it (weights do not travel)."""
    for var in ("DKDLIB_MODE", "DKDLIB_OUT"):
        monkeypatch.delenv(var, raising=False)
    window = _module("gpu_window")
    full = window.build_queue(results=None)
    series = [cfg for stage, _, cfg in full if stage == "series"]
    teacher, students = series[0], series[1:]

    def commit(configs):
        for cfg in configs:
            (tmp_path / f"{cfg.run_name()}.json").write_text(json.dumps({"name": cfg.run_name()}))

    commit([teacher, *students[:-1]])  # window 1 finished all but the last series student
    queue = [cfg.run_name() for _, _, cfg in window.build_queue(results=tmp_path)]
    assert queue[:2] == [teacher.run_name(), students[-1].run_name()]  # its teacher comes back for it
    assert len(queue) == len(full) - len(students) + 1
    commit(students[-1:])  # the whole series done: its teacher is no longer needed
    queue = [cfg.run_name() for _, _, cfg in window.build_queue(results=tmp_path)]
    assert queue == [cfg.run_name() for stage, _, cfg in full if stage != "series"]


def test_the_window_queue_is_trainable_offline_on_half_the_data(tmp_path, monkeypatch):
    """What B trains, as B adapts it: no run asks for ImageNet weights (the device has no internet;
    the as-run teacher trains from scratch with a note), and on half the data (new run names) every
    teacher and init points at a run queued before it."""
    import numpy as np

    for var in ("DKDLIB_MODE", "DKDLIB_OUT", "GPU_WINDOW_DRY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GPU_WINDOW_TMP", str(tmp_path / "tmp"))
    window = _module("gpu_window")
    npz = tmp_path / "half.npz"
    np.savez(npz, y_train=np.zeros(20000, dtype=np.int64))
    queue = window.build_queue(results=None)
    assert any(cfg.pretrained for _, _, cfg in queue)  # the as-run teacher asks for ImageNet weights
    paths = dict.fromkeys(("graph", "cache", "compile"), False)
    adapted = window.adapt(queue, paths=paths, data_npz=npz, half=True)
    assert not any(cfg.pretrained for _, _, cfg in adapted)
    asked = {label for _, label, cfg in queue if cfg.pretrained}
    assert all("no internet" in cfg.note for _, label, cfg in adapted if label in asked)
    made: set[str] = set()
    for _, label, cfg in adapted:
        for needed in filter(None, (cfg.teacher, cfg.init)):
            assert needed in made, f"{label}: {needed} is not made by a run before it"
        made.update({str(cfg.checkpoint_path), str(cfg.best_path)})
    assert any(cfg.init for _, _, cfg in adapted)  # the as-run students start from the CE student

"""The two calls of a GPU window (issue #10). Run through `bash scripts/gpu_window.sh A|B`.

A (about 4 minutes): copies the first half of the CIFAR-10 sheets (.gpu1/) to /tmp for call B, records
  the environment, runs benchmarks/gpu_check.py (a verdict per speed path) and benchmarks/bench_step.py.
B (sent the moment A returns, carrying .gpu2/): decodes CIFAR-10 from both halves, then trains a queue
  in order of value until its time budget: (1) the series (`recipes.series_configs`), (2) the reference
  rows, seed 0, (3) the reference's as-run rows, seed 0, where recipes has them, (4) further seeds. Runs
  whose records are committed in data/results/ are left out (a later window goes on from there). It
  uses the speed paths whose checks passed in A (none if A never ran) and packages every run the moment
  it finishes (`gpu_bundle`), so a timeout loses only the run in progress.

Environment:
  OUT                  the folder that comes back (the device sets it)
  GPU_WINDOW_TMP       what A leaves for B (default /tmp/gpu_window)
  GPU_WINDOW_BUDGET    B's seconds (default 520); GPU_WINDOW_BUDGET_A: A's (default 230)
  GPU_WINDOW_DRY=1     a rehearsal on a CPU: tiny sizes, the same code and packaging
  GPU_WINDOW_PATHS     B: the speed paths it may use among those that passed (e.g. "graph cache")
  GPU_WINDOW_FAIL=1    queue a run that raises, to show that it stops nothing
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # dkdlib from the tree: nothing is installed on the device
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_bundle  # noqa: E402

SHEETS_A = [f"train_{k:02d}.webp" for k in range(6)]  # .gpu1/
SHEETS_B = [f"train_{k:02d}.webp" for k in range(6, 10)] + ["test_00.webp", "test_01.webp"]  # .gpu2/
PATHS = ("graph", "cache", "compile")  # gpu_check.py's verdict names
# Dry mode: every run shrunk to this (epochs: one per 50, so runs stay distinct), ResNet18 teachers to
# ResNet20, each stage cut to its first few runs: seconds per run on a CPU.
DRY_SIZES = dict(train_size=128, val_size=64, test_size=128, batch_size=64)
DRY_PER_STAGE = 4


def log(*args) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


def dry() -> bool:
    return os.environ.get("GPU_WINDOW_DRY", "") not in ("", "0")


def tmp_dir() -> Path:
    return Path(os.environ.get("GPU_WINDOW_TMP", "/tmp/gpu_window"))


def out_dir() -> Path:
    out = Path(os.environ["OUT"])
    out.mkdir(parents=True, exist_ok=True)
    return out


def set_commit(carry: Path) -> None:
    """DKDLIB_GIT_COMMIT from the commit file the prepare helper put in the carried folder (no .git
    travels). Set before dkdlib is imported: it reads the commit once, at import."""
    commit = carry / "commit"
    if commit.is_file() and not os.environ.get("DKDLIB_GIT_COMMIT"):
        os.environ["DKDLIB_GIT_COMMIT"] = commit.read_text().strip()
    log("commit:", os.environ.get("DKDLIB_GIT_COMMIT", "unknown (no commit file carried)"))


def run_logged(cmd: list[str], timeout: float) -> int | None:
    """Run a command, its output into our log; its exit code, or None if it ran past `timeout`.

    It runs in its own process group, killed whole at the timeout (DataLoader workers included).
    """
    log("$", " ".join(cmd), f"(timeout {timeout:.0f} s)")
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        rc = proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log(f"timed out after {timeout:.0f} s")
        return None
    log(f"exit code {rc} after {time.perf_counter() - t0:.0f} s")
    return rc


def call_a(budget: float) -> None:
    start = time.perf_counter()
    out, tmp = out_dir(), tmp_dir()
    carry = ROOT / ".gpu1"
    set_commit(carry)
    # First what B cannot do without: the first half of the sheets, kept in /tmp for the next call.
    sheets = sorted(carry.glob("*.webp")) if carry.is_dir() else []
    (tmp / "gpu1").mkdir(parents=True, exist_ok=True)
    for path in sheets:
        shutil.copy2(path, tmp / "gpu1" / path.name)
    log(f"left {len(sheets)} sheets ({sum(p.stat().st_size for p in sheets) / 2**20:.1f} MiB) in {tmp}/gpu1")

    env = environment()
    (out / "env.json").write_text(json.dumps(env, indent=1) + "\n")
    log("environment:", json.dumps(env))
    if shutil.which("nvidia-smi"):
        run_logged(["nvidia-smi"], 30)

    def left() -> float:
        return budget - (time.perf_counter() - start)

    cpu = not env.get("cuda")
    verdicts = out / "verdicts.json"
    check = [sys.executable, "benchmarks/gpu_check.py", "--verdicts", str(verdicts)]
    # The checks get at most half of what is left, the benchmark the rest.
    run_logged(check + (["--cpu"] if cpu else []) + (["--quick"] if dry() else []), min(110, left() / 2))
    if read_verdicts(verdicts) is not None:
        shutil.copy2(verdicts, tmp / "verdicts.json")  # what B reads
        log(f"verdicts for B in {tmp}/verdicts.json")
    else:
        (tmp / "verdicts.json").unlink(missing_ok=True)  # a stale file from an earlier A must not count
        log("no readable verdicts: B will train eagerly")

    bench = [sys.executable, "benchmarks/bench_step.py", "--device", "cpu" if cpu else "cuda",
             "--workers", "2", "--out", str(out / "bench.json")]  # fmt: skip
    if dry():  # seconds on a CPU: one step each, and a one-image logit cache (its build is 162 forwards)
        bench += ["--steps", "1", "--untimed", "1", "--cache-images", "1"]
    else:  # the cache of 2000 images builds in seconds; all 6000 synthetic ones would take ~4x longer
        bench += ["--steps", "200", "--untimed", "20", "--compile", "--cache-images", "2000"]
    run_logged(bench, left() - 5)
    log(f"call A done in {time.perf_counter() - start:.0f} s; B may follow now")


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.cuda.is_available(),
           "cpus": os.cpu_count(), "dry": dry(), "commit": os.environ.get("DKDLIB_GIT_COMMIT")}  # fmt: skip
    if env["cuda"]:
        env["gpu"] = torch.cuda.get_device_name()
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        env["cuda_version"] = torch.version.cuda
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
    return env


def read_verdicts(path: Path) -> dict | None:
    """gpu_check.py's {path: passed} verdicts, or None if the file is missing or unreadable."""
    try:
        paths = json.loads(Path(path).read_text())["paths"]
        return {p: bool(paths.get(p, False)) for p in PATHS}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------------- B
def decode_data(tmp: Path) -> tuple[Path | None, str]:
    """CIFAR-10 as an .npz from both halves of the sheets, else from the half carried by B.

    Returns (npz or None, what it holds). Full: checked by to_npz.py's checksums. Half: .gpu2's four
    training sheets (20k images) and the full test set, whose checksums are checked here.
    """
    carry, half = ROOT / ".gpu2", tmp / "gpu1"
    if not (carry / "to_npz.py").is_file():
        return None, "no sheets carried"
    sheets = tmp / "sheets"
    shutil.rmtree(sheets, ignore_errors=True)
    sheets.mkdir(parents=True)
    for src in [*half.glob("*.webp"), *carry.iterdir()]:
        (sheets / src.name).symlink_to(src.resolve())
    npz = tmp / "cifar10.npz"
    if all((sheets / s).exists() for s in SHEETS_A + SHEETS_B):
        rc = run_logged([sys.executable, str(carry / "to_npz.py"), str(npz), "--dir", str(sheets)], 180)
        if rc == 0:
            return npz, "full CIFAR-10 (50k train, 10k test), checksums verified"
        log("decoding both halves failed: falling back to the half carried by this call")
    else:
        log(f"the first half of the sheets is not in {half} (call A did not run on this machine)")
    return decode_half(carry, tmp / "cifar10-half.npz")


def decode_half(carry: Path, npz: Path) -> tuple[Path | None, str]:
    import hashlib
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("to_npz", carry / "to_npz.py")
    to_npz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(to_npz)  # its `sheet` decoder; its main() needs all twelve sheets
    labels = np.load(carry / "labels.npz")
    ks = [k for k in range(10) if (carry / f"train_{k:02d}.webp").is_file()]
    x_train = np.concatenate([to_npz.sheet(carry / f"train_{k:02d}.webp") for k in ks])
    y_train = np.concatenate([labels["y_train"][5000 * k : 5000 * (k + 1)] for k in ks])
    x_test = np.concatenate([to_npz.sheet(carry / f"test_{k:02d}.webp") for k in range(2)])
    y_test = labels["y_test"]
    want = json.loads((carry / "sha256.json").read_text())
    for name, arr in (("x_test", x_test), ("y_test", y_test)):
        if hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest() != want[name]:
            raise RuntimeError(f"{name} decoded from {carry} fails its checksum")
    np.savez(npz, class_names=labels["class_names"], x_train=x_train, y_train=y_train, x_test=x_test,
             y_test=y_test)  # fmt: skip
    return npz, f"HALF of CIFAR-10: training sheets {ks} ({len(y_train)} images), full test set"


def build_queue(results: Path | None = ROOT / "data" / "results") -> list[tuple[str, str, object]]:
    """(stage, label, Config) in order of value; a run listed twice is kept where it first appears.

    Runs with a record in `results` (the committed records: an earlier window ran them) are left out,
    so a later window goes on where the last one stopped (further seeds) instead of repeating it; a
    finished teacher (or init) is kept while a run still queued needs it, since committed weights do
    not travel to the device.
    """
    from dkdlib import recipes
    from dkdlib.results import load_records

    # The series' runs in the campaign's order of value (scripts/campaign.py trains the same queue on a CPU)
    queue: list[tuple[str, str, object]] = [
        ("series", label, cfg) for _, label, cfg in recipes.campaign_queue("full")
    ]
    as_run = "reading" in inspect.signature(recipes.reference_configs).parameters

    def reference(stage: str, seed: int, **kw) -> None:
        rows = recipes.reference_configs(None, seed=seed, **kw)
        teacher = str(rows["teacher"].checkpoint_path)
        for name, cfg in recipes.reference_configs(teacher, seed=seed, **kw).items():
            queue.append((stage, f"{name} seed {seed}" + (f" {kw['reading']}" if kw else ""), cfg))

    reference("reference", 0)
    if as_run:
        reference("as-run", 0, reading="as_run")
    for seed in (1, 2):  # each seed distils from a teacher trained with that seed
        reference("seeds", seed)
        if as_run:
            reference("seeds", seed, reading="as_run")
    seen, unique = set(), []
    for stage, label, cfg in queue:
        if cfg.run_name() not in seen:
            seen.add(cfg.run_name())
            unique.append((stage, label, cfg))
    committed = load_records(results) if results is not None and results.is_dir() else []
    done = {r.get("name") for r in committed}
    todo = [item for item in unique if item[2].run_name() not in done]
    needed = {Path(p).name for _, _, cfg in todo for p in (cfg.teacher, cfg.init) if p}
    kept = [item for item in unique if item in todo or item[2].checkpoint_path.name in needed]
    if len(kept) < len(unique):
        log(f"{len(unique) - len(kept)} runs left out: their records are committed (an earlier window)")
    return kept


def adapt(queue: list, *, paths: dict, data_npz: Path | None, half: bool) -> list:
    """Every config with this window's speed paths and output folder, shrunk in dry mode; students
    pointed at their teacher's (and init's) new checkpoint path where its name changed with it.

    The device has no internet: a teacher that asks for ImageNet weights (the as-run reading's) trains
    from scratch there, and its record says so (`recipes.with_pretrained_fallback`)."""
    from dkdlib.recipes import with_pretrained_fallback

    out = str(tmp_dir() / "run")
    speed = dict(graph=paths["graph"], cache_teacher=paths["cache"], compile=paths["compile"])
    if dry():
        speed["compile"] = False  # inductor takes minutes on a CPU; the GPU call compiles
    renamed: dict[str, str] = {}
    adapted = []
    for stage, label, cfg in queue:
        new = replace(cfg, out_dir=out, **speed)
        if new.teacher_batch_stats:  # batch-statistics teacher logits depend on the batch: none to cache
            new = replace(new, cache_teacher="off")
        if half:  # fewer training images than the full set: say so in every run's identity
            import numpy as np

            images = len(np.load(data_npz)["y_train"])
            new = replace(
                new, data=str(data_npz), train_size=min(new.train_size or images, images - new.val_size)
            )
        if dry():
            model = "resnet20" if new.model == "resnet18" else new.model
            new = replace(new, **DRY_SIZES, model=model, epochs=max(1, new.epochs // 50))
            if data_npz is None:
                new = replace(new, dataset="synthetic")
            if new.pretrained and model != "resnet18":  # ImageNet weights exist for the ResNet18 only
                new = replace(new, pretrained=False, note="dry run: a ResNet20 in place of the ResNet18")
        new = with_pretrained_fallback(new, offline="the GPU machine has no internet")
        if new.teacher:
            new = replace(new, teacher=renamed.get(Path(new.teacher).name, new.teacher))
        if new.init:
            new = replace(new, init=renamed.get(Path(new.init).name, new.init))
        renamed[cfg.checkpoint_path.name] = str(new.checkpoint_path)
        renamed[cfg.best_path.name] = str(new.best_path)
        adapted.append((stage, label, new))
    per_stage: dict[str, int] = {}
    names, kept = set(), []
    for item in adapted:  # shrinking can make two runs one
        per_stage[item[0]] = per_stage.get(item[0], 0) + 1
        if item[2].run_name() not in names and (not dry() or per_stage[item[0]] <= DRY_PER_STAGE):
            names.add(item[2].run_name())
            kept.append(item)
    adapted = kept
    if os.environ.get("GPU_WINDOW_FAIL", "") not in ("", "0"):  # a run that raises, first in line
        adapted.insert(0, ("series", "injected failure", replace(adapted[1][2], model="no-such-model",
                                                                   name="injected-failure")))  # fmt: skip
    return adapted


def call_b(budget: float) -> None:
    start = time.perf_counter()
    out, tmp = out_dir(), tmp_dir()
    set_commit(ROOT / ".gpu2")
    for var in ("DKDLIB_DATA", "DKDLIB_MODE"):  # full-mode recipes, data passed in
        os.environ.pop(var, None)
    os.environ["DKDLIB_OUT"] = str(tmp / "run")
    verdicts = read_verdicts(tmp / "verdicts.json")
    paths = verdicts or dict.fromkeys(PATHS, False)
    log("speed paths:", paths, "(from call A's checks)" if verdicts else "(no verdicts from call A: eager)")
    if "GPU_WINDOW_PATHS" in os.environ:  # the operator may switch passed paths off, never failed ones on
        allowed = set(os.environ["GPU_WINDOW_PATHS"].replace(",", " ").split())
        paths = {p: ok and p in allowed for p, ok in paths.items()}
        log("speed paths after GPU_WINDOW_PATHS:", paths)

    try:
        npz, data_note = decode_data(tmp)
    except Exception:
        log("decoding failed:\n" + traceback.format_exc())
        npz, data_note = None, "decoding failed"
    if npz is None and not dry():
        log(f"no CIFAR-10 ({data_note}): nothing to train")
    half = npz is not None and "HALF" in data_note
    log("data:", data_note, npz or "")
    shard = int(float(os.environ.get("GPU_WINDOW_SHARD_MIB", 1 if dry() else 15)) * gpu_bundle.MiB)
    manifest = gpu_bundle.new_manifest(
        out, shard, data=data_note, paths=paths, verdicts=verdicts is not None, budget_s=budget, dry=dry(),
        commit=os.environ.get("DKDLIB_GIT_COMMIT"),
    )  # fmt: skip
    if npz is None and not dry():
        return
    queue = adapt(build_queue(), paths=paths, data_npz=npz, half=half)
    log(f"queue: {len(queue)} runs; budget {budget:.0f} s, {time.perf_counter() - start:.0f} s spent")
    train_queue(queue, out, manifest, npz, deadline=start + budget)
    done = sum(r["status"] == "done" for r in manifest["runs"])
    log(f"call B done in {time.perf_counter() - start:.0f} s: {done} runs packaged of {len(queue)} queued")
    for problem in gpu_bundle.check_limits(out):
        log("OVER THE DEVICE'S LIMITS:", problem)


def train_queue(queue: list, out: Path, manifest: dict, npz: Path | None, *, deadline: float):
    """Train the queue run by run until the deadline; package each run as it finishes.

    A run whose time can be estimated (from the pace of an earlier run of the same model) and would
    not finish is skipped, and the next ones are tried; otherwise the command's timeout cuts the run in
    progress, and only that run is lost.
    """
    pace: dict[str, float] = {}  # model → seconds per training image-epoch, eval included
    where = {cfg.run_name(): (stage, label) for stage, label, cfg in queue}
    datasets: dict[tuple, object] = {}
    for _, _, cfg in queue:
        key = (cfg.dataset, cfg.val_size, cfg.train_size, cfg.test_size)
        if key not in datasets:
            datasets[key] = load(cfg, npz)
        data = datasets[key]
        images = cfg.epochs * len(data.y_train) if data is not None else 0
        estimate, left = pace.get(cfg.model, 0.0) * images, deadline - time.perf_counter()
        if estimate > left:
            reason = f"estimated {estimate:.0f} s, {left:.0f} s left"
            entry = {**entry_base(cfg, where), "status": "skipped", "reason": reason}
            gpu_bundle.add_run(out, manifest, entry)
            log(f"skipped {cfg.run_name()}: {reason}")
            continue
        t0 = time.perf_counter()
        run, error = train_one(cfg, data, where)
        seconds = time.perf_counter() - t0
        if run is not None and images:
            pace[cfg.model] = seconds / images
        package(out, manifest, cfg, run, error, where, seconds)
        del run
        free_memory()


def free_memory() -> None:
    """Drop the finished run's model, loaders and captured graphs before the next run."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load(cfg, npz: Path | None):
    """The run's data from the decoded .npz (splits as the config says), or None if that fails."""
    from dkdlib import load_data

    try:
        return load_data(cfg.dataset, npz=npz if cfg.dataset != "synthetic" else None, val_size=cfg.val_size,
                         train_size=cfg.train_size, test_size=cfg.test_size)  # fmt: skip
    except Exception:
        log("loading the data failed:\n" + traceback.format_exc())
        return None


def train_one(cfg, data, where: dict) -> tuple:
    """(Run, None), or (None, traceback) where the run raised: one bad run stops nothing."""
    from dkdlib import fit

    log(f"training {where[cfg.run_name()][1]} ({cfg.run_name()})")
    try:
        return fit(cfg, data=data, progress=False), None
    except Exception:
        error = traceback.format_exc()
        log(f"run {cfg.run_name()} failed:\n" + error)
        return None, error


def entry_base(cfg, where: dict) -> dict:
    stage, label = where[cfg.run_name()]
    return {"stage": stage, "label": label, "name": cfg.run_name(), "config": cfg.to_dict()}


def package(out: Path, manifest: dict, cfg, run, error: str | None, where: dict, seconds: float) -> None:
    """Add a run to what comes back: its record and its model-only fp16 weights, or its error."""
    from dkdlib.checkpoint import load_checkpoint, model_only

    entry = {**entry_base(cfg, where), "seconds": round(seconds, 1)}
    if run is None:
        gpu_bundle.add_run(out, manifest, {**entry, "status": "failed", "error": error})
        return
    try:
        record_path = run.record or find_record(Path(cfg.out_dir) / "results", cfg.run_name())
        record = json.loads(Path(record_path).read_text()) if record_path else None
        weights = gpu_bundle.to_bytes(model_only(load_checkpoint(cfg.checkpoint_path)))
        entry.update(status="done", test_acc=run.metrics.get("test_acc"), record=record,
                     record_file=Path(record_path).name if record_path else None)  # fmt: skip
        stored = gpu_bundle.add_run(out, manifest, entry, weights)
        kept = "weights kept" if stored.get("weights") else f"weights LEFT OUT: {stored['weights_left_out']}"
        log(f"packaged {cfg.run_name()}: test acc {entry['test_acc']}, {len(weights) / 1e6:.2f} MB, {kept}")
    except Exception:
        log(f"packaging {cfg.run_name()} failed:\n" + traceback.format_exc())


def find_record(results: Path, name: str) -> Path | None:
    """The newest record of run `name` (a run loaded, not trained, has no record path of its own)."""
    found = sorted(results.glob(f"*-{name}-*.json"))
    return found[-1] if found else None


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("A", "B"):
        print(__doc__, file=sys.stderr)
        return 2
    if "OUT" not in os.environ:
        print(
            "OUT is not set: the folder that comes back from the device (set it in dry mode)", file=sys.stderr
        )
        return 2
    budget = float(
        os.environ.get("GPU_WINDOW_BUDGET_A", 230)
        if argv[0] == "A"
        else os.environ.get("GPU_WINDOW_BUDGET", 520)
    )
    # The window trains every run it queues: committed weights (data/weights/, normally set aside by
    # gpu_prepare) must never stand in for a run, or the window would send back old runs as new.
    os.environ["DKDLIB_WEIGHTS"] = "0"
    mode = " (DRY: tiny sizes on this machine)" if dry() else ""
    log(f"GPU window call {argv[0]}{mode}; budget {budget:.0f} s")
    (call_a if argv[0] == "A" else call_b)(budget)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

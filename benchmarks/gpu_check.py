"""Check dkdlib's speed paths before a GPU window relies on them: one verdict per path.

    python benchmarks/gpu_check.py --verdicts verdicts.json    # on the GPU; exit code 1 if a check failed
    python benchmarks/gpu_check.py --cpu --quick               # the same checks, tiny, on the CPU

It runs, in miniature, what `python -m dkdlib reproduce --graph --cache-teacher` and the series'
notebooks run: a teacher trained here, DKD students with a live teacher or its logit cache, in the
reference's recipe (Adam 1e-3, constant schedule) and the series' (SGD + one-cycle). Every run must
first LEARN (test accuracy >= a threshold well above chance, printed), since two broken runs at chance
level would pass any comparison; then each path is compared with the one below it. The paths, in this
order, each checked with the paths above it that passed, as the window runs them:

  eager    the base: the teacher and the eager students learn
  graph    CUDA-graph capture (CUDA only): fp32 graphed runs follow the eager ones (epoch 1's train loss
           within 1e-4 relative, later epochs within the drift limit, identical learning rates, a replay
           for every step after warm-up); a graphed run with autocast learns
  cache    the teacher-logit cache equals the live teacher on random views, and a student trained from it
           follows one trained from the live teacher
  compile  torch.compile with autocast on top of the paths that passed: a smoke run that learns

A check that raises is a failed check (traceback in its detail), never a crash: the later checks run.
A failed path is reported false and the checks below it go on without it. The verdicts file
{"device", "paths": {graph, cache, compile}, "checks": [{name, path, ok, detail}], "seconds"}
is rewritten atomically after every check, so a run cut short leaves the verdicts so far (a path not
yet decided is false). --cpu: no CUDA graphs there; the graph path is reported false with a check entry
saying it is not available (not a failure). --quick: tiny sizes (CPU dry run: ~1 min of CPU). For the
tests, GPU_CHECK_BREAK=cache breaks that path on purpose (every image's logits paired with the
neighbouring view), to show that the checks catch it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a checkout: nothing is installed on the GPU machine

from bench_step import count_replays  # noqa: E402  (benchmarks/, the script's own folder)

import dkdlib.train  # noqa: E402  (GPU_CHECK_BREAK replaces one of its functions)
from dkdlib import Config, Data, amp_dtype, fit, load_data  # noqa: E402
from dkdlib.checkpoint import atomic_write, load_checkpoint  # noqa: E402
from dkdlib.data import N_VIEWS, DeviceLoader  # noqa: E402
from dkdlib.recipes import reference_configs, student_config, teacher_config  # noqa: E402
from dkdlib.train import Run, load_teacher, use_channels_last  # noqa: E402

PATHS = ("graph", "cache", "compile")  # the speed paths, each on top of the ones before it
# Limits. fp32 runs use true fp32 (no TF32), so rounding cannot hide a difference or fake one.
# Graphed vs eager, epoch 1's train loss: the same kernels in the same order, but the optimizer reads
# its lr (and Adam its step) from device tensors, which may round differently; later epochs: DRIFT_RTOL.
GRAPH_RTOL = 1e-4
CACHE_RTOL = 5e-3  # cached logits vs a live forward, of the largest logit: fp16 storage rounds by ~5e-4
FIRST_RTOL = 1e-3  # the cache vs its reference run, epoch 1's train loss (before chaos amplifies)
DRIFT_RTOL = 0.15  # ... any later epoch: rounding gaps grow chaotically (measured on CPU: up to 3.6e-2)
SMOKE_GAP = 0.10  # test accuracy, autocast / compiled smoke runs vs the fp32 eager run
WARMUP_STEPS = 3  # TrainStep's eager steps before it captures the graph


@dataclass(frozen=True)
class Sizes:
    """How much each run trains. The GPU sizes aim at about a minute on an H100/H200 (estimated from
    step speeds, not yet measured); QUICK took 58 s of CPU time when it also checked packed students
    (a path since removed), so at most about a minute now."""

    train: int  # training images (no validation split)
    test: int  # test images
    batch: int
    epochs: int
    teacher: str  # the teacher's architecture
    learn: float  # every run must reach this test accuracy (synthetic images) ...
    learn_cifar: float  # ... or this on CIFAR-10 (--data)
    acc_gap: float  # test accuracy, the cache vs its reference run
    probe: int = 512  # (image, view) pairs of the cache compared with the live teacher


# Measured on a CPU (ResNet8 teacher), test accuracy of the teacher, reference DKD and series DKD:
# GPU sizes, synthetic 0.990, 0.965, 0.984; CIFAR-10 0.468, 0.412, 0.425 (reference KD 0.416, CE 0.394).
# QUICK, synthetic 0.920, 0.515, 0.735; CIFAR-10 0.260, 0.240, 0.195 (128 images: a weak check).
# QUICK's 200 test images: 5 points is 10 images, and two runs that part chaotically over 80 steps differ
# by more (measured at one thread: series DKD 0.745 vs 0.800, trained as part of a packed group, since
# removed, and alone): its gap is 0.1.
GPU = Sizes(
    train=2048, test=1000, batch=128, epochs=12, teacher="resnet18", learn=0.7, learn_cifar=0.3, acc_gap=0.05
)
QUICK = Sizes(
    train=128, test=200, batch=16, epochs=10, teacher="resnet8", learn=0.4, learn_cifar=0.15, acc_gap=0.1
)


@dataclass
class Session:
    """What the checks share: the device, data, sizes, the runs trained so far and the report."""

    device: torch.device
    data: Data
    npz: str | None  # the data's file (None: synthetic)
    sizes: Sizes
    out: Path  # checkpoints and the logit cache of this check
    verdicts: Path | None
    report: dict
    passed: dict[str, bool] = field(default_factory=dict)
    teacher: str | None = None  # the teacher's checkpoint
    runs: dict = field(default_factory=dict)  # (recipe, method, flags) -> Trained


@dataclass
class Trained:
    """One student's run and what the check needs to know about how it ran."""

    run: Run
    final_lr: float  # after the last step (from the checkpoint's optimizer state)
    replays: int  # CUDA-graph replays during its training
    warned: list[str]  # the distinct warnings raised while it trained (a graph falling back warns)

    @property
    def acc(self) -> float:
        return float(self.run.metrics["test_acc"])

    def losses(self) -> list[float]:
        return [h["train_loss"] for h in self.run.history]

    def schedule(self) -> list[tuple[float, float]]:
        """(learning rate, distillation weight) of every epoch."""
        return [(h["lr"], h["distill_weight"]) for h in self.run.history]


# --- recording --------------------------------------------------------------------------------------


def save(s: Session) -> None:
    """Rewrite the verdicts file (atomic: a reader sees the old or the new file, never half of one)."""
    s.report["seconds"] = round(time.perf_counter() - s.report["_t0"], 1)
    if s.verdicts is not None:
        text = json.dumps({k: v for k, v in s.report.items() if not k.startswith("_")}, indent=2) + "\n"
        atomic_write(s.verdicts, lambda tmp: Path(tmp).write_text(text))


def check(s: Session, path: str, name: str, ok: bool, detail: str, skipped: bool = False) -> bool:
    """Record one check, print it and save the verdicts so far."""
    s.report["checks"].append({"name": name, "path": path, "ok": bool(ok), "detail": detail,
                               "skipped": skipped})  # fmt: skip
    word = "SKIP" if skipped else "PASS" if ok else "FAIL"
    print(f"{word}  [{path}] {name}: {detail}", flush=True)
    save(s)
    return ok


def learns(s: Session, path: str, what: str, acc: float) -> bool:
    """The run reached the learning threshold (a broken model stays near chance)."""
    chance = 1 / s.data.num_classes
    return check(s, path, f"{what} learns", acc >= s.sizes.learn,
                 f"test acc {acc:.3f} (threshold {s.sizes.learn:.2f}, chance {chance:.2f})")  # fmt: skip


def gaps(a: list[float], b: list[float]) -> list[float]:
    """The relative gap of two per-epoch curves, epoch by epoch."""
    return [abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b, strict=True)]


def follows(s: Session, path: str, what: str, t: Trained, ref: Trained, first: float, rtol: float) -> bool:
    """`t` trained like `ref`: the same lr and distillation weight every epoch and at the end, train
    loss within `first` (relative) in epoch 1 and `rtol` in every epoch, test accuracy within
    `s.sizes.acc_gap`."""
    g = gaps(ref.losses(), t.losses())
    same = t.schedule() == ref.schedule() and t.final_lr == ref.final_lr
    acc_gap = s.sizes.acc_gap
    ok = g[0] <= first and max(g) <= rtol and same and abs(t.acc - ref.acc) <= acc_gap
    exact = ", bitwise identical" if max(g) == 0 else ""
    return check(s, path, what, ok,
                 f"train loss relative gap {g[0]:.1e} in epoch 1 (limit {first:.2g}), at most "
                 f"{max(g):.1e}{exact} in {len(g)} epochs (limit {rtol:.2g}); lr and distillation weight "
                 f"of every epoch and final lr ({t.final_lr:.3g}) {'identical' if same else 'DIFFER'}; "
                 f"test acc {t.acc:.3f} vs {ref.acc:.3f} (limit ±{acc_gap})")  # fmt: skip


def near(s: Session, path: str, what: str, t: Trained, ref: Trained) -> bool:
    """A smoke run (other precision or compiled) ends near the fp32 eager run."""
    return check(s, path, what, abs(t.acc - ref.acc) <= SMOKE_GAP,
                 f"test acc {t.acc:.3f} vs {ref.acc:.3f} (limit ±{SMOKE_GAP})")  # fmt: skip


# --- training ---------------------------------------------------------------------------------------


@contextmanager
def watch(device: torch.device):
    """Count CUDA-graph replays (bench_step's counter) and collect warnings while a run trains."""
    seen: dict = {"replays": 0, "warned": []}
    with count_replays(device) as replays, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield seen
        finally:
            seen["replays"] = replays["n"]
            seen["warned"] = list(dict.fromkeys(str(w.message)[:200] for w in caught))


def config(s: Session, recipe: str, method: str, **flags) -> Config:
    """A student of `recipe` ("reference" or "series"), scaled to the check's sizes, with speed flags."""
    z = s.sizes
    common = dict(dataset=s.data.name, data=s.npz, val_size=0, train_size=z.train,
                  test_size=z.test, batch_size=z.batch, device=str(s.device), out_dir=str(s.out))  # fmt: skip
    if recipe == "reference":  # what reproduce runs: Adam 1e-3, constant lr; warm-up scaled with epochs
        row = {"dkd": "dkd_100", "kd": "kd_100", "ce": "ce_100"}[method]
        cfg = reference_configs(s.teacher, scale=z.epochs / 100, **common)[row]
    else:  # the series' students: SGD + one-cycle (its 20-epoch DKD warm-up scaled to these epochs)
        cfg = student_config(method, s.teacher, fast=False, epochs=z.epochs, **common)
        cfg = replace(cfg, warmup=min(cfg.setting("warmup"), 2))
    label = "-".join([recipe, method, *sorted(k for k, v in flags.items() if v)])
    return replace(cfg, name=f"gc-{label}", **flags)


def trained(run: Run, seen: dict) -> Trained:
    lr = load_checkpoint(run.checkpoint)["optimizer"]["param_groups"][0]["lr"]  # a tensor when graphed
    return Trained(run, float(lr), seen["replays"], seen["warned"])


def train(s: Session, recipe: str, method: str, **flags) -> Trained:
    """One student trained alone with `fit`. flags: Config's graph, cache_teacher, amp (default off:
    fp32), compile. Each combination trains once per check; later checks reuse it."""
    flags = {"graph": False, "cache_teacher": False, "amp": False, "compile": False, **flags}
    key = (recipe, method, *sorted(flags.items()))
    if key not in s.runs:
        with watch(s.device) as seen:
            run = fit(config(s, recipe, method, **flags), data=s.data, progress=False)
        s.runs[key] = trained(run, seen)
    return s.runs[key]


FALLBACK = re.compile(r"CUDA-graph capture failed|graph=True")  # dkdlib's warnings that it went eager


def replayed(s: Session, path: str, what: str, t: Trained) -> bool:
    """A graphed run really ran graphed: a replay for every step after the warm-up, no fallback warning."""
    want = s.sizes.epochs * (s.sizes.train // s.sizes.batch) - WARMUP_STEPS
    fallback = [w for w in t.warned if FALLBACK.search(w)]
    return check(s, path, f"{what}: every step after warm-up replayed", t.replays == want and not fallback,
                 f"{t.replays} graph replays (expected {want}); warnings: {t.warned or 'none'}")  # fmt: skip


# --- the checks, one function per path --------------------------------------------------------------


def check_eager(s: Session) -> None:
    """The base every path is compared with: a teacher and eager DKD students that learn."""
    z = s.sizes
    cfg = teacher_config(False, model=z.teacher, dataset=s.data.name, data=s.npz, val_size=0,
                         train_size=z.train, test_size=z.test, batch_size=z.batch, epochs=z.epochs,
                         device=str(s.device), out_dir=str(s.out), name="gc-teacher")  # fmt: skip
    run = fit(cfg, data=s.data, progress=False)  # the series' teacher recipe: SGD + one-cycle, autocast
    s.teacher = str(run.checkpoint)
    learns(s, "eager", f"teacher ({z.teacher}, SGD + one-cycle)", float(run.metrics["test_acc"]))
    for recipe in ("reference", "series"):
        learns(s, "eager", f"{recipe} DKD student, eager fp32", train(s, recipe, "dkd").acc)


def check_graph(s: Session) -> None:
    """Graphed runs (Adam capturable / SGD with a device lr) against eager ones, fp32, live DKD teacher."""
    if s.device.type != "cuda":
        check(s, "graph", "CUDA graphs", True, f"not available on {s.device.type}: path off (not a failure)",
              skipped=True)  # fmt: skip
        return
    for recipe in ("reference", "series"):
        eager, graphed = train(s, recipe, "dkd"), train(s, recipe, "dkd", graph=True)
        what = f"{recipe} DKD, fp32, graphed"
        learns(s, "graph", what, graphed.acc)
        replayed(s, "graph", what, graphed)
        follows(s, "graph", f"{what} follows eager", graphed, eager, GRAPH_RTOL, DRIFT_RTOL)
    if amp_dtype(s.device) == torch.bfloat16:  # fp16 autocast needs loss scaling: no graphs there
        t = train(s, "reference", "dkd", graph=True, amp=True)
        learns(s, "graph", "reference DKD, bf16 autocast, graphed", t.acc)
        replayed(s, "graph", "reference DKD, bf16 autocast, graphed", t)
        near(s, "graph", "reference DKD, bf16 graphed vs fp32 eager", t, train(s, "reference", "dkd"))


def check_cache(s: Session) -> None:
    """The logit cache holds the live teacher's logits of each view, and students learn from it alike."""
    graph = s.passed["graph"]
    cfg = config(s, "reference", "dkd", cache_teacher=True, amp=False)
    teacher = load_teacher(cfg, s.data, s.device)
    # The loader the run's cache is built from: the same images, normalisation and layout as fit's.
    d, channels_last = s.data, use_channels_last(cfg, s.device)
    loader = DeviceLoader(d.x_train, d.y_train, s.sizes.batch, mean=d.mean, std=d.std, device=s.device,
                          channels_last=channels_last)  # fmt: skip
    cache = dkdlib.train.teacher_logit_cache(teacher, loader, d.x_train, cache_dir=s.out / "cache")
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(s.data.y_train), (s.sizes.probe,), generator=g).to(s.device)
    view = torch.randint(0, N_VIEWS, (s.sizes.probe,), generator=g).to(s.device)
    with torch.no_grad():
        logits = teacher(loader.batch(idx, view)[0]).float()
    gap = float((cache[idx, view].float() - logits).abs().max() / logits.abs().max())
    check(s, "cache", "cached logits == live teacher, fp32", gap <= CACHE_RTOL,
          f"max gap {gap:.1e} of the largest logit (limit {CACHE_RTOL:.2g}) on {s.sizes.probe} random "
          f"(image, view) pairs of {len(s.data.y_train)} x {N_VIEWS}")  # fmt: skip
    live = train(s, "reference", "dkd", graph=graph)
    cached = train(s, "reference", "dkd", graph=graph, cache_teacher=True)
    what = f"reference DKD from the cache{', graphed' if graph else ''}"
    learns(s, "cache", what, cached.acc)
    if graph:
        replayed(s, "cache", what, cached)
    follows(s, "cache", f"{what} follows the live teacher", cached, live, FIRST_RTOL, DRIFT_RTOL)


def check_compile(s: Session) -> None:
    """torch.compile with autocast on top of the paths that passed (what reproduce --compile would run)."""
    graph = s.passed["graph"] and amp_dtype(s.device) != torch.float16
    flags = dict(graph=graph, cache_teacher=s.passed["cache"], amp=True, compile=True)
    on = ", ".join(k for k, v in flags.items() if v)
    t = train(s, "reference", "dkd", **flags)
    learns(s, "compile", f"reference DKD ({on})", t.acc)
    if graph:
        replayed(s, "compile", f"reference DKD ({on})", t)
    near(s, "compile", f"reference DKD ({on}) vs fp32 eager", t, train(s, "reference", "dkd"))


CHECKS = [("eager", check_eager), ("graph", check_graph), ("cache", check_cache), ("compile", check_compile)]


# --- setup ------------------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor}), torch {torch.__version__}"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads), torch {torch.__version__}"


def break_paths(names: frozenset[str]) -> None:
    """Break dkdlib's cache path on purpose (GPU_CHECK_BREAK), to show the checks catch it."""
    if "cache" in names:  # pair each image's logits with its neighbouring view: the classic cache bug
        build = dkdlib.train.teacher_logit_cache
        dkdlib.train.teacher_logit_cache = lambda *a, **k: build(*a, **k).roll(1, dims=1)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="run on the CPU (no CUDA graphs: graph path off)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the CPU dry run: about a minute)")
    p.add_argument("--verdicts", help="write the verdicts JSON here (after every check)")
    p.add_argument("--data", help="CIFAR-10 .npz to check on (default: dkdlib's SYNTHETIC images)")
    return p.parse_args(argv)


def run_checks(s: Session) -> None:
    """Each path's checks in order; a path passes when all its checks ran and passed."""
    for path, fn in CHECKS:
        start, t0 = len(s.report["checks"]), time.perf_counter()
        try:
            fn(s)
        except Exception:  # a check that raises fails its path; the paths below still get checked
            check(s, path, f"{fn.__name__} raised", False, traceback.format_exc(limit=-8))
        mine = s.report["checks"][start:]
        s.passed[path] = bool(mine) and all(c["ok"] and not c["skipped"] for c in mine)
        if path in PATHS:
            s.report["paths"][path] = s.passed[path]
        s.report["path_seconds"][path] = seconds = round(time.perf_counter() - t0, 1)
        print(f"{path}: {'passed' if s.passed[path] else 'OFF'} ({seconds:.0f} s)", flush=True)
        save(s)


def main(argv=None) -> int:
    args = parse_args(argv)
    broken = frozenset(filter(None, os.environ.get("GPU_CHECK_BREAK", "").split(",")))
    if broken - {"cache"}:
        print(f"GPU_CHECK_BREAK: only the cache can be broken; got {sorted(broken)}")
        return 2
    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: these checks are for the GPU (--cpu runs them on the CPU)")
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    sizes = QUICK if args.quick else GPU
    if device.type == "cpu":
        sizes = replace(sizes, teacher="resnet8")  # a ResNet18 teacher trains at ~30 images/s on a CPU
        if args.quick:  # inductor's C++ build takes ~50 s per model on a 2-core CPU; the GPU uses inductor
            compile_ = torch.compile
            torch.compile = lambda model, **k: compile_(model, **{"backend": "aot_eager", **k})
    else:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (PyTorch docs)
        torch.backends.cudnn.deterministic = True  # eager and graphed runs pick the same kernels
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # true fp32
    name = "cifar10" if args.data else "synthetic"
    if args.data:  # real images: a lower bar for the same number of steps
        sizes = replace(sizes, learn=sizes.learn_cifar)
    data = load_data(name, npz=args.data, val_size=0, train_size=sizes.train, test_size=sizes.test)
    report = {"device": device_name(device), "paths": dict.fromkeys(PATHS, False), "checks": [],
              "seconds": 0.0, "finished": False, "data": data.source, "sizes": vars(sizes),
              "chance": 1 / data.num_classes, "broken": sorted(broken), "path_seconds": {},
              "_t0": time.perf_counter()}  # fmt: skip
    report["autocast"] = str(amp_dtype(device)).replace("torch.", "")  # what amp=True runs use here
    print(f"{report['device']}, autocast {report['autocast']}; {data.source}: {len(data.y_train)} training, "
          f"{len(data.y_test)} test images; {sizes.epochs} epochs of batch {sizes.batch}; every run must "
          f"reach test acc {sizes.learn} (chance {report['chance']:.2f})", flush=True)  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed by a timeout: the verdicts so far stay
    break_paths(broken)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        verdicts = Path(args.verdicts) if args.verdicts else None
        s = Session(device, data, args.data, sizes, Path(tmp), verdicts, report)
        save(s)
        run_checks(s)
    report["finished"] = True
    save(s)
    failed = [c["name"] for c in report["checks"] if not c["ok"]]
    print(f"paths: {report['paths']}; {report['seconds']:.0f} s")
    print("all checks passed" if not failed else f"FAILED: {'; '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

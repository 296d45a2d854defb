"""Check the GPU-only speed paths against the plain ones, on the GPU, without pytest.

    python benchmarks/gpu_check.py            # ~1 minute on one GPU; exit code 1 if a check fails
    python benchmarks/gpu_check.py --cpu      # the same script on the CPU, eager (checks the script)

The unit tests cover the same ground on CPU, where CUDA graphs cannot run; this script is for the GPU
machine (which may lack pytest). It checks:
1. a CUDA-graph-captured TrainStep follows the eager one step for step (fp32, same init, same batches);
2. the teacher-logit cache equals the live teacher (bf16 autocast, as in training) on random views;
3. students trained together (fit_many, graphed, cached) end where each ends alone (fit, eager);
4. a graphed fit() learns like an eager one (bf16, loss histories and test accuracy).
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dkdlib import Config, fit  # noqa: E402
from dkdlib.cache import compute_teacher_logits  # noqa: E402
from dkdlib.data import N_VIEWS, DeviceLoader, load_data  # noqa: E402
from dkdlib.models import create_model  # noqa: E402
from dkdlib.sweep import fit_many  # noqa: E402
from dkdlib.train import TrainStep, _make_optimizer, solo_loss  # noqa: E402

FAILED: list[str] = []
DEVICE, GRAPH = "cuda", True  # --cpu: "cpu", False (no CUDA graphs there)
TRAIN, CACHED = 2000, 256  # training images; images whose 162 views the cache check computes


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def check(name: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def graph_follows_eager(data, out: Path) -> None:
    cfg = Config(model="resnet8", dataset="synthetic", batch_size=64, lr=0.05, out_dir=str(out))
    params = []
    for graph in (False, GRAPH):
        torch.manual_seed(0)
        model = create_model("resnet8", 10).to(DEVICE).to(memory_format=torch.channels_last)
        loader = DeviceLoader(data.x_train, data.y_train, 64, mean=data.mean, std=data.std, device=DEVICE,
                              seed=0, channels_last=True)  # fmt: skip
        optimizer = _make_optimizer(cfg, model, graph)
        step = TrainStep(solo_loss(cfg), model, loader, optimizer, graph=graph)
        step.start_epoch(1, 1.0)
        for _ in range(len(loader)):
            step()
        sync()
        if GRAPH and graph:
            check("graph captured", step._cuda_graph is not None, f"{len(loader)} steps, 3 eager + replays")
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    diff = float((params[0] - params[1]).abs().max() / params[0].abs().max())
    check(
        "graphed step == eager step (fp32, one epoch)", diff < 1e-3, f"max relative parameter gap {diff:.2e}"
    )


def cache_equals_teacher(data) -> None:
    torch.manual_seed(0)
    teacher = create_model("resnet18", 10).to(DEVICE).eval().to(memory_format=torch.channels_last)
    loader = DeviceLoader(data.x_train[:CACHED], data.y_train[:CACHED], 64, mean=data.mean, std=data.std,
                          device=DEVICE, train=False, channels_last=True)  # fmt: skip
    t0 = time.perf_counter()
    amp = torch.bfloat16 if DEVICE == "cuda" else None
    cache = compute_teacher_logits(teacher, loader, amp_dtype=amp)
    sync()
    seconds = time.perf_counter() - t0
    idx = torch.randint(0, CACHED, (128,), device=DEVICE)
    view = torch.randint(0, N_VIEWS, (128,), device=DEVICE)
    with torch.no_grad(), torch.autocast(DEVICE, dtype=amp or torch.float32, enabled=amp is not None):
        live = teacher(loader.batch(idx, view)[0]).float()
    gap = float((cache[idx, view].float() - live).abs().max() / live.abs().max())
    check("cache == live teacher (bf16)", gap < 2e-2,
          f"max relative gap {gap:.2e}; {CACHED * N_VIEWS / seconds:.0f} views/s")  # fmt: skip


def sweep_matches_solo(out: Path) -> None:
    base = dict(model="resnet8", dataset="synthetic", epochs=3, batch_size=64, lr=0.05, val_size=500,
                train_size=TRAIN, test_size=500, warmup=2, device=DEVICE, out_dir=str(out))  # fmt: skip
    teacher = fit(Config(**{**base, "name": "gpu-check-teacher", "epochs": 4}), progress=False)
    methods = [dict(method="ce"), dict(method="kd", ce_weight=0.1, kd_weight=0.9, warmup=0),
               dict(method="dkd"), dict(method="nckd", beta=2.0)]  # fmt: skip
    configs = [Config(**{**base, **m, "teacher": str(teacher.checkpoint)}) for m in methods]
    together = fit_many([replace(c, graph=GRAPH, cache_teacher=True) for c in configs], progress=False)
    for c, run in zip(configs, together, strict=True):
        alone = fit(replace(c, out_dir=str(out / "alone")), progress=False, save=False)
        a, b = alone.metrics["test_acc"], run.metrics["test_acc"]
        la, lb = alone.history[-1]["train_loss"], run.history[-1]["train_loss"]
        ok = abs(a - b) < 0.05 and abs(la - lb) < 0.05 * abs(la) + 1e-3
        text = f"test acc {b:.3f} together vs {a:.3f} alone; last train loss {lb:.4f} vs {la:.4f}"
        check(f"fit_many == fit ({c.method})", ok, text)


def graphed_fit_learns(out: Path) -> None:
    base = Config(model="resnet8", dataset="synthetic", epochs=3, batch_size=64, lr=0.05, val_size=500,
                  train_size=TRAIN, test_size=500, device=DEVICE, out_dir=str(out))  # fmt: skip
    eager = fit(base, progress=False, save=False)
    graphed = fit(replace(base, graph=GRAPH), progress=False, save=False)
    a, b = eager.metrics["test_acc"], graphed.metrics["test_acc"]
    check("graphed fit == eager fit (bf16)", abs(a - b) < 0.05,
          f"test acc {b:.3f} graphed vs {a:.3f} eager; {graphed.metrics['images_per_s']:.0f} vs "
          f"{eager.metrics['images_per_s']:.0f} img/s (tiny data: not a benchmark)")  # fmt: skip


def main() -> int:
    global DEVICE, GRAPH, TRAIN, CACHED
    import tempfile

    if "--cpu" in sys.argv[1:]:
        DEVICE, GRAPH, TRAIN, CACHED = "cpu", False, 320, 16
        print(f"CPU dry run (eager, no CUDA graphs); torch {torch.__version__}")
    elif not torch.cuda.is_available():
        print("no CUDA device: these checks need a GPU (the unit tests cover the rest on CPU; --cpu runs "
              "this script eagerly on the CPU)")  # fmt: skip
        return 2
    else:
        print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}")
    data = load_data("synthetic", val_size=500, train_size=TRAIN, test_size=500)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        checks = [
            (graph_follows_eager, (data, out)),
            (cache_equals_teacher, (data,)),
            (sweep_matches_solo, (out,)),
            (graphed_fit_learns, (out,)),
        ]
        for fn, args in checks:
            try:
                fn(*args)
            except Exception as err:  # report and go on: one failure must not hide the others
                check(fn.__name__, False, f"{type(err).__name__}: {err}")
    print("all checks passed" if not FAILED else f"FAILED: {', '.join(FAILED)}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())

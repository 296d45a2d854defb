"""Speed of one DKD training step: a conventional PIL + DataLoader loop against dkdlib's own loop.

The step: a frozen CIFAR ResNet18 teacher (eval mode, no_grad) and a ResNet8 student, batch 128,
CE + DKD (alpha 1, beta 8, T 4, dkdlib's loss), SGD with momentum 0.9. Variants, same models, loss and
batch size, in one process:

  conventional, W workers   torchvision-style Dataset of PIL images + transforms, torch DataLoader with W
                            worker processes, a plain fp32 eager step
  dkdlib eager              dkdlib.train.TrainStep over a DeviceLoader — the step fit() runs — with the
                            settings fit() picks on this device (channels_last; on CUDA also bf16
                            autocast and fused SGD), kernels launched one by one
  dkdlib + torch.compile    the same with the student compiled (only with --compile)
  dkdlib graphed            (CUDA) the whole step captured once as a CUDA graph, replayed per batch
  ... + logit cache         the teacher's logits looked up from the exact 162-view cache (dkdlib.cache)
                            instead of a teacher forward; the cache's build time is reported apart

Warm-up steps (worker start-up, cuDNN's first calls, compilation) are not timed; CUDA is synchronised
before every timer read. Prints a table (images/s, ratio to the 2-worker loop) and writes a JSON record.

    python benchmarks/bench_step.py --data /tmp/cifar10.npz              # CPU here: small default steps
    python benchmarks/bench_step.py --device cuda --data cifar10.npz     # GPU: 300 timed steps each

On a CPU there are no CUDA graphs, so "fastest" is the eager step.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python benchmarks/bench_step.py` works without installing dkdlib

from dkdlib.cache import compute_teacher_logits  # noqa: E402
from dkdlib.checkpoint import atomic_write  # noqa: E402
from dkdlib.data import N_VIEWS, DeviceLoader, load_data  # noqa: E402
from dkdlib.methods import student_loss  # noqa: E402
from dkdlib.models import create_model  # noqa: E402
from dkdlib.step import TrainStep  # noqa: E402
from dkdlib.train import (  # noqa: E402
    Config,
    amp_dtype,
    make_optimizer,
    make_scheduler,
    pick_device,
    use_channels_last,
    use_graph,
)

BATCH, ALPHA, BETA, TEMPERATURE = 128, 1.0, 8.0, 4.0
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4
TEACHER, STUDENT = "resnet18", "resnet8"
# CE + DKD for one student, as dkdlib's loop computes it (the method registry's loss).
dkd_step_loss = student_loss(Config(method="dkd", alpha=ALPHA, beta=BETA, temperature=TEMPERATURE))


def sync(device: torch.device) -> None:
    """Wait for queued GPU work: CUDA calls return before the kernels finish."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(device: torch.device, fn) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


# --- 1. the conventional loop -------------------------------------------------------------------


class PILDataset(torch.utils.data.Dataset):
    """torchvision-style: one uint8 HWC image at a time → PIL image → transforms, in a worker process."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def bench_conventional(data, device: torch.device, workers: int, steps: int, untimed: int) -> dict:
    import torchvision.transforms as T

    transform = T.Compose([
        T.RandomCrop(32, padding=4),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(data.mean, data.std),
    ])  # fmt: skip
    loader = torch.utils.data.DataLoader(
        PILDataset(data.x_train, data.y_train, transform),
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,  # workers survive the epoch end: no re-fork each epoch
        pin_memory=device.type == "cuda",  # page-locked batches: async host→GPU copies
        drop_last=True,
    )
    torch.manual_seed(0)
    student = create_model(STUDENT, data.num_classes).to(device)
    teacher = create_model(TEACHER, data.num_classes).to(device).requires_grad_(False).eval()
    optimizer = torch.optim.SGD(
        student.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY
    )

    def forever():  # cycle epochs (persistent workers: iter() again reuses them)
        while True:
            yield from loader

    batches = forever()
    last_loss = torch.zeros(())

    def step():
        nonlocal last_loss
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # overlaps with compute
        logits = student(x)
        with torch.no_grad():
            logits_teacher = teacher(x)
        # The same loss maths as dkdlib's loop (its public student_loss), without the public dkd_loss's
        # label check (a host sync).
        loss = dkd_step_loss(logits, logits_teacher, y, torch.ones((), device=device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        last_loss = loss.detach()

    def run(n: int):
        for _ in range(n):
            step()

    startup = timed(device, lambda: run(untimed))  # includes forking the workers
    seconds = timed(device, lambda: run(steps))
    batches.close()  # drops the last reference to the workers: they exit before the next variant
    return {"startup_s": startup, "seconds": seconds, "last_loss": float(last_loss)}


# --- 2. dkdlib's loop ---------------------------------------------------------------------------


@contextmanager
def count_replays(device: torch.device):
    """Count CUDA-graph replays: a graphed variant whose capture fell back to eager replays none."""
    seen = {"n": 0}
    original = torch.cuda.CUDAGraph.replay if device.type == "cuda" else None

    def replay(graph):
        seen["n"] += 1
        return original(graph)

    if original is not None:
        torch.cuda.CUDAGraph.replay = replay
    try:
        yield seen
    finally:
        if original is not None:
            torch.cuda.CUDAGraph.replay = original


_CACHES: dict = {}  # teacher-logit caches built by earlier variants of this run


def bench_dkdlib(
    data, device: torch.device, steps: int, untimed: int, *, compile: bool = False, graph: bool = False,
    cache: bool = False, cache_images: int | None = None,
) -> dict:  # fmt: skip
    """dkdlib's TrainStep — the step fit() runs — with the chosen speed features."""
    cfg = Config(
        model=STUDENT, method="dkd", teacher="(a random ResNet18, built below)", batch_size=BATCH,
        alpha=ALPHA, beta=BETA, temperature=TEMPERATURE, warmup=0, epochs=1, lr=LR, momentum=MOMENTUM,
        weight_decay=WEIGHT_DECAY, device=str(device), compile=compile, graph=graph,
    )  # fmt: skip
    channels_last = use_channels_last(cfg, device)  # NHWC convolutions (tensor cores on GPU)
    torch.manual_seed(0)
    model = create_model(cfg.model, data.num_classes).to(device)
    torch.manual_seed(0)
    teacher = create_model(TEACHER, data.num_classes).to(device)  # as fit()'s load_teacher, minus the file
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        teacher = teacher.to(memory_format=torch.channels_last)
    teacher.requires_grad_(False).eval()
    # One epoch of exactly untimed + steps batches (images repeated if the dataset is smaller). The uint8
    # images are copied to the device once, here; crop + flip + normalise happen there, a batch at a time.
    idx = np.arange((untimed + steps) * BATCH) % len(data.y_train)
    loader = DeviceLoader(
        data.x_train[idx], data.y_train[idx], BATCH, mean=data.mean, std=data.std, train=True,
        device=device, seed=1, channels_last=channels_last,
    )  # fmt: skip
    amp = amp_dtype(device, cfg.amp)  # bf16 autocast from sm_80, fp16 + GradScaler below, None on CPU
    graphed = use_graph(cfg, device)
    optimizer = make_optimizer(cfg, model, graphed)  # fused SGD on CUDA; lr a device tensor if graphed
    scheduler = make_scheduler(cfg, optimizer, untimed + steps)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    step_model = torch.compile(model) if compile else model  # fixed batch shape: compiled once
    logits_cache, cache_s = None, None
    if cache:  # every view of every image the run will see, computed once (not part of the step time)
        # The loader repeats its images with period len(data); a CPU run caches only the first
        # `cache_images` of them (162 teacher forwards each) and repeats those.
        unique = min(len(data.y_train), len(idx), cache_images or len(idx))
        pool = DeviceLoader(
            data.x_train[:unique],
            data.y_train[:unique],
            BATCH,
            mean=data.mean,
            std=data.std,
            train=False,
            device=device,
            channels_last=channels_last,
        )
        key = (unique, str(amp), channels_last)  # the same random teacher (seed 0) every variant
        if key not in _CACHES:
            sync(device)
            t0 = time.perf_counter()
            _CACHES[key] = compute_teacher_logits(teacher, pool, amp_dtype=amp), None
            sync(device)
            _CACHES[key] = _CACHES[key][0], time.perf_counter() - t0
        logits_cache, cache_s = _CACHES[key]
        logits_cache = logits_cache[torch.as_tensor(idx % unique, device=device)]
    step = TrainStep(
        student_loss(cfg), step_model, loader, optimizer, scaler, teacher=None if cache else teacher,
        cache=logits_cache, amp_dtype=amp, graph=graphed,
    )  # fmt: skip
    step.start_epoch(1, 1.0)

    def run(n: int):
        for _ in range(n):
            step()  # on CUDA with graph=True: eager steps, one capture, then one replay per step
            scheduler.step()

    with count_replays(device) as replays:
        startup = timed(device, lambda: run(untimed))  # cuDNN's first calls, compilation, graph capture
        seconds = timed(device, lambda: run(steps))
    step.check_finite(1, untimed + steps)
    if graphed and replays["n"] == 0:  # a capture that fell back to eager: not this variant's speed
        why = step.graph_error or "no capture"
        raise RuntimeError(f"graph=True but no CUDA graph was replayed in {untimed + steps} steps ({why})")
    result = {
        "startup_s": startup,
        "seconds": seconds,
        "last_loss": float(step.epoch_stats()["train_loss"]),  # the epoch's mean loss
        "amp_dtype": str(amp).replace("torch.", "") if amp else "float32",
        "channels_last": channels_last,
        "fused_sgd": device.type == "cuda",
        "cuda_graph": graphed,
        "graph_replays": replays["n"],
    }
    if cache_s is not None:
        result.update(
            cache_build_s=cache_s, cache_images=unique, cache_views_per_s=unique * N_VIEWS / cache_s
        )
    return result


# --- reporting ----------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        model = platform.processor() or platform.machine()
        try:
            text = Path("/proc/cpuinfo").read_text()
            model = re.search(r"^model name\s*:\s*(.+)$", text, re.M).group(1).strip()
        except (OSError, AttributeError):
            pass
        return f"{model}, {os.cpu_count()} cores (torch uses {torch.get_num_threads()} threads)"
    return device.type


def git_commit() -> str | None:
    """The checkout's commit; where there is no .git (the GPU machine), DKDLIB_GIT_COMMIT if set."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "dkdlib", "benchmarks/bench_step.py"],
            cwd=ROOT, capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        return out.stdout.strip() + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("DKDLIB_GIT_COMMIT") or None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--steps", type=int, help="timed steps per variant (default: 8 on CPU, 300 on GPU)")
    p.add_argument(
        "--untimed", "--warmup", type=int, help="untimed steps first (default: 2 on CPU, 30 on GPU)"
    )
    p.add_argument("--data", help="CIFAR-10 .npz with x_train/y_train uint8 (default: SYNTHETIC images)")
    p.add_argument("--workers", type=int, nargs="*", default=[2, 8], help="DataLoader workers (default: 2 8)")
    p.add_argument("--compile", action="store_true", help="also time dkdlib's loop with torch.compile")
    p.add_argument(
        "--cache-images",
        type=int,
        help="distinct images in the logit cache (default: all on GPU, 128 on CPU)",
    )
    p.add_argument("--out", help="JSON file (default: benchmarks/results/step-<device>-<UTC time>.json)")
    args = p.parse_args(argv)
    for key in ("steps", "untimed"):
        value = getattr(args, key)
        if value is not None and value < 1:
            p.error(f"--{key} must be >= 1; got {value}")
    if any(w < 0 for w in args.workers):
        p.error("--workers must be >= 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = pick_device(args.device)
    on_gpu = device.type == "cuda"
    steps = args.steps or (300 if on_gpu else 8)
    untimed = args.untimed or (30 if on_gpu else 2)
    if args.data:
        data = load_data("cifar10", npz=args.data, val_size=0)
    else:
        data = load_data("synthetic", val_size=0)
    name = device_name(device)
    now = dt.datetime.now(dt.timezone.utc)
    header = (
        f"DKD step: {TEACHER} teacher (frozen) -> {STUDENT} student, batch {BATCH}, "
        f"DKD a={ALPHA:g} b={BETA:g} T={TEMPERATURE:g}, SGD momentum {MOMENTUM}\n"
        f"device: {device} = {name}\ntorch {torch.__version__}, python {platform.python_version()}, "
        f"{now:%Y-%m-%d %H:%M} UTC\ndata: {data.source} ({len(data.y_train)} training images)\n"
        f"{steps} timed steps per variant after {untimed} untimed steps"
    )
    print(header, flush=True)
    out = Path(args.out) if args.out else None
    if out is None:
        slug = re.sub(r"[^a-z0-9]+", "-", f"{device.type} {name.split(',')[0]}".lower()).strip("-")
        out = ROOT / "benchmarks" / "results" / f"step-{slug}-{now:%Y-%m-%dT%H%MZ}.json"
    config = dict(
        teacher=TEACHER, student=STUDENT, batch_size=BATCH, alpha=ALPHA, beta=BETA, temperature=TEMPERATURE,
        lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, steps=steps, untimed_steps=untimed,
        workers=args.workers, compile=args.compile, data=data.source,
        synthetic=data.name == "synthetic", train_images=len(data.y_train),
    )  # fmt: skip
    versions = {"torch": torch.__version__, "torchvision": _version("torchvision"),
                "pillow": _version("PIL"), "python": platform.python_version()}  # fmt: skip
    load_before, commit = _loadavg(), git_commit()
    t_start = time.perf_counter()
    variants: list[dict] = []
    graph = on_gpu  # CUDA graphs exist only on CUDA; elsewhere "fastest" is the eager step
    fastest = "dkdlib graphed" if graph else "dkdlib eager"

    def report(complete: bool) -> dict:
        """The JSON record of the variants so far (written after each one: a timeout keeps them)."""
        timed_ok = [v for v in variants if "failed" not in v]
        base = next((v for v in timed_ok if v["variant"] == "conventional, 2 workers"), None)
        base = base or (timed_ok[0] if timed_ok else None)
        for v in timed_ok:
            v["ratio"] = v["images_per_s"] / base["images_per_s"]
        return {
            "benchmark": "dkd training step",
            "date": now.isoformat(timespec="seconds"),
            "git_commit": commit,
            "command": "python benchmarks/bench_step.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "device": dict(
                type=device.type, name=name, cpus=os.cpu_count(), torch_threads=torch.get_num_threads()
            ),
            "versions": versions,
            "config": config,
            "complete": complete,
            "baseline": base["variant"] if base else None,
            "failed": [v["variant"] for v in variants if "failed" in v],
            "variants": [
                {k: round(x, 4) if isinstance(x, float) else x for k, x in v.items()} for v in variants
            ],
            "wall_time_s": round(time.perf_counter() - t_start, 1),
            "load_average_1min": {"before": load_before, "after": _loadavg()},  # > cpus: the CPU was shared
        }

    def write(record: dict) -> None:
        text = json.dumps(record, indent=2) + "\n"
        atomic_write(out, lambda tmp: Path(tmp).write_text(text))

    def run(variant: str, bench, *args, **kwargs) -> None:
        """Time one variant; one that raises is recorded as failed and the others go on."""
        try:
            result = bench(*args, **kwargs)
            result.update(variant=variant, steps=steps, images_per_s=steps * BATCH / result["seconds"])
            result["ms_per_step"] = 1000 * result["seconds"] / steps
            print(f"  {variant}: {result['images_per_s']:.0f} images/s", flush=True)
        except Exception as err:  # e.g. a compiler or a graph capture that fails on this machine
            result = {"variant": variant, "failed": f"{type(err).__name__}: {err}"[:2000]}
            print(f"  {variant}: FAILED ({type(err).__name__}: {str(err)[:300]})", flush=True)
            traceback.print_exc()
        finally:
            gc.collect()
            if on_gpu:
                torch.cuda.empty_cache()
        variants.append(result)
        write(report(complete=False))

    if max(args.workers, default=0) > (os.cpu_count() or 1):
        print(f"  note: more DataLoader workers than the {os.cpu_count()} CPUs: oversubscribed", flush=True)
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # said once, above
    for w in args.workers:
        run(f"conventional, {w} workers", bench_conventional, data, device, w, steps, untimed)
    cache_images = args.cache_images or (None if on_gpu else 128)
    run("dkdlib eager", bench_dkdlib, data, device, steps, untimed)
    if args.compile:
        run("dkdlib + torch.compile", bench_dkdlib, data, device, steps, untimed, compile=True)
    if graph:
        run(fastest, bench_dkdlib, data, device, steps, untimed, graph=True)
    cached = dict(graph=graph, cache=True, cache_images=cache_images)
    run(f"{fastest} + logit cache", bench_dkdlib, data, device, steps, untimed, **cached)
    final = report(complete=True)
    write(final)

    col = f"x vs {final['baseline']}"
    width = max([len(v["variant"]) for v in variants] + [7])
    print(f"\n{'variant':<{width}}  {'images/s':>9}  {'ms/step':>8}  {col:>{len(col)}}  startup s")
    for v in variants:
        if "failed" in v:
            print(f"{v['variant']:<{width}}  FAILED: {v['failed'][:200]}")
            continue
        figures = f"{v['images_per_s']:>9.1f}  {v['ms_per_step']:>8.1f}  {v['ratio']:>{len(col)}.2f}"
        print(f"{v['variant']:<{width}}  {figures}  {v['startup_s']:>9.1f}")
    print("images/s: batches × 128 per second")
    built = next((v for v in variants if "cache_build_s" in v), None)  # built once, shared by the rest
    if built:
        print(
            f"teacher-logit cache of {built['cache_images']} images × {N_VIEWS} views built in "
            f"{built['cache_build_s']:.1f} s ({built['cache_views_per_s']:.0f} views/s), not timed"
        )
    load = final["load_average_1min"]["after"]
    print(f"wall time {final['wall_time_s']:.0f} s; load average (1 min) {load_before} before, {load} after")
    print(f"wrote {out}" + (f"; FAILED: {', '.join(final['failed'])}" if final["failed"] else ""))
    return final


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):  # Windows
        return None


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except (ImportError, AttributeError):
        return None


if __name__ == "__main__":  # needed for DataLoader workers started by spawn / forkserver
    sys.exit(1 if main()["failed"] else 0)

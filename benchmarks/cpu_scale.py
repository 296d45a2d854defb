"""Speed of the CPU scale's training steps, each against a seed-style loop, in one run.

    python benchmarks/cpu_scale.py --data /tmp/cifar10.npz        # about 3 minutes on 2 cores

What the CPU scale trains (recipes, DKDLIB_MODE=cpu): a ResNet20 teacher, and ResNet8 students alone
(CE) or distilled from it (KD, DKD). For each, the seed-style loop (a torchvision-style PIL Dataset,
`RandomCrop(32, padding=4)` + flip + `ToTensor` + `Normalize`, a `DataLoader` with 2 workers, an NCHW
fp32 eager step) is timed beside dkdlib's step (`TrainStep` over a `DeviceLoader`: crop, flip and
normalisation of a whole batch at once in torch) with each speed setting on and off: channels_last,
torch.compile, batch 256, one thread, and the teacher's logits read from the 'seen' cache instead of a
teacher forward. Then the teacher candidates' training speed (ResNet20, 32, 56 and the wide ResNet8x4).
Warm-up steps are not timed. Prints a table and writes a JSON record to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_step import PILDataset, device_name, git_commit  # noqa: E402

from dkdlib import dkd_loss  # noqa: E402
from dkdlib.cache import SeenLogits  # noqa: E402
from dkdlib.data import DeviceLoader, load_data  # noqa: E402
from dkdlib.methods import student_loss  # noqa: E402
from dkdlib.models import create_model  # noqa: E402
from dkdlib.step import TrainStep  # noqa: E402
from dkdlib.train import Config, make_optimizer  # noqa: E402

LR, STEPS, WARMUP = 0.05, 24, 4


def seed_style(data, model_name: str, teacher_name: str | None, batch: int, steps: int) -> float:
    """images/s of the usual recipe: PIL transforms in 2 DataLoader workers, an NCHW eager step."""
    import torch.nn.functional as F
    import torchvision.transforms as T

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(data.mean, data.std)])  # fmt: skip
    loader = torch.utils.data.DataLoader(PILDataset(data.x_train, data.y_train, transform), batch_size=batch,
                                         shuffle=True, num_workers=2, drop_last=True)  # fmt: skip
    torch.manual_seed(0)
    model = create_model(model_name, data.num_classes)
    teacher = create_model(teacher_name, data.num_classes).eval() if teacher_name else None
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, nesterov=True, weight_decay=5e-4)
    batches = iter(loader)
    t0 = 0.0
    for i in range(WARMUP + steps):
        if i == WARMUP:
            t0 = time.perf_counter()
        x, y = next(batches)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if teacher is not None:
            with torch.no_grad():
                logits_teacher = teacher(x)
            loss = loss + dkd_loss(logits, logits_teacher, y, 1.0, 8.0, 4.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    del batches
    return steps * batch / seconds


def dkdlib_step(data, model_name: str, teacher_name: str | None, batch: int, steps: int, *,
                channels_last: bool = True, compile: bool = False,
                seen: str | None = None) -> float:  # fmt: skip
    """images/s of dkdlib's step. seen: None (a live teacher), "fill" (live, storing its logits) or
    "read" (logits read from the stored epoch)."""
    method = "dkd" if teacher_name else "ce"
    cfg = Config(model=model_name, method=method, teacher="t.pt" if teacher_name else None, batch_size=batch,
                 lr=LR, warmup=0)  # fmt: skip
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(model_name, data.num_classes).to(memory_format=fmt)
    teacher = (
        create_model(teacher_name, data.num_classes).eval().to(memory_format=fmt) if teacher_name else None
    )
    n = (WARMUP + steps) * batch
    loader = DeviceLoader(data.x_train[:n], data.y_train[:n], batch, mean=data.mean, std=data.std,
                          channels_last=channels_last, seed=0)  # fmt: skip
    cache = None
    if seen is not None:
        folder = Path(tempfile.gettempdir()) / "dkdlib-bench-seen"  # out of the work tree
        cache = SeenLogits(teacher, loader, data.x_train[:n], cache_dir=folder)
        for f in cache.folder.glob("*.pt") if seen == "fill" else ():
            f.unlink()
        if seen == "read" and not cache.path(1).is_file():  # store the epoch first, untimed
            dkdlib_step(data, model_name, teacher_name, batch, steps, seen="fill")
    optimizer = make_optimizer(cfg, model)
    step = TrainStep(student_loss(cfg), torch.compile(model) if compile else model, loader, optimizer,
                     teacher=None if cache else teacher, seen=cache)  # fmt: skip
    step.start_epoch(1, 1.0)
    t0 = 0.0
    for i in range(WARMUP + steps):
        if i == WARMUP:
            t0 = time.perf_counter()
        step()
    seconds = time.perf_counter() - t0
    step.end_epoch()
    return steps * batch / seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="CIFAR-10 .npz (default: SYNTHETIC images, for a smoke run)")
    p.add_argument("--steps", type=int, default=STEPS, help=f"timed steps per variant (default {STEPS})")
    p.add_argument("--out", type=Path, default=None, help="the JSON record (default: benchmarks/results/)")
    args = p.parse_args(argv)
    data = load_data("cifar10", npz=args.data) if args.data else load_data("synthetic", val_size=500)
    threads = torch.get_num_threads()
    rows: list[dict] = []

    def measure(group: str, variant: str, fn, *a, threads_now: int = threads, **kw) -> None:
        torch.set_num_threads(threads_now)
        try:
            rate, error = fn(data, *a, **kw), None
        except Exception as err:  # a path that fails here is reported, not hidden
            rate, error = None, f"{type(err).__name__}: {err}"
        torch.set_num_threads(threads)
        base = next((r["images_per_s"] for r in rows if r["group"] == group), None)
        rows.append({"group": group, "variant": variant, "images_per_s": rate, "error": error,
                     "vs_seed_style": rate / base if rate and base else None})  # fmt: skip
        shown = f"{rate:8.0f}  {rate / base if base else 1:5.2f}×" if rate else f"failed: {error}"
        print(f"{group:<28} {variant:<34} {shown}", flush=True)

    s = args.steps
    print(f"{'step':<28} {'variant':<34} {'img/s':>8}  vs seed-style")
    for group, student, teacher in (("ResNet8 student, CE", "resnet8", None),
                                    ("ResNet8 ← ResNet20, DKD", "resnet8", "resnet20")):  # fmt: skip
        measure(group, "seed-style (PIL, 2 workers)", seed_style, student, teacher, 128, s)
        measure(group, "dkdlib, NCHW", dkdlib_step, student, teacher, 128, s, channels_last=False)
        measure(group, "dkdlib, channels_last", dkdlib_step, student, teacher, 128, s)
        measure(group, "dkdlib, channels_last, compiled", dkdlib_step, student, teacher, 128, s, compile=True)
        measure(group, "dkdlib, channels_last, batch 256", dkdlib_step, student, teacher, 256, s // 2)
        measure(
            group, "dkdlib, channels_last, 1 thread", dkdlib_step, student, teacher, 128, s, threads_now=1
        )
        if teacher:
            measure(
                group, "dkdlib, 'seen' cache, filling", dkdlib_step, student, teacher, 128, s, seen="fill"
            )
            measure(
                group, "dkdlib, 'seen' cache, reading", dkdlib_step, student, teacher, 128, s, seen="read"
            )
    for name in ("resnet20", "resnet32", "resnet56", "resnet8x4"):  # the CPU teacher's candidates
        group = f"teacher candidate {name}"
        measure(group, "seed-style (PIL, 2 workers)", seed_style, name, None, 128, s // 2)
        measure(group, "dkdlib, channels_last", dkdlib_step, name, None, 128, s // 2)

    record = {"device": device_name(torch.device("cpu")), "torch": torch.__version__, "threads": threads,
              "data": "CIFAR-10" if args.data else "SYNTHETIC", "steps": s, "warmup": WARMUP,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "git_commit": git_commit(), "rows": rows}  # fmt: skip
    out = args.out or ROOT / "benchmarks" / "results" / f"cpu-scale-{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # DataLoader workers may start by spawn
    sys.exit(main())

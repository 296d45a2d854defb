"""Exact caches of the teacher's logits, so that the frozen teacher runs once, not once per student.

`teacher_logit_cache` ("views"): the teacher's logits on all 162 crop × flip views of every image,
computed ahead (a GPU's minute) and looked up by the view id the student's batch was cropped with.
`SeenLogits` ("seen"): the first student of a data seed stores the logits of the views its epochs draw,
the later ones read them (the CPU's choice). Keyed by all the logits depend on, under `<out_dir>/cache/`."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import atomic_write
from .data import N_VIEWS, PAD, DeviceLoader
from .errors import DKDError

__all__ = ["cache_key", "compute_teacher_logits", "teacher_logit_cache", "SeenLogits"]

FORMAT = 1  # bump when the layout or the view numbering changes


def cache_key(teacher: nn.Module, x_train: np.ndarray, mean, std, amp_dtype: torch.dtype | None) -> str:
    """A hash of everything the cached logits depend on."""
    h = hashlib.sha256()
    h.update(repr((FORMAT, PAD, N_VIEWS, tuple(mean), tuple(std), str(amp_dtype))).encode())
    for name, t in sorted(teacher.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(np.ascontiguousarray(x_train).tobytes())
    return h.hexdigest()[:20]


@torch.no_grad()
def compute_teacher_logits(
    teacher: nn.Module, loader: DeviceLoader, *, amp_dtype: torch.dtype | None = None, batch_size: int = 1024,
    progress: bool = False,
) -> torch.Tensor:  # fmt: skip
    """The teacher's logits on all N_VIEWS views of every image of `loader`: N × N_VIEWS × C, fp16 (big
    batches: a frozen teacher in eval mode gives the same outputs)."""
    from tqdm.auto import tqdm

    teacher.eval()
    device, n = loader.device, len(loader.y)
    out: torch.Tensor | None = None
    for v in tqdm(range(N_VIEWS), desc="teacher logits × 162 views", disable=not progress, leave=False):
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(n, start + batch_size), device=device)
            x, _ = loader.batch(idx, torch.full_like(idx, v))
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                z = teacher(x)
            if out is None:
                out = torch.empty(n, N_VIEWS, z.shape[1], dtype=torch.float16, device=device)
            out[start : start + len(idx), v] = z.to(torch.float16)
    assert out is not None
    if not bool(torch.isfinite(out).all()):  # fp16 tops out at 65504; no sane teacher gets near it
        raise DKDError("the teacher's logits overflow float16; the teacher checkpoint looks broken")
    return out


def teacher_logit_cache(
    teacher: nn.Module, loader: DeviceLoader, x_train: np.ndarray, *, cache_dir: str | Path,
    amp_dtype: torch.dtype | None = None, progress: bool = False,
) -> torch.Tensor:  # fmt: skip
    """Load the cache for this teacher and data from `cache_dir`, or compute and save it. On the device."""
    key = cache_key(teacher, x_train, loader.mean, loader.std, amp_dtype)
    path = Path(cache_dir) / f"teacher-logits-{key}.pt"
    if path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise DKDError(f"teacher-logit cache {path} is unreadable ({type(err).__name__}); delete it to "
                           "rebuild it") from err  # fmt: skip
        if saved.get("key") == key and saved["logits"].shape[:2] == (len(loader.y), N_VIEWS):
            return saved["logits"].to(loader.device)
    t0 = time.perf_counter()
    logits = compute_teacher_logits(teacher, loader, amp_dtype=amp_dtype, progress=progress)
    seconds = time.perf_counter() - t0
    print(f"teacher-logit cache: {len(loader.y)} images × {N_VIEWS} views in {seconds:.1f} s "
          f"({logits.numel() * 2 / 1e6:.0f} MB) → {path}")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save({"key": key, "logits": logits.cpu(), "seconds": seconds}, f))
    return logits


class SeenLogits:
    """The teacher's logits on the views each epoch draws, for every student of one data seed: epoch e's
    file (N × C, fp32) is read if it exists; else the teacher runs on each batch and the file is written
    at the epoch's end. Bit-for-bit a live teacher's logits; keyed also by data seed and batch size."""

    def __init__(self, teacher: nn.Module, loader: DeviceLoader, x_train: np.ndarray, *,
                 cache_dir: str | Path, amp_dtype: torch.dtype | None = None):  # fmt: skip
        key = cache_key(teacher, x_train, loader.mean, loader.std, amp_dtype)
        key = hashlib.sha256(f"{key} seed {loader.seed} batch {loader.batch_size}".encode()).hexdigest()[:20]
        self.folder = Path(cache_dir) / f"seen-{key}"
        self.teacher, self.n, self.device = teacher, len(loader.y), loader.device
        self.logits: torch.Tensor | None = None
        self.stored = False  # whether this epoch's logits came from its file
        self.epoch = 0

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch-{epoch:04d}.pt"

    def start_epoch(self, epoch: int) -> None:
        self.epoch, path = epoch, self.path(epoch)
        self.stored = path.is_file()
        if self.stored:
            try:
                self.logits = torch.load(path, map_location=self.device, weights_only=True)
            except Exception as err:
                raise DKDError(f"teacher-logit cache {path} is unreadable ({type(err).__name__}); "
                               "delete it to rebuild it") from err  # fmt: skip
            if self.logits.shape[0] != self.n:
                raise DKDError(f"teacher-logit cache {path} holds {self.logits.shape[0]} images, not "
                               f"{self.n}; delete it to rebuild it")  # fmt: skip
        else:
            self.logits = None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The teacher's logits on batch `x` (images `idx`): read, or computed and kept."""
        if self.stored:
            return self.logits[idx]
        z = self.teacher(x)
        if self.logits is None:
            self.logits = torch.full((self.n, z.shape[1]), float("nan"), dtype=z.dtype, device=z.device)
        self.logits[idx] = z
        return z

    def end_epoch(self) -> None:
        """Store a complete epoch's logits (the images left out of every batch stay NaN)."""
        if self.stored or self.logits is None:
            return
        logits = self.logits.cpu()
        atomic_write(self.path(self.epoch), lambda f: torch.save(logits, f))

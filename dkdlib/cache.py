"""An exact cache of the teacher's logits: every training image, every augmented view.

A random crop (pad 4) and a flip can only produce (2·4+1)² × 2 = 162 distinct views of an image
(`dkdlib.data.N_VIEWS`). The frozen teacher's logits on a view never change, so we compute them once
for all 162 views of every training image (45k × 162 = 7.3M forwards for CIFAR-10: seconds to a minute
on a GPU; 146 MB in fp16) and then every student, seed and sweep looks them up instead of running the
teacher. The lookup uses the *same* view id the student's batch was cropped with, so each student sees
exactly the image whose teacher logits it is given. (Caching one view per image, the usual shortcut,
pairs an augmented student input with the teacher's opinion of a different picture.)

The cache is keyed by the teacher's weights, the training images, the normalisation, the view set and
the autocast dtype, and saved under `<out_dir>/cache/`, so a second run with the same teacher loads it.
"""

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

__all__ = ["cache_key", "compute_teacher_logits", "teacher_logit_cache"]

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
    teacher: nn.Module,
    loader: DeviceLoader,
    *,
    amp_dtype: torch.dtype | None = None,
    batch_size: int = 1024,
    progress: bool = False,
) -> torch.Tensor:
    """The teacher's logits on all N_VIEWS views of every image of `loader`: N × N_VIEWS × C, fp16.

    Big batches: the teacher is frozen and in eval mode, so batch size does not change its outputs
    (beyond kernel-level rounding), and a big batch keeps the GPU busy.
    """
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
    teacher: nn.Module,
    loader: DeviceLoader,
    x_train: np.ndarray,
    *,
    cache_dir: str | Path,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Load the cache for this teacher and data from `cache_dir`, or compute and save it. On the device."""
    key = cache_key(teacher, x_train, loader.mean, loader.std, amp_dtype)
    path = Path(cache_dir) / f"teacher-logits-{key}.pt"
    if path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise DKDError(
                f"teacher-logit cache {path} is unreadable ({type(err).__name__}); delete it to rebuild it"
            ) from err
        if saved.get("key") == key and saved["logits"].shape[:2] == (len(loader.y), N_VIEWS):
            return saved["logits"].to(loader.device)
    t0 = time.perf_counter()
    logits = compute_teacher_logits(teacher, loader, amp_dtype=amp_dtype, progress=progress)
    seconds = time.perf_counter() - t0
    print(
        f"teacher-logit cache: {len(loader.y)} images × {N_VIEWS} views in {seconds:.1f} s "
        f"({logits.numel() * 2 / 1e6:.0f} MB) → {path}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save({"key": key, "logits": logits.cpu(), "seconds": seconds}, f))
    return logits

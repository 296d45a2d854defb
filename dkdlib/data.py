"""Datasets as uint8 arrays (`Data`: CIFAR-10/100 by torchvision, an .npz, or "synthetic", which is not
CIFAR and says so), and `DeviceLoader`, which keeps them on the device and crops, flips and normalises
whole batches there. Its random choices come from a CPU generator seeded by (seed, epoch): CPU and GPU
see the same views, and a resumed epoch replays exactly."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DKDError

__all__ = ["Data", "DATASETS", "load_data", "load_npz", "synthetic", "DeviceLoader", "crop_flip", "normalize",
           "scaled_stats", "random_views", "N_VIEWS", "view_index", "view_offsets"]  # fmt: skip

CIFAR10_CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()
# Per-channel mean and std of the training images (pixel / 255).
STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
DATASETS = ("cifar10", "cifar100", "synthetic")
PAD = 4  # random-crop padding, as in the official recipe
# Every augmented view of an image is one of (2·PAD+1)² crop offsets × 2 flips = 162 views. Numbering
# them lets a cache hold the teacher's logits for exactly the view the student is shown.
N_VIEWS = (2 * PAD + 1) ** 2 * 2
CENTRE_VIEW = (PAD * (2 * PAD + 1) + PAD) * 2  # no shift, no flip: the un-augmented image


def view_index(dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """The view id in [0, N_VIEWS) of crop offsets (dy, dx) in [0, 2·PAD] and flip in {0, 1}."""
    return (dy * (2 * PAD + 1) + dx) * 2 + flip


def view_offsets(view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inverse of `view_index`: (dy, dx, flip)."""
    return view // (2 * (2 * PAD + 1)), (view // 2) % (2 * PAD + 1), view % 2


@dataclass
class Data:
    """Train / validation / test splits as uint8 N×H×W×C numpy arrays and int64 labels."""

    name: str
    classes: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray = field(default_factory=lambda: np.zeros((0, 32, 32, 3), np.uint8))
    y_val: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    mean: tuple[float, float, float] = STATS["cifar10"][0]
    std: tuple[float, float, float] = STATS["cifar10"][1]
    source: str = ""
    split: dict | None = None  # the sizes `load_data` was asked for: val_size, train_size, test_size

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"Data({self.name!r}, {self.num_classes} classes, train {len(self.y_train)}, "
                f"val {len(self.y_val)}, test {len(self.y_test)}; source: {self.source})")  # fmt: skip


def load_data(
    name: str = "cifar10", *, npz: str | os.PathLike | None = None, root: str | os.PathLike = "data",
    val_size: int = 5000, train_size: int | None = None, test_size: int | None = None, download: bool = True,
    split_seed: int = 0,
) -> Data:  # fmt: skip
    """Load a dataset and carve a fixed validation split (`split_seed`) out of its training set.

    npz: read this file instead of downloading (its images are taken to be `name`'s). train_size /
    test_size: keep only the first n (class-balanced) images, for quick runs on a CPU."""
    if name not in DATASETS:
        raise DKDError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if npz is not None:
        data = load_npz(npz, name=name)
    elif name == "synthetic":
        data = synthetic()
    else:
        data = _load_torchvision(name, Path(root), download)
    for label, value in (("val_size", val_size), ("train_size", train_size), ("test_size", test_size)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise DKDError(f"{label} must be an integer >= 0; got {value!r}")
    if val_size >= len(data.y_train):
        raise DKDError(f"val_size={val_size} leaves no training images ({len(data.y_train)} in {data.name})")
    perm = np.random.default_rng(split_seed).permutation(len(data.y_train))
    val, train = perm[:val_size], perm[val_size:]
    data.x_val, data.y_val = data.x_train[val], data.y_train[val]
    data.x_train, data.y_train = data.x_train[train], data.y_train[train]
    if train_size is not None:
        data.x_train, data.y_train = _balanced_head(data.x_train, data.y_train, train_size)
    if test_size is not None:
        data.x_test, data.y_test = _balanced_head(data.x_test, data.y_test, test_size)
    data.split = {"val_size": val_size, "train_size": train_size, "test_size": test_size}
    return data


def _balanced_head(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n images taken round-robin over classes, so a small subset stays class-balanced."""
    if n >= len(y):
        return x, y
    rank = np.zeros(len(y), np.int64)  # position of each image within its own class
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rank[idx] = np.arange(len(idx))
    keep = np.sort(np.lexsort((np.arange(len(y)), rank))[:n])
    return x[keep], y[keep]


def _load_torchvision(name: str, root: Path, download: bool) -> Data:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision raises RuntimeError
        raise DKDError(f"could not load {name} into {root}/ ({type(err).__name__}: {err}). With no internet, "
                       "pass an .npz file instead (load_data(npz=...), CLI --data FILE.npz) or use the "
                       "synthetic dataset (name='synthetic', not CIFAR).") from err  # fmt: skip
    x_train, x_test = np.asarray(train.data, np.uint8), np.asarray(test.data, np.uint8)
    y_train, y_test = np.asarray(train.targets, np.int64), np.asarray(test.targets, np.int64)
    mean, std = STATS[name]
    return Data(name, list(train.classes), x_train, y_train, x_test, y_test, mean=mean, std=std,
                source=f"torchvision {cls.__name__}")  # no folder: records must not name one  # fmt: skip


def load_npz(path: str | os.PathLike, name: str = "cifar10") -> Data:
    """Read x_train, y_train, x_test, y_test (and optional class_names) from an .npz and check them."""
    path = Path(path)
    if not path.is_file():
        raise DKDError(f"data file {path} does not exist; give the path of an .npz file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as err:
        raise DKDError(f"{path} is not a readable .npz file ({type(err).__name__}: {err})") from err
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DKDError(f"{path} lacks {', '.join(missing)}; an .npz needs x_train, y_train, x_test, y_test "
                       f"(it has: {', '.join(sorted(arrays)) or 'nothing'})")  # fmt: skip
    if "class_names" in arrays:
        classes = [str(c) for c in arrays["class_names"]]
    elif name == "cifar10":
        classes = list(CIFAR10_CLASSES)
    else:
        classes = [str(i) for i in range(int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1)]
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8:
            raise DKDError(f"{path}: x_{split} must be uint8 pixels 0..255; got {x.dtype}")
        if x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise DKDError(f"{path}: x_{split} must have shape (N, 32, 32, 3) (HWC); got {x.shape}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DKDError(f"{path}: y_{split} must be 1-D integer labels; got {y.shape} {y.dtype}")
        if len(x) != len(y):
            raise DKDError(f"{path}: x_{split} has {len(x)} images but y_{split} {len(y)} labels")
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise DKDError(f"{path}: y_{split} labels must lie in [0, {len(classes)}); got "
                           f"{y.min()}..{y.max()}")  # fmt: skip
    # A known dataset keeps its published statistics; only another one pays for computing its own.
    mean, std = STATS[name] if name in STATS else _stats(arrays["x_train"])
    return Data(name, classes, arrays["x_train"], arrays["y_train"].astype(np.int64), arrays["x_test"],
                arrays["y_test"].astype(np.int64), mean=mean, std=std, source=f"npz {path.name}")  # fmt: skip


def _stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    flat = x.reshape(-1, 3).astype(np.float64) / 255
    return tuple(flat.mean(0).round(4).tolist()), tuple(flat.std(0).round(4).tolist())


def synthetic(n_train: int = 6000, n_test: int = 1000, num_classes: int = 10, seed: int = 0) -> Data:
    """Deterministic, learnable 32×32 images. NOT CIFAR: for tests, CI and offline demos. An image is
    mostly its class's smooth colour pattern, partly a second class's, plus noise: classes look alike."""
    x_train, y_train, x_test, y_test = _synthetic_arrays(n_train, n_test, num_classes, seed)
    mean, std = _stats(x_train)
    return Data("synthetic", [f"class{i}" for i in range(num_classes)], x_train, y_train, x_test, y_test,
                mean=mean, std=std, source=f"SYNTHETIC images (not CIFAR), seed {seed}")  # fmt: skip


@functools.lru_cache(maxsize=4)  # a few seconds to make; tests and notebooks ask for it repeatedly
def _synthetic_arrays(n_train: int, n_test: int, num_classes: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(num_classes, 3, 4, 4, generator=g)
    protos = F.interpolate(protos, size=32, mode="bilinear", align_corners=False) * 255

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        other = torch.randint(0, num_classes, (n,), generator=g)
        mix = 0.55 + 0.45 * torch.rand(n, 1, 1, 1, generator=g)
        x = mix * protos[y] + (1 - mix) * protos[other]
        x = x + 40 * torch.randn(n, 3, 32, 32, generator=g)
        x = x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        y = y.numpy().astype(np.int64)
        x.setflags(write=False)  # shared by every caller: nobody may change them in place
        y.setflags(write=False)
        return x, y

    return (*sample(n_train), *sample(n_test))


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Random crop (zero padding PAD, offsets dy, dx in [0, 2·PAD]) and flip (0/1) of an N×C×H×W batch,
    in one gather (a flip reads the crop's columns backwards); channels_last out."""
    n, _, h, w = x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy[:, None] + ar_h  # N×H
    cols = dx[:, None] + torch.where(flip[:, None].bool(), w - 1 - ar_w, ar_w)  # N×W
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # N×H×W×C (advanced dims first)
    return out.permute(0, 3, 1, 2)


def scaled_stats(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) as 1×C×1×1 tensors on `device`, times 255: what `normalize` subtracts and divides by."""
    return tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) * 255 for v in (mean, std))


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 N×C×H×W → float32, (x/255 − mean) / std per channel (mean, std: numbers per channel, or the
    tensors of `scaled_stats`)."""
    if not isinstance(mean, torch.Tensor):
        mean, std = scaled_stats(mean, std, x.device)
    return (x.float() - mean) / std


def random_views(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n random augmentations drawn from `generator`: crop offsets dy, dx in [0, 2·PAD] and flips 0/1."""
    dy = torch.randint(0, 2 * PAD + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * PAD + 1, (n,), generator=generator)
    return dy, dx, torch.randint(0, 2, (n,), generator=generator)


class DeviceLoader:
    """Batches (float32 N×C×H×W, int64 labels) of a dataset that lives on `device`, augmented there.
    `set_epoch(e)` picks epoch e's shuffle and augmentation: a resumed run replays exactly."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, batch_size: int, *, mean, std, train: bool = True,
        device: str | torch.device = "cpu", seed: int = 0, drop_last: bool | None = None,
        channels_last: bool = False,
    ):  # fmt: skip
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise DKDError(f"batch_size must be an integer > 0; got {batch_size!r}")
        if train and batch_size > len(y):
            raise DKDError(f"batch_size={batch_size} is larger than the {len(y)} training images; use a "
                           "smaller batch or more data")  # fmt: skip
        self.device = torch.device(device)
        # NHWC uint8 numpy → NCHW uint8 tensor on the device, once.
        x = np.ascontiguousarray(x) if x.flags.writeable else np.array(x)  # torch wants writable
        self.x = torch.from_numpy(x).to(self.device).permute(0, 3, 1, 2)
        self.y = torch.from_numpy(np.array(y, np.int64)).to(self.device)  # a copy: y may be read-only
        self.batch_size, self.train, self.seed = batch_size, train, seed
        # Training drops the last partial batch: fixed shapes (no recompiles) and no tiny noisy step.
        self.drop_last = train if drop_last is None else drop_last
        self.mean, self.std, self.channels_last = mean, std, channels_last
        # On the device once: made from Python floats inside a captured CUDA graph they would be copied.
        self._mean255, self._std255 = scaled_stats(mean, std, self.device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch_plan(self, epoch: int | None = None):
        """This epoch's order and per-image (dy, dx, flip), drawn on the CPU from (seed, epoch)."""
        n = len(self.y)
        if not self.train:
            zeros = torch.full((n,), PAD, dtype=torch.long)
            return torch.arange(n), zeros, zeros, torch.zeros(n, dtype=torch.long)
        epoch = self.epoch if epoch is None else epoch
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g)
        return (order, *random_views(n, g))

    def epoch_batches(self, epoch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A training epoch as two steps×batch device tensors, image indices and view ids (batch s is
        `self.batch(idx[s], view[s])`): a captured step picks its batch from a counter, no host work."""
        if not self.drop_last:
            raise DKDError("epoch_batches needs whole batches (drop_last=True, as in training)")
        order, dy, dx, flip = self.epoch_plan(epoch)
        steps = len(self)
        idx = order[: steps * self.batch_size].view(steps, self.batch_size)
        view = view_index(dy, dx, flip)[idx] if self.train else torch.full_like(idx, CENTRE_VIEW)
        return idx.to(self.device), view.to(self.device)

    def batch(self, idx: torch.Tensor, view: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images `idx` (device tensor) seen through `view` (None: un-augmented), normalised, and labels."""
        xb = self.x[idx]
        if view is not None:
            xb = crop_flip(xb, *view_offsets(view))
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        return normalize(xb, self._mean255, self._std255).contiguous(memory_format=layout), self.y[idx]

    def __iter__(self):
        if self.train and self.drop_last:
            idx, view = self.epoch_batches()
            for s in range(len(self)):
                yield self.batch(idx[s], view[s])
            return
        order, dy, dx, flip = (t.to(self.device) for t in self.epoch_plan())
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.batch(idx, view_index(dy[idx], dx[idx], flip[idx]) if self.train else None)

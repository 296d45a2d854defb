"""Training: cross-entropy for teachers and baselines, KD / DKD / TCKD / NCKD for students.

One entry point, `fit(Config(...))`, runs a whole experiment: data, model, (frozen) teacher, optimizer,
schedule, per-epoch evaluation, checkpoints after every epoch and a results record at the end. It is
train-or-load: a run whose checkpoint exists is resumed (or, if finished, just loaded), so re-running a
notebook cell or a CLI command after a disconnect loses at most the epoch in progress.

Speed tricks, each on by default where it helps (CUDA) and off where it does not (CPU):
- the dataset lives on the device and is augmented there (`DeviceLoader`), no worker processes;
- bf16 autocast (fp16 + GradScaler on GPUs without bf16), channels_last convolutions, fused optimizer;
- no host syncs inside the epoch: losses and accuracies accumulate on the device;
- optional `torch.compile` (fixed batch shapes: the last partial batch is dropped).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from .cache import teacher_logit_cache
from .checkpoint import load_checkpoint, load_model, save_checkpoint
from .data import Data, DeviceLoader, load_data
from .errors import DKDError
from .models import MODELS, create_model
from .results import environment, write_record

__all__ = ["Config", "Run", "fit", "evaluate", "predict", "pick_device", "METHODS"]

METHODS = ("ce", "kd", "dkd", "tckd", "nckd")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "step", "cosine", "onecycle", "plateau")
BEST_BY = ("val_loss", "val_acc")


@dataclass
class Config:
    """Everything that defines a run. Plain values, so it prints, saves and hashes cleanly."""

    # what to train
    model: str = "resnet8"
    method: str = "ce"  # ce | kd | dkd | tckd (α·TCKD only) | nckd (β·NCKD only)
    teacher: str | None = None  # teacher checkpoint path, for kd/dkd/tckd/nckd
    init: str | None = None  # checkpoint whose weights the model starts from (same architecture)
    pretrained: bool = False  # ImageNet weights (resnet18: all but conv1 and fc; resnet18_imagenet)
    dataset: str = "cifar10"  # cifar10 | cifar100 | synthetic
    data: str | None = None  # an .npz to read instead of downloading
    val_size: int = 5000  # training images held out for validation (fixed split)
    train_size: int | None = None  # use only this many training images (quick CPU runs)
    test_size: int | None = None
    mean: tuple[float, ...] | None = (
        None  # normalisation; None: the dataset's (CIFAR-10 (0.4914, 0.4822, 0.4465))
    )
    std: tuple[float, ...] | None = None  # None: the dataset's (CIFAR-10: the true (0.2470, 0.2435, 0.2616))
    # schedule
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd (momentum, nesterov) | adam (AdamW when weight_decay > 0)
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # constant | step | cosine | onecycle | plateau
    milestones: tuple[float, ...] = (0.625, 0.75, 0.875)  # step: fractions of the run (150/240...)
    gamma: float = 0.1  # step: lr factor at each milestone
    plateau_factor: float = 0.1  # plateau: lr × factor when the epoch's training loss stops falling
    plateau_patience: int = 10  # plateau: epochs without improvement before that (PyTorch's defaults)
    # distillation (official DKD defaults)
    temperature: float = 4.0
    alpha: float = 1.0  # TCKD weight
    beta: float = 8.0  # NCKD weight
    warmup: int = 20  # distillation weight ramps as min(epoch / warmup, 1); 0 = off
    ce_weight: float = 1.0
    kd_weight: float = 1.0  # classic KD's weight (the official KD baseline: ce 0.1, kd 0.9)
    # machinery
    seed: int = 0
    data_seed: int | None = None  # shuffle/augmentation seed; None: `seed`
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: bool = True  # bf16/fp16 autocast on CUDA
    channels_last: bool = True  # NHWC memory layout (faster on GPU and CPU)
    compile: bool = False  # torch.compile the student
    graph: bool = False  # capture the whole training step as one CUDA graph (CUDA only)
    cache_teacher: bool = False  # precompute the teacher's logits on all 162 views of every image
    best_by: str | None = None  # also keep the best epoch's weights (<name>-best.pt): val_loss | val_acc
    name: str | None = None  # run name; default: method-model-dataset-seed-confighash
    tag: str = ""  # free label for grouping results (e.g. "ref:as_run:dkd_100"); not part of the identity
    note: str = ""  # free text kept with the run's record (e.g. a fallback taken); not part of the identity
    out_dir: str = "data"  # checkpoints/ and results/ go here

    # Fields that do not change what is learned: left out of the run's identity hash.
    _NOT_IDENTITY = (
        "name", "tag", "note", "out_dir", "device", "compile", "channels_last", "graph", "cache_teacher",
    )  # fmt: skip
    # Fields added after runs were recorded: they join the identity only when they differ from these
    # defaults, so every earlier run keeps its name.
    _IDENTITY_IF_SET = {
        "data_seed": None, "init": None, "mean": None, "std": None, "plateau_factor": 0.1,
        "plateau_patience": 10, "best_by": None,
    }  # fmt: skip

    def identity(self) -> dict[str, Any]:
        """The fields that decide what is learned. The teacher and init checkpoints count by their file
        names, not their folders, so moving the output folder (to Drive, another machine) keeps every
        run's identity."""
        return identity(self.to_dict())

    def run_name(self) -> str:
        if self.name:
            return self.name
        ident = self.identity()
        digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.method}-{self.model}-{self.dataset}-s{self.seed}-{digest}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("milestones", "mean", "std"):  # lists, as JSON gives them back
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.out_dir) / "checkpoints" / f"{self.run_name()}.pt"

    @property
    def best_path(self) -> Path:
        """Where `best_by` keeps the weights of the run's best epoch."""
        return Path(self.out_dir) / "checkpoints" / f"{self.run_name()}-best.pt"

    def validate(self) -> None:
        """Raise `DKDError` naming the first bad value and what would be valid."""

        def bad(msg: str):
            raise DKDError(f"Config: {msg}")

        if self.model not in MODELS:
            bad(f"unknown model {self.model!r}; choose one of: {', '.join(sorted(MODELS))}")
        from .data import DATASETS

        if self.dataset not in DATASETS:
            bad(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASETS)}")
        if self.method not in METHODS:
            bad(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.method != "ce" and not self.teacher:
            bad(f"method {self.method!r} distils from a teacher: set teacher= to its checkpoint")
        if self.optimizer not in OPTIMIZERS:
            bad(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            bad(f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if not 0 < self.plateau_factor < 1:
            bad(f"plateau_factor must lie in (0, 1) (it multiplies the lr); got {self.plateau_factor!r}")
        if not isinstance(self.plateau_patience, int) or self.plateau_patience < 0:
            bad(f"plateau_patience must be an integer number of epochs >= 0; got {self.plateau_patience!r}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and (len(value) != 3 or not all(isinstance(v, (int, float)) for v in value)):
                bad(f"{key} must be None (the dataset's) or three numbers, one per channel; got {value!r}")
        if self.std is not None and not all(v > 0 for v in self.std):
            bad(f"std must be > 0 in every channel; got {self.std!r}")
        if self.best_by is not None and self.best_by not in BEST_BY:
            bad(f"unknown best_by {self.best_by!r}; choose one of: {', '.join(BEST_BY)} (or None)")
        if self.best_by is not None and self.val_size == 0:
            bad(f"best_by={self.best_by!r} picks an epoch by validation: set val_size > 0")
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                bad(f"{key} must be an integer > 0; got {value!r}")
        if self.data_seed is not None and (
            not isinstance(self.data_seed, int) or isinstance(self.data_seed, bool)
        ):
            bad(f"data_seed must be an integer or None (= seed); got {self.data_seed!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            bad(f"warmup must be an integer number of epochs >= 0 (0 = off); got {self.warmup!r}")
        if not self.temperature > 0:
            bad(f"temperature must be > 0 (the paper uses 4); got {self.temperature!r}")
        for key in ("alpha", "beta", "ce_weight", "kd_weight", "weight_decay", "momentum"):
            if not getattr(self, key) >= 0:
                bad(f"{key} must be >= 0; got {getattr(self, key)!r}")
        if not self.lr > 0:
            bad(f"lr must be > 0; got {self.lr!r}")
        if self.method != "ce" and not Path(self.teacher).is_file():
            bad(f"teacher checkpoint {self.teacher} does not exist; train the teacher first")
        if self.init is not None and not Path(self.init).is_file():
            bad(f"init checkpoint {self.init} does not exist; train the run it comes from first")


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """`Config.identity` of a config saved as a dict (in a checkpoint or a record)."""
    ident = {k: v for k, v in config.items() if k not in Config._NOT_IDENTITY}
    for key, default in Config._IDENTITY_IF_SET.items():  # the default: older runs keep their names
        if ident.get(key, default) == default:
            ident.pop(key, None)
    for key in ("teacher", "init"):
        if ident.get(key):
            ident[key] = Path(ident[key]).name
    return ident


@dataclass
class Run:
    """What `fit` returns: the trained model, its history, final metrics and where things were saved."""

    config: Config
    model: nn.Module
    history: list[dict[str, float]]
    metrics: dict[str, Any]
    checkpoint: Path
    record: Path | None = None  # results record (None when an already finished run was loaded)
    data: Data | None = field(default=None, repr=False)

    @property
    def history_frame(self):
        import pandas as pd

        return pd.DataFrame(self.history)


def pick_device(device: str = "auto") -> torch.device:
    """ "auto" → CUDA, then Apple MPS, then CPU. A CUDA request without CUDA falls back with a warning."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise DKDError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        warnings.warn("CUDA was requested but this machine has none; using the CPU", stacklevel=2)
        return torch.device("cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DKDError(f"{device} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


def _amp_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    if not (cfg.amp and device.type == "cuda"):
        return None  # CPU autocast is slower than fp32 on most CPUs
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _make_optimizer(cfg: Config, model: nn.Module, graph: bool = False) -> torch.optim.Optimizer:
    # No weight decay on BN and biases (1-D tensors): decaying them only slows learning.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    device = next(model.parameters()).device
    extra: dict[str, Any] = {"fused": True} if device.type == "cuda" else {}  # one kernel for all params
    lr: float | torch.Tensor = cfg.lr
    if graph:
        # A captured step reads the learning rate from a device tensor that the scheduler fills in
        # place; a Python float would be frozen into the graph. Adam keeps its step count on the device.
        lr = torch.tensor(cfg.lr, device=device)
        if cfg.optimizer == "adam":
            extra["capturable"] = True
    if cfg.optimizer == "adam":
        adam = torch.optim.AdamW if cfg.weight_decay else torch.optim.Adam
        return adam(groups, lr=lr, **extra)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, **extra)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, graph: bool) -> None:
    """`optimizer.load_state_dict`, keeping a graphed step's learning rate a device tensor.

    A checkpoint may hold the rate as a float (an eager run) or a tensor; loading replaces the group's
    value, and a float would be frozen into the captured graph.
    """
    optimizer.load_state_dict(state)
    if graph:
        device = optimizer.param_groups[0]["params"][0].device
        for group in optimizer.param_groups:
            group["lr"] = torch.as_tensor(group["lr"], dtype=torch.float32, device=device).clone()


class PlateauSchedule:
    """ReduceLROnPlateau on each epoch's mean training loss, behind the per-step scheduler interface.

    `step()` (called after every batch, like the other schedules) does nothing; `end_epoch(loss)` may
    lower the learning rate. A graphed step reads the rate from a device tensor, so the new rate is
    written into that tensor in place: assigning a float would leave the captured graph on the old one.
    (ReduceLROnPlateau itself multiplies a tensor rate in place, once per param group: a tensor shared
    by two groups, as `_make_optimizer` makes it, would be lowered twice. So it decides on floats here.)
    """

    def __init__(self, optimizer: torch.optim.Optimizer, factor: float, patience: int):
        self.optimizer = optimizer
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=factor, patience=patience
        )

    def step(self) -> None:
        """Per batch: nothing (the plateau is judged once per epoch)."""

    def end_epoch(self, loss: float) -> None:
        groups = self.optimizer.param_groups
        rates = [group["lr"] for group in groups]
        for group, rate in zip(groups, rates, strict=True):
            group["lr"] = float(rate)
        self.plateau.step(loss)
        for group, rate in zip(groups, rates, strict=True):
            if isinstance(rate, torch.Tensor):
                rate.fill_(group["lr"])
                group["lr"] = rate

    def state_dict(self) -> dict[str, Any]:
        return self.plateau.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau.load_state_dict(state)


def end_epoch(scheduler, train_loss: float) -> None:
    """Tell an epoch-level schedule (plateau) how the epoch went; per-step schedules ignore it."""
    if isinstance(scheduler, PlateauSchedule):
        scheduler.end_epoch(train_loss)


def _make_scheduler(cfg: Config, optimizer, steps_per_epoch: int):
    """Per-step learning-rate schedule over the whole run (plateau: per epoch, see `PlateauSchedule`)."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "plateau":
        return PlateauSchedule(optimizer, cfg.plateau_factor, cfg.plateau_patience)
    if cfg.schedule == "onecycle":  # linear warm-up over the first 25%, then linear decay to ~0
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.lr,
            total_steps=total,
            pct_start=0.25,
            anneal_strategy="linear",
            cycle_momentum=False,
            div_factor=10,
            final_div_factor=100,
        )
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if cfg.schedule == "step":
        milestones = [round(m * cfg.epochs) * steps_per_epoch for m in cfg.milestones]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def distill_weight(cfg: Config, epoch: int) -> float:
    """DKD's warm-up: the distillation term is scaled by min(epoch / warmup, 1), epochs from 1."""
    return min(epoch / cfg.warmup, 1.0) if cfg.warmup > 0 else 1.0


def _loss(cfg: Config, logits, logits_teacher, y, weight: float) -> torch.Tensor:
    """The training loss of one batch (checked inputs: the data were validated when loaded)."""
    ce = F.cross_entropy(logits.float(), y)
    if cfg.method == "ce":
        return ce
    if cfg.method == "kd":
        distill = cfg.kd_weight * losses._kd_loss(logits, logits_teacher, cfg.temperature)
    else:
        alpha = 0.0 if cfg.method == "nckd" else cfg.alpha
        beta = 0.0 if cfg.method == "tckd" else cfg.beta
        distill = losses._dkd_loss(logits, logits_teacher, y, alpha, beta, cfg.temperature)
    return cfg.ce_weight * ce + weight * distill


class NonFiniteLoss(DKDError, FloatingPointError):
    """The training loss became NaN or infinite."""


# A loss function for TrainStep: (student logits K×N×C, teacher logits N×C or None, labels N,
# distillation weights K) → the K students' losses (K,).
LossFn = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor], torch.Tensor]


class TrainStep:
    """One optimisation step on batch number `counter` of the epoch's plan, for K ≥ 1 students.

    Everything a step reads sits in tensors that stay in place — the epoch plan (image indices and
    view ids), a step counter, the distillation weights, the accumulators, the teacher-logit cache —
    so on CUDA the whole step (augmentation, teacher forward or cache lookup, student forward and
    backward, fused optimizer) can be captured once as a CUDA graph and replayed: one launch per step
    instead of hundreds, and no host sync. Elsewhere, or with graph=False, the same code runs eagerly.
    """

    def __init__(
        self,
        loss_fn: LossFn,
        model: nn.Module,
        loader: DeviceLoader,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None = None,
        *,
        k: int = 1,
        teacher: nn.Module | None = None,
        cache: torch.Tensor | None = None,
        amp_dtype: torch.dtype | None = None,
        graph: bool = False,
        warmup_steps: int = 3,
    ):
        dev = loader.device
        if graph and dev.type != "cuda":
            raise DKDError("graph=True captures a CUDA graph and needs a CUDA device")
        if graph and scaler is not None and scaler.is_enabled():
            raise DKDError("graph capture does not support fp16 loss scaling; use bf16 or no autocast")
        self.loss_fn, self.model, self.loader, self.optimizer = loss_fn, model, loader, optimizer
        self.scaler, self.k, self.teacher, self.cache, self.amp_dtype = scaler, k, teacher, cache, amp_dtype
        self.graph, self.warmup_steps = graph, warmup_steps
        steps, batch = len(loader), loader.batch_size
        self.plan_idx = torch.zeros(steps, batch, dtype=torch.long, device=dev)
        self.plan_view = torch.zeros(steps, batch, dtype=torch.long, device=dev)
        self.counter = torch.zeros((), dtype=torch.long, device=dev)  # batch number within the epoch
        self.weight = torch.zeros(k, device=dev)  # this epoch's distillation weights
        self.loss_sum = torch.zeros(k, device=dev)
        self.correct = torch.zeros(k, dtype=torch.long, device=dev)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=dev)  # first step with a bad loss
        self._cuda_graph: torch.cuda.CUDAGraph | None = None
        self._eager_steps = 0

    def start_epoch(self, epoch: int, weights: list[float] | float) -> None:
        """Load epoch `epoch`'s plan and distillation weights into the step's buffers (in place)."""
        idx, view = self.loader.epoch_batches(epoch)
        self.plan_idx.copy_(idx)
        self.plan_view.copy_(view)
        self.weight.copy_(torch.as_tensor(weights, dtype=torch.float32).expand(self.k))
        for t in (self.counter, self.loss_sum, self.correct):
            t.zero_()
        self.first_bad.fill_(-1)

    def _step(self, zero_grad: bool = True) -> None:
        s = self.counter.view(1)
        idx = self.plan_idx.index_select(0, s).view(-1)  # device-side pick: no host involvement
        view = self.plan_view.index_select(0, s).view(-1)
        x, y = self.loader.batch(idx, view)
        # Autocast's weight-cast cache must be off inside a captured graph (PyTorch's CUDA-graph notes).
        with torch.autocast(
            x.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
            cache_enabled=not self.graph,
        ):
            logits = self.model(x)
            if self.cache is not None:
                logits_teacher = self.cache[idx, view].float()  # exactly this view's teacher logits
            elif self.teacher is not None:
                with torch.no_grad():
                    logits_teacher = self.teacher(x)
            else:
                logits_teacher = None
            logits = logits.view(x.shape[0], self.k, -1).transpose(0, 1)  # K×N×C (K=1: one student)
            losses_k = self.loss_fn(logits, logits_teacher, y, self.weight)
        if zero_grad:
            self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None and self.scaler.is_enabled():
            self.scaler.scale(losses_k.sum()).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:  # the students' parameters are disjoint: the sum's gradient is each one's own
            losses_k.sum().backward()
            self.optimizer.step()
        losses_k = losses_k.detach()
        self.loss_sum += losses_k
        self.correct += (logits.detach().argmax(-1) == y).sum(-1)
        bad = (self.first_bad < 0) & ~torch.isfinite(losses_k).all()
        self.first_bad.copy_(torch.where(bad, self.counter, self.first_bad))
        self.counter += 1

    def __call__(self) -> None:
        """Train on the next batch of the epoch."""
        if not self.graph:
            return self._step()
        if self._cuda_graph is None:
            if self._eager_steps < self.warmup_steps:
                # Warm-up steps (real ones, counted) on a side stream: cuDNN picks its kernels and the
                # optimizer creates its state before capture, as PyTorch's whole-network example does.
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    self._step()
                torch.cuda.current_stream().wait_stream(side)
                self._eager_steps += 1
                return None
            self.optimizer.zero_grad(set_to_none=True)  # backward in the graph allocates static grads
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._step(zero_grad=False)
            self._cuda_graph = graph  # capture records, it does not run: replay for this step too
        self._cuda_graph.replay()
        return None

    def check_finite(self, epoch: int, steps: int) -> None:
        """Raise `NonFiniteLoss` if a step of this epoch had a NaN/inf loss (one host sync)."""
        first_bad = int(self.first_bad)
        if first_bad >= 0:
            sums = self.loss_sum.tolist()
            bad = [i for i, v in enumerate(sums) if not math.isfinite(v)]
            what = f"{sums[0]}" if self.k == 1 else f"{[sums[i] for i in bad]} (students {bad})"
            raise NonFiniteLoss(
                f"the training loss became {what} at epoch {epoch}, step "
                f"{first_bad + 1} of {steps}; the checkpoint of the last good epoch "
                "is kept. Lower the learning rate, or check the data and loss weights"
            )

    def epoch_stats(self) -> list[dict[str, float]]:
        """Each student's mean training loss and accuracy over the steps so far (one host sync)."""
        steps = max(int(self.counter), 1)
        seen = steps * self.loader.batch_size
        return [
            {"train_loss": loss / steps, "train_acc": correct / seen}
            for loss, correct in zip(self.loss_sum.tolist(), self.correct.tolist(), strict=True)
        ]


def solo_loss(cfg: Config) -> LossFn:
    """`_loss` of one student in TrainStep's K=1 form."""

    def loss_fn(logits, logits_teacher, y, weight):
        return _loss(cfg, logits[0], logits_teacher, y, weight[0])[None]

    return loss_fn


def make_step(
    cfg: Config, loss_fn: LossFn, model: nn.Module, loader: DeviceLoader, optimizer, scaler, *, data: Data,
    teacher: nn.Module | None, amp_dtype: torch.dtype | None, graph: bool, k: int = 1, progress: bool = False,
) -> TrainStep:  # fmt: skip
    """The run's `TrainStep`: the model compiled if cfg.compile, the teacher replaced by its logit cache
    if cfg.cache_teacher (loaded from, or built into, <out_dir>/cache/)."""
    cache = None
    if teacher is not None and cfg.cache_teacher:
        cache = teacher_logit_cache(teacher, loader, data.x_train, cache_dir=Path(cfg.out_dir) / "cache",
                                    amp_dtype=amp_dtype, progress=progress)  # fmt: skip
        teacher = None
    step_model = torch.compile(model) if cfg.compile else model  # fixed batch shapes: compiled once
    return TrainStep(loss_fn, step_model, loader, optimizer, scaler, k=k, teacher=teacher, cache=cache,
                     amp_dtype=amp_dtype, graph=graph)  # fmt: skip


def train_one_epoch(
    cfg: Config,
    model: nn.Module,
    loader: DeviceLoader,
    optimizer,
    scheduler,
    scaler,
    *,
    epoch: int,
    teacher: nn.Module | None = None,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    check_every: int = 50,
    step: TrainStep | None = None,
) -> dict[str, float]:
    """One pass over `loader`. Returns the epoch's mean loss and accuracy (one host sync at the end).

    step: a `TrainStep` kept across epochs (so a CUDA graph is captured once); made here if None.
    """
    from tqdm.auto import tqdm

    model.train()
    if step is None:
        step = TrainStep(
            solo_loss(cfg), model, loader, optimizer, scaler, teacher=teacher, amp_dtype=amp_dtype
        )
    step.start_epoch(epoch, distill_weight(cfg, epoch))
    steps = len(loader)
    for s in tqdm(range(steps), desc=f"epoch {epoch}", leave=False, disable=not progress):
        step()
        scheduler.step()
        if (s + 1) % check_every == 0 or s + 1 == steps:
            step.check_finite(epoch, steps)  # a host sync, but only every `check_every` steps
    return step.epoch_stats()[0]


@torch.no_grad()
def predict(model: nn.Module, loader: DeviceLoader, amp_dtype: torch.dtype | None = None):
    """Logits (float32) and labels for every image of an evaluation loader, in order."""
    was_training = model.training
    model.eval()
    device = loader.device
    out, labels = [], []
    for x, y in loader:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out.append(model(x).float())
        labels.append(y)
    model.train(was_training)
    return torch.cat(out), torch.cat(labels)


def evaluate(model: nn.Module, loader: DeviceLoader, num_classes: int | None = None, amp_dtype=None) -> dict:
    """Accuracy, mean CE loss, per-class accuracy and the confusion matrix (rows: true, cols: predicted)."""
    logits, y = predict(model, loader, amp_dtype)
    k = num_classes or logits.shape[1]
    pred = logits.argmax(1)
    confusion = torch.bincount(y * k + pred, minlength=k * k).view(k, k).cpu().numpy()
    per_class = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
    return {
        "acc": float((pred == y).float().mean()),
        "loss": float(F.cross_entropy(logits, y)),
        "per_class_acc": per_class,
        "confusion": confusion,
    }


def data_seed(cfg: Config) -> int:
    """The seed of a run's shuffling and augmentation: `data_seed` if set, else `seed`."""
    return cfg.seed if cfg.data_seed is None else cfg.data_seed


def norm_stats(cfg: Config, data: Data) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The run's normalisation (mean, std): the config's where set, else the dataset's."""
    mean = data.mean if cfg.mean is None else cfg.mean
    std = data.std if cfg.std is None else cfg.std
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _loaders(cfg: Config, data: Data, device: torch.device):
    mean, std = norm_stats(cfg, data)
    common = dict(mean=mean, std=std, device=device, channels_last=_channels_last(cfg, device))
    train = DeviceLoader(
        data.x_train, data.y_train, cfg.batch_size, train=True, seed=data_seed(cfg), **common
    )
    evals = {
        split: DeviceLoader(x, y, 1000, train=False, **common)
        for split, x, y in (("val", data.x_val, data.y_val), ("test", data.x_test, data.y_test))
        if len(y)
    }
    return train, evals


def _use_graph(cfg: Config, device: torch.device) -> bool:
    """cfg.graph where it can work: on CUDA, without fp16 loss scaling. Otherwise eager, with a warning."""
    if not cfg.graph:
        return False
    if device.type != "cuda":
        warnings.warn(f"graph=True needs CUDA; training eagerly on {device.type}", stacklevel=3)
        return False
    if _amp_dtype(cfg, device) == torch.float16:
        warnings.warn("graph=True does not support fp16 loss scaling (no bf16 here); eager", stacklevel=3)
        return False
    return True


def _channels_last(cfg: Config, device: torch.device) -> bool:
    # NHWC convolutions are faster on GPUs (tensor cores) and, measured here, ~1.3x on a 2-core CPU.
    return cfg.channels_last and device.type in ("cuda", "cpu")


def load_teacher(cfg: Config, data: Data, device: torch.device) -> nn.Module:
    """The frozen teacher: eval mode (BN uses running stats), no gradients."""
    state = load_checkpoint(cfg.teacher)
    if not state.get("complete", True):
        warnings.warn(
            f"teacher checkpoint {cfg.teacher} is unfinished (epoch {state['epoch']} of "
            f"{state['config']['epochs']}); distilling from it anyway",
            stacklevel=3,
        )
    teacher = load_model(cfg.teacher, device, num_classes=data.num_classes, dataset=data.name, state=state)
    # Teacher and student see the same normalised batch: a teacher trained on other statistics would
    # be shown images it never learned from, and quietly teach worse.
    mean, std = norm_stats(cfg, data)
    if not _same_stats(state, mean, std):
        raise DKDError(
            f"teacher {cfg.teacher} was trained with normalisation mean {state.get('mean')}, std "
            f"{state.get('std')}, this run uses mean {list(mean)}, std {list(std)}: set mean= and std= "
            "to the teacher's, or train the teacher with this run's"
        )
    if _channels_last(cfg, device):
        teacher = teacher.to(memory_format=torch.channels_last)
    return teacher.requires_grad_(False).eval()


def _same_stats(state: dict, mean, std) -> bool:
    """Whether a checkpoint was trained with normalisation (mean, std); old checkpoints all were."""
    if "mean" not in state or "std" not in state:
        return True
    return bool(np.allclose(state["mean"], mean, atol=1e-6) and np.allclose(state["std"], std, atol=1e-6))


def load_init(cfg: Config, data: Data) -> dict | None:
    """The checkpoint `cfg.init` names, checked to hold `cfg.model` for `data`'s classes (None: no init)."""
    if cfg.init is None:
        return None
    state = load_checkpoint(cfg.init)
    if state["model_name"] != cfg.model or state["num_classes"] != data.num_classes:
        raise DKDError(
            f"init checkpoint {cfg.init} holds a {state['model_name']} with {state['num_classes']} classes, "
            f"but this run trains a {cfg.model} with {data.num_classes}: start from a checkpoint of the "
            "same architecture (or set init=None)"
        )
    if state["dataset"] != data.name:
        raise DKDError(f"init checkpoint {cfg.init} was trained on {state['dataset']}, not {data.name}")
    if not state.get("complete", True):
        warnings.warn(f"init checkpoint {cfg.init} is unfinished (epoch {state['epoch']}); starting from it",
                      stacklevel=3)  # fmt: skip
    if not _same_stats(state, *norm_stats(cfg, data)):
        warnings.warn(f"init checkpoint {cfg.init} was trained with another normalisation", stacklevel=3)
    return state


def init_epochs(state: dict) -> int:
    """How many epochs trained the weights of an init checkpoint: its run's length, counting its own init."""
    if not state.get("complete", True):
        return int(state["epoch"])
    return int(state.get("metrics", {}).get("total_epochs") or state["config"]["epochs"])


def data_for(cfg: Config, data: Data | None = None) -> Data:
    """The run's data: `data` if given (checked to be the config's dataset), else loaded from the config."""
    if data is None:
        return load_data(cfg.dataset, npz=cfg.data, val_size=cfg.val_size, train_size=cfg.train_size,
                         test_size=cfg.test_size, root=Path(cfg.out_dir))  # fmt: skip
    if data.name != cfg.dataset:
        raise DKDError(f"the data given are {data.name!r} but the config says dataset={cfg.dataset!r}")
    return data


def fit(
    config: Config,
    *,
    data: Data | None = None,
    fresh: bool = False,
    progress: bool = True,
    save: bool = True,
) -> Run:
    """Train (or resume, or load if finished) the run that `config` describes.

    data: already loaded `Data` (else loaded from the config). fresh: ignore an existing checkpoint and
    start over. progress: tqdm bars. save: write the checkpoint after every epoch and a results record
    at the end (into config.out_dir).
    """
    cfg = config
    cfg.validate()
    device = pick_device(cfg.device)
    data = data_for(cfg, data)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: let cuDNN pick its fastest kernels
    path = cfg.checkpoint_path
    state = load_checkpoint(path) if path.exists() and not fresh and save else None
    torch.manual_seed(cfg.seed)  # model initialisation; the loader has its own seeded generator
    # A started run loads its own weights: no ImageNet download needed to resume or load it.
    model = create_model(cfg.model, data.num_classes, pretrained=cfg.pretrained and state is None).to(device)
    if state is not None:
        _check_same_run(state, cfg, path)
        model.load_state_dict(state["model"])
        if state.get("complete"):  # train-or-load: a finished run is just loaded
            print(f"loaded finished run {cfg.run_name()} from {path}")
            return Run(cfg, model.eval(), state["history"], state["metrics"], path, None, data)
    init = load_init(cfg, data)
    if init is not None and state is None:  # a resumed run has moved on from its init weights
        model.load_state_dict(init["model"])
    teacher = load_teacher(cfg, data, device) if cfg.method != "ce" else None
    if _channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
    train_loader, eval_loaders = _loaders(cfg, data, device)
    graph = _use_graph(cfg, device)
    optimizer = _make_optimizer(cfg, model, graph)
    scheduler = _make_scheduler(cfg, optimizer, len(train_loader))
    amp_dtype = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    step = make_step(cfg, solo_loss(cfg), model, train_loader, optimizer, scaler, data=data, teacher=teacher,
                     amp_dtype=amp_dtype, graph=graph, progress=progress)  # fmt: skip

    history: list[dict[str, float]] = []
    start_epoch = 1
    if state is not None:  # resume an unfinished run where its last checkpoint left off
        history = state["history"]
        load_optimizer_state(optimizer, state["optimizer"], graph)
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"] + 1
        print(f"resuming {cfg.run_name()} from epoch {state['epoch']} ({path})")

    last_saved = start_epoch - 1  # the newest epoch whose checkpoint is on disk

    def checkpoint(epoch: int, complete: bool, metrics: dict | None = None) -> None:
        nonlocal last_saved
        if save:
            save_checkpoint(path, checkpoint_dict(
                cfg, data, epoch, complete, model.state_dict(), optimizer.state_dict(),
                scheduler.state_dict(), scaler.state_dict(), history, metrics,
            ))  # fmt: skip
            last_saved = epoch

    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    epochs = tqdm(range(start_epoch, cfg.epochs + 1), desc=cfg.run_name(), disable=not progress,
                  initial=start_epoch - 1, total=cfg.epochs)  # fmt: skip
    epoch = start_epoch - 1
    try:
        for epoch in epochs:
            train_loader.set_epoch(epoch)
            t0 = time.perf_counter()
            row = {"epoch": epoch, "lr": float(optimizer.param_groups[0]["lr"])}  # a tensor in graph mode
            row.update(train_one_epoch(
                cfg, model, train_loader, optimizer, scheduler, scaler, epoch=epoch,
                teacher=teacher, amp_dtype=amp_dtype, progress=progress, step=step,
            ))  # fmt: skip
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            row.update(seconds=seconds, images_per_s=len(train_loader) * cfg.batch_size / seconds)
            row["distill_weight"] = distill_weight(cfg, epoch) if cfg.method != "ce" else 0.0
            for split, loader in eval_loaders.items():
                result = evaluate(model, loader, data.num_classes, amp_dtype)
                row[f"{split}_acc"], row[f"{split}_loss"] = result["acc"], result["loss"]
            history.append(row)
            end_epoch(scheduler, row["train_loss"])
            if save and is_best(history, cfg.best_by):
                save_best(cfg, data, model.state_dict(), history)
            epochs.set_postfix(
                {k: f"{row[k]:.3f}" for k in ("train_loss", "val_acc", "test_acc") if k in row}
            )
            if epoch < cfg.epochs:
                checkpoint(epoch, complete=False)
    except KeyboardInterrupt:
        if save and last_saved > 0:
            print(
                f"\ninterrupted during epoch {epoch}. The checkpoint of epoch {last_saved} is intact: "
                f"{path}\nRun the same command (or fit(config)) again to resume from it."
            )
        else:
            print(f"\ninterrupted during epoch {epoch}, before any checkpoint was written.")
        raise

    wall = time.perf_counter() - t_start
    final = (
        evaluate(model, eval_loaders["test"], data.num_classes, amp_dtype) if "test" in eval_loaders else None
    )
    metrics = summarize(history) | init_metrics(cfg, init)
    if final is not None:
        metrics["per_class_acc"] = final["per_class_acc"].round(4).tolist()
        metrics["confusion"] = final["confusion"].tolist()
    checkpoint(cfg.epochs, complete=True, metrics=metrics)
    record = None
    if save:
        finish_best(cfg, history, metrics)
        record = write_record(
            Path(cfg.out_dir) / "results", record_dict(cfg, data, metrics, history, wall, device)
        )
    return Run(cfg, model.eval(), history, metrics, path, record, data)


def init_metrics(cfg: Config, init: dict | None) -> dict[str, Any]:
    """What a run that started from `cfg.init` adds to its metrics: the epochs behind its start, the
    epochs in all, and the epoch of the init run its weights come from."""
    if init is None:
        return {}
    before = init_epochs(init)
    return {"init_epochs": before, "total_epochs": before + cfg.epochs, "init_epoch": int(init["epoch"])}


def is_best(history: list[dict[str, float]], best_by: str | None) -> bool:
    """Whether the newest epoch is the best so far by `best_by` (val_loss: lowest; val_acc: highest;
    an earlier epoch wins a tie, as in `summarize`). False when best_by is None."""
    if best_by is None:
        return False
    *earlier, last = history
    if not earlier:
        return True
    if best_by == "val_loss":
        return last["val_loss"] < min(h["val_loss"] for h in earlier)
    return last["val_acc"] > max(h["val_acc"] for h in earlier)


def save_best(cfg: Config, data: Data, model_state: dict, history: list) -> None:
    """Keep the newest epoch's weights as the run's best (`cfg.best_path`), a loadable checkpoint."""
    save_checkpoint(cfg.best_path, {
        **checkpoint_dict(cfg, data, history[-1]["epoch"], False, model_state, {}, {}, {}, history),
        "best_by": cfg.best_by,
    })  # fmt: skip


def finish_best(cfg: Config, history: list, metrics: dict) -> None:
    """Mark the best-epoch checkpoint of a finished run complete, with the run's history and metrics
    (so a teacher or init taken from it reads as finished)."""
    if cfg.best_by is None:
        return
    best = load_checkpoint(cfg.best_path)
    save_checkpoint(cfg.best_path, {**best, "complete": True, "history": history, "metrics": metrics})


def checkpoint_dict(
    cfg: Config, data: Data, epoch: int, complete: bool, model_state: dict, optimizer_state: dict,
    scheduler_state: dict, scaler_state: dict, history: list, metrics: dict | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What a run's checkpoint holds: the model and its data's description, and all it takes to resume."""
    mean, std = norm_stats(cfg, data)  # what the model was trained on: evaluate it with the same
    return {
        "model_name": cfg.model, "num_classes": data.num_classes, "classes": data.classes,
        "dataset": data.name, "mean": list(mean), "std": list(std),
        "config": cfg.to_dict(), "epoch": epoch, "complete": complete,
        "model": model_state, "optimizer": optimizer_state, "scheduler": scheduler_state,
        "scaler": scaler_state, "history": history, "metrics": metrics or {},
    }  # fmt: skip


def record_dict(
    cfg: Config, data: Data, metrics: dict, history: list, wall: float, device: torch.device, **extra
) -> dict[str, Any]:
    """A finished run's results record: config, data, metrics, history, wall time, environment."""
    return {
        "name": cfg.run_name(), "config": cfg.to_dict(), "dataset": data.name,
        "data_source": data.source, "train_images": len(data.y_train),
        "val_images": len(data.y_val), "test_images": len(data.y_test),
        "metrics": metrics, "history": history, "checkpoint": str(cfg.checkpoint_path),
        "wall_time_s": round(wall, 2), "environment": environment(str(device)), **extra,
    }  # fmt: skip


def summarize(history: list[dict[str, float]]) -> dict[str, Any]:
    """Last-epoch accuracies, and the test accuracy at the epochs with the best validation accuracy and
    the lowest validation loss."""
    last = history[-1]
    metrics: dict[str, Any] = {
        "epochs_run": len(history),
        "test_acc": last.get("test_acc"),
        "val_acc": last.get("val_acc"),
        "train_acc": last.get("train_acc"),
        "train_seconds": round(sum(h["seconds"] for h in history), 2),
        "images_per_s": round(float(np.median([h["images_per_s"] for h in history])), 1),
    }
    if "val_acc" in last:
        best = max(history, key=lambda h: h["val_acc"])  # the first epoch wins a tie
        metrics.update(
            best_epoch=best["epoch"], best_val_acc=best["val_acc"], test_acc_at_best_val=best.get("test_acc")
        )
    if "val_loss" in last:  # the reference's selection: the checkpoint with the lowest validation loss
        best = min(history, key=lambda h: h["val_loss"])
        metrics.update(
            best_val_loss_epoch=best["epoch"], best_val_loss=best["val_loss"],
            test_acc_at_best_val_loss=best.get("test_acc"),
        )  # fmt: skip
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()}


def _check_same_run(state: dict, cfg: Config, path: Path) -> None:
    saved, now = identity(state["config"]), cfg.identity()
    diff = [f"{k}: {saved.get(k)!r} there, {now.get(k)!r} here" for k in now if saved.get(k) != now.get(k)]
    if diff:
        raise DKDError(
            f"checkpoint {path} belongs to a different run ({'; '.join(diff)}); give this run "
            "another name, or pass fresh=True (CLI --fresh) to overwrite it"
        )

"""Training: one loop, `fit(cfg)`, for a teacher or a student of any method (`dkdlib.methods`).

Train-or-load: a run whose checkpoint (or committed weights) exists is resumed, or loaded if finished.
On CUDA: data augmented on the device, bf16, channels_last, fused optimizer, no host syncs in an epoch;
optionally `torch.compile`, one CUDA graph per step (`graph`) and a teacher-logit cache (`cache_teacher`)."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cache import SeenLogits, teacher_logit_cache
from .checkpoint import load_checkpoint, load_model, materialise, save_checkpoint
from .config import Config, data_seed, identity
from .data import Data, DeviceLoader, load_data
from .errors import DKDError
from .methods import LossFn, distills, student_loss
from .models import create_model
from .results import environment, portable, summarize, write_record
from .step import TrainStep

__all__ = [
    "Config", "Run", "fit", "train_epoch", "evaluate", "predict",
    "pick_device", "amp_dtype", "make_optimizer", "make_scheduler", "make_loaders", "make_step", "use_graph",
    "use_channels_last", "load_teacher", "load_optimizer_state", "distill_weight",
]  # fmt: skip


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


def amp_dtype(device: torch.device | str, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype on `device` (None: fp32): bf16 from CUDA compute capability 8.0, fp16 +
    GradScaler below (T4, V100: `is_bf16_supported()` says True there, but cuDNN has no bf16 convs)."""
    device = torch.device(device)
    if not enabled or device.type != "cuda":
        return None  # CPU autocast is slower than fp32 on most CPUs
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def make_optimizer(cfg: Config, model: nn.Module, graph: bool = False) -> torch.optim.Optimizer:
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


# Param-group keys that say how the optimizer runs, not where training is: a resumed run keeps the
# values its own optimizer was built with (a checkpoint of an eager run has capturable=False).
_MACHINERY = ("capturable", "fused", "foreach")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, graph: bool) -> None:
    """`optimizer.load_state_dict` for a run saved in another mode (eager ↔ graph, CPU ↔ CUDA): keeps
    this optimizer's `capturable`, `fused` and learning-rate tensor (filled in place: a graph reads it)."""
    machinery = [{k: g[k] for k in _MACHINERY if k in g} for g in optimizer.param_groups]
    lr_tensors = [g["lr"] if isinstance(g["lr"], torch.Tensor) else None for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, keep, lr in zip(optimizer.param_groups, machinery, lr_tensors, strict=True):
        group.update(keep)
        if lr is not None:
            group["lr"] = lr.fill_(float(group["lr"]))
        elif graph:  # the optimizer was built without a tensor rate: make one
            device = group["params"][0].device
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
        if group.get("capturable") or group.get("fused"):
            # Adam's step count on the parameters' device, in float32 (an eager CPU checkpoint: on the CPU)
            for p in group["params"]:
                step = optimizer.state.get(p, {}).get("step")
                if isinstance(step, torch.Tensor):
                    optimizer.state[p]["step"] = step.to(p.device, torch.float32)


class PlateauSchedule:
    """ReduceLROnPlateau on each epoch's mean training loss: `step()` (per batch) does nothing,
    `end_epoch(loss)` may lower the rate. It decides on floats (on a tensor shared by two param groups
    it would lower the rate twice) and writes the new rate into a graphed step's tensor in place."""

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


def make_scheduler(cfg: Config, optimizer, steps_per_epoch: int):
    """Per-step learning-rate schedule over the whole run (plateau: per epoch, see `PlateauSchedule`)."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "plateau":
        return PlateauSchedule(optimizer, cfg.plateau_factor, cfg.plateau_patience)
    if cfg.schedule == "onecycle":  # the lr rises linearly over the first 25%, then linear decay to ~0
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total,
            pct_start=0.25, anneal_strategy="linear", cycle_momentum=False, div_factor=10,
            final_div_factor=100)  # fmt: skip
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if cfg.schedule == "step":
        milestones = [round(m * cfg.epochs) * steps_per_epoch for m in cfg.milestones]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def distill_weight(cfg: Config, epoch: int) -> float:
    """The distillation term's warm-up weight: min(epoch / warmup, 1), epochs from 1 (0: no teacher)."""
    if not distills(cfg.method):
        return 0.0
    warmup = cfg.setting("warmup")  # the method's default where the config leaves it at None
    return min(epoch / warmup, 1.0) if warmup > 0 else 1.0


def make_step(
    cfg: Config, loss_fn: LossFn, model: nn.Module, loader: DeviceLoader, optimizer, scaler, *, data: Data,
    teacher: nn.Module | None, amp_dtype: torch.dtype | None, graph: bool, progress: bool = False,
) -> TrainStep:  # fmt: skip
    """The run's `TrainStep`: the model compiled if cfg.compile, the teacher replaced by a logit cache
    if cfg.cache_teacher says so (`dkdlib.cache`; kept in <out_dir>/cache/)."""
    cache = seen = None
    where = {"cache_dir": Path(cfg.out_dir) / "cache", "amp_dtype": amp_dtype}
    if teacher is not None and cfg.cache_teacher == "views":
        cache, teacher = teacher_logit_cache(teacher, loader, data.x_train, progress=progress, **where), None
    elif teacher is not None and cfg.cache_teacher == "seen":
        seen, teacher = SeenLogits(teacher, loader, data.x_train, **where), None
    step_model = torch.compile(model) if cfg.compile else model  # fixed batch shapes: compiled once
    return TrainStep(loss_fn, step_model, loader, optimizer, scaler, teacher=teacher, cache=cache,
                     seen=seen, amp_dtype=amp_dtype, graph=graph)  # fmt: skip


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
    return _metrics(*predict(model, loader, amp_dtype), num_classes)


def _metrics(logits: torch.Tensor, y: torch.Tensor, num_classes: int | None = None) -> dict:
    c = num_classes or logits.shape[1]
    pred = logits.argmax(1)
    confusion = torch.bincount(y * c + pred, minlength=c * c).view(c, c).cpu().numpy()
    return {"acc": float((pred == y).float().mean()), "loss": float(F.cross_entropy(logits, y)),
            "per_class_acc": confusion.diagonal() / np.maximum(confusion.sum(1), 1),
            "confusion": confusion}  # fmt: skip


def norm_stats(cfg: Config, data: Data) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The run's normalisation (mean, std): the config's where set, else the dataset's."""
    mean = data.mean if cfg.mean is None else cfg.mean
    std = data.std if cfg.std is None else cfg.std
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def make_loaders(cfg: Config, data: Data, device: torch.device):
    mean, std = norm_stats(cfg, data)
    common = dict(mean=mean, std=std, device=device, channels_last=use_channels_last(cfg, device))
    train = DeviceLoader(
        data.x_train, data.y_train, cfg.batch_size, train=True, seed=data_seed(cfg), **common
    )
    splits = (("val", data.x_val, data.y_val), ("test", data.x_test, data.y_test))
    return train, {split: DeviceLoader(x, y, 1000, train=False, **common) for split, x, y in splits if len(y)}


def use_graph(cfg: Config, device: torch.device) -> bool:
    """cfg.graph where it can work: on CUDA, without fp16 loss scaling. Otherwise eager, with a warning."""
    if not cfg.graph:
        return False
    if device.type != "cuda":
        warnings.warn(f"graph=True needs CUDA; training eagerly on {device.type}", stacklevel=3)
        return False
    if cfg.cache_teacher == "seen":
        warnings.warn("graph=True cannot read the 'seen' teacher cache; training eagerly", stacklevel=3)
        return False
    if amp_dtype(device, cfg.amp) == torch.float16:
        warnings.warn("graph=True: this GPU trains in fp16 with loss scaling (bf16 needs compute capability "
                      "8.0), which a CUDA graph cannot capture; training eagerly", stacklevel=3)  # fmt: skip
        return False
    return True


def use_channels_last(cfg: Config, device: torch.device) -> bool:
    # NHWC convolutions are faster on GPUs (tensor cores) and, measured here, ~1.3x on a 2-core CPU.
    return cfg.channels_last and device.type in ("cuda", "cpu")


def load_teacher(cfg: Config, data: Data, device: torch.device) -> nn.Module:
    """The frozen teacher: eval mode (BN batch stats if cfg.teacher_batch_stats), no gradients."""
    state = load_checkpoint(cfg.teacher)
    if not state.get("complete", True):
        warnings.warn(f"teacher checkpoint {cfg.teacher} is unfinished (epoch {state['epoch']} of "
                      f"{state['config']['epochs']}); distilling from it anyway", stacklevel=3)  # fmt: skip
    teacher = load_model(cfg.teacher, device, num_classes=data.num_classes, dataset=data.name, state=state)
    # Teacher and student see one normalised batch: a teacher of other statistics would quietly teach worse.
    mean, std = norm_stats(cfg, data)
    if not _same_stats(state, mean, std):
        raise DKDError(f"teacher {cfg.teacher} was trained with normalisation mean {state.get('mean')}, std "
                       f"{state.get('std')}, this run uses mean {list(mean)}, std {list(std)}: set mean= and "
                       "std= to the teacher's, or train the teacher with this run's")  # fmt: skip
    if use_channels_last(cfg, device):
        teacher = teacher.to(memory_format=torch.channels_last)
    teacher = teacher.requires_grad_(False).eval()
    return batch_stats_bn(teacher) if cfg.teacher_batch_stats else teacher


def batch_stats_bn(model: nn.Module) -> nn.Module:
    """`model`, in place, with every BatchNorm normalising by the batch's statistics without updating its
    running ones (`cfg.teacher_batch_stats`: the reference's trainer called .train() on its teacher)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
            m.track_running_stats = False
    return model


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
        raise DKDError(f"init checkpoint {cfg.init} holds a {state['model_name']} with "
                       f"{state['num_classes']} classes, but this run trains a {cfg.model} with "
                       f"{data.num_classes}: start from a checkpoint of the same architecture (or set "
                       "init=None)")  # fmt: skip
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
    wanted = {"val_size": cfg.val_size, "train_size": cfg.train_size, "test_size": cfg.test_size}
    if data.split is not None:  # loaded by `load_data`: the sizes it was asked for
        diff = [f"{k}: {data.split.get(k)!r} there, {v!r} here" for k, v in wanted.items()
                if data.split.get(k) != v]  # fmt: skip
    else:  # built by hand: its counts
        counts = {"val_size": len(data.y_val), "train_size": len(data.y_train), "test_size": len(data.y_test)}
        diff = [f"{k}: {counts[k]} images there, {v!r} here" for k, v in wanted.items()
                if v is not None and counts[k] != v]  # fmt: skip
    if diff:
        raise DKDError(f"the data given were split otherwise than the config says ({'; '.join(diff)}): "
                       "load them with the config's sizes, or leave data= out")  # fmt: skip
    return data


def fit(
    config: Config, *, data: Data | None = None, fresh: bool = False, progress: bool = True, save: bool = True
) -> Run:
    """Train (or resume, or load if finished) the run `config` describes.
    data: already loaded `Data` (else loaded from the config). fresh: ignore an existing checkpoint.
    progress: tqdm bars. save: a checkpoint every epoch and a results record at the end (in out_dir)."""
    config.validate(files=False)  # a finished run loads without its teacher's file
    device = pick_device(config.device)
    data = data_for(config, data)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: let cuDNN pick its fastest kernels
    finished, saved = _load_existing(config, data, device, fresh=fresh or not save)
    if finished is not None:
        return finished
    loop = _prepare(config, saved, data, device, save, progress)
    t_start = time.perf_counter()
    _train(loop)
    return _finish(loop, wall=time.perf_counter() - t_start)


@dataclass
class _Loop:
    """One run's training loop, as `_prepare` builds it: what its parts share."""

    cfg: Config
    data: Data
    device: torch.device
    init: dict | None  # the init checkpoint
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    step: TrainStep
    eval_loaders: dict[str, DeviceLoader]
    amp: torch.dtype | None  # the autocast dtype, None for fp32
    history: list[dict]
    start_epoch: int
    save: bool
    progress: bool
    last_saved: int = 0  # the newest epoch whose checkpoint is on disk
    results: dict[str, dict] = field(default_factory=dict)  # the newest evaluation, per split


def _prepare(
    cfg: Config, saved: dict | None, data: Data, device: torch.device, save: bool, progress: bool
) -> _Loop:
    """Model, teacher, loaders, optimizer, schedule, scaler and step of a run still to train; resumed
    from its checkpoint where it stopped."""
    cfg.check_files()
    start_epoch = (saved["epoch"] if saved else 0) + 1
    init = load_init(cfg, data)
    model = _build_model(cfg, saved, init, data, device, start_epoch)
    teacher = load_teacher(cfg, data, device) if distills(cfg.method) else None
    train_loader, eval_loaders = make_loaders(cfg, data, device)
    graph = use_graph(cfg, device)
    optimizer = make_optimizer(cfg, model, graph)
    scheduler = make_scheduler(cfg, optimizer, len(train_loader))
    amp = amp_dtype(device, cfg.amp)  # autocast dtype, None for fp32
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    history: list[dict] = []
    if start_epoch > 1:  # resume where the last checkpoint left off
        load_optimizer_state(optimizer, saved["optimizer"], graph)
        scheduler.load_state_dict(saved["scheduler"])
        if scaler.is_enabled() and saved["scaler"]:  # empty from a run without loss scaling: start afresh
            scaler.load_state_dict(saved["scaler"])
        history = saved["history"]
        print(f"resuming {cfg.run_name()} from epoch {start_epoch - 1}")
    step = make_step(cfg, student_loss(cfg), model, train_loader, optimizer, scaler, data=data,
                     teacher=teacher, amp_dtype=amp, graph=graph, progress=progress)  # fmt: skip
    return _Loop(cfg, data, device, init, model, optimizer, scheduler, scaler, step, eval_loaders, amp,
                 history, start_epoch, save, progress, last_saved=start_epoch - 1)  # fmt: skip


def _train(loop: _Loop) -> None:
    """The epochs left, each saved but the last (`_finish` saves it); on Ctrl-C, say what is kept."""
    from tqdm.auto import tqdm

    cfg = loop.cfg
    bar = tqdm(range(loop.start_epoch, cfg.epochs + 1), desc=cfg.run_name(), disable=not loop.progress,
               initial=loop.start_epoch - 1, total=cfg.epochs)  # fmt: skip
    epoch = loop.start_epoch - 1
    try:
        for epoch in bar:
            row = _epoch(loop, epoch)
            bar.set_postfix(
                {key: f"{row[key]:.3f}" for key in ("train_loss", "val_acc", "test_acc") if key in row}
            )
            if epoch < cfg.epochs:
                _save(loop, epoch, complete=False)
    except KeyboardInterrupt:
        if loop.save and loop.last_saved > 0:
            print(f"\ninterrupted during epoch {epoch}. The checkpoint of epoch {loop.last_saved} is intact: "
                  f"{cfg.checkpoint_path}\nRun the same command (or fit(config)) again to resume from "
                  "it.")  # fmt: skip
        else:
            print(f"\ninterrupted during epoch {epoch}, before any checkpoint was written.")
        raise


def _epoch(loop: _Loop, epoch: int) -> dict:
    """Train one epoch, evaluate, and add the epoch's row to the history (and keep the best epoch)."""
    cfg = loop.cfg
    t0 = time.perf_counter()
    lr = float(loop.optimizer.param_groups[0]["lr"])  # a device tensor in graph mode
    weight = distill_weight(cfg, epoch)
    stats = train_epoch(loop.step, loop.scheduler, epoch, weight, loop.progress, last=epoch == cfg.epochs)
    if loop.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    images_per_s = len(loop.step.loader) * cfg.batch_size / seconds
    row = {"epoch": epoch, "lr": lr, **stats, "seconds": seconds, "images_per_s": images_per_s,
           "distill_weight": weight}  # fmt: skip
    for split, loader in loop.eval_loaders.items():
        result = loop.results[split] = evaluate(loop.model, loader, amp_dtype=loop.amp)
        row[f"{split}_acc"], row[f"{split}_loss"] = result["acc"], result["loss"]
    loop.history.append(row)
    if isinstance(loop.scheduler, PlateauSchedule):
        loop.scheduler.end_epoch(row["train_loss"])
    if loop.save and is_best(loop.history, cfg.best_by):
        save_best(cfg, loop.data, loop.model.state_dict(), loop.history)
    return row


def _save(loop: _Loop, epoch: int, complete: bool, metrics: dict | None = None) -> None:
    """The run's checkpoint of `epoch` (nothing when the loop does not save)."""
    if not loop.save:
        return
    save_checkpoint(loop.cfg.checkpoint_path, checkpoint_dict(
        loop.cfg, loop.data, epoch, complete, loop.model.state_dict(), loop.optimizer.state_dict(),
        loop.scheduler.state_dict(), loop.scaler.state_dict(), loop.history, metrics,
    ))  # fmt: skip
    loop.last_saved = epoch


def _finish(loop: _Loop, wall: float) -> Run:
    """The run's metrics, final checkpoint and record."""
    cfg, data = loop.cfg, loop.data
    metrics = summarize(loop.history) | init_metrics(cfg, loop.init)
    if "test" in loop.results:  # the last epoch's evaluation: the weights have not changed since
        metrics["per_class_acc"] = loop.results["test"]["per_class_acc"].round(4).tolist()
        metrics["confusion"] = loop.results["test"]["confusion"].tolist()
    _save(loop, cfg.epochs, complete=True, metrics=metrics)
    extra = {"graph_error": loop.step.graph_error} if loop.step.graph_error else {}  # fell back to eager
    loop.model.normalization = norm_stats(cfg, data)  # the (mean, std) it trained with, as `load_model`'s
    record = None
    if loop.save:
        finish_best(cfg, loop.history, metrics)
        row = record_dict(cfg, data, metrics, loop.history, wall, loop.device, **extra)
        record = write_record(Path(cfg.out_dir) / "results", row)
    return Run(cfg, loop.model.eval(), loop.history, metrics, cfg.checkpoint_path, record, data)


def train_epoch(
    step: TrainStep, scheduler, epoch: int, distill_weight: float, progress: bool = False, last: bool = False
) -> dict[str, float]:
    """One pass over the epoch's batches; the mean loss and accuracy (a host sync every 50 steps to stop
    on a NaN loss). `last`: the run's final epoch."""
    from tqdm.auto import tqdm

    step.model.train()
    step.start_epoch(epoch, distill_weight)
    steps = len(step.loader)
    for s in tqdm(range(steps), desc=f"epoch {epoch}", leave=False, disable=not progress):
        step()
        if not (last and s + 1 == steps):  # after the run's last step OneCycleLR would go negative
            scheduler.step()
        if (s + 1) % 50 == 0 or s + 1 == steps:
            step.check_finite(epoch, steps)
    step.end_epoch()
    return step.epoch_stats()


def _build_model(
    cfg: Config, saved: dict | None, init: dict | None, data: Data, device: torch.device, start_epoch: int
) -> nn.Module:
    """The run's network: from its seed (or its `init`), or a resumed run's saved weights."""
    torch.manual_seed(cfg.seed)  # the loader has its own seeded generator
    from_scratch = start_epoch == 1  # a resumed run loads its own weights: no ImageNet download
    model = create_model(cfg.model, data.num_classes, pretrained=cfg.pretrained and from_scratch)
    if init is not None and from_scratch:
        model.load_state_dict(init["model"])
    model = model.to(device)
    if not from_scratch:
        model.load_state_dict(saved["model"])
    if use_channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
    return model


def _load_existing(cfg: Config, data: Data, device: torch.device, fresh: bool):
    """Train-or-load: (the finished `Run`, None), (None, the unfinished checkpoint) or (None, None)."""
    path = cfg.checkpoint_path
    if not fresh:
        materialise(cfg)  # the repository's committed weights of this run, if any
    if fresh or not path.exists():
        return None, None
    state = load_checkpoint(path)
    _check_same_run(state, cfg, path)
    if not state.get("complete"):
        return None, state
    print(f"loaded finished run {cfg.run_name()} from {path}")
    model = create_model(cfg.model, data.num_classes).to(device)
    model.load_state_dict(state["model"])
    model.normalization = norm_stats(cfg, data)  # as `load_model`'s: evaluate it as it trained
    return Run(cfg, model.eval(), state["history"], state["metrics"], path, None, data), None


def init_metrics(cfg: Config, init: dict | None) -> dict[str, Any]:
    """What a run started from `cfg.init` adds to its metrics: epochs before, in all, and init's epoch."""
    if init is None:
        return {}
    before = init_epochs(init)
    return {"init_epochs": before, "total_epochs": before + cfg.epochs, "init_epoch": int(init["epoch"])}


def is_best(history: list[dict[str, float]], best_by: str | None) -> bool:
    """Whether the newest epoch is the best so far by `best_by` (an earlier epoch wins a tie, as in
    `summarize`); False when best_by is None."""
    if best_by is None:
        return False
    *earlier, last = history
    if best_by == "val_loss":
        return all(last["val_loss"] < h["val_loss"] for h in earlier)
    return all(last["val_acc"] > h["val_acc"] for h in earlier)


def save_best(cfg: Config, data: Data, model_state: dict, history: list) -> None:
    """Keep the newest epoch's weights as the run's best (`cfg.best_path`), a loadable checkpoint."""
    save_checkpoint(cfg.best_path, {
        **checkpoint_dict(cfg, data, history[-1]["epoch"], False, model_state, {}, {}, {}, history),
        "best_by": cfg.best_by,
    })  # fmt: skip


def finish_best(cfg: Config, history: list, metrics: dict) -> None:
    """Mark a finished run's best-epoch checkpoint complete, with its history and metrics."""
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
        "config": portable(cfg.to_dict()), "epoch": epoch, "complete": complete,
        "model": model_state, "optimizer": optimizer_state, "scheduler": scheduler_state,
        "scaler": scaler_state, "history": history, "metrics": metrics or {},
    }  # fmt: skip


def record_dict(
    cfg: Config, data: Data, metrics: dict, history: list, wall: float, device: torch.device, **extra
) -> dict[str, Any]:
    """A finished run's results record: config, data, metrics, history, wall time, environment."""
    return {
        "name": cfg.run_name(), "config": portable(cfg.to_dict()), "dataset": data.name,
        "data_source": data.source, "train_images": len(data.y_train),
        "val_images": len(data.y_val), "test_images": len(data.y_test),
        "metrics": metrics, "history": history, "checkpoint": f"checkpoints/{cfg.run_name()}.pt",
        "wall_time_s": round(wall, 2), "environment": environment(str(device)), **extra,
    }  # fmt: skip


def _check_same_run(state: dict, cfg: Config, path: Path) -> None:
    saved, now = identity(state["config"]), cfg.identity()
    diff = [f"{k}: {saved.get(k)!r} there, {now.get(k)!r} here" for k in now if saved.get(k) != now.get(k)]
    if diff:
        raise DKDError(f"checkpoint {path} belongs to a different run ({'; '.join(diff)}); give this run "
                       "another name, or pass fresh=True (CLI --fresh) to overwrite it")  # fmt: skip

"""`Config`: everything that defines a run, one plain field each, its facts in its metadata: help (the
CLI's: every field is a flag), identity (whether it changes what is learned, and so the run's name: "yes",
"no", or "unless_default", so runs named before the field existed keep their names; a `file` counts by
its file name), and what `validate` checks: choices, bound (">0", ">=0", "(0,1)"), unit, length (int,
None and tuples: from the type hints)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import DATASETS
from .errors import DKDError
from .methods import METHODS, distills
from .models import MODELS

__all__ = ["Config", "identity", "data_seed", "FIELDS", "OPTIMIZERS", "SCHEDULES", "env_flag", "repo_root"]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "step", "cosine", "onecycle", "plateau")
BEST_BY = ("val_loss", "val_acc")
CACHES = ("off", "views", "seen")


def _field(default, help: str, *, identity: str = "yes", file: bool = False,
           choices: tuple = (), bound: str = "", unit: str = "", length: int = 0):  # fmt: skip
    """A Config field with its facts: see the module docstring; `validate` and the CLI read the checks."""
    meta = {"help": help, "identity": identity, "file": file, "default": default,
            "choices": tuple(choices), "bound": bound, "unit": unit, "length": length}  # fmt: skip
    return dataclasses.field(default=default, metadata=meta)


# The bounds a number may carry (`bound=`): the test, and how its message says it.
BOUNDS = {">0": (lambda v: v > 0, "> 0"), ">=0": (lambda v: v >= 0, ">= 0"),
          "(0,1)": (lambda v: 0 < v < 1, "in (0, 1)")}  # fmt: skip


@dataclass
class Config:
    """Everything that defines a run. Plain values, so it prints, saves and hashes cleanly."""

    # what to train
    model: str = _field("resnet8", "architecture", choices=sorted(MODELS))
    method: str = _field("ce", "loss: " + "; ".join(f"{k}: {m.help}" for k, m in METHODS.items()),
                         choices=METHODS)  # fmt: skip
    teacher: str | None = _field(None, "teacher checkpoint (.pt written by `train`), for every method but ce",
                                 file=True)  # fmt: skip
    init: str | None = _field(None, "a checkpoint whose weights the model starts from (same architecture)",
                              identity="unless_default", file=True)  # fmt: skip
    pretrained: bool = _field(False,
        "ImageNet weights: resnet18_imagenet, or resnet18 in all but conv1 and fc")  # fmt: skip
    dataset: str = _field("cifar10", "cifar10 | cifar100 (downloaded into OUT_DIR) | synthetic (NOT CIFAR)",
                          choices=DATASETS)  # fmt: skip
    # Where the images are read from, not which: the dataset and the sizes say that, so a run trained on
    # a downloaded CIFAR-10 and one on an .npz copy (offline, on a GPU machine) are the same run.
    data: str | None = _field(None,
        "an .npz with x_train, y_train, x_test, y_test (uint8 N×32×32×3) instead of downloading",
        identity="no")  # fmt: skip
    val_size: int = _field(5000, "training images held out as a fixed validation split")
    train_size: int | None = _field(None, "use only this many (class-balanced) training images")
    test_size: int | None = _field(None, "use only this many test images")
    mean: tuple[float, ...] | None = _field(None,
        "normalisation mean, three numbers (default: the dataset's)", identity="unless_default",
        length=3)  # fmt: skip
    std: tuple[float, ...] | None = _field(None,
        "normalisation std, three numbers (default: the dataset's; CIFAR-10 0.2470 0.2435 0.2616)",
        identity="unless_default", length=3, bound=">0")  # fmt: skip
    # schedule
    epochs: int = _field(30, "training epochs", bound=">0")
    batch_size: int = _field(128, "batch size", bound=">0")
    optimizer: str = _field("sgd", "sgd (momentum, nesterov) | adam (AdamW when weight_decay > 0)",
                            choices=OPTIMIZERS)  # fmt: skip
    lr: float = _field(0.05, "peak learning rate", bound=">0")
    momentum: float = _field(0.9, "SGD momentum", bound=">=0")
    weight_decay: float = _field(5e-4, "weight decay (not on BN weights and biases)",
                                 bound=">=0")  # fmt: skip
    schedule: str = _field("onecycle",
        "constant | step | cosine | onecycle (per step) | plateau (per epoch, on the training loss)",
        choices=SCHEDULES)  # fmt: skip
    milestones: tuple[float, ...] = _field((0.625, 0.75, 0.875),
        "step schedule: fractions of the run where lr is multiplied by gamma")  # fmt: skip
    gamma: float = _field(0.1, "step schedule: lr factor at each milestone")
    plateau_factor: float = _field(0.1,
        "plateau: multiply the lr by this when the training loss stops falling", identity="unless_default",
        bound="(0,1)")  # fmt: skip
    plateau_patience: int = _field(10, "plateau: epochs without improvement before the lr drops",
                                   identity="unless_default", bound=">=0",
                                   unit="number of epochs")  # fmt: skip
    # The method's settings: None takes the method's default (`methods.METHODS[method].settings`).
    temperature: float | None = _field(None, "softmax temperature T of the distillation term (DKD, KD: 4)",
                                       bound=">0")  # fmt: skip
    alpha: float | None = _field(None, "DKD: weight of TCKD (target vs. rest; default 1)", bound=">=0")
    beta: float | None = _field(None,
        "DKD: weight of NCKD (among non-targets; default 8, 2 for weak teachers); DIST: inter-class (1)",
        bound=">=0")  # fmt: skip
    warmup: int | None = _field(None,
        "epochs over which the distillation weight ramps up linearly (0 = off; DKD 20, KD 0)", bound=">=0",
        unit="number of epochs")  # fmt: skip
    ce_weight: float | None = _field(None, "weight of the cross-entropy on labels (default 1)", bound=">=0")
    kd_weight: float | None = _field(None,
        "weight of classic KD (default 1; official KD baseline: ce_weight 0.1, kd_weight 0.9)",
        bound=">=0")  # fmt: skip
    teacher_batch_stats: bool = _field(False,
        "the teacher's BatchNorm normalises each batch by its own statistics while students train (as the "
        "reference's trainer did); its running statistics and weights stay as they were",
        identity="unless_default")  # fmt: skip
    intra: float | None = _field(None, "DIST: weight of the intra-class relation (default 1)",
                                 identity="unless_default", bound=">=0")  # fmt: skip
    # machinery
    seed: int = _field(0, "seed of the initialisation (and of the data order unless data_seed is set)")
    data_seed: int | None = _field(None, "seed of the shuffling and augmentation (default: seed)",
                                   identity="unless_default")  # fmt: skip
    device: str = _field("auto", "auto | cpu | cuda | cuda:N | mps (CUDA without CUDA falls back to the CPU)",
                         identity="no")  # fmt: skip
    amp: bool = _field(True, "bf16/fp16 autocast on CUDA")
    channels_last: bool = _field(True, "NHWC memory layout", identity="no")
    compile: bool = _field(False, "torch.compile the student (worth it for long GPU runs)", identity="no")
    graph: bool = _field(False, "capture the whole training step as one CUDA graph (CUDA; bf16 or fp32)",
                         identity="no")  # fmt: skip
    cache_teacher: str = _field("off",
        "the teacher's logits, computed once instead of by every student: off | views (all 162 crop×flip "
        "views of every image, built ahead: a GPU's minute) | seen (the view each epoch draws, stored by "
        "the first student of a data seed and read by the others: the CPU's choice)", identity="no",
        choices=CACHES)  # fmt: skip
    best_by: str | None = _field(None, "also keep the best epoch's weights as NAME-best.pt",
                                 identity="unless_default", choices=BEST_BY)  # fmt: skip
    name: str | None = _field(None, "run name (checkpoint file name); default derived from the config",
                              identity="no")  # fmt: skip
    tag: str = _field("", "free label stored with the results (e.g. ref:as_run:dkd_100)", identity="no")
    note: str = _field("", "free text kept in the run's record (e.g. a fallback taken)", identity="no")
    out_dir: str = _field("data", "where checkpoints/, results/ and downloads go", identity="no")

    def __post_init__(self) -> None:
        if isinstance(self.cache_teacher, bool):  # configs and records from before "seen" existed
            self.cache_teacher = "views" if self.cache_teacher else "off"

    def setting(self, name: str) -> Any:
        """The value field `name` trains with: the config's, or where it is None the method's default."""
        return resolved(dataclasses.asdict(self), name)

    def identity(self) -> dict[str, Any]:
        """The fields that decide what is learned (see the module docstring)."""
        return identity(self.to_dict())

    def run_name(self) -> str:
        if self.name:
            return self.name
        digest = hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.method}-{self.model}-{self.dataset}-s{self.seed}-{digest}"

    def to_dict(self) -> dict[str, Any]:
        """Plain values, the method's settings resolved (as records and checkpoints keep them)."""
        d = dataclasses.asdict(self)
        d.update({key: resolved(d, key) for key in NAMED_AS})
        for key in TUPLES:  # lists, as JSON gives them back
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

    def validate(self, files: bool = True) -> None:
        """Raise `DKDError` naming the first bad value and what would be valid (files: and unless the
        teacher and init checkpoints exist, `check_files`)."""

        def bad(msg: str):
            raise DKDError(f"Config: {msg}")

        for name in FIELDS:
            problem = _check(name, self.setting(name))
            if problem:
                bad(problem)
        if self.best_by is not None and self.val_size == 0:
            bad(f"best_by={self.best_by!r} picks an epoch by validation: set val_size > 0")
        if self.teacher_batch_stats and self.cache_teacher != "off":
            bad("teacher_batch_stats=True: the teacher's logits depend on the batch they come in, so they "
                "cannot be cached; set cache_teacher='off'")  # fmt: skip
        if distills(self.method) and not self.teacher:
            bad(f"method {self.method!r} distils from a teacher: set teacher= to its checkpoint")
        if files:
            self.check_files()

    def check_files(self) -> None:
        """Raise `DKDError` unless the teacher and init checkpoints exist (a finished run loads without)."""
        if distills(self.method) and not Path(self.teacher).is_file():
            raise DKDError(f"Config: teacher checkpoint {self.teacher} does not exist; train the teacher "
                           "first")  # fmt: skip
        if self.init is not None and not Path(self.init).is_file():
            raise DKDError(f"Config: init checkpoint {self.init} does not exist; train the run it comes from "
                           "first")  # fmt: skip


FIELDS = {f.name: f.metadata for f in dataclasses.fields(Config)}
HINTS = typing.get_type_hints(Config)
# The tuple fields (milestones, mean, std), from their type hints.
TUPLES = tuple(n for n, h in HINTS.items() if tuple in map(typing.get_origin, (h, *typing.get_args(h))))


def _check(name: str, value: Any) -> str | None:
    """What is wrong with `value` for field `name` (its metadata and type hint), or None."""
    meta, hint = FIELDS[name], HINTS[name]
    optional = type(None) in typing.get_args(hint)
    if value is None:
        return None if optional else f"{name} must not be None"
    if meta["choices"] and value not in meta["choices"]:
        return (f"unknown {name} {value!r}; choose one of: {', '.join(meta['choices'])}"
                + (" (or None)" if optional else ""))  # fmt: skip
    kinds = {hint, *typing.get_args(hint)}
    if int in kinds and (not isinstance(value, int) or isinstance(value, bool)):
        rule = " ".join(filter(None, ["an integer", meta["unit"], BOUNDS.get(meta["bound"], (0, ""))[1]]))
        return f"{name} must be {rule}{' or None' if optional else ''}; got {value!r}"
    values = value if name in TUPLES else (value,)
    if meta["length"] and (
        len(values) != meta["length"] or not all(isinstance(v, (int, float)) for v in values)
    ):
        count = {3: "three"}.get(meta["length"], meta["length"])
        return f"{name} must be None (the default) or {count} numbers, one per channel; got {value!r}"
    test, text = BOUNDS.get(meta["bound"], (None, ""))
    if test is not None and not all(test(v) for v in values):
        rule = " ".join(filter(None, ["an integer" if int in kinds else "", meta["unit"], text]))
        where = " in every channel" if name in TUPLES else ""
        return f"{name} must {'lie' if '(' in text else 'be'} {rule}{where}; got {value!r}"
    return None


# What a method setting left at None stands for where the method lacks it: the Config defaults from before
# methods had their own, so every run keeps its name (a CE run its "T = 4"); DIST's newer intra: None.
NAMED_AS = {"temperature": 4.0, "alpha": 1.0, "beta": 8.0, "warmup": 20, "ce_weight": 1.0, "kd_weight": 1.0,
            "intra": None}  # fmt: skip


def resolved(config: dict[str, Any], name: str) -> Any:
    """Field `name` of a config saved as a dict, a None resolved to its method's default."""
    value = config.get(name)
    if value is None and name in NAMED_AS:
        settings = METHODS[config.get("method", "ce")].settings
        return settings.get(name, NAMED_AS[name])
    return value


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """`Config.identity` of a config saved as a dict (in a checkpoint or a record)."""
    config = {**config, **{key: resolved(config, key) for key in NAMED_AS if key in config}}
    ident = {}
    for key, value in config.items():
        meta = FIELDS.get(key, {"identity": "yes", "file": False})
        kind = meta["identity"]
        if kind == "no" or (kind == "unless_default" and _same(value, meta["default"])):
            continue
        ident[key] = Path(value).name if meta["file"] and value else value
    return ident


def _same(value: Any, default: Any) -> bool:
    both_lists = isinstance(value, (list, tuple)) and isinstance(default, (list, tuple))
    return list(value) == list(default) if both_lists else value == default


# Environment flags: one spelling of "on" and "off" for every DKDLIB_* (and script) switch.
ON, OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_flag(name: str, default: bool = False) -> bool:
    """The environment variable `name` as a switch: unset or empty → `default`; else one of ON or OFF."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value not in ON + OFF:
        raise DKDError(f"{name}={value!r}: set it to one of {', '.join(ON)} or {', '.join(OFF)}")
    return value in ON


def repo_root(*places: str | os.PathLike) -> Path | None:
    """The first of `places` (default: the folder above the package) that is a clone of this repository,
    holding dkdlib/ and data/; None where none is (a `pip install` has no data/ beside the package)."""
    for place in places or (Path(__file__).resolve().parents[1],):
        if (Path(place) / "dkdlib").is_dir() and (Path(place) / "data").is_dir():
            return Path(place)
    return None


def data_seed(cfg: Config) -> int:
    """The seed of a run's shuffling and augmentation: `data_seed` if set, else `seed`."""
    return cfg.seed if cfg.data_seed is None else cfg.data_seed

r"""The training methods, one entry each: what a student learns from, and its loss.

Every method trains on  ce_weight · CE(labels) + w · distill,  w the epoch's warm-up weight (0 for CE)
and `distill` the entry's term. Adding a method means adding one entry to `METHODS`: `Config`
validation, the CLI's `--method` help and the tables' labels read it. KD's
decoupling, KL(p^T ‖ p^S) = TCKD + (1 − p_t^T) · NCKD, is derived in `dkdlib.losses`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Method", "METHODS", "distills", "student_loss"]

# One distillation term: (student logits N×C, teacher logits N×C, labels N, the method's settings
# {name: value}) → the batch's term. Inputs are float32.
DistillFn = Callable[[Tensor, Tensor, Tensor, dict[str, float]], Tensor]
# What TrainStep calls: (student logits N×C, teacher logits N×C or None, labels N, warm-up weight) → loss.
LossFn = Callable[[Tensor, Tensor | None, Tensor, Tensor], Tensor]


class Student(Protocol):
    """What `student_loss` reads of a `Config` (typed here so that methods.py need not import config.py)."""

    method: str

    def setting(self, name: str) -> Any: ...


@dataclass(frozen=True)
class Method:
    """A training method: its distillation term (None: labels only), a line of help, and its own
    settings: the Config fields it reads, with its defaults (a Config field left at None takes them)."""

    distill: DistillFn | None
    help: str
    settings: dict[str, float] = field(default_factory=dict)
    label: str = ""  # its name in tables ("DKD"); every setting that differs from its default follows
    shown: tuple[str, ...] = ()  # settings its label always shows ("DKD α=1 β=8")


def _target_mask(logits: Tensor, target: Tensor) -> Tensor:
    # A comparison, not F.one_hot: one_hot validates the labels with a host sync on some devices,
    # and a CUDA-graph-captured step must not sync.
    return target.long()[:, None] == torch.arange(logits.shape[1], device=logits.device)


def _dkd_terms(zs: Tensor, zt: Tensor, target: Tensor, temperature: float):
    """Per-sample (TCKD, NCKD, p_t of the teacher), all in float32, without the T² factor."""
    zs, zt = zs.float() / temperature, zt.float() / temperature
    mask = _target_mask(zs, target)

    def binary_and_nontarget_logprobs(z: Tensor):
        lse = torch.logsumexp(z, dim=1)
        log_pt = z.gather(1, target.long()[:, None]).squeeze(1) - lse
        z_rest = z.masked_fill(mask, float("-inf"))  # drop the target: softmax over the others
        log_prest = torch.logsumexp(z_rest, dim=1) - lse
        return torch.stack([log_pt, log_prest], 1), F.log_softmax(z_rest, dim=1)

    log_b_s, log_q_s = binary_and_nontarget_logprobs(zs)
    log_b_t, log_q_t = binary_and_nontarget_logprobs(zt)
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum(1)
    # The target column is -inf - (-inf) = nan in both; it carries zero teacher mass, so zero it.
    nckd = (log_q_t.exp() * (log_q_t - log_q_s)).masked_fill(mask, 0.0).sum(1)
    return tckd, nckd, log_b_t[:, 0].exp()


def _kd(zs: Tensor, zt: Tensor, y: Tensor, hp: dict[str, float]) -> Tensor:
    t = hp["temperature"]
    log_ps, log_pt = F.log_softmax(zs / t, dim=1), F.log_softmax(zt / t, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(1)  # KL(p^T ‖ p^S) per sample
    return hp["kd_weight"] * t**2 * kl.mean()


def _dkd(zs: Tensor, zt: Tensor, y: Tensor, hp: dict[str, float]) -> Tensor:
    t = hp["temperature"]
    tckd, nckd, _ = _dkd_terms(zs, zt, y, t)
    return t**2 * (hp["alpha"] * tckd.mean() + hp["beta"] * nckd.mean())


def _tckd(zs, zt, y, hp):
    return _dkd(zs, zt, y, {**hp, "beta": 0.0})


def _nckd(zs, zt, y, hp):
    return _dkd(zs, zt, y, {**hp, "alpha": 0.0})


def _pearson_gap(a: Tensor, b: Tensor) -> Tensor:
    """1 − the Pearson correlation of a and b along their last dimension (…×D → …)."""
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    return 1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-8)


def _dist(zs: Tensor, zt: Tensor, y: Tensor, hp: dict[str, float]) -> Tensor:
    """DIST (Huang et al., NeurIPS 2022): T² · (β · inter + γ · intra) on p = softmax(z / T), where inter
    is 1 − the Pearson correlation over the classes of each sample (batch mean), intra over the batch of
    each class (class mean); as the official code, which defaults to β = γ = T = 1."""
    t = hp["temperature"]
    ps, pt = (zs / t).softmax(-1), (zt / t).softmax(-1)  # N×C
    inter = _pearson_gap(ps, pt).mean()
    intra = _pearson_gap(ps.T, pt.T).mean()
    return t**2 * (hp["beta"] * inter + hp["intra"] * intra)


def standardize(z: Tensor) -> Tensor:
    """Each sample's logits z-scored: (z − mean) / std over the classes (Sun et al., 2024)."""
    return (z - z.mean(-1, keepdim=True)) / (z.std(-1, keepdim=True) + 1e-7)


def _on_standardized(term: DistillFn) -> DistillFn:
    return lambda zs, zt, y, hp: term(standardize(zs), standardize(zt), y, hp)


# Every method weighs the labels' CE; Hinton's KD and mdistiller's KD have no warm-up, DKD's official
# code ramps in over 20 epochs.
_CE = {"ce_weight": 1.0}
_KD = {**_CE, "temperature": 4.0, "kd_weight": 1.0, "warmup": 0}
_DIST = {**_CE, "temperature": 1.0, "beta": 1.0, "intra": 1.0, "warmup": 0}
_DKD = {**_CE, "temperature": 4.0, "alpha": 1.0, "beta": 8.0, "warmup": 20}
_TCKD = {k: v for k, v in _DKD.items() if k != "beta"}
_NCKD = {k: v for k, v in _DKD.items() if k != "alpha"}

METHODS: dict[str, Method] = {
    "ce": Method(None, "labels only (a teacher or a baseline)", {}, "CE"),
    "kd": Method(_kd, "Hinton's KD: kd_weight · T² · KL(p_teacher ‖ p_student)", _KD, "KD"),
    "dkd": Method(_dkd, "DKD: T² · (α · TCKD + β · NCKD)", _DKD, "DKD", ("alpha", "beta")),
    "tckd": Method(_tckd, "α · TCKD alone (target vs. rest)", _TCKD, "TCKD", ("alpha",)),
    "nckd": Method(_nckd, "β · NCKD alone (among the non-target classes)", _NCKD, "NCKD", ("beta",)),
    "kd_ls": Method(_on_standardized(_kd), "KD on z-scored logits (logit standardisation)", _KD, "KD+LS"),
    "dkd_ls": Method(_on_standardized(_dkd), "DKD on z-scored logits (logit standardisation)", _DKD, "DKD+LS",
                     ("alpha", "beta")),
    "dist": Method(_dist, "DIST (Huang et al. 2022): T² · (β · inter-class + intra · intra-class relation)",
                   _DIST, "DIST"),
}  # fmt: skip
# How a setting reads in a label: "α=1", "T=2", "CE×0.1", "W=2" (warm-up epochs).
SYMBOLS = {"alpha": "α=", "beta": "β=", "intra": "γ=", "temperature": "T=", "ce_weight": "CE×",
           "kd_weight": "KD×", "warmup": "W="}  # fmt: skip
# The Config fields a distillation term may read (the others weigh the terms: ce_weight, warmup).
HYPERPARAMETERS = tuple(dict.fromkeys(
    name for m in METHODS.values() for name in m.settings if name not in ("ce_weight", "warmup")
))  # fmt: skip


def distills(method: str) -> bool:
    """Whether `method` learns from a teacher."""
    return METHODS[method].distill is not None


def student_loss(cfg: Student) -> LossFn:
    """The training loss of the run `cfg` describes, its method's settings read once."""
    term = METHODS[cfg.method].distill
    ce_weight = float(cfg.setting("ce_weight"))
    hp = {name: float(cfg.setting(name)) for name in METHODS[cfg.method].settings if name in HYPERPARAMETERS}

    def loss_fn(logits: Tensor, logits_teacher: Tensor | None, y: Tensor, weight: Tensor) -> Tensor:
        logits = logits.float()
        # The mean of the per-sample losses: the sum in this order is what the records trained with.
        ce = F.cross_entropy(logits, y, reduction="none").mean()
        if logits_teacher is None or term is None:
            return ce_weight * ce
        return ce_weight * ce + weight * term(logits, logits_teacher.float(), y, hp)

    return loss_fn

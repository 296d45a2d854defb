r"""The training methods, one entry each: what a student learns from, and its loss.

Every method trains on  ce_weight · CE(labels) + w · distill,  w the epoch's warm-up weight (0 for CE)
and `distill` the entry's term, computed for K students at once (K×N×C logits against one teacher's
N×C): the same code trains one student (`fit`) and a packed sweep (`fit_many`). Adding a method means
adding one entry to `METHODS`; `Config` validation and the CLI's `--method` help read it. KD's
decoupling, KL(p^T ‖ p^S) = TCKD + (1 − p_t^T) · NCKD, is derived in `dkdlib.losses`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Method", "METHODS", "distills", "student_losses"]

# One distillation term for k students: (student logits k×N×C, teacher logits N×C, labels N,
# hyperparameters {name: k×1 tensor}) → the k students' terms (k,). Inputs are float32.
DistillFn = Callable[[Tensor, Tensor, Tensor, dict[str, Tensor]], Tensor]
# What TrainStep calls: (student logits K×N×C, teacher logits N×C or None, labels N, warm-up weights K)
# → the K students' losses (K,).
LossFn = Callable[[Tensor, Tensor | None, Tensor, Tensor], Tensor]


class Student(Protocol):
    """What `student_losses` reads of a `Config` (typed here so that methods.py need not import config.py)."""

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


def _flat(zs: Tensor, zt: Tensor, y: Tensor, t: Tensor):
    """The k students' logits and the teacher's, each divided by its student's temperature, as
    (k·N)×C rows, with the labels repeated to match: the 2-D form the per-sample terms take."""
    k, n, c = zs.shape
    zs = (zs / t.view(k, 1, 1)).reshape(k * n, c)
    zt = (zt[None] / t.view(k, 1, 1)).expand(k, n, c).reshape(k * n, c)
    return zs, zt, y.repeat(k)


def _kd(zs: Tensor, zt: Tensor, y: Tensor, hp: dict[str, Tensor]) -> Tensor:
    k, n, _ = zs.shape
    t = hp["temperature"]
    zs, zt, _ = _flat(zs, zt, y, t)
    log_ps, log_pt = F.log_softmax(zs, dim=1), F.log_softmax(zt, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(1).view(k, n)  # KL(p^T ‖ p^S) per sample
    return hp["kd_weight"].view(k) * t.view(k) ** 2 * kl.mean(1)


def _dkd(zs: Tensor, zt: Tensor, y: Tensor, hp: dict[str, Tensor]) -> Tensor:
    k, n, _ = zs.shape
    t = hp["temperature"]
    tckd, nckd, _ = (v.view(k, n) for v in _dkd_terms(*_flat(zs, zt, y, t), 1.0))
    return t.view(k) ** 2 * (hp["alpha"].view(k) * tckd.mean(1) + hp["beta"].view(k) * nckd.mean(1))


def _tckd(zs, zt, y, hp):
    return _dkd(zs, zt, y, {**hp, "beta": torch.zeros_like(hp["alpha"])})


def _nckd(zs, zt, y, hp):
    return _dkd(zs, zt, y, {**hp, "alpha": torch.zeros_like(hp["beta"])})


def _pearson_gap(a: Tensor, b: Tensor) -> Tensor:
    """1 − the Pearson correlation of a and b along their last dimension (…×D → …)."""
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    return 1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-8)


def _dist(zs: Tensor, zt: Tensor, y: Tensor, hp: dict[str, Tensor]) -> Tensor:
    """DIST (Huang et al., NeurIPS 2022): T² · (β · inter + γ · intra) on p = softmax(z / T), where inter
    is 1 − the Pearson correlation over the classes of each sample (batch mean), intra over the batch of
    each class (class mean); as the official code, which defaults to β = γ = T = 1."""
    k = zs.shape[0]
    t = hp["temperature"].view(k, 1, 1)
    ps, pt = (zs / t).softmax(-1), (zt[None] / t).softmax(-1).expand_as(zs)  # K×N×C
    inter = _pearson_gap(ps, pt).mean(1)
    intra = _pearson_gap(ps.transpose(1, 2), pt.transpose(1, 2)).mean(1)
    return t.view(k) ** 2 * (hp["beta"].view(k) * inter + hp["intra"].view(k) * intra)


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


def student_losses(configs: list[Student]) -> LossFn:
    """The training losses of K students (the configs, in order) in one computation; students of one
    method together, their settings k×1 tensors made once on the device (a CUDA graph must not copy)."""
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(cfg.method, []).append(i)
    consts: dict = {}

    def make_consts(device: torch.device) -> None:
        def column(values):
            return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1)

        consts["ce_weight"] = column([c.setting("ce_weight") for c in configs]).view(-1)
        consts["terms"] = []  # (term, its students (None: all K, in order), their hyperparameters)
        for method, members in groups.items():
            if distills(method):
                names = [n for n in METHODS[method].settings if n in HYPERPARAMETERS]
                hp = {name: column([configs[i].setting(name) for i in members]) for name in names}
                every = members == list(range(len(configs)))  # one method for all (K = 1 always)
                index = None if every else torch.tensor(members, device=device)
                consts["terms"].append((METHODS[method].distill, index, hp))

    def loss_fn(logits: Tensor, logits_teacher: Tensor | None, y: Tensor, weight: Tensor) -> Tensor:
        k, n, c = logits.shape
        if not consts:
            make_consts(logits.device)
        logits = logits.float()
        ce = F.cross_entropy(logits.reshape(k * n, c), y.repeat(k), reduction="none").view(k, n).mean(1)
        if logits_teacher is None:
            return consts["ce_weight"] * ce
        zt = logits_teacher.float()
        distill = torch.zeros(k, device=logits.device)
        for term, index, hp in consts["terms"]:
            if index is None:
                distill = distill + term(logits, zt, y, hp)
            else:
                distill = distill.index_add(0, index, term(logits.index_select(0, index), zt, y, hp))
        return consts["ce_weight"] * ce + weight * distill

    return loss_fn

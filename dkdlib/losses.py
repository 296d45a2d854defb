r"""Knowledge-distillation losses: Hinton's KD and its decoupling into TCKD and NCKD (DKD).

With p = softmax(z / T), target class t, b = [p_t, 1 - p_t] and p̂ = softmax over the non-target classes:

    KL(p^T || p^S) = KL(b^T || b^S) + (1 - p_t^T) * KL(p̂^T || p̂^S)
        KD         =      TCKD      + (1 - p_t^T) *      NCKD

DKD drops the coupling weight (1 - p_t^T) and weights the two terms freely: α·TCKD + β·NCKD.
Everything is computed from log-softmaxes in float32, so it stays finite where the official code takes
`log` of probabilities that have underflowed (T = 1, logit margins of ~200, fp16/bf16 logits).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import DKDError
from .methods import METHODS, _dkd_terms

__all__ = ["kd_loss", "dkd_loss", "dkd_terms", "check_logits"]


def check_logits(logits_student: Tensor, logits_teacher: Tensor, target: Tensor | None = None):
    """Raise `DKDError` unless the logits are (B, C) alike and the labels (B,) integers in [0, C)."""
    for name, z in (("logits_student", logits_student), ("logits_teacher", logits_teacher)):
        if not isinstance(z, Tensor) or z.ndim != 2 or not z.is_floating_point():
            got = f"{tuple(z.shape)} {z.dtype}" if isinstance(z, Tensor) else type(z).__name__
            raise DKDError(f"{name} must be a float tensor of shape (batch, classes); got {got}")
    if logits_student.shape != logits_teacher.shape:
        raise DKDError(
            f"student and teacher logits differ in shape: {tuple(logits_student.shape)} vs "
            f"{tuple(logits_teacher.shape)}; both models must predict the same classes"
        )
    if target is None:
        return
    batch, classes = logits_student.shape
    if not isinstance(target, Tensor) or target.dtype not in (torch.int64, torch.int32):
        got = target.dtype if isinstance(target, Tensor) else type(target).__name__
        raise DKDError(f"target must be an integer tensor of class indices (int64); got {got}")
    if target.shape != (batch,):
        raise DKDError(f"target must have shape ({batch},) to match the logits; got {tuple(target.shape)}")
    if batch and bool(((target < 0) | (target >= classes)).any()):  # one host sync
        raise DKDError(
            f"target holds labels outside [0, {classes}): min {int(target.min())}, "
            f"max {int(target.max())}; the logits have {classes} classes"
        )


def dkd_terms(logits_student: Tensor, logits_teacher: Tensor, target: Tensor, temperature: float):
    """Per-sample TCKD, NCKD (no T²) and the teacher's target probability p_t at temperature T.

    For every sample, ``kd = tckd + (1 - p_t) * nckd`` where ``kd`` is KL(p^T || p^S) at the same T.
    """
    check_logits(logits_student, logits_teacher, target)
    _check_temperature(temperature)
    return _dkd_terms(logits_student, logits_teacher.detach(), target, temperature)


def dkd_loss(
    logits_student: Tensor,
    logits_teacher: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """DKD as in the official code: T² · (α · mean TCKD + β · mean NCKD) over the batch."""
    check_logits(logits_student, logits_teacher, target)
    _check_temperature(temperature)
    _check_weight("alpha", alpha)
    _check_weight("beta", beta)
    return _dkd_loss(logits_student, logits_teacher, target, alpha, beta, temperature)


def _dkd_loss(zs, zt, target, alpha, beta, temperature) -> Tensor:
    # One source: the method registry's DKD term (what `fit` trains with), for one student.
    return _single("dkd", zs, zt, target, temperature=temperature, alpha=alpha, beta=beta)


def kd_loss(logits_student: Tensor, logits_teacher: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton KD: T² · KL(softmax(z_t/T) || softmax(z_s/T)), averaged over the batch.

    The T² keeps the gradient's size independent of T (the soft-target gradient scales as 1/T²).
    """
    check_logits(logits_student, logits_teacher)
    _check_temperature(temperature)
    return _kd_loss(logits_student, logits_teacher, temperature)


def _kd_loss(zs: Tensor, zt: Tensor, temperature: float) -> Tensor:
    # One source: the method registry's KD term (what `fit` trains with), for one student.
    labels = torch.zeros(zs.shape[0], dtype=torch.long, device=zs.device)  # KD reads no labels
    return _single("kd", zs, zt, labels, temperature=temperature, kd_weight=1.0)


def _single(method: str, zs: Tensor, zt: Tensor, target: Tensor, **settings: float) -> Tensor:
    """`methods.METHODS[method]`'s distillation term, the teacher detached."""
    hp = {name: float(value) for name, value in settings.items()}
    return METHODS[method].distill(zs.float(), zt.detach().float(), target, hp)


def _check_temperature(temperature: float) -> None:
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise DKDError(f"temperature must be a number > 0 (the paper uses 4); got {temperature!r}")


def _check_weight(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not value >= 0:
        raise DKDError(f"{name} must be a number >= 0 (0 switches its term off); got {value!r}")

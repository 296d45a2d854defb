"""Serves the chapters: the DKD decomposition sample by sample (KD = TCKD + (1 − p_t)·NCKD), its
gradients, dark knowledge, all with `dkdlib.losses`; and the official code's loss, to show where it breaks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import Data, DeviceLoader
from .losses import dkd_terms
from .train import predict


def outputs(
    model: nn.Module, data: Data, split: str = "test", batch_size: int = 1000
) -> tuple[Tensor, Tensor]:
    """Logits (float32, on the CPU) and labels of `model` on one split ("train", "val", "test") of `data`,
    normalised as the model was trained (`model.normalization`, which `fit` and `load_model` set), else
    with the dataset's statistics."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be one of train, val, test; got {split!r}")
    x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    device = next(model.parameters()).device
    mean, std = getattr(model, "normalization", (data.mean, data.std))
    loader = DeviceLoader(x, y, batch_size, mean=mean, std=std, train=False, device=device)
    logits, labels = predict(model, loader)
    return logits.cpu(), labels.cpu()


def decompose(logits_s: Tensor, logits_t: Tensor, y: Tensor, temperature: float = 4.0) -> pd.DataFrame:
    """One row per sample: KD (full KL, computed independently), TCKD, NCKD, p_t and KD's weight 1 − p_t."""
    tckd, nckd, pt = dkd_terms(logits_s, logits_t, y, temperature)
    log_ps = F.log_softmax(logits_s.float() / temperature, dim=1)
    log_pt = F.log_softmax(logits_t.float() / temperature, dim=1)
    kd = F.kl_div(log_ps, log_pt, reduction="none", log_target=True).sum(1)
    ps_t = log_ps.gather(1, y.long()[:, None]).squeeze(1).exp()
    columns = {"p_t": pt, "p_t_student": ps_t, "kd": kd, "tckd": tckd, "nckd": nckd}
    frame = pd.DataFrame(
        {"label": y.cpu().numpy()} | {k: v.detach().double().cpu().numpy() for k, v in columns.items()}
    )
    frame["weight"] = 1.0 - frame["p_t"]
    frame["kd_nckd"] = frame["weight"] * frame["nckd"]  # the part of KD that is NCKD
    return frame


def identity_error(frame: pd.DataFrame) -> float:
    """max over samples of |KD − (TCKD + (1 − p_t)·NCKD)| for a `decompose` frame."""
    return float((frame["kd"] - (frame["tckd"] + frame["weight"] * frame["nckd"])).abs().max())


def _nontarget_probs(logits: Tensor, y: Tensor, temperature: float) -> Tensor:
    """p̂: softmax over the non-target classes (the target column is 0)."""
    mask = F.one_hot(y.long(), logits.shape[1]).bool()
    return torch.softmax((logits.float() / temperature).masked_fill(mask, float("-inf")), dim=1)


def dark_knowledge(
    logits: Tensor, y: Tensor, temperature: float = 4.0, num_classes: int | None = None
) -> np.ndarray:
    """C×C matrix: row c = mean non-target distribution p̂ over images of true class c (diagonal NaN)."""
    k = num_classes or logits.shape[1]
    q = _nontarget_probs(logits, y, temperature).double()
    matrix = torch.full((k, k), float("nan"), dtype=torch.float64)
    for c in range(k):
        rows = q[y == c]
        if len(rows):
            matrix[c] = rows.mean(0)
    matrix.fill_diagonal_(float("nan"))
    return matrix.numpy()


def top_pairs(matrix: np.ndarray, classes: Sequence[str], k: int = 5) -> pd.DataFrame:
    """The k largest entries of a dark-knowledge matrix: (true class, non-target class, mean p̂)."""
    rows = [
        {"true class": classes[i], "non-target class": classes[j], "mean p̂": float(matrix[i, j])}
        for i in range(len(classes))
        for j in range(len(classes))
        if i != j and np.isfinite(matrix[i, j])
    ]
    frame = pd.DataFrame(rows, columns=["true class", "non-target class", "mean p̂"])
    return frame.sort_values("mean p̂", ascending=False, kind="stable").head(k).reset_index(drop=True)


def grad_check(logits_s: Tensor, logits_t: Tensor, y: Tensor, temperature: float = 4.0) -> dict[str, Tensor]:
    """Autograd gradients of Σ TCKD and Σ NCKD w.r.t. the student logits, and their closed forms."""
    zs = logits_s.detach().float().clone().requires_grad_(True)
    tckd, nckd, pt_teacher = dkd_terms(zs, logits_t.detach().float(), y, temperature)
    (g_tckd,) = torch.autograd.grad(tckd.sum(), zs, retain_graph=True)
    (g_nckd,) = torch.autograd.grad(nckd.sum(), zs)
    mask = F.one_hot(y.long(), zs.shape[1]).bool()
    with torch.no_grad():
        pt_student = torch.softmax(zs / temperature, dim=1)[mask]
        q_s = _nontarget_probs(zs, y, temperature)
        q_t = _nontarget_probs(logits_t, y, temperature)
        diff = (pt_student - pt_teacher)[:, None]
        tckd_formula = torch.where(mask, diff, -q_s * diff) / temperature
        nckd_formula = (q_s - q_t) / temperature  # 0 on the target: both p̂ are 0 there
    return dict(
        tckd=g_tckd, nckd=g_nckd, tckd_formula=tckd_formula, nckd_formula=nckd_formula, target_mask=mask
    )


def official_dkd_loss(
    logits_student: Tensor,
    logits_teacher: Tensor,
    target: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> Tensor:
    """The official (mdistiller) DKD loss, transcribed for comparison only: it takes log of probabilities."""
    gt_mask = F.one_hot(target, logits_student.shape[1]).bool()
    other_mask = ~gt_mask
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)

    def cat_mask(p: Tensor) -> Tensor:  # [p_t, p_\t]
        return torch.cat([(p * gt_mask).sum(1, keepdim=True), (p * other_mask).sum(1, keepdim=True)], dim=1)

    pred_student, pred_teacher = cat_mask(pred_student), cat_mask(pred_teacher)
    log_pred_student = torch.log(pred_student)  # log(0) = -inf once p_\t underflows
    tckd = F.kl_div(log_pred_student, pred_teacher, reduction="sum") * temperature**2 / target.shape[0]
    pred_teacher_part2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
    log_pred_student_part2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
    nckd = (
        F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum")
        * temperature**2
        / target.shape[0]
    )
    return alpha * tckd + beta * nckd


def agreement(logits_a: Tensor, logits_b: Tensor) -> float:
    """Fraction of samples on which two models predict the same class."""
    return float((logits_a.argmax(1) == logits_b.argmax(1)).float().mean())

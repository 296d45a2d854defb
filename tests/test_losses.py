"""KD and DKD losses: the paper's identity, an independent reference, gradients, extremes."""

import pytest
import torch
import torch.nn.functional as F

from dkdlib import DKDError, dkd_loss, dkd_terms, kd_loss


def logits(n=64, c=10, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, c, generator=g, dtype=torch.float64) * scale,
        torch.randn(n, c, generator=g, dtype=torch.float64) * scale,
        torch.randint(0, c, (n,), generator=g),
    )


def reference_dkd(zs, zt, y, alpha, beta, T):
    """The official mdistiller formulation, written out in probability space (float64)."""
    gt = F.one_hot(y, zs.shape[1]).bool()
    ps, pt = F.softmax(zs / T, 1), F.softmax(zt / T, 1)
    bs = torch.stack([(ps * gt).sum(1), (ps * ~gt).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * ~gt).sum(1)], 1)
    tckd = (bt * (bt.log() - bs.log())).sum(1).mean() * T**2
    log_qs = F.log_softmax(zs / T - 1000.0 * gt, 1)  # the official "-1000 on the target" trick
    qt = F.softmax(zt / T - 1000.0 * gt, 1)
    nckd = (qt * (qt.clamp_min(1e-300).log() - log_qs)).sum(1).mean() * T**2
    return alpha * tckd + beta * nckd


def reference_kd(zs, zt, T):
    pt = F.softmax(zt / T, 1)
    return (pt * (pt.log() - F.log_softmax(zs / T, 1))).sum(1).mean() * T**2


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 8.0])
def test_kd_equals_tckd_plus_weighted_nckd_per_sample(T):
    zs, zt, y = logits()
    tckd, nckd, p_t = dkd_terms(zs.float(), zt.float(), y, T)
    kd = (F.softmax(zt / T, 1) * (F.log_softmax(zt / T, 1) - F.log_softmax(zs / T, 1))).sum(1)
    assert torch.allclose(tckd + (1 - p_t) * nckd, kd.float(), atol=2e-6)
    assert torch.allclose(p_t, F.softmax(zt / T, 1).gather(1, y[:, None]).squeeze(1).float(), atol=1e-6)


@pytest.mark.parametrize("alpha,beta,T", [(1, 8, 4), (1, 2, 4), (0.5, 0, 2), (0, 4, 1), (2, 6, 8)])
def test_dkd_matches_independent_reference(alpha, beta, T):
    zs, zt, y = logits(seed=1)
    ours = dkd_loss(zs.float(), zt.float(), y, alpha, beta, T)
    assert ours.item() == pytest.approx(reference_dkd(zs, zt, y, alpha, beta, T).item(), rel=1e-5, abs=1e-6)


def test_kd_matches_reference_and_torch_kldiv():
    zs, zt, y = logits(seed=2)
    ours = kd_loss(zs.float(), zt.float(), 4.0)
    assert ours.item() == pytest.approx(reference_kd(zs, zt, 4.0).item(), rel=1e-5)
    torch_kl = F.kl_div(F.log_softmax(zs / 4, 1), F.softmax(zt / 4, 1), reduction="batchmean") * 16
    assert ours.item() == pytest.approx(torch_kl.item(), rel=1e-5)


def test_dkd_with_alpha_beta_one_is_not_kd():
    zs, zt, y = logits(seed=3)
    assert (
        abs(dkd_loss(zs.float(), zt.float(), y, 1, 1, 4).item() - kd_loss(zs.float(), zt.float(), 4).item())
        > 1e-3
    )


def test_identical_logits_give_zero_loss():
    zs, _, y = logits(seed=4)
    assert dkd_loss(zs.float(), zs.float(), y, 1, 8, 4).abs().item() < 1e-6
    assert kd_loss(zs.float(), zs.float(), 4).abs().item() < 1e-6


def test_gradients_tckd_moves_target_mass_nckd_spares_target():
    zs, zt, y = logits(n=16, seed=5)
    T = 4.0
    zs = zs.float().requires_grad_()
    zt = zt.float()
    tckd, nckd, p_t_teacher = dkd_terms(zs, zt, y, T)
    (g_nckd,) = torch.autograd.grad(nckd.sum(), zs, retain_graph=True)
    (g_tckd,) = torch.autograd.grad(tckd.sum(), zs)
    target = F.one_hot(y, 10).bool()
    ps = F.softmax(zs.detach() / T, 1)
    p_t_student = ps[target]
    # NCKD: exactly no gradient on the target logit; (p̂_S − p̂_T)/T on the others.
    assert g_nckd[target].abs().max().item() == 0.0
    q = lambda z: F.softmax((z / T).masked_fill(target, float("-inf")), 1)  # noqa: E731
    assert torch.allclose(g_nckd[~target], ((q(zs.detach()) - q(zt)) / T)[~target], atol=1e-6)
    # TCKD: (p_t^S − p_t^T)/T on the target and −p̂_i^S (p_t^S − p_t^T)/T on the others.
    delta = (p_t_student - p_t_teacher) / T
    assert torch.allclose(g_tckd[target], delta, atol=1e-6)
    assert torch.allclose(g_tckd[~target], (-q(zs.detach()) * delta[:, None])[~target], atol=1e-6)
    # Both gradients sum to zero over classes (softmax shift invariance).
    assert g_tckd.sum(1).abs().max() < 1e-6 and g_nckd.sum(1).abs().max() < 1e-6


def test_nckd_is_zero_with_two_classes():
    zs, zt, y = logits(c=2, seed=6)
    _, nckd, _ = dkd_terms(zs.float(), zt.float(), y, 4.0)
    assert nckd.abs().max().item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_finite_at_margin_200_and_T_1_where_the_official_form_is_nan(dtype):
    y = torch.zeros(8, dtype=torch.long)
    zs = torch.zeros(8, 10)
    zs[:, 0] = 200.0
    zt = zs.clone()
    zt[:, 3] = 5.0
    zs, zt = zs.to(dtype), zt.to(dtype)
    loss = dkd_loss(zs, zt, y, 1.0, 8.0, 1.0)
    assert torch.isfinite(loss)
    assert torch.isfinite(kd_loss(zs, zt, 1.0))
    # The probability-space form takes log(0) on the non-target mass and gives NaN.
    assert torch.isnan(reference_dkd(zs.float(), zt.float(), y, 1.0, 8.0, 1.0))
    zs = zs.float().requires_grad_()
    dkd_loss(zs, zt, y, 1.0, 8.0, 1.0).backward()
    assert torch.isfinite(zs.grad).all()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda zs, zt, y: dkd_loss(zs, zt[:, :5], y), "differ in shape"),
        (lambda zs, zt, y: dkd_loss(zs[0], zt[0], y), "shape \\(batch, classes\\)"),
        (lambda zs, zt, y: dkd_loss(zs, zt, y.float()), "integer tensor"),
        (lambda zs, zt, y: dkd_loss(zs, zt, y + 10), "outside \\[0, 10\\)"),
        (lambda zs, zt, y: dkd_loss(zs, zt, y[:3]), "must have shape"),
        (lambda zs, zt, y: dkd_loss(zs, zt, y, alpha=-1), "alpha must be"),
        (lambda zs, zt, y: dkd_loss(zs, zt, y, beta=-0.5), "beta must be"),
        (lambda zs, zt, y: dkd_loss(zs, zt, y, temperature=0), "temperature must be"),
        (lambda zs, zt, y: kd_loss(zs, zt, temperature=-1), "temperature must be"),
        (lambda zs, zt, y: dkd_terms(zs, zt.long(), y, 4.0), "float tensor"),
    ],
)
def test_bad_inputs_raise_one_clear_error(call, message):
    zs, zt, y = logits(n=8)
    with pytest.raises(DKDError, match=message):
        call(zs.float(), zt.float(), y)

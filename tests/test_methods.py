"""The method registry: every entry trains through every path, and a new entry (logit-standardised
KD/DKD) is one entry plus these tests."""

import pytest
import torch

from dkdlib import Config, DKDError, dkd_loss, fit, kd_loss
from dkdlib.methods import METHODS, distills, standardize, student_loss


def batch(seed=0, n=32, c=10):
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(n, c, generator=g) * 3
    zt = torch.randn(n, c, generator=g) * 5
    y = torch.randint(0, c, (n,), generator=g)
    return zs, zt, y


def test_every_method_is_an_entry_and_only_ce_needs_no_teacher():
    assert set(METHODS) >= {"ce", "kd", "dkd", "tckd", "nckd", "kd_ls", "dkd_ls"}
    assert [m for m in METHODS if not distills(m)] == ["ce"]
    with pytest.raises(DKDError, match="unknown method 'mse'.*dkd_ls"):
        Config(method="mse").validate()


def test_standardize_z_scores_each_sample():
    z = torch.randn(5, 10) * 7 + 3
    s = standardize(z)
    assert torch.allclose(s.mean(1), torch.zeros(5), atol=1e-5)
    assert torch.allclose(s.std(1), torch.ones(5), atol=1e-5)


@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_the_registry_entries_fit_runs_equal_the_losses_the_chapters_show(method):
    """Chapters 3 and 4 print losses.kd_loss / dkd_loss and the registry's _kd / _dkd that fit runs."""
    zs, zt, y = batch()
    cfg = Config(method=method, teacher="t.pt", ce_weight=0.0, kd_weight=0.9, temperature=2.0, alpha=0.5,
                 beta=4.0)  # fmt: skip
    ours = student_loss(cfg)(zs, zt, y, torch.ones(()))
    want = 0.9 * kd_loss(zs, zt, 2.0) if method == "kd" else dkd_loss(zs, zt, y, 0.5, 4.0, 2.0)
    assert torch.allclose(ours, want, rtol=1e-5)


@pytest.mark.parametrize("method", ["kd_ls", "dkd_ls"])
def test_logit_standardised_losses_are_the_plain_ones_on_z_scored_logits(method):
    zs, zt, y = batch()
    cfg = Config(method=method, teacher="t.pt", ce_weight=0.0, kd_weight=0.9, temperature=2.0)
    ours = student_loss(cfg)(zs, zt, y, torch.ones(()))
    s, t = standardize(zs), standardize(zt)
    want = 0.9 * kd_loss(s, t, 2.0) if method == "kd_ls" else dkd_loss(s, t, y, 1.0, 8.0, 2.0)
    assert torch.allclose(ours, want, rtol=1e-5)


@pytest.mark.parametrize("method", ["kd_ls", "dkd_ls"])
def test_logit_standardisation_ignores_each_samples_logit_scale_and_shift(method):
    """The point of the method: only the shape of the logits is distilled, not their range."""
    zs, zt, y = batch(1)
    cfg = Config(method=method, teacher="t.pt", ce_weight=0.0)
    loss = student_loss(cfg)
    scale, shift = torch.rand(32, 1) * 5 + 0.5, torch.randn(32, 1) * 10
    base = loss(zs, zt, y, torch.ones(()))
    assert torch.allclose(loss(zs * scale + shift, zt * 3 - 1, y, torch.ones(())), base, rtol=1e-4)
    plain = student_loss(Config(method=method.removesuffix("_ls"), teacher="t.pt", ce_weight=0.0))
    one = torch.ones(())
    assert not torch.allclose(plain(zs * scale + shift, zt, y, one), plain(zs, zt, y, one))


def test_a_logit_standardised_student_learns(tmp_path, tiny_data):
    base = dict(model="resnet8", dataset="synthetic", batch_size=32, val_size=200, train_size=600,
                test_size=200, warmup=1, device="cpu", out_dir=str(tmp_path))  # fmt: skip
    teacher = fit(Config(**base, epochs=3, lr=0.1, name="t"), data=tiny_data, progress=False)
    students = [Config(**base, epochs=2, lr=0.05, method=m, teacher=str(teacher.checkpoint), temperature=2.0)
                for m in ("dkd_ls", "kd_ls")]  # fmt: skip
    alone = fit(students[0], data=tiny_data, progress=False, save=False)
    assert alone.metrics["test_acc"] > 0.3  # 10 classes: chance is 0.1

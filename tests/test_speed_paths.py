"""The fast paths: view ids, the exact teacher-logit cache, the graph-ready step.

Each must train the same maths as the plain loop; the GPU-only part (CUDA-graph capture) is checked
against eager training when a GPU is present.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

import dkdlib.cache as cache_mod
from dkdlib import Config, DKDError, fit
from dkdlib.cache import compute_teacher_logits, teacher_logit_cache
from dkdlib.data import (
    CENTRE_VIEW,
    N_VIEWS,
    PAD,
    DeviceLoader,
    crop_flip,
    synthetic,
    view_index,
    view_offsets,
)
from dkdlib.losses import dkd_loss, kd_loss
from dkdlib.methods import student_loss
from dkdlib.models import create_model


def cfg(tmp_path, **kw):
    base = dict(model="resnet8", dataset="synthetic", epochs=2, batch_size=32, lr=0.05, val_size=200,
                train_size=320, test_size=200, warmup=2, out_dir=str(tmp_path), device="cpu")  # fmt: skip
    return Config(**{**base, **kw})


@pytest.fixture(scope="module")
def data():
    from dkdlib.data import load_data

    return load_data("synthetic", val_size=200, train_size=320, test_size=200)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, data):
    return fit(cfg(tmp_path_factory.mktemp("t"), epochs=2, lr=0.1, name="t"), data=data, progress=False)


def test_view_ids_cover_every_crop_and_flip_once():
    dy, dx, flip = torch.meshgrid(
        torch.arange(2 * PAD + 1), torch.arange(2 * PAD + 1), torch.arange(2), indexing="ij"
    )
    views = view_index(dy.flatten(), dx.flatten(), flip.flatten())
    assert N_VIEWS == 162 and sorted(views.tolist()) == list(range(162))
    back = view_offsets(views)
    assert all(torch.equal(a, b.flatten()) for a, b in zip(back, (dy, dx, flip), strict=True))
    assert [int(t) for t in view_offsets(torch.tensor(CENTRE_VIEW))] == [PAD, PAD, 0]


def test_epoch_plan_batches_are_the_loaders_batches():
    d = synthetic(n_train=100, n_test=10)
    ld = DeviceLoader(d.x_train, d.y_train, 16, mean=d.mean, std=d.std, seed=3)
    ld.set_epoch(2)
    idx, view = ld.epoch_batches(2)
    assert idx.shape == view.shape == (6, 16)
    order, dy, dx, flip = ld.epoch_plan(2)
    assert torch.equal(idx.flatten(), order[:96])
    for s, (x, y) in enumerate(ld):
        xb, yb = ld.batch(idx[s], view[s])
        assert torch.equal(x, xb) and torch.equal(y, yb)
        i = idx[s]  # the view ids encode exactly the plan's own crop offsets and flips
        raw = torch.from_numpy(np.ascontiguousarray(d.x_train[i.numpy()])).permute(0, 3, 1, 2)
        expected = (crop_flip(raw, dy[i], dx[i], flip[i]).float() - ld._mean255) / ld._std255
        assert torch.equal(x, expected.contiguous())


def test_cached_logits_equal_the_live_teacher_on_the_same_views(teacher, data):
    model = teacher.model
    ld = DeviceLoader(data.x_train[:40], data.y_train[:40], 8, mean=data.mean, std=data.std)
    cache = compute_teacher_logits(model, ld, batch_size=64)
    assert cache.shape == (40, N_VIEWS, 10) and cache.dtype == torch.float16
    g = torch.Generator().manual_seed(0)
    idx, view = torch.randint(0, 40, (64,), generator=g), torch.randint(0, N_VIEWS, (64,), generator=g)
    with torch.no_grad():
        live = model(ld.batch(idx, view)[0])
    assert torch.allclose(cache[idx, view].float(), live, rtol=1e-3, atol=2e-3)  # fp16 storage
    # The views really differ: a cache of one view per image would be wrong for most of them.
    spread = (cache.float() - cache[:, CENTRE_VIEW : CENTRE_VIEW + 1].float()).abs().amax(-1)
    assert (spread > 1e-2).float().mean() > 0.9


def test_cache_is_saved_keyed_and_reloaded(tmp_path, teacher, data, monkeypatch):
    ld = DeviceLoader(data.x_train[:16], data.y_train[:16], 8, mean=data.mean, std=data.std)
    first = teacher_logit_cache(teacher.model, ld, data.x_train[:16], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("teacher-logits-*.pt"))) == 1

    def fail(*a, **k):
        raise AssertionError("recomputed a cached teacher")

    monkeypatch.setattr(cache_mod, "compute_teacher_logits", fail)
    assert torch.equal(teacher_logit_cache(teacher.model, ld, data.x_train[:16], cache_dir=tmp_path), first)
    other = create_model("resnet8", 10).eval()  # other weights: another key, so a new cache
    with pytest.raises(AssertionError, match="recomputed"):
        teacher_logit_cache(other, ld, data.x_train[:16], cache_dir=tmp_path)
    flipped = data.x_train[:16].copy()
    flipped[0, 0, 0, 0] ^= 1  # one pixel of other data: another key
    with pytest.raises(AssertionError, match="recomputed"):
        teacher_logit_cache(teacher.model, ld, flipped, cache_dir=tmp_path)


def test_training_from_the_cache_matches_the_live_teacher(tmp_path, teacher, data):
    c = cfg(tmp_path, method="dkd", teacher=str(teacher.checkpoint), epochs=2)
    live = fit(c, data=data, progress=False, save=False)
    cached = fit(replace(c, cache_teacher=True), data=data, progress=False, save=True)
    assert list((tmp_path / "cache").glob("teacher-logits-*.pt"))
    for a, b in zip(live.history, cached.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=2e-2)
    assert abs(live.metrics["test_acc"] - cached.metrics["test_acc"]) < 0.05


def test_graph_needs_cuda_and_falls_back_with_a_warning(tmp_path, data):
    from dkdlib.step import TrainStep

    ld = DeviceLoader(data.x_train, data.y_train, 32, mean=data.mean, std=data.std)
    model = create_model("resnet8", 10)
    with pytest.raises(DKDError, match="needs a CUDA device"):
        TrainStep(
            student_loss(cfg(tmp_path)), model, ld, torch.optim.SGD(model.parameters(), 0.1), graph=True
        )
    if not torch.cuda.is_available():
        with pytest.warns(UserWarning, match="graph=True needs CUDA"):
            fit(cfg(tmp_path, epochs=1, graph=True), data=data, progress=False, save=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_step_trains_like_the_eager_step(tmp_path, teacher, data):
    c = cfg(tmp_path, method="dkd", teacher=str(teacher.checkpoint), epochs=2, device="cuda", amp=False)
    eager = fit(c, data=data, progress=False, save=False)
    graphed = fit(replace(c, graph=True), data=data, progress=False, save=False)
    for a, b in zip(eager.history, graphed.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-2)
    assert abs(eager.metrics["test_acc"] - graphed.metrics["test_acc"]) < 0.05


METHODS = [
    dict(method="ce"),
    dict(method="kd", ce_weight=0.1, kd_weight=0.9, warmup=0),
    dict(method="dkd", alpha=1.0, beta=8.0),
    dict(method="tckd", alpha=0.5, temperature=2.0),
    dict(method="nckd", beta=2.0, warmup=3),
]


def test_the_training_loss_is_the_public_losses_method_by_method(tmp_path):
    configs = [cfg(tmp_path, teacher="t.pt", **m) for m in METHODS]
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(5, 16, 10, generator=g) * 3, torch.randn(16, 10, generator=g) * 3
    y = torch.randint(0, 10, (16,), generator=g)
    weight = torch.tensor([0.0, 1.0, 0.5, 0.5, 1 / 3])
    for i, c in enumerate(configs):
        ours = student_loss(c)(zs[i], zt, y, weight[i])
        assert torch.allclose(ours, own_loss(c, zs[i], zt, y, weight[i]), rtol=1e-5, atol=1e-6), c.method


def own_loss(c, zs, zt, y, weight):
    """A student's training loss from the public loss functions, method by method."""
    ce = torch.nn.functional.cross_entropy(zs, y)
    if c.method == "ce":
        return ce
    t = c.setting("temperature")  # the config's, or the method's default
    if c.method == "kd":
        distill = c.setting("kd_weight") * kd_loss(zs, zt, t)
    else:
        alpha = 0.0 if c.method == "nckd" else c.setting("alpha")
        beta = 0.0 if c.method == "tckd" else c.setting("beta")
        distill = dkd_loss(zs, zt, y, alpha, beta, t)
    return c.setting("ce_weight") * ce + weight * distill


def test_data_seed_is_part_of_a_runs_identity_only_when_set(tmp_path):
    c = cfg(tmp_path)
    assert "data_seed" not in c.identity()  # runs named before the field existed keep their names
    assert replace(c, data_seed=0).run_name() != c.run_name()
    assert replace(c, graph=True, cache_teacher=True).run_name() == c.run_name()  # speed, not maths
    with pytest.raises(DKDError, match="data_seed must be an integer"):
        replace(c, data_seed="0").validate()


def test_a_graphed_resume_keeps_the_learning_rate_a_device_tensor():
    from dkdlib.train import load_optimizer_state, make_optimizer

    model = create_model("resnet8", 10)
    c = Config(optimizer="adam", lr=1e-3)
    saved = make_optimizer(c, model).state_dict()  # an eager run saved a float rate
    optimizer = make_optimizer(c, model, graph=True)
    assert isinstance(optimizer.param_groups[0]["lr"], torch.Tensor)
    load_optimizer_state(optimizer, saved, graph=True)
    assert all(isinstance(g["lr"], torch.Tensor) for g in optimizer.param_groups)
    assert float(optimizer.param_groups[0]["lr"]) == pytest.approx(1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    optimizer.step()  # no gradients: a no-op, in the order PyTorch expects
    scheduler.step()  # the scheduler fills the tensor in place: what a captured graph reads
    assert float(optimizer.param_groups[0]["lr"]) == pytest.approx(5e-4)

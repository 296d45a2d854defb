"""The GPU paths, checked on a CPU before a GPU ever runs them.

GPU time is rare and brief here, and a learner's first GPU is often Colab's T4: the precision choice,
the fp16 + GradScaler path, resuming across eager/graph modes, a capture that fails, and the host-sync
freedom a CUDA graph needs are all decided by code that runs on any device, so they are tested here.
"""

import math
import warnings
from dataclasses import replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import dkdlib
import dkdlib.train as train_mod
from dkdlib import Config, DKDError, fit
from dkdlib.checkpoint import load_checkpoint
from dkdlib.data import N_VIEWS, DeviceLoader, load_data
from dkdlib.methods import student_loss
from dkdlib.models import create_model
from dkdlib.step import TrainStep
from dkdlib.train import load_optimizer_state, make_optimizer, use_graph


def cfg(tmp_path, **kw):
    base = dict(model="resnet8", dataset="synthetic", epochs=2, batch_size=32, lr=0.05, val_size=100,
                train_size=256, test_size=100, warmup=2, out_dir=str(tmp_path), device="cpu")  # fmt: skip
    return Config(**{**base, **kw})


@pytest.fixture(scope="module")
def data():
    return load_data("synthetic", val_size=100, train_size=256, test_size=100)


def fake_gpu(monkeypatch, capability):
    """Pretend a CUDA GPU of this compute capability is the device asked about."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what a T4 answers


# 1. Precision on the T4 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "capability, dtype",
    [((7, 5), torch.float16), ((7, 0), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
)
def test_amp_dtype_follows_the_compute_capability_not_is_bf16_supported(monkeypatch, capability, dtype):
    fake_gpu(monkeypatch, capability)
    assert dkdlib.amp_dtype(torch.device("cuda")) is dtype
    assert dkdlib.amp_dtype("cuda:0") is dtype
    assert dkdlib.amp_dtype("cuda", enabled=False) is None


def test_amp_dtype_is_none_off_cuda():
    assert dkdlib.amp_dtype("cpu") is None and dkdlib.amp_dtype(torch.device("cpu")) is None


def test_no_cuda_graph_where_training_needs_loss_scaling(monkeypatch):
    fake_gpu(monkeypatch, (7, 5))  # a T4: fp16 + GradScaler, which a graph cannot capture
    with pytest.warns(UserWarning, match="fp16"):
        assert use_graph(Config(graph=True), torch.device("cuda")) is False
    assert use_graph(Config(graph=True, amp=False), torch.device("cuda")) is True  # fp32 graphs work
    fake_gpu(monkeypatch, (8, 6))
    assert use_graph(Config(graph=True), torch.device("cuda")) is True


# 2. The fp16 + GradScaler path -----------------------------------------------------------------------


def test_fp16_with_a_grad_scaler_trains_and_the_scale_moves(data):
    torch.manual_seed(0)
    model = create_model("resnet8", 10)
    loader = DeviceLoader(data.x_train, data.y_train, 8, mean=data.mean, std=data.std, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    before = [p.detach().clone() for p in model.parameters()]
    step = TrainStep(student_loss(Config()), model, loader, optimizer, scaler, amp_dtype=torch.float16)
    step.start_epoch(1, 1.0)
    scales = []
    for _ in range(3):
        step()
        scales.append(scaler.get_scale())
    assert scaler.is_enabled()
    assert len(set(scales)) > 1, f"the loss scale never moved: {scales}"
    assert math.isfinite(step.epoch_stats()["train_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(DKDError, match="loss scaling"):
        TrainStep(
            student_loss(Config()), model, loader, optimizer, scaler, amp_dtype=torch.float16, graph=True
        )


def test_an_fp16_run_resumes_from_a_checkpoint_written_without_a_scaler(tmp_path, monkeypatch):
    c = cfg(tmp_path, epochs=2, batch_size=16, train_size=48, val_size=16, test_size=16)
    data = load_data("synthetic", val_size=16, train_size=48, test_size=16)  # fp16 on a CPU is slow
    original = TrainStep.start_epoch

    def interrupt_in_epoch_2(self, epoch, weight):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch, weight)

    monkeypatch.setattr(TrainStep, "start_epoch", interrupt_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        fit(c, data=data, progress=False)  # fp32 on the CPU: no loss scaling
    state = load_checkpoint(c.checkpoint_path)
    assert state["epoch"] == 1 and state["scaler"] == {}
    monkeypatch.setattr(TrainStep, "start_epoch", original)
    # Resume on "a T4": fp16 autocast with an enabled GradScaler (on the CPU, which supports both).
    monkeypatch.setattr(train_mod, "amp_dtype", lambda device, enabled=True: torch.float16)
    resumed = fit(c, data=data, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert load_checkpoint(c.checkpoint_path)["scaler"]["scale"] > 0  # the scaler ran and was saved


# 3. Resume across modes ------------------------------------------------------------------------------


def adam_state_after_one_step(graph: bool) -> dict:
    torch.manual_seed(0)
    model = create_model("resnet8", 10)
    optimizer = make_optimizer(Config(optimizer="adam", lr=1e-3, weight_decay=0.0), model)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        group["capturable"] = graph
    return state


def test_an_eager_adam_checkpoint_resumed_in_graph_mode_stays_capturable():
    model = create_model("resnet8", 10)
    c = Config(optimizer="adam", lr=1e-3, weight_decay=0.0)
    optimizer = make_optimizer(c, model, graph=True)
    lr = optimizer.param_groups[0]["lr"]
    assert all(g["capturable"] for g in optimizer.param_groups)
    load_optimizer_state(optimizer, adam_state_after_one_step(graph=False), graph=True)
    assert all(g["capturable"] for g in optimizer.param_groups), "load_state_dict dropped capturable"
    assert optimizer.param_groups[0]["lr"] is lr, "the graph's learning-rate tensor was replaced"
    steps = [s["step"] for s in optimizer.state.values()]
    assert steps and all(t.dtype == torch.float32 and t.device == p.device for t, p in
                         zip(steps, optimizer.state.keys(), strict=True))  # fmt: skip
    # And the other way: a graphed checkpoint resumed eagerly is not made capturable.
    eager = make_optimizer(c, create_model("resnet8", 10))
    load_optimizer_state(eager, adam_state_after_one_step(graph=True), graph=False)
    assert not any(g["capturable"] for g in eager.param_groups)
    assert all(isinstance(g["lr"], float) for g in eager.param_groups)


def test_the_learning_rate_tensor_keeps_its_identity_across_scheduler_steps_and_loads():
    model = create_model("resnet8", 10)
    c = Config(optimizer="sgd", lr=0.1)
    optimizer = make_optimizer(c, model, graph=True)
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert all(isinstance(t, torch.Tensor) for t in lrs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == lrs and all(
        g["lr"] is t for g, t in zip(optimizer.param_groups, lrs, strict=True)
    )
    assert float(lrs[0]) == pytest.approx(0.1 * 0.5**3)
    saved = make_optimizer(c, create_model("resnet8", 10)).state_dict()  # a float rate of 0.1
    load_optimizer_state(optimizer, saved, graph=True)
    assert all(g["lr"] is t for g, t in zip(optimizer.param_groups, lrs, strict=True))
    assert float(lrs[0]) == pytest.approx(0.1)


# 4. A capture that raises ----------------------------------------------------------------------------


def test_a_failed_capture_goes_on_eagerly_at_the_same_step_and_lr(data, monkeypatch):
    """The same training with a capture that raises equals plain eager training, with one warning."""

    def trainer(graph: bool):
        torch.manual_seed(0)
        model = create_model("resnet8", 10)
        loader = DeviceLoader(data.x_train, data.y_train, 32, mean=data.mean, std=data.std, seed=0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / 16)
        step = TrainStep(student_loss(Config()), model, loader, optimizer, steps_before_capture=2)
        if graph:  # a CPU cannot capture; pretend, with warm-up steps that run eagerly
            step.graph = True

            def warm():
                step._step()
                step._eager_steps += 1

            monkeypatch.setattr(step, "_step_before_capture", warm)
            monkeypatch.setattr(
                step, "_capture", lambda: (_ for _ in ()).throw(RuntimeError("not permitted"))
            )
        step.start_epoch(1, 1.0)
        losses = []
        for _ in range(6):
            step()
            scheduler.step()
            losses.append(float(step.loss_sum))
        return step, model, optimizer, losses

    _, eager_model, eager_opt, eager_losses = trainer(graph=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step, model, optimizer, losses = trainer(graph=True)
    said = [w for w in caught if "CUDA-graph capture failed" in str(w.message)]
    assert len(said) == 1 and "not permitted" in str(said[0].message)
    assert step.graph is False and step.graph_error == "RuntimeError: not permitted"
    assert int(step.counter) == 6
    assert losses == eager_losses
    assert optimizer.param_groups[0]["lr"] == eager_opt.param_groups[0]["lr"]
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), eager_model.parameters(), strict=True))


# 5. A guard for the graphed step ---------------------------------------------------------------------

aten = torch.ops.aten
# Ops that make the host wait for the device, or copy Python data to it: a CUDA graph cannot hold them.
HOST_SYNCS = {
    aten._local_scalar_dense.default,  # .item(), float(t), int(t), bool(t)
    aten.is_nonzero.default,  # `if tensor:`
    aten.nonzero.default,  # data-dependent shapes (boolean-mask indexing, torch.where(cond))
    aten.masked_select.default,
    aten.equal.default,
    aten.lift_fresh.default,  # torch.tensor(python data): a host-to-device copy
    aten.lift_fresh_copy.default,
}
# Indexing with a boolean mask finds the mask's nonzeros inside the kernel, out of the mode's sight.
INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}


class NoHostSync(TorchDispatchMode):
    """Fails on a host sync, and records every tensor the step reads that it did not make itself."""

    def __init__(self):
        super().__init__()
        self.made: set[int] = set()
        self.read: set[tuple] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        indices = args[1] if func in INDEXING else ()
        masks = [i for i in indices if isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)]
        if func in HOST_SYNCS or masks:
            raise AssertionError(f"host sync inside the step: {func}")
        for t in torch.utils._pytree.tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor) and t.numel() and t.data_ptr() not in self.made:
                self.read.add((t.data_ptr(), tuple(t.shape), t.dtype))
        out = func(*args, **kwargs)
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.numel():
                self.made.add(t.data_ptr())
        return out


@pytest.fixture(scope="module")
def guard_teacher():
    torch.manual_seed(1)
    return create_model("resnet8", 10).requires_grad_(False).eval()


STUDENTS = {  # a student of each method
    "ce": dict(method="ce"),
    "kd": dict(method="kd", ce_weight=0.1, kd_weight=0.9),
    "dkd": dict(method="dkd", beta=8.0),
}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("teacher_kind", ["live", "cache"])
@pytest.mark.parametrize("method", ["ce", "kd", "dkd"])
def test_the_step_has_no_host_sync_and_reads_the_same_buffers(
    data, guard_teacher, method, teacher_kind, optimizer
):
    if method == "ce" and teacher_kind == "cache":
        pytest.skip("a CE student has no teacher")
    config = replace(Config(optimizer=optimizer, teacher="t.pt"), **STUDENTS[method])
    torch.manual_seed(config.seed)
    model = create_model("resnet8", 10)
    loader = DeviceLoader(data.x_train, data.y_train, 16, mean=data.mean, std=data.std, seed=0)
    # Built as a graphed run builds it (a learning-rate tensor), but fused rather than capturable: the
    # CPU has no capturable Adam, and both keep every step count on the device.
    lr = torch.tensor(config.lr)
    groups = [{"params": [p for p in model.parameters() if p.ndim > 1]},
              {"params": [p for p in model.parameters() if p.ndim <= 1]}]  # fmt: skip
    opt = (torch.optim.Adam(groups, lr=lr, fused=True) if optimizer == "adam"
           else torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, fused=True))  # fmt: skip
    teacher = guard_teacher if method != "ce" and teacher_kind == "live" else None
    cache = None
    if method != "ce" and teacher_kind == "cache":
        cache = torch.randn(len(data.y_train), N_VIEWS, 10).half()
    step = TrainStep(student_loss(config), model, loader, opt, teacher=teacher, cache=cache)
    step.start_epoch(1, 0.5)
    for _ in range(3):  # what a graphed run does before capture: warm-up steps, unguarded
        step()
    reads = []
    for epoch in (1, 2):
        if epoch == 2:
            step.start_epoch(2, 1.0)  # a new epoch fills the same buffers
        guard = NoHostSync()
        with guard:
            step()
        reads.append(guard.read)
    assert reads[0] == reads[1], "the step read other buffers in another epoch: a graph would read stale ones"
    assert lr is opt.param_groups[0]["lr"] and int(step.counter) == 1
    assert math.isfinite(step.epoch_stats()["train_loss"])

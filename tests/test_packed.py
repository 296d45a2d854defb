"""pack(): K students as one grouped network must compute, learn and save exactly like K solo models."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dkdlib import DKDError, count_parameters, create_model
from dkdlib.packed import (
    PackedLinear,
    pack,
    pack_optimizer_states,
    pack_state_dicts,
    split_logits,
    unpack,
    unpack_optimizer_state,
)

ATOL = 1e-5


def _students(name: str = "resnet8", k: int = 3, classes: int = 10) -> list[nn.Module]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)  # different weights per student
        out.append(create_model(name, classes))
    return out


def _batch(
    n: int = 4, classes: int = 10, seed: int = 100, size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def _make_optimizer(kind: str, model: nn.Module) -> torch.optim.Optimizer:
    # as dkdlib.train._make_optimizer: weight decay only on the >= 2-D tensors
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=1e-3)
    return torch.optim.Adam(groups, lr=1e-3)


def _assert_state_close(a: dict, b: dict, atol: float = ATOL) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape == b[key].shape, key
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


@pytest.mark.parametrize(
    ("name", "k", "classes"), [("resnet8", 3, 10), ("resnet20", 2, 10), ("resnet8", 2, 100)]
)
def test_forward_matches_each_student(name, k, classes):
    models = _students(name, k, classes)
    packed = pack(models)
    x, _ = _batch(classes=classes)
    for mode in ("train", "eval"):
        for m in [packed, *models]:
            m.train(mode == "train")
        for inp in (x, x.contiguous(memory_format=torch.channels_last)):
            with torch.no_grad():
                logits = packed(inp)
                assert logits.shape == (len(x), k * classes)
                per_student = split_logits(logits, k)
                assert per_student.shape == (k, len(x), classes)
                for i, m in enumerate(models):
                    torch.testing.assert_close(per_student[i], m(inp), atol=ATOL, rtol=0)


def test_channels_last_models():
    models = [m.to(memory_format=torch.channels_last) for m in _students(k=2)]
    packed = pack(models)
    assert packed.layers[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = _batch()[0].contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        logits = split_logits(packed(x), 2)
        for i, m in enumerate(models):
            torch.testing.assert_close(logits[i], m(x), atol=ATOL, rtol=0)


def test_gradients_and_running_stats_match():
    models = _students(k=3)
    packed = pack(models)
    x, y = _batch(n=8)
    logits = split_logits(packed(x), 3)
    sum(F.cross_entropy(logits[i], y) for i in range(3)).backward()
    for m in models:
        F.cross_entropy(m(x), y).backward()
    for name, p in packed.named_parameters():
        for i, part in enumerate(p.grad.chunk(3)):
            solo = models[i].get_parameter(name).grad
            torch.testing.assert_close(part, solo, atol=ATOL, rtol=0, msg=f"{name} student {i}")
    for i, state in enumerate(unpack(packed)):  # BN running stats moved like each solo's
        _assert_state_close(state, models[i].state_dict())


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_optimizer_steps_match_and_states_round_trip(kind):
    # float64: over several steps fp32 rounding (1e-7) is not a fair test, as it can flip a ReLU whose input
    # is ~0 and change a gradient by ~1e-3 (measured: so does 1e-7 noise on a solo model's weights)
    k = 3
    models = [m.double() for m in _students(k=k)]
    packed = pack(models)
    opt = _make_optimizer(kind, packed)
    solo_opts = [_make_optimizer(kind, m) for m in models]

    def step(seed: int) -> None:
        x, y = _batch(n=8, seed=seed, size=16)  # 16x16: the ResNets pool globally, and float64 is slow
        x = x.double()
        opt.zero_grad()
        logits = split_logits(packed(x), k)
        sum(F.cross_entropy(logits[i], y) for i in range(k)).backward()
        opt.step()
        for m, o in zip(models, solo_opts, strict=True):
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()

    for seed in range(3):
        step(seed)
    for i, state in enumerate(unpack(packed)):
        _assert_state_close(state, models[i].state_dict())

    solo_states = unpack_optimizer_state(opt.state_dict(), k)
    for i, (state, o) in enumerate(zip(solo_states, solo_opts, strict=True)):
        ref = o.state_dict()
        assert state["param_groups"] == ref["param_groups"]
        assert state["state"].keys() == ref["state"].keys()
        for idx in ref["state"]:
            _assert_state_close(state["state"][idx], ref["state"][idx])
        fresh = create_model(
            "resnet8"
        ).double()  # the unpacked states load into a fresh solo model and optimizer
        fresh.load_state_dict(unpack(packed)[i])
        _make_optimizer(kind, fresh).load_state_dict(state)

    repacked = pack_optimizer_states([o.state_dict() for o in solo_opts])
    packed_ref = opt.state_dict()
    assert repacked["param_groups"] == packed_ref["param_groups"]
    for idx in packed_ref["state"]:
        _assert_state_close(repacked["state"][idx], packed_ref["state"][idx])

    # resume both worlds from the swapped states: the next step still agrees
    opt.load_state_dict(repacked)
    for o, state in zip(solo_opts, solo_states, strict=True):
        o.load_state_dict(state)
    step(3)
    for i, state in enumerate(unpack(packed)):
        _assert_state_close(state, models[i].state_dict())


def test_unpack_loads_strictly_and_pack_state_dicts_round_trips():
    models = _students(k=3)
    packed = pack(models)
    packed.train()(_batch()[0])  # move the BN stats and num_batches_tracked off their initial values
    states = unpack(packed)
    assert len(states) == 3
    x = _batch(seed=7)[0]
    packed.eval()
    with torch.no_grad():
        logits = split_logits(packed(x), 3)
        for i, state in enumerate(states):
            fresh = create_model("resnet8").eval()
            fresh.load_state_dict(state, strict=True)
            torch.testing.assert_close(fresh(x), logits[i], atol=ATOL, rtol=0)
    for template in (packed, models[0]):  # the packed module or a solo model as the template
        again = pack_state_dicts(states, template)
        assert list(again) == list(packed.state_dict())
        for key, t in packed.state_dict().items():
            assert torch.equal(again[key], t), key
    # pack(models) is the same as loading pack_state_dicts of their state_dicts into any pack
    other = pack(_students(k=6)[3:])
    other.load_state_dict(pack_state_dicts([m.state_dict() for m in models], other), strict=True)
    for key, t in pack(models).state_dict().items():
        assert torch.equal(other.state_dict()[key], t), key
    # unpacked tensors are copies, not views into the packed ones
    states[0]["conv1.weight"].zero_()
    assert packed.conv1.weight.abs().sum() > 0


def test_names_order_shapes_and_parameter_count():
    models = _students(k=4)
    packed = pack(models)
    assert packed.packed_k == 4
    assert isinstance(packed.fc, PackedLinear)
    solo_params, packed_params = list(models[0].named_parameters()), list(packed.named_parameters())
    assert [n for n, _ in packed_params] == [n for n, _ in solo_params]
    for (_, p), (_, s) in zip(packed_params, solo_params, strict=True):
        assert p.shape == (4 * s.shape[0], *s.shape[1:]) and p.ndim == s.ndim
    assert [n for n, _ in packed.named_buffers()] == [n for n, _ in models[0].named_buffers()]
    assert count_parameters(packed) == 4 * count_parameters(models[0])
    # packing copies: the solo models are untouched by training the packed one
    before = models[0].conv1.weight.clone()
    with torch.no_grad():
        packed.conv1.weight.add_(1.0)
    assert torch.equal(models[0].conv1.weight, before)


def test_single_student():
    (model,) = _students(k=1)
    packed = pack([model]).eval()
    model.eval()
    x = _batch()[0]
    with torch.no_grad():
        torch.testing.assert_close(split_logits(packed(x), 1)[0], model(x), atol=ATOL, rtol=0)
    (state,) = unpack(packed)
    create_model("resnet8").load_state_dict(state, strict=True)


def test_bad_input_is_a_clear_dkderror():
    with pytest.raises(DKDError, match="at least one model"):
        pack([])
    with pytest.raises(DKDError, match=r"same architecture.*models\[1\].*layers\.1\.conv1"):
        pack([create_model("resnet8"), create_model("resnet20")])
    with pytest.raises(DKDError, match=r"same architecture.*'fc'"):
        pack([create_model("resnet8", 10), create_model("resnet8", 100)])
    with pytest.raises(DKDError, match="GroupNorm holds parameters"):
        pack([nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4)) for _ in range(2)])
    with pytest.raises(DKDError, match="mixes channels"):
        pack([nn.Sequential(nn.Conv2d(3, 4, 3), nn.ChannelShuffle(2)) for _ in range(2)])
    a, b = _students(k=2)
    b.train()(_batch()[0])  # one more BN update: num_batches_tracked now differs
    with pytest.raises(DKDError, match="num_batches_tracked differs"):
        pack([a, b])
    with pytest.raises(DKDError, match="K must be an integer >= 1"):
        split_logits(torch.zeros(2, 10), 0)
    with pytest.raises(DKDError, match="not made by pack"):
        unpack(create_model("resnet8"))
    packed = pack(_students(k=2))
    with pytest.raises(DKDError, match="packs 2 students"):
        pack_state_dicts([create_model("resnet8").state_dict()] * 3, packed)
    opts = [
        torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)
        for m, lr in zip(_students(k=2), (0.1, 0.2), strict=True)
    ]
    with pytest.raises(DKDError, match=r"param_groups.*\['lr'\]: 0.2 vs 0.1"):
        pack_optimizer_states([o.state_dict() for o in opts])


def test_copy_and_deepcopy_of_packed_module():
    packed = pack(_students(k=2))
    clone = copy.deepcopy(packed)
    assert clone.packed_k == 2
    x = _batch()[0]
    packed.eval(), clone.eval()
    with torch.no_grad():
        torch.testing.assert_close(clone(x), packed(x))

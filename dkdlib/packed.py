"""K students of one architecture as one grouped network: one forward, one backward, one optimizer step.

`pack(models)`: the stem conv stacks the K filters, every other conv is grouped (groups=K), every Linear a
`PackedLinear`. Channels are student-major and every tensor is the K solo ones along dim 0, so `unpack` and
the state helpers split and concatenate. The students stay independent only under a sum of per-student
losses and an elementwise update (SGD, Adam, AdamW): no global-norm clipping."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .errors import DKDError

__all__ = ["PackedLinear", "pack", "pack_optimizer_states", "pack_state_dicts", "split_logits", "unpack",
           "unpack_optimizer_state"]  # fmt: skip

# Parameter-free modules that mix channels (across students once packed): refuse them, not silently mix.
_CHANNEL_MIXING = (nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle, nn.Softmax, nn.LogSoftmax,
                   nn.Softmin, nn.LocalResponseNorm, nn.CrossMapLRN2d)  # fmt: skip


class PackedLinear(nn.Module):
    """K independent linear layers: (..., K*in) -> (..., K*out), student-major. weight (K*out, in) and
    bias (K*out,) stack the solo tensors along dim 0: nn.Linear's ndim, so weight decay treats them alike."""

    def __init__(
        self, k: int, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None
    ):
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k * out_features, in_features, device=device, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(torch.empty(k * out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        x = x.unflatten(-1, (self.k, self.in_features))
        w = self.weight.view(self.k, self.out_features, self.in_features)
        y = torch.einsum("...ki,koi->...ko", x, w).flatten(-2)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (f"k={self.k}, in_features={self.in_features}, out_features={self.out_features} "
                f"(per student), bias={self.bias is not None}")  # fmt: skip


def pack(models: list[nn.Module]) -> nn.Module:
    """One network computing K same-architecture models at once; forward gives (N, K*classes). A deep copy
    of models[0], its Conv2d, BatchNorm2d and Linear packed (the first Conv2d is the stem); `packed_k` = K."""
    models = list(models)
    if not models:
        raise DKDError("pack needs at least one model (K >= 1), got an empty list")
    for i, m in enumerate(models):
        if not isinstance(m, nn.Module):
            raise DKDError(f"pack needs torch modules; models[{i}] is a {type(m).__name__}")
    _check_same_architecture(models)
    k = len(models)
    packed = copy.deepcopy(models[0])
    solo_modules = [dict(m.named_modules(remove_duplicate=False)) for m in models]
    replaced: dict[int, nn.Module] = {}  # a module used under two names is replaced by one packed module
    stem_done = False
    for name, module in list(packed.named_modules(remove_duplicate=False)):
        if id(module) in replaced:
            packed = _set_submodule(packed, name, replaced[id(module)])
            continue
        olds = [mods[name] for mods in solo_modules]
        where = name or "the model itself"
        if type(module) is nn.Conv2d:
            new = _pack_conv(olds, stem=not stem_done, where=where)
            stem_done = True
        elif type(module) is nn.BatchNorm2d:
            m = olds[0]
            new = nn.BatchNorm2d(k * m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats,
                                 device="meta")  # fmt: skip
        elif type(module) is nn.Linear:
            m = olds[0]
            new = PackedLinear(k, m.in_features, m.out_features, m.bias is not None, device="meta")
        elif isinstance(module, _CHANNEL_MIXING):
            raise DKDError(f"cannot pack {where!r} ({type(module).__name__}): it mixes channels, so it "
                           "would mix the students")  # fmt: skip
        elif _holds_tensors(module):
            raise DKDError(f"cannot pack {where!r}: {type(module).__name__} holds parameters or buffers and "
                           "only Conv2d, BatchNorm2d and Linear are supported")  # fmt: skip
        else:
            continue  # parameter-free (ReLU, pooling, Flatten, containers): works on packed channels as is
        _fill(new, olds, where)
        new.train(module.training)
        replaced[id(module)] = new
        packed = _set_submodule(packed, name, new)
    packed.packed_k = k
    return packed


def split_logits(logits: Tensor, k: int) -> Tensor:
    """(N, K*classes) packed logits -> (K, N, classes), a view: [i] is student i's logits."""
    _check_k(k)
    if logits.ndim != 2 or logits.shape[1] % k:
        raise DKDError(f"split_logits needs (N, K*classes) logits with K={k}; got shape "
                       f"{tuple(logits.shape)}")  # fmt: skip
    return logits.unflatten(1, (k, -1)).transpose(0, 1)


def unpack(packed: nn.Module, k: int | None = None) -> list[dict[str, Tensor]]:
    """The K solo state_dicts of a packed module, each loadable (strict) into a fresh solo model."""
    packed = getattr(packed, "_orig_mod", packed)  # torch.compile's wrapper prefixes the keys
    packed_k = getattr(packed, "packed_k", None)
    if k is None:
        if packed_k is None:
            raise DKDError("unpack: this module was not made by pack(); pass k (the number of students)")
        k = packed_k
    _check_k(k)
    if packed_k is not None and packed_k != k:
        raise DKDError(f"unpack: k={k} but the module packs {packed_k} students")
    solos: list[dict[str, Tensor]] = [{} for _ in range(k)]
    for key, t in packed.state_dict().items():
        for solo, part in zip(solos, _split(t, k, key), strict=True):
            solo[key] = part
    return solos


def pack_state_dicts(states: list[dict], template: nn.Module) -> dict[str, Tensor]:
    """A packed state_dict from K solo ones, the inverse of `unpack`; `template` (the packed module or a
    solo model) gives the keys and shapes."""
    states = list(states)
    k = len(states)
    _check_k(k)
    template = getattr(template, "_orig_mod", template)
    packed_k = getattr(template, "packed_k", None)
    if packed_k is not None and packed_k != k:
        raise DKDError(f"pack_state_dicts: got {k} states but the template packs {packed_k} students")
    ref = template.state_dict()
    for i, state in enumerate(states):
        if state.keys() != ref.keys():
            missing, extra = sorted(ref.keys() - state.keys()), sorted(state.keys() - ref.keys())
            raise DKDError(f"pack_state_dicts: state {i} does not match the template's keys "
                           f"(missing {missing[:5]}, unexpected {extra[:5]})")  # fmt: skip
    out: dict[str, Tensor] = {}
    for key, r in ref.items():
        solo_shape = r.shape if packed_k is None or r.ndim == 0 else (r.shape[0] // k, *r.shape[1:])
        ts = [s[key] for s in states]
        for i, t in enumerate(ts):
            if t.shape != solo_shape:
                raise DKDError(f"pack_state_dicts: state {i}[{key!r}] has shape {tuple(t.shape)}, "
                               f"expected {tuple(solo_shape)}")  # fmt: skip
        out[key] = _cat(ts, f"state_dict[{key!r}]")
    return out


def unpack_optimizer_state(packed_state: dict, k: int) -> list[dict]:
    """K solo optimizer state_dicts (SGD, Adam, AdamW) from the packed one: per-parameter tensors split
    along dim 0, scalars (Adam's step) and param_groups copied."""
    _check_k(k)
    groups = {key: v for key, v in packed_state.items() if key != "state"}
    solos = [{**copy.deepcopy(groups), "state": {}} for _ in range(k)]
    for idx, param_state in packed_state["state"].items():
        parts = {key: _split(v, k, f"state[{idx}][{key!r}]") for key, v in param_state.items()}
        for j, solo in enumerate(solos):
            solo["state"][idx] = {key: split[j] for key, split in parts.items()}
    return solos


def pack_optimizer_states(states: list[dict]) -> dict:
    """The packed optimizer's state_dict from K solo ones (the inverse of `unpack_optimizer_state`);
    param_groups and scalar states must be equal across the students."""
    states = list(states)
    _check_k(len(states))
    first = states[0]
    for i, s in enumerate(states[1:], 1):
        if s.keys() != first.keys() or s["state"].keys() != first["state"].keys():
            raise DKDError(f"pack_optimizer_states: state {i} has other keys or parameters than state 0")
        for key in first:
            if key != "state" and not _equal(s[key], first[key]):
                raise DKDError(f"pack_optimizer_states: {key} of state {i} differs from state 0's "
                               f"({_first_difference(s[key], first[key])}); the K solo optimizers must share "
                               "their hyper-parameters")  # fmt: skip
    out = {**{key: copy.deepcopy(v) for key, v in first.items() if key != "state"}, "state": {}}
    for idx, param_state in first["state"].items():
        if param_state and any(s["state"][idx].keys() != param_state.keys() for s in states):
            raise DKDError(f"pack_optimizer_states: the states of parameter {idx} have different keys")
        out["state"][idx] = {key: _cat([s["state"][idx][key] for s in states], f"state[{idx}][{key!r}]")
                             for key in param_state}  # fmt: skip
    return out


def _check_k(k: int) -> None:
    if not isinstance(k, int) or k < 1:
        raise DKDError(f"the number of students K must be an integer >= 1, got {k!r}")


def _holds_tensors(module: nn.Module) -> bool:
    return bool([*module.parameters(recurse=False), *module.buffers(recurse=False)])


def _signature(model: nn.Module) -> list[str]:
    """What must match between students: module tree (types, hyper-parameters) and tensor shapes."""
    mods = [
        f"{name or 'the model'!r} is {type(m).__name__}({m.extra_repr()})"
        for name, m in model.named_modules()
    ]
    return mods + [
        f"{name!r} is {tuple(t.shape)} {t.dtype} on {t.device}" for name, t in model.state_dict().items()
    ]


def _check_same_architecture(models: list[nn.Module]) -> None:
    ref = _signature(models[0])
    for i, m in enumerate(models[1:], 1):
        sig = _signature(m)
        if sig == ref:
            continue
        j = next(
            (j for j, (a, b) in enumerate(zip(sig, ref, strict=False)) if a != b), min(len(sig), len(ref))
        )
        a, b = (s[j] if j < len(s) else "(nothing more)" for s in (sig, ref))
        raise DKDError(f"pack needs K models of the same architecture, dtype and device; models[{i}] differs "
                       f"from models[0]: {a} (in models[0]: {b}). Build them all with create_model(<same "
                       "name>, <same num_classes>) on one device")  # fmt: skip


def _pack_conv(olds: list[nn.Conv2d], stem: bool, where: str) -> nn.Conv2d:
    m, k = olds[0], len(olds)
    if stem and m.groups != 1:
        raise DKDError(f"cannot pack {where!r}: the stem conv (the first Conv2d) must have groups=1")
    # The stem reads the shared image: stacking the K filters gives K*out channels. Later convs read
    # student-major channels: groups=K keeps student i's outputs a function of student i's inputs only.
    return nn.Conv2d(m.in_channels if stem else k * m.in_channels, k * m.out_channels, m.kernel_size,
                     m.stride, m.padding, m.dilation, m.groups if stem else k * m.groups, m.bias is not None,
                     m.padding_mode, device="meta")  # fmt: skip


def _fill(new: nn.Module, olds: list[nn.Module], where: str) -> None:
    """Give the (meta) packed module the K originals' parameters and buffers, concatenated along dim 0."""
    for key, ref in [*olds[0].named_parameters(recurse=False), *olds[0].named_buffers(recurse=False)]:
        t = _cat([getattr(o, key).detach() for o in olds], f"{where}.{key}")
        setattr(
            new, key, nn.Parameter(t, requires_grad=ref.requires_grad) if isinstance(ref, nn.Parameter) else t
        )
    left = [n for n, t in [*new.named_parameters(), *new.named_buffers()] if t.is_meta]
    if left:  # a parameter the original lacks: not a layer type we know how to pack
        raise DKDError(f"cannot pack {where!r}: no values for {left}")


def _cat(ts: list, what: str):
    """Student-major concatenation along dim 0; scalars and non-tensors must agree and are copied."""
    ref = ts[0]
    if isinstance(ref, Tensor) and ref.ndim > 0:
        if any(not isinstance(t, Tensor) or t.shape != ref.shape for t in ts):
            raise DKDError(f"{what}: the K students' tensors differ in shape")
        return torch.cat(ts)
    if any(not _equal(t, ref) for t in ts):  # e.g. num_batches_tracked, Adam's step
        raise DKDError(f"{what} differs between the students ({[_show(t) for t in ts]}); "
                       "they must have been trained in lockstep")  # fmt: skip
    return ref.clone() if isinstance(ref, Tensor) else copy.deepcopy(ref)


def _split(t, k: int, what: str) -> list:
    """The inverse of `_cat`: K clones of the dim-0 chunks, or K copies of a scalar."""
    if isinstance(t, Tensor) and t.ndim > 0:
        if t.shape[0] % k:
            raise DKDError(f"{what}: dim 0 has {t.shape[0]} rows, not a multiple of K={k}")
        return [part.clone() for part in t.chunk(k)]
    return [t.clone() if isinstance(t, Tensor) else copy.deepcopy(t) for _ in range(k)]


def _equal(a, b) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[x], b[x]) for x in a)
    if isinstance(a, (list, tuple)):
        return (
            type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b


def _first_difference(a, b) -> str:
    """Where two param_groups lists first differ, e.g. "[0]['lr']: 0.1 vs 0.05"."""
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if isinstance(x, dict) and isinstance(y, dict):
                for key in [*x, *(key for key in y if key not in x)]:
                    if not _equal(x.get(key), y.get(key)):
                        return f"[{i}][{key!r}]: {_show(x.get(key))} vs {_show(y.get(key))}"
    return f"{_show(a)} vs {_show(b)}"


def _show(v) -> str:
    return str(v.item()) if isinstance(v, Tensor) and v.numel() == 1 else repr(v)


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Replace root's submodule `name` (the root itself when name is ""); returns the (new) root."""
    if not name:
        return new
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent), child, new)  # same key in _modules: the order stays
    return root

"""The 'seen' teacher cache: students of one data seed share the teacher's logits exactly."""

from dataclasses import replace

import pytest
import torch

from dkdlib import Config, fit
from dkdlib.errors import DKDError


def _weights(run) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in run.model.state_dict().values() if p.is_floating_point()])


@pytest.fixture(scope="module")
def setup(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("seen")
    common = dict(dataset="synthetic", val_size=200, train_size=600, test_size=200, batch_size=32,
                  device="cpu", out_dir=str(out))  # fmt: skip
    teacher = fit(Config(model="resnet8", epochs=1, lr=0.1, **common), data=tiny_data, progress=False)
    student = Config(model="resnet8", method="dkd", epochs=2, warmup=1, teacher=str(teacher.checkpoint),
                     **common)  # fmt: skip
    return tiny_data, student, out


def test_seen_cache_is_exact_and_reused(setup):
    data, student, out = setup
    live = fit(student, data=data, progress=False, save=False)
    first = fit(replace(student, cache_teacher="seen"), data=data, progress=False, save=False)
    files = sorted((out / "cache").glob("seen-*/epoch-*.pt"))
    assert [f.name for f in files] == ["epoch-0001.pt", "epoch-0002.pt"]
    stamps = [f.stat().st_mtime_ns for f in files]
    # a second student of the same seed reads the files (they are not rewritten) ...
    kd = replace(student, method="kd", cache_teacher="seen")
    second = fit(kd, data=data, progress=False, save=False)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    kd_live = fit(replace(kd, cache_teacher="off"), data=data, progress=False, save=False)
    # ... and every student trains bit for bit as with the live teacher
    assert torch.equal(_weights(live), _weights(first))
    assert torch.equal(_weights(kd_live), _weights(second))
    assert [h["train_loss"] for h in kd_live.history] == [h["train_loss"] for h in second.history]


def test_seen_cache_is_per_seed(setup):
    data, student, out = setup
    fit(replace(student, cache_teacher="seen", seed=1), data=data, progress=False, save=False)
    assert len(list((out / "cache").glob("seen-*"))) == 2  # seed 0's folder and seed 1's


def test_bad_cache_value():
    with pytest.raises(DKDError, match="cache_teacher"):
        Config(cache_teacher="all").validate()
    assert Config(cache_teacher=True).cache_teacher == "views"  # configs from before "seen"

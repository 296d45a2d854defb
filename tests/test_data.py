"""Data: npz schema checks, splits, synthetic data, the on-device crop/flip kernel, determinism."""

import numpy as np
import pytest
import torch

from dkdlib import DeviceLoader, DKDError, load_data
from dkdlib.data import crop_flip, load_npz, normalize, synthetic


def write_npz(path, n_train=60, n_test=20, **changes):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        "y_train": np.arange(n_train) % 10,
        "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        "y_test": np.arange(n_test) % 10,
    }
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_npz_round_trip_and_split(tmp_path):
    data = load_data("cifar10", npz=write_npz(tmp_path / "d.npz"), val_size=10)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (50, 10, 20)
    assert data.classes[3] == "cat" and data.num_classes == 10
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64


def test_a_known_dataset_keeps_its_statistics_and_computes_none(tmp_path, monkeypatch):
    # Computing CIFAR-10's statistics took 14 s at one thread on every load, although they were dropped.
    import dkdlib.data as data_mod

    path = write_npz(tmp_path / "d.npz")
    other = load_npz(path, name="other")  # another dataset: its own statistics, from its pixels
    assert other.mean == data_mod._stats(np.load(path)["x_train"])[0]

    def computed(x):
        raise AssertionError("computed statistics the dataset already has")

    monkeypatch.setattr(data_mod, "_stats", computed)
    assert load_npz(path).mean == data_mod.STATS["cifar10"][0]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"y_test": None}, "lacks y_test"),
        ({"x_train": np.zeros((60, 32, 32, 3), np.float32)}, "must be uint8"),
        ({"x_train": np.zeros((60, 3, 32, 32), np.uint8)}, "shape \\(N, 32, 32, 3\\)"),
        ({"y_train": np.arange(59) % 10}, "60 images but y_train 59 labels"),
        ({"y_train": np.arange(60) % 10 + 5}, "labels must lie in \\[0, 10\\)"),
        ({"y_train": (np.arange(60) % 10).astype(np.float32)}, "1-D integer labels"),
    ],
)
def test_npz_schema_errors(tmp_path, changes, message):
    path = write_npz(tmp_path / "bad.npz", **changes)
    with pytest.raises(DKDError, match=message):
        load_npz(path)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DKDError, match="does not exist"):
        load_data("cifar10", npz=tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DKDError, match="not a readable .npz"):
        load_data("cifar10", npz=tmp_path / "junk.npz")


def test_unknown_dataset_and_bad_sizes(tmp_path):
    with pytest.raises(DKDError, match="unknown dataset 'mnist'.*cifar10, cifar100, synthetic"):
        load_data("mnist")
    with pytest.raises(DKDError, match="leaves no training images"):
        load_data("cifar10", npz=write_npz(tmp_path / "d.npz"), val_size=60)


def test_download_without_network_points_to_alternatives(monkeypatch, tmp_path):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading cifar-10-python.tar.gz: [Errno -3] name resolution")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    with pytest.raises(DKDError, match="could not load cifar10.*npz.*synthetic"):
        load_data("cifar10", root=tmp_path)


def test_split_is_fixed_and_subsets_are_balanced():
    a = load_data("synthetic", val_size=500, train_size=1000, test_size=200)
    b = load_data("synthetic", val_size=500, train_size=1000, test_size=200)
    assert np.array_equal(a.x_val, b.x_val) and np.array_equal(a.y_train, b.y_train)
    assert np.bincount(a.y_train).tolist() == [100] * 10
    assert np.bincount(a.y_test).tolist() == [20] * 10
    assert "SYNTHETIC" in a.source and "not CIFAR" in a.source


def test_synthetic_is_deterministic():
    a, b = synthetic(200, 50, seed=3), synthetic(200, 50, seed=3)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, synthetic(200, 50, seed=4).x_train)
    assert np.bincount(a.y_train).tolist() == [20] * 10


def reference_crop_flip(img, dy, dx, flip):
    """One CHW image, the plain way: zero-pad 4, slice, maybe mirror."""
    padded = np.pad(img, ((0, 0), (4, 4), (4, 4)))
    out = padded[:, dy : dy + 32, dx : dx + 32]
    return out[:, :, ::-1] if flip else out


def test_crop_flip_kernel_matches_per_image_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g)
    dy, dx = torch.randint(0, 9, (16,), generator=g), torch.randint(0, 9, (16,), generator=g)
    flip = torch.randint(0, 2, (16,), generator=g)
    out = crop_flip(x, dy, dx, flip)
    assert out.shape == x.shape and out.dtype == torch.uint8
    for i in range(16):
        expected = reference_crop_flip(x[i].numpy(), int(dy[i]), int(dx[i]), int(flip[i]))
        assert np.array_equal(out[i].numpy(), expected)


def test_normalisation_matches_torchvision():
    from torchvision.transforms import functional as TF

    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    expected = torch.stack([TF.normalize(img.float() / 255, mean, std) for img in x])
    assert torch.allclose(normalize(x, mean, std), expected, atol=1e-5)


def loader(seed=0, train=True, batch_size=32):
    data = load_data("synthetic", val_size=100, train_size=200)
    return DeviceLoader(
        data.x_train, data.y_train, batch_size, mean=data.mean, std=data.std, train=train, seed=seed
    )


def test_loader_is_deterministic_per_seed_and_epoch():
    def first_batch(seed, epoch):
        ld = loader(seed)
        ld.set_epoch(epoch)
        return next(iter(ld))

    a, b = first_batch(0, 1), first_batch(0, 1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(first_batch(0, 2)[0], a[0])
    assert not torch.equal(first_batch(1, 1)[0], a[0])


def test_loader_sizes_and_drop_last():
    train, evaluation = loader(batch_size=64), loader(train=False, batch_size=64)
    assert len(train) == 3 and sum(len(y) for _, y in train) == 192  # 200 // 64 full batches
    assert len(evaluation) == 4 and sum(len(y) for _, y in evaluation) == 200
    x, y = next(iter(train))
    assert x.dtype == torch.float32 and x.shape == (64, 3, 32, 32) and y.dtype == torch.int64


def test_loader_rejects_bad_batch_sizes():
    with pytest.raises(DKDError, match="batch_size must be an integer > 0"):
        loader(batch_size=0)
    with pytest.raises(DKDError, match="larger than the 200 training images"):
        loader(batch_size=512)


def test_every_image_is_seen_once_per_epoch():
    data = load_data("synthetic", val_size=100, train_size=200)
    ld = DeviceLoader(data.x_train, data.y_train, 50, mean=data.mean, std=data.std)
    order, dy, dx, flip = ld.epoch_plan(1)
    assert sorted(order.tolist()) == list(range(200))
    assert dy.min() >= 0 and dy.max() <= 8 and set(flip.tolist()) == {0, 1}

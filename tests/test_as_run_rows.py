"""The reference's ablation and DKD rows, as run: dkdlib's as-run configs train the reference's own loss.

The reference is github.com/SandipanMajhi/Decoupled-Distillation. `ReferenceDKD` below is a copy of the
loss of its `utils/dkd.py` at commit 5a3e5b8 (unchanged up to 36b8a48), with `size_average=False`
written as its equivalent `reduction="sum"`; its `utils/trainer.py` (same commits) builds it as
`DKD(self.student, self.teacher, self.alpha, self.beta, self.temperature, mode=self.mode)`:
positionally, so the trainer's α, β and T land on the CE weight, T and α. Each row is called with the
trainer arguments of the cell that ran it.
"""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from dkdlib.methods import student_loss
from dkdlib.recipes import _as_run, reference_configs
from dkdlib.train import distill_weight


class ReferenceDKD:
    """The reference's DKD module (utils/dkd.py @5a3e5b8), its loss only: no student or teacher held."""

    def __init__(self, ce_loss_weight=0.5, temperature=1.0, alpha=0.5, beta=0.5, **kwargs):
        self.ce_loss_weight = ce_loss_weight
        self.temperature = temperature
        self.alpha = alpha
        self.beta = beta
        self.mode = kwargs.get("mode")

    def get_gt_mask(self, logits, targets):
        targets = targets.reshape(-1)
        mask = torch.zeros_like(logits)
        mask[range(logits.shape[0]), targets] = 1
        return mask.bool()

    def get_other_mask(self, logits, targets):
        targets = targets.reshape(-1)
        mask = torch.ones_like(logits)
        mask[range(logits.shape[0]), targets] = 0
        return mask.bool()

    def cat_mask(self, t, mask1, mask2):
        t1 = (t * mask1).sum(dim=1, keepdims=True)
        t2 = (t * mask2).sum(dim=1, keepdims=True)
        return torch.cat([t1, t2], dim=1)

    def tckd_loss(self, logits_student, logits_teacher, targets, temperature):
        gt_mask = self.get_gt_mask(logits_student, targets)
        other_mask = self.get_other_mask(logits_student, targets)
        pred_student = F.softmax(logits_student / temperature, dim=1)
        pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
        pred_student = self.cat_mask(pred_student, gt_mask, other_mask)
        pred_teacher = self.cat_mask(pred_teacher, gt_mask, other_mask)
        log_pred_student = torch.log(pred_student)
        kl = F.kl_div(log_pred_student, pred_teacher, reduction="sum")
        return kl * (temperature**2) / targets.shape[0]

    def nckd_loss(self, logits_student, logits_teacher, targets, temperature):
        gt_mask = self.get_gt_mask(logits_student, targets)
        log_pred_student2 = F.log_softmax(logits_student / temperature - 1000 * gt_mask, dim=1)
        pred_teacher2 = F.softmax(logits_teacher / temperature - 1000 * gt_mask, dim=1)
        kl = F.kl_div(log_pred_student2, pred_teacher2, reduction="sum")
        return kl * (temperature**2) / targets.shape[0]

    def dkd_loss(self, logits_student, logits_teacher, targets, alpha, beta, temperature):
        if self.mode == "tckd_only":
            return alpha * self.tckd_loss(logits_student, logits_teacher, targets, temperature)
        elif self.mode == "nckd_only":
            return beta * self.nckd_loss(logits_student, logits_teacher, targets, temperature)
        tckd = self.tckd_loss(logits_student, logits_teacher, targets, temperature)
        return alpha * tckd + beta * self.nckd_loss(logits_student, logits_teacher, targets, temperature)

    def training_loss(self, student_logits, teacher_logits, target):
        """forward_train's training branch, given the logits."""
        loss_ce = self.ce_loss_weight * F.cross_entropy(student_logits, target)
        loss_dkd = self.dkd_loss(
            student_logits, teacher_logits, target, self.alpha, self.beta, self.temperature
        )
        return loss_ce + loss_dkd


TRAINER_T = 1.0  # DKDTrainer's default temperature; no cell passes one
# row: the trainer's (alpha, beta, mode) in the cell that ran it (cell 3), or INFERRED where none was kept
CELLS = {
    "dkd_100": (1.0, 8.0, None),  # test_dkd.ipynb @f555188 (its DKD had no mode: α·TCKD + β·NCKD)
    "dkd_200": (1.0, 8.0, "both"),  # test_ablations.ipynb @36b8a48
    "tckd_a1": (1.0, 8.0, "tckd_only"),  # test_ablations.ipynb @5a3e5b8
    "tckd_a0.5": (0.5, 8.0, "tckd_only"),  # INFERRED: no cell (recipes.AS_RUN_INFERRED)
    "tckd_a0.25": (0.25, 8.0, "tckd_only"),  # test_ablations.ipynb @0266316
    "nckd_b2": (0.25, 2.0, "nckd_only"),  # INFERRED: no cell
    "nckd_b4": (0.25, 4.0, "nckd_only"),  # INFERRED: no cell
    "nckd_b8": (0.25, 8.0, "nckd_only"),  # test_ablations.ipynb @3a2eb44
}


def as_run_config(row: str):
    """The row's as-run config; TCKD α = 1 is not in the as-run reading (it cannot be run again), so
    its loss settings come from the same `_as_run` the other rows take."""
    rows = reference_configs("t.pt", reading="as_run")
    if row in rows:
        return rows[row]
    return _as_run(row, reference_configs("t.pt", reading="as_described")[row])


@pytest.mark.parametrize("row", list(CELLS))
def test_as_run_config_trains_the_reference_loss_of_its_cell(row):
    alpha, beta, mode = CELLS[row]
    reference = ReferenceDKD(alpha, beta, TRAINER_T, mode=mode)  # positional, as the trainer calls it
    cfg = as_run_config(row)
    weight = distill_weight(cfg, epoch=1)
    assert weight == 1.0  # as run: no warm-up

    gen = torch.Generator().manual_seed(len(row))
    n, c = 64, 10
    zs = (3 * torch.randn(n, c, generator=gen)).requires_grad_(True)
    zt = 4 * torch.randn(n, c, generator=gen)
    y = torch.randint(0, c, (n,), generator=gen)

    expected = reference.training_loss(zs, zt, y)
    (g_expected,) = torch.autograd.grad(expected, zs)
    ours = student_loss(cfg)(zs, zt, y, torch.tensor(weight))
    (g_ours,) = torch.autograd.grad(ours, zs)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_ours, g_expected, rtol=1e-4, atol=1e-7)


def test_the_rows_read_as_the_argument_shift_says():
    """The settings the shift gives (reference notes §3b), spelled out once."""
    got = {
        row: (c.method, c.ce_weight, c.temperature, c.alpha, c.beta)
        for row in CELLS
        for c in [as_run_config(row)]
    }
    assert got["dkd_100"] == got["dkd_200"] == ("dkd", 1.0, 8.0, 1.0, 0.5)
    for a in (1.0, 0.5, 0.25):
        assert got[f"tckd_a{a:g}"][:4] == ("tckd", a, 8.0, 1.0)  # CE weight a, T = 8, TCKD weight 1
    for b in (2.0, 4.0, 8.0):
        method, ce, t, _, nckd = got[f"nckd_b{b:g}"]
        assert (method, ce, t, nckd) == ("nckd", 0.25, b, 0.5)  # CE weight 0.25, T = b, NCKD weight 0.5


def test_tckd_alpha_1_is_marked_not_reproducible_and_the_tested_epoch_is_per_row():
    from dkdlib.recipes import AS_RUN_INFERRED, AS_RUN_NOT_REPRODUCIBLE, REFERENCE_BEST_BY, reference_rows

    assert "tckd_a1" in AS_RUN_NOT_REPRODUCIBLE and "23 epochs" in AS_RUN_NOT_REPRODUCIBLE["tckd_a1"]
    assert "tckd_a1" not in reference_rows("as_run") and "tckd_a1" in reference_rows("as_described")
    rows = reference_configs("t.pt", reading="as_run")
    assert {n for n, c in rows.items() if c.best_by == "val_acc"} == {"tckd_a0.25"}
    assert {n for n, b in REFERENCE_BEST_BY.items() if b == "val_acc"} == {"tckd_a1", "tckd_a0.25"}
    assert set(AS_RUN_INFERRED) == {"teacher", "tckd_a0.5", "nckd_b2", "nckd_b4"}
    distilled = {n for n, c in rows.items() if c.method != "ce"}
    assert {n for n, c in rows.items() if c.teacher_batch_stats} == distilled


def test_a_distilled_row_as_run_refuses_the_teacher_logit_cache():
    from dkdlib import DKDError

    cfg = replace(as_run_config("dkd_100"), cache_teacher=True)
    with pytest.raises(DKDError, match="cannot be cached"):
        cfg.validate()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Synthetic (not CIFAR) data and a teacher trained one epoch on it."""
    from dkdlib import Config, fit, load_data

    data = load_data("synthetic", val_size=100, train_size=320, test_size=100)
    common = dict(dataset="synthetic", val_size=100, train_size=320, test_size=100, batch_size=32,
                  device="cpu", out_dir=str(tmp_path_factory.mktemp("t")))  # fmt: skip
    teacher = fit(Config(model="resnet8", epochs=1, lr=0.1, **common), data=data, progress=False)
    student = Config(
        model="resnet8", method="dkd", epochs=1, warmup=0, teacher=str(teacher.checkpoint), **common
    )
    return data, student


def test_teacher_batch_stats_gives_batch_statistics_logits_and_leaves_the_teacher_as_it_was(tiny):
    """As run, the teacher's BatchNorm normalised each batch by its own statistics (the trainer's
    dkd.train() reached it); its weights and running statistics must stay the checkpoint's."""
    import copy

    from dkdlib.train import load_teacher

    data, student = tiny
    device = torch.device("cpu")
    plain = load_teacher(student, data, device)
    teacher = load_teacher(replace(student, teacher_batch_stats=True), data, device)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = teacher(x)
        trained_mode = copy.deepcopy(plain).train()(x)  # what a module in training mode computes
        running = plain(x)
        other_batch = teacher(torch.cat([x[:16], 2 * x[16:]]))
    torch.testing.assert_close(got, trained_mode)
    assert not torch.allclose(got, running, atol=1e-3)  # not the running statistics
    assert not torch.allclose(got[:16], other_batch[:16], atol=1e-3)  # a sample's logits depend on its batch
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key  # weights, running mean/var, num_batches_tracked
        assert torch.equal(value, plain.state_dict()[key]), key


def test_a_student_trains_from_a_batch_statistics_teacher(tiny):
    from dkdlib import fit

    data, student = tiny
    run = fit(replace(student, teacher_batch_stats=True), data=data, progress=False)
    assert len(run.history) == 1 and run.history[0]["train_loss"] > 0
    assert (
        run.config.run_name() != student.run_name()
    )  # a different run; the default leaves names as they were
    assert "teacher_batch_stats" not in student.identity()

"""DIST (Huang et al., NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher"): one registry
entry, checked against the paper's formula and run end to end (fit, the CLI, a table)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from dkdlib import Config, fit
from dkdlib.methods import METHODS, student_loss


def reference_dist(zs, zt, beta=1.0, gamma=1.0, tau=1.0):
    """The paper's loss, written out: 1 − Pearson correlation per sample (over classes) and per class
    (over the batch), on softmax(z / τ), each averaged, times τ²."""

    def gap(a, b):  # rows of a and b
        return torch.stack([1 - torch.corrcoef(torch.stack([u, v]))[0, 1] for u, v in zip(a, b, strict=True)])

    ps, pt = (zs / tau).softmax(1).double(), (zt / tau).softmax(1).double()
    return tau**2 * (beta * gap(ps, pt).mean() + gamma * gap(ps.T, pt.T).mean())


def logits(seed=0, n=64, c=10):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, c, generator=g) * 3,
        torch.randn(n, c, generator=g) * 4,
        torch.randint(0, c, (n,)),
    )


def test_dist_is_one_entry_with_the_official_defaults():
    cfg = Config(method="dist", teacher="t.pt")
    assert METHODS["dist"].distill is not None  # it needs a teacher
    assert [cfg.setting(k) for k in ("temperature", "beta", "intra", "warmup", "ce_weight")] == [
        1,
        1,
        1,
        0,
        1,
    ]
    assert cfg.identity()["temperature"] == 1.0 and cfg.identity()["intra"] == 1.0


@pytest.mark.parametrize("settings", [{}, {"temperature": 4.0, "beta": 2.0, "intra": 0.5}])
def test_the_dist_term_is_the_papers_formula(settings):
    zs, zt, y = logits()
    cfg = Config(method="dist", teacher="t.pt", ce_weight=0.0, **settings)
    ours = student_loss(cfg)(zs, zt, y, torch.ones(()))
    want = reference_dist(zs, zt, settings.get("beta", 1.0), settings.get("intra", 1.0),
                          settings.get("temperature", 1.0))  # fmt: skip
    assert torch.allclose(ours.double(), want, rtol=1e-4)
    assert float(student_loss(cfg)(zt, zt, y, torch.ones(()))) < 1e-5  # a perfect copy: 0


def test_dist_trains_end_to_end_in_fit_the_cli_and_a_table(tmp_path, tiny_data, capsys):
    from dkdlib import reports
    from dkdlib.cli import main

    common = dict(dataset="synthetic", val_size=200, train_size=600, test_size=200, batch_size=100, epochs=1,
                  device="cpu", out_dir=str(tmp_path))  # fmt: skip
    teacher = fit(Config(**common, lr=0.1, name="t"), data=tiny_data, progress=False)
    cfg = Config(**common, method="dist", teacher=str(teacher.checkpoint))
    run = fit(cfg, data=tiny_data, progress=False)
    assert run.history[0]["distill_weight"] == 1.0 and run.record is not None  # no warm-up
    code = main(["distill", "--method", "dist", "--teacher", cfg.teacher, "--intra", "2", "--seed", "2",
                 "--no-progress", *(f"--{k.replace('_', '-')}={v}" for k, v in common.items())])  # fmt: skip
    assert code == 0 and "dist-resnet8-synthetic-s2" in capsys.readouterr().out
    frame = reports.gather_runs({"here": tmp_path / "results"})
    assert {"DIST", "DIST γ=2"} <= set(frame["row"])
    assert {"DIST", "DIST γ=2"} <= set(reports.results_table(pd.DataFrame(frame))["row"])

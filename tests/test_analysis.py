"""Quick tests of the DKD decomposition (gradients, dark knowledge), the run reports and the DKD figures."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from dkdlib import create_model, decomposition, dkd_loss, kd_loss, plots, reports
from dkdlib.train import Config, Run


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    zs = 3 * torch.randn(300, 10, generator=g)
    zt = 3 * torch.randn(300, 10, generator=g)
    y = torch.randint(0, 10, (300,), generator=g)
    return zs, zt, y


@pytest.mark.parametrize("temperature", [1.0, 4.0, 8.0])
def test_decompose_identity_and_kd(logits, temperature):
    zs, zt, y = logits
    frame = decomposition.decompose(zs, zt, y, temperature)
    assert len(frame) == 300
    assert {"kd", "tckd", "nckd", "p_t", "weight", "kd_nckd", "p_t_student"} <= set(frame.columns)
    assert decomposition.identity_error(frame) < 1e-5
    assert np.allclose(frame["weight"], 1 - frame["p_t"])
    assert math.isclose(
        kd_loss(zs, zt, temperature).item(), temperature**2 * frame["kd"].mean(), rel_tol=1e-4
    )
    dkd = dkd_loss(zs, zt, y, alpha=1.0, beta=1.0, temperature=temperature).item()
    extra = temperature**2 * (frame["p_t"] * frame["nckd"]).mean()
    assert math.isclose(dkd - kd_loss(zs, zt, temperature).item(), extra, rel_tol=1e-3, abs_tol=1e-5)


def test_grad_check_matches_closed_forms(logits):
    g = decomposition.grad_check(*logits, temperature=4.0)
    mask = g["target_mask"]
    assert bool((g["nckd"][mask] == 0).all())
    assert torch.allclose(g["tckd"], g["tckd_formula"], atol=1e-6)
    assert torch.allclose(g["nckd"], g["nckd_formula"], atol=1e-6)
    # Softmax is shift-invariant: each gradient row sums to zero.
    assert torch.allclose(g["tckd"].sum(1), torch.zeros(300), atol=1e-6)
    assert torch.allclose(g["nckd"].sum(1), torch.zeros(300), atol=1e-6)


def test_official_loss_agrees_then_breaks(logits):
    zs, zt, y = logits
    assert math.isclose(
        decomposition.official_dkd_loss(zs, zt, y, 1.0, 8.0, 4.0).item(),
        dkd_loss(zs, zt, y).item(),
        rel_tol=1e-4,
    )
    sure = torch.zeros(3, 10)
    sure[:, 0] = 200.0
    y0 = torch.zeros(3, dtype=torch.long)
    assert not torch.isfinite(decomposition.official_dkd_loss(sure, sure, y0, 1.0, 8.0, 1.0))
    assert torch.isfinite(dkd_loss(sure, sure, y0, 1.0, 8.0, 1.0))


def test_dark_knowledge_rows():
    # Class 0's images put their non-target mass mostly on class 2.
    z = torch.zeros(6, 4)
    y = torch.tensor([0, 0, 1, 1, 2, 3])
    z[:2, 0], z[:2, 2] = 5.0, 3.0
    m = decomposition.dark_knowledge(z, y, temperature=1.0, num_classes=4)
    assert m.shape == (4, 4)
    assert np.isnan(np.diag(m)).all()
    assert np.allclose(np.nansum(m, axis=1), 1.0)
    pairs = decomposition.top_pairs(m, ["a", "b", "c", "d"], k=2)
    assert list(pairs.iloc[0][["true class", "non-target class"]]) == ["a", "c"]
    assert pairs["mean p̂"].is_monotonic_decreasing


def test_outputs_on_tiny_data(tiny_data):
    torch.manual_seed(0)
    model = create_model("resnet8", tiny_data.num_classes)
    z, y = decomposition.outputs(model, tiny_data, "test")
    assert z.shape == (len(tiny_data.y_test), tiny_data.num_classes)
    assert torch.equal(y, torch.as_tensor(tiny_data.y_test))
    z2, _ = decomposition.outputs(model, tiny_data, "val")
    assert z2.shape[0] == len(tiny_data.y_val)
    with pytest.raises(ValueError, match="split"):
        decomposition.outputs(model, tiny_data, "nope")


def test_labels_and_reference():
    assert reports.run_label({"method": "ce", "model": "resnet8"}) == "CE"
    assert reports.run_label({"method": "ce", "model": "resnet20"}) == "teacher"
    assert reports.run_label({"method": "kd", "temperature": 4.0}) == "KD"
    assert (
        reports.run_label({"method": "dkd", "alpha": 1.0, "beta": 8.0, "temperature": 2.0})
        == "DKD α=1 β=8 T=2"
    )
    assert reports.run_label({"method": "tckd", "alpha": 0.5, "beta": 0.0}) == "TCKD α=0.5"
    assert reports.run_label({"method": "nckd", "alpha": 0.0, "beta": 2.0}) == "NCKD β=2"
    # as run: T=8, β=0.5, from the CE student; the inferred ablations differ by their CE weight
    assert reports.run_label(
        {"method": "dkd", "alpha": 1.0, "beta": 0.5, "temperature": 8.0, "init": "s-best.pt"}
    ) == ("DKD α=1 β=0.5 T=8 from init")
    assert reports.run_label({"method": "tckd", "alpha": 1.0, "temperature": 0.5, "ce_weight": 0.25}) == (
        "TCKD α=1 T=0.5 CE×0.25"
    )
    assert reports.run_label({"method": "ce", "model": "resnet8", "init": float("nan")}) == "CE"
    ref = reports.reference_frame().set_index("ref_name")
    assert ref.loc["dkd_100", "row"] == "DKD α=1 β=8"
    assert ref.loc["student", "row"] == "CE" and ref.loc["teacher", "row"] == "teacher"
    acc = reports.reference_accuracy()
    assert math.isclose(acc["DKD α=1 β=8"], 87.21)  # the 100-epoch row, not the 200-epoch one


def _records() -> pd.DataFrame:
    common = {"model": "resnet8", "alpha": 1.0, "beta": 8.0, "temperature": 4.0, "epochs": 30}
    common.update(dataset="cifar10", train_size=None)
    rows = []
    for method, accs in (("ce", (0.80, 0.82)), ("dkd", (0.85, 0.87)), ("kd", (0.83,))):
        for seed, acc in enumerate(accs):
            rows.append({**common, "name": f"{method}-{seed}", "method": method, "seed": seed,
                         "test_acc": acc, "test_acc_at_best_val": acc - 0.01})  # fmt: skip
    rows.append({**common, "name": "t", "method": "ce", "model": "resnet18", "epochs": 15, "seed": 0,
                 "test_acc": 0.90, "test_acc_at_best_val": 0.90})  # fmt: skip
    return pd.DataFrame(rows)


def test_summaries_and_tables():
    frame = reports.label_runs(_records())
    s = reports.summarize_runs(frame).set_index("row")
    assert math.isclose(s.loc["CE", "test_mean"], 81.0)
    assert math.isclose(s.loc["CE", "test_std"], np.std([80, 82], ddof=1))
    assert s.loc["CE", "seeds"] == "0,1"
    table = reports.results_table(_records())
    assert list(table["row"][:4]) == ["teacher", "CE", "KD", "DKD α=1 β=8"]
    assert "87.21" in table.set_index("row").loc["DKD α=1 β=8", "reference test acc"]


def _write(folder, method, seed, acc, model="resnet8"):
    from dkdlib.results import write_record

    config = {"model": model, "method": method, "dataset": "cifar10", "train_size": 5000, "seed": seed,
              "epochs": 4, "alpha": 1.0, "beta": 8.0, "temperature": 4.0}  # fmt: skip
    metrics = {"test_acc": acc, "test_acc_at_best_val": acc}
    write_record(folder, {"name": f"{method}{seed}", "config": config, "metrics": metrics, "history": []})


def test_gather_runs_names_each_source_and_keeps_one_record_per_run(tmp_path):
    committed, current = tmp_path / "committed", tmp_path / "current"
    _write(committed, "ce", 0, 0.40)
    _write(committed, "dkd", 0, 0.45)
    _write(current, "dkd", 0, 0.47)  # the same run again: the later folder's record wins
    _write(current, "dkd", 1, 0.46)
    frame = reports.gather_runs({"committed": committed, "this run": current, "missing": tmp_path / "no"})
    assert len(frame) == 3
    dkd0 = frame[(frame["method"] == "dkd") & (frame["seed"] == 0)]
    assert len(dkd0) == 1 and dkd0["source"].iloc[0] == "this run" and dkd0["test_acc"].iloc[0] == 0.47
    # the same folder under two names is read once, under its first name
    once = reports.gather_runs({"committed": committed, "this run": committed})
    assert len(once) == 2 and set(once["source"]) == {"committed"}
    table = reports.results_table(frame).set_index("row")
    assert table.loc["CE", "source"] == "committed" and table.loc["DKD α=1 β=8", "source"] == "this run"
    assert table.loc["DKD α=1 β=8", "runs"] == 2
    assert "source" not in reports.results_table(_records())
    assert reports.gather_runs({"none": None}).empty


def test_gather_runs_without_records_has_the_columns_of_records(tmp_path):
    # Chapter 7 filters the gathered runs on `epochs`, `seed`, ... whether or not any record exists (a
    # pip install, as on Colab, has no committed records): no records must give no rows, not a KeyError.
    empty = reports.gather_runs({"committed": None, "this run": tmp_path / "missing"})
    assert empty.empty
    assert empty[(empty["setting"] == "cifar10") & (empty["epochs"] == 4) & (empty["seed"] == 0)].empty
    assert reports.results_table(empty).empty
    committed = reports.committed_results_dir()
    if committed is not None:  # the empty frame has every column that real records give
        assert set(reports.gather_runs({"committed": committed}).columns) <= set(empty.columns)


def test_only_the_reference_rows_themselves_stand_beside_the_reference():
    # A reproduction's fair baselines (CE trained as long as DKD: ce_100, ce_200) are CE runs, but the
    # reference table has no such row: only its own 50-epoch CE student gets the reference's 80.49.
    common = {"model": "resnet8", "dataset": "cifar10", "train_size": 5000, "seed": 0, "temperature": 4.0,
              "optimizer": "adam"}  # fmt: skip
    rows = [
        {**common, "method": "ce", "epochs": 2, "tag": "ref:as_described:student", "test_acc": 0.33},
        {**common, "method": "ce", "epochs": 4, "tag": "ref:as_described:ce_100", "test_acc": 0.39},
        {**common, "method": "ce", "epochs": 8, "tag": "ref:as_described:ce_200", "test_acc": 0.45},
        {**common, "method": "dkd", "epochs": 8, "alpha": 1.0, "beta": 8.0, "tag": "ref:as_described:dkd_200",
         "test_acc": 0.39},
        {**common, "method": "ce", "epochs": 4, "tag": "", "optimizer": "sgd", "test_acc": 0.45},  # series
    ]  # fmt: skip
    frame = reports.label_runs(pd.DataFrame(rows))
    assert reports.reference_matches(frame) == [("student",), (), (), ("dkd_200",), ("student",)]
    table = reports.results_table(frame)
    ref_col = {("reference" in r["setting"], r["row"], int(r["epochs"])): r["reference test acc"]
               for r in table.to_dict("records")}  # fmt: skip
    assert ref_col[(True, "CE", 2)] == "80.49 (50 ep)"
    assert ref_col[(True, "CE", 4)] == "–" and ref_col[(True, "CE", 8)] == "–"
    assert ref_col[(True, "DKD α=1 β=8", 8)] == "87.69 (200 ep)"
    assert ref_col[(False, "CE", 4)] == "80.49 (50 ep)"
    summary = reports.summarize_runs(frame[frame["setting"].str.contains("reference")])
    assert summary["ref_text"].tolist() == ["80.49 (50 ep)", "–", "–", "87.69 (200 ep)"]


def test_committed_records_are_found_in_a_clone():
    folder = reports.committed_results_dir()
    assert folder is not None and folder.name == "results" and (folder.parent.parent / "dkdlib").is_dir()


def test_empty_results_are_handled():
    empty = pd.DataFrame()
    assert reports.results_table(empty).empty
    assert reports.summarize_runs(empty).empty


def test_runs_frame_from_runs():
    cfg = Config(method="dkd", teacher="t.pt", alpha=0.5, beta=2.0, dataset="synthetic", train_size=100)
    run = Run(cfg, torch.nn.Linear(1, 1), [], {"test_acc": 0.5, "per_class_acc": [0.5]}, Path("x.pt"))
    frame = reports.runs_frame({"a": run})
    assert frame.loc[0, "row"] == "DKD α=0.5 β=2"
    assert "synthetic" in frame.loc[0, "setting"]
    assert "per_class_acc" not in frame


def test_figures_return_figures(logits):
    zs, zt, y = logits
    frame = decomposition.decompose(zs, zt, y, 4.0)
    classes = [f"c{i}" for i in range(10)]
    grid = pd.DataFrame(
        {"alpha": [0.5, 0.5, 1.0, 1.0], "beta": [2.0, 8.0, 2.0, 8.0], "test_acc": [0.1, 0.2, 0.3, 0.4]}
    )
    conf = np.eye(10) * 5 + 1
    figures = [
        plots.plot_target_probability({"T = 4": frame["p_t"]}),
        plots.plot_suppression(frame),
        plots.plot_tckd_vs_nckd(frame),
        plots.plot_dark_knowledge(decomposition.dark_knowledge(zt, y, 4.0), classes),
        plots.plot_warmup({"cfg": Config(epochs=5, warmup=3)}),
        plots.plot_class_delta({"CE": [0.5] * 10, "DKD": [0.6] * 10}, "CE", classes),
        plots.plot_confusion_delta(conf, conf.T, classes, ("CE", "DKD")),
        plots.plot_grid(grid),
        plots.plot_sweep(
            pd.DataFrame({"t": [1, 2], "test_mean": [50, 60], "test_std": [1, np.nan]}), "t", "T"
        ),
    ]
    for fig in figures:
        assert isinstance(fig, Figure)
        assert any(ax.get_title() for ax in fig.axes)


def test_reference_recipe_runs_never_share_a_setting_with_the_series_runs():
    series = {"dataset": "cifar10", "train_size": 5000, "tag": ""}
    reference = {**series, "tag": "ref:dkd_100"}
    assert reports._setting(series) == "cifar10, 5,000 training images (reduced)"
    assert (
        reports._setting(reference)
        == "cifar10, 5,000 training images, reference recipe as described (reduced)"
    )
    assert reports._setting({**series, "tag": "ref:as_run:dkd_100"}) == (
        "cifar10, 5,000 training images, reference recipe as run (reduced)"
    )
    assert reports._setting({"dataset": "cifar10", "train_size": None, "tag": "ref:teacher"}) == (
        "cifar10, reference recipe as described (full)"
    )
    assert reports._setting({**series, "tag": "ref:as_run:dkd_100"}, recipe=False) == reports._setting(series)


def test_a_run_recorded_in_two_folders_appears_once(tmp_path):
    """The same record in the committed folder and in this run's folder is one run, even when other
    records turn a column's None into NaN (and 0 into 0.0) in one folder's frame."""
    import json

    from dkdlib.config import Config

    record = {"name": "r", "config": Config(method="ce", dataset="synthetic").to_dict(), "metrics": {}}
    other = {"name": "o", "config": Config(method="ce", dataset="synthetic", data_seed=3, seed=5).to_dict()}
    for folder, records in (("a", [record, other]), ("b", [record])):
        (tmp_path / folder).mkdir()
        for i, rec in enumerate(records):
            (tmp_path / folder / f"{i}.json").write_text(json.dumps(rec))
    runs = reports.gather_runs({"committed": tmp_path / "a", "this run": tmp_path / "b"})
    assert len(runs) == 2 and sorted(runs["source"]) == ["committed", "this run"]

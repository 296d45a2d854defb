"""DKD analysis for the notebooks: per-sample decomposition, gradients, dark knowledge, run summaries
and the DKD-specific figures.

Everything is computed with `dkdlib.losses` (never a second copy of the loss), except
`official_dkd_loss`, a transcription of the official code kept only to show where it breaks.
Figures are built as `matplotlib.figure.Figure` objects outside pyplot and returned, so a notebook cell
that ends with the call shows the figure exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, PercentFormatter
from torch import Tensor, nn

from .data import Data, DeviceLoader
from .losses import dkd_terms
from .plots import figure
from .train import distill_weight, predict

if TYPE_CHECKING:
    from .train import Config, Run

__all__ = [
    "outputs",
    "teacher_outputs",
    "decompose",
    "identity_error",
    "dark_knowledge",
    "top_pairs",
    "grad_check",
    "official_dkd_loss",
    "agreement",
    "run_label",
    "runs_frame",
    "label_runs",
    "unique_runs",
    "reference_frame",
    "reference_accuracy",
    "summarize",
    "results_table",
    "conclusions",
    "reading_recipes",
    "reading_table",
    "reading_notes",
    "reading_conclusions",
    "plot_target_probability",
    "plot_suppression",
    "plot_tckd_vs_nckd",
    "plot_dark_knowledge",
    "plot_warmup",
    "plot_class_delta",
    "plot_confusion_delta",
    "plot_grid",
    "plot_sweep",
    "plot_bars",
    "plot_selection",
]

# --------------------------------------------------------------------------------------------------
# Model outputs and the per-sample decomposition
# --------------------------------------------------------------------------------------------------


def outputs(
    model: nn.Module, data: Data, split: str = "test", batch_size: int = 1000
) -> tuple[Tensor, Tensor]:
    """Logits (float32, on the CPU) and labels of `model` on one split ("train", "val", "test") of `data`."""
    splits = {
        "train": (data.x_train, data.y_train),
        "val": (data.x_val, data.y_val),
        "test": (data.x_test, data.y_test),
    }
    if split not in splits:
        raise ValueError(f"split must be one of {', '.join(splits)}; got {split!r}")
    x, y = splits[split]
    device = next(model.parameters()).device
    loader = DeviceLoader(x, y, batch_size, mean=data.mean, std=data.std, train=False, device=device)
    logits, labels = predict(model, loader)
    return logits.cpu(), labels.cpu()


def teacher_outputs(model: nn.Module, data: Data, split: str = "test") -> tuple[Tensor, Tensor]:
    """The teacher's logits and the labels on one split (no augmentation, eval mode)."""
    return outputs(model, data, split)


def decompose(logits_s: Tensor, logits_t: Tensor, y: Tensor, temperature: float = 4.0) -> pd.DataFrame:
    """One row per sample: KD (full KL, computed independently), TCKD, NCKD, p_t and KD's weight 1 − p_t."""
    tckd, nckd, pt = dkd_terms(logits_s, logits_t, y, temperature)
    log_ps = F.log_softmax(logits_s.float() / temperature, dim=1)
    log_pt = F.log_softmax(logits_t.float() / temperature, dim=1)
    kd = F.kl_div(log_ps, log_pt, reduction="none", log_target=True).sum(1)
    ps_t = log_ps.gather(1, y.long()[:, None]).squeeze(1).exp()
    frame = pd.DataFrame(
        {
            "label": y.cpu().numpy(),
            "p_t": pt.detach().double().cpu().numpy(),
            "p_t_student": ps_t.detach().double().cpu().numpy(),
            "kd": kd.detach().double().cpu().numpy(),
            "tckd": tckd.detach().double().cpu().numpy(),
            "nckd": nckd.detach().double().cpu().numpy(),
        }
    )
    frame["weight"] = 1.0 - frame["p_t"]
    frame["kd_nckd"] = frame["weight"] * frame["nckd"]  # the part of KD that is NCKD
    return frame


def identity_error(frame: pd.DataFrame) -> float:
    """max over samples of |KD − (TCKD + (1 − p_t)·NCKD)| for a `decompose` frame."""
    return float((frame["kd"] - (frame["tckd"] + frame["weight"] * frame["nckd"])).abs().max())


def _nontarget_probs(logits: Tensor, y: Tensor, temperature: float) -> Tensor:
    """p̂: softmax over the non-target classes (the target column is 0)."""
    mask = F.one_hot(y.long(), logits.shape[1]).bool()
    return torch.softmax((logits.float() / temperature).masked_fill(mask, float("-inf")), dim=1)


def dark_knowledge(
    logits: Tensor, y: Tensor, temperature: float = 4.0, num_classes: int | None = None
) -> np.ndarray:
    """C×C matrix: row c = mean non-target distribution p̂ over images of true class c (diagonal NaN)."""
    k = num_classes or logits.shape[1]
    q = _nontarget_probs(logits, y, temperature).double()
    matrix = torch.full((k, k), float("nan"), dtype=torch.float64)
    for c in range(k):
        rows = q[y == c]
        if len(rows):
            matrix[c] = rows.mean(0)
    matrix.fill_diagonal_(float("nan"))
    return matrix.numpy()


def top_pairs(matrix: np.ndarray, classes: Sequence[str], k: int = 5) -> pd.DataFrame:
    """The k largest entries of a dark-knowledge matrix: (true class, non-target class, mean p̂)."""
    rows = [
        {"true class": classes[i], "non-target class": classes[j], "mean p̂": float(matrix[i, j])}
        for i in range(len(classes))
        for j in range(len(classes))
        if i != j and np.isfinite(matrix[i, j])
    ]
    frame = pd.DataFrame(rows, columns=["true class", "non-target class", "mean p̂"])
    return frame.sort_values("mean p̂", ascending=False, kind="stable").head(k).reset_index(drop=True)


def grad_check(logits_s: Tensor, logits_t: Tensor, y: Tensor, temperature: float = 4.0) -> dict[str, Tensor]:
    """Autograd gradients of Σ TCKD and Σ NCKD w.r.t. the student logits, and their closed forms."""
    zs = logits_s.detach().float().clone().requires_grad_(True)
    tckd, nckd, pt_teacher = dkd_terms(zs, logits_t.detach().float(), y, temperature)
    (g_tckd,) = torch.autograd.grad(tckd.sum(), zs, retain_graph=True)
    (g_nckd,) = torch.autograd.grad(nckd.sum(), zs)
    mask = F.one_hot(y.long(), zs.shape[1]).bool()
    with torch.no_grad():
        pt_student = torch.softmax(zs / temperature, dim=1)[mask]
        q_s = _nontarget_probs(zs, y, temperature)
        q_t = _nontarget_probs(logits_t, y, temperature)
        diff = (pt_student - pt_teacher)[:, None]
        tckd_formula = torch.where(mask, diff, -q_s * diff) / temperature
        nckd_formula = (q_s - q_t) / temperature  # 0 on the target: both p̂ are 0 there
    return {
        "tckd": g_tckd,
        "nckd": g_nckd,
        "tckd_formula": tckd_formula,
        "nckd_formula": nckd_formula,
        "target_mask": mask,
    }


def official_dkd_loss(
    logits_student: Tensor,
    logits_teacher: Tensor,
    target: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> Tensor:
    """The official (mdistiller) DKD loss, transcribed for comparison only: it takes log of probabilities."""
    gt_mask = F.one_hot(target, logits_student.shape[1]).bool()
    other_mask = ~gt_mask
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)

    def cat_mask(p: Tensor) -> Tensor:  # [p_t, p_\t]
        return torch.cat([(p * gt_mask).sum(1, keepdim=True), (p * other_mask).sum(1, keepdim=True)], dim=1)

    pred_student, pred_teacher = cat_mask(pred_student), cat_mask(pred_teacher)
    log_pred_student = torch.log(pred_student)  # log(0) = -inf once p_\t underflows
    tckd = F.kl_div(log_pred_student, pred_teacher, reduction="sum") * temperature**2 / target.shape[0]
    pred_teacher_part2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
    log_pred_student_part2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
    nckd = (
        F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum")
        * temperature**2
        / target.shape[0]
    )
    return alpha * tckd + beta * nckd


def agreement(logits_a: Tensor, logits_b: Tensor) -> float:
    """Fraction of samples on which two models predict the same class."""
    return float((logits_a.argmax(1) == logits_b.argmax(1)).float().mean())


# --------------------------------------------------------------------------------------------------
# Runs, records and the reference table
# --------------------------------------------------------------------------------------------------

STUDENT_MODEL = "resnet8"


def run_label(row: Mapping[str, Any]) -> str:
    """Short recipe name: 'teacher', 'CE', 'KD', 'DKD α=1 β=8', 'TCKD α=0.5', 'NCKD β=2' (+ T if ≠ 4,
    the CE weight if ≠ 1 for DKD/TCKD/NCKD, and 'from init' for a run that started from a checkpoint)."""
    method = row.get("method")
    temp = row.get("temperature", 4.0)
    t = "" if temp is None or _isnan(temp) or float(temp) == 4.0 else f" T={float(temp):g}"
    ce_w = row.get("ce_weight", 1.0)
    if method in ("dkd", "tckd", "nckd") and ce_w is not None and not _isnan(ce_w) and float(ce_w) != 1.0:
        t += f" CE×{float(ce_w):g}"
    init = row.get("init")
    t += " from init" if isinstance(init, str) and init else ""
    if method == "ce":
        return ("CE" if row.get("model", STUDENT_MODEL) == STUDENT_MODEL else "teacher") + t
    if method == "kd":
        return "KD" + t
    if method == "tckd":
        return f"TCKD α={float(row['alpha']):g}" + t
    if method == "nckd":
        return f"NCKD β={float(row['beta']):g}" + t
    if method == "dkd":
        return f"DKD α={float(row['alpha']):g} β={float(row['beta']):g}" + t
    return str(method)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _setting(row: Mapping[str, Any], recipe: bool = True) -> str:
    """Which data and recipe a run had: 'synthetic (…)', 'cifar10, N training images[, reference recipe
    as described|as run] (reduced)' or 'cifar10[, reference recipe …] (full)'. recipe=False: the data only."""
    from .recipes import parse_tag

    dataset = row.get("dataset")
    if dataset == "synthetic":
        return "synthetic (fast mode smoke run)"
    # The reference table's readings (`reproduce`, tag "ref:…") and the series' own recipe never mix.
    parsed = parse_tag(row.get("tag"))
    text = f", reference recipe {parsed[0].replace('_', ' ')}" if parsed and recipe else ""
    size = row.get("train_size")
    if size is not None and not _isnan(size):
        return f"{dataset}, {int(size):,} training images{text} (reduced)"
    return f"{dataset}{text} (full)"


def runs_frame(runs: Mapping[str, Run] | Iterable[Run]) -> pd.DataFrame:
    """One row per Run: config fields and scalar metrics (the columns `load_results` gives), plus labels."""
    items = runs.items() if isinstance(runs, Mapping) else ((None, r) for r in runs)
    rows = []
    for key, run in items:
        row: dict[str, Any] = {"key": key, "name": run.config.run_name(), **run.config.to_dict()}
        row.update({k: v for k, v in run.metrics.items() if not isinstance(v, list)})
        rows.append(row)
    return label_runs(pd.DataFrame(rows))


def unique_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct run (same config, seed included): the latest record wins.

    Keyed on the identity fields of `Config` rather than the `name` column, which `load_results` fills
    from the config's (usually empty) `name` field.
    """
    from .config import FIELDS

    if frame is None or frame.empty:
        return frame
    fields = [name for name, meta in FIELDS.items() if meta["identity"] != "no" and name in frame]
    if not fields:
        return frame
    key = pd.Series(
        ["|".join(map(repr, row)) for row in frame[fields].itertuples(index=False)], index=frame.index
    )
    return frame.loc[~key.duplicated(keep="last")]


def label_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the columns `row` (recipe label, see `run_label`) and `setting` (which data) to a runs frame."""
    if frame.empty:
        return frame.assign(row=pd.Series(dtype=str), setting=pd.Series(dtype=str))
    frame = frame.copy()
    records = frame.to_dict("records")
    frame["row"] = [run_label(r) for r in records]
    frame["setting"] = [_setting(r) for r in records]
    return frame


def reference_frame() -> pd.DataFrame:
    """`recipes.REFERENCE` as a DataFrame with the same `row` labels as our runs (accuracies in %)."""
    from .recipes import REFERENCE

    rows = []
    for name, method, epochs, alpha, beta, test, val in REFERENCE:
        model = "resnet18" if name == "teacher" else STUDENT_MODEL
        label = run_label(
            {"method": method, "model": model, "alpha": alpha, "beta": beta, "temperature": 4.0}
        )
        rows.append(
            {"ref_name": name, "row": label, "ref_epochs": epochs, "ref_test": 100 * test,
             "ref_val": None if val is None else 100 * val}
        )  # fmt: skip
    return pd.DataFrame(rows)


GROUP = ["setting", "row", "model", "epochs"]


def reference_accuracy() -> dict[str, float]:
    """Reference test accuracy (%) per row label; the shortest schedule where a row has two."""
    ref = reference_frame().sort_values("ref_epochs", kind="stable").drop_duplicates("row")
    return dict(zip(ref["row"], ref["ref_test"], strict=True))


def summarize(frame: pd.DataFrame, by: Sequence[str] = tuple(GROUP)) -> pd.DataFrame:
    """Mean ± std (in %) over seeds of last-epoch test accuracy and test accuracy at the best val epoch."""
    by = list(by)
    columns = [*by, "runs", "seeds", "test_mean", "test_std", "best_val_test_mean", "best_val_test_std"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.copy()
    if "test_acc_at_best_val" not in frame:
        frame["test_acc_at_best_val"] = np.nan
    grouped = frame.groupby(by, sort=False, dropna=False)
    out = grouped.agg(
        runs=("test_acc", "size"),
        seeds=("seed", lambda s: ",".join(str(int(v)) for v in sorted(set(s)))),
        test_mean=("test_acc", "mean"),
        test_std=("test_acc", "std"),
        best_val_test_mean=("test_acc_at_best_val", "mean"),
        best_val_test_std=("test_acc_at_best_val", "std"),
    ).reset_index()
    for col in ("test_mean", "test_std", "best_val_test_mean", "best_val_test_std"):
        out[col] = 100 * out[col].astype(float)
    return out[columns]


def _pm(mean: float, std: float) -> str:
    if mean is None or _isnan(mean):
        return "–"
    return f"{mean:.2f}" if std is None or _isnan(std) else f"{mean:.2f} ± {std:.2f}"


def results_table(results: pd.DataFrame) -> pd.DataFrame:
    """Every recorded run grouped by recipe (mean ± std over seeds, in %), beside the reference table."""
    columns = ["setting", "row", "model", "epochs", "runs", "seeds", "test acc (last epoch)",
               "test acc (at best val)", "reference test acc"]  # fmt: skip
    if results is None or results.empty:
        return pd.DataFrame(columns=columns)
    frame = unique_runs(results)
    summary = summarize(label_runs(frame))
    ref = reference_frame()
    ref_text = (
        ref.assign(
            text=[f"{t:.2f} ({e} ep)" for t, e in zip(ref["ref_test"], ref["ref_epochs"], strict=True)]
        )
        .groupby("row", sort=False)["text"]
        .agg("; ".join)
    )
    summary["test acc (last epoch)"] = [
        _pm(m, s) for m, s in zip(summary["test_mean"], summary["test_std"], strict=True)
    ]
    summary["test acc (at best val)"] = [
        _pm(m, s) for m, s in zip(summary["best_val_test_mean"], summary["best_val_test_std"], strict=True)
    ]
    summary["reference test acc"] = summary["row"].map(ref_text).fillna("–")
    order = {label: i for i, label in enumerate(_ROW_ORDER)}
    summary["_order"] = [order.get(r.split(" T=")[0], len(order)) for r in summary["row"]]
    summary = summary.sort_values(["setting", "_order", "row", "epochs"], kind="stable")
    return summary[columns].reset_index(drop=True)


_ROW_ORDER = ["teacher", "CE", "KD", "DKD α=1 β=8"]


def conclusions(results: pd.DataFrame) -> list[str]:
    """Plain sentences computed from the records (one block per setting); true whatever the data say."""
    if results is None or results.empty:
        return ["No run records found: there is nothing to conclude yet."]
    frame = label_runs(unique_runs(results))
    summary = summarize(frame)
    ref = reference_frame().set_index("ref_name")["ref_test"]
    lines: list[str] = []
    for setting, block in summary.groupby("setting", sort=False):
        lines.append(f"[{setting}] {int(block['runs'].sum())} runs.")
        if "synthetic" in setting:
            lines.append(
                "  These are smoke runs on synthetic images: they show the pipeline works, not how DKD does."
            )
        students = block[block["row"] != "teacher"]
        if students.empty:
            lines.append("  No student runs.")
            continue
        # Compare methods at the most common student epoch count (equal training for every method).
        epochs = int(students["epochs"].mode().iloc[0])
        same = students[students["epochs"] == epochs].sort_values("test_mean", ascending=False)
        best = same.iloc[0]
        lines.append(
            f"  At {epochs} epochs the best student recipe is {best['row']} with "
            f"{_pm(best['test_mean'], best['test_std'])}% "
            f"test accuracy (last epoch, {int(best['runs'])} run(s))."
        )
        get = {r["row"]: r for _, r in same.iterrows()}
        if "CE" in get and "DKD α=1 β=8" in get:
            ce, dkd = get["CE"], get["DKD α=1 β=8"]
            gap = dkd["test_mean"] - ce["test_mean"]
            noise = np.nanmax([ce["test_std"], dkd["test_std"], 0.0])
            verdict = (
                "more than twice the seed-to-seed spread" if noise > 0 and abs(gap) > 2 * noise
                else "within twice the seed-to-seed spread" if noise > 0
                else "from single runs, so the spread is unknown"
            )  # fmt: skip
            lines.append(f"  DKD − CE at equal epochs: {gap:+.2f} points ({verdict}).")
            ref_gap = ref["dkd_100"] - ref["student"]
            lines.append(
                f"  The reference's gap is {ref_gap:+.2f} points (DKD {ref['dkd_100']:.2f}% vs CE "
                f"{ref['student']:.2f}%), but its CE student trained for 50 epochs "
                f"and DKD for 100; trained equally long, these records give DKD − CE = {gap:+.2f} points."
            )
            ce_runs = students[students["row"] == "CE"]
            dkd_runs = students[students["row"] == "DKD α=1 β=8"]
            if ce_runs["epochs"].nunique() > 1 and len(dkd_runs):
                short, long_ = ce_runs.sort_values("epochs").iloc[[0, -1]].to_dict("records")
                d = dkd_runs[dkd_runs["epochs"] == long_["epochs"]]
                if len(d):
                    total = float(d["test_mean"].iloc[0]) - short["test_mean"]
                    closed = long_["test_mean"] - short["test_mean"]
                    if total > 0:
                        lines.append(
                            f"  Training CE for {long_['epochs']} instead of {short['epochs']} epochs closes "
                            f"{100 * closed / total:.0f}% of the DKD − CE({short['epochs']} ep) gap."
                        )
            if "KD" in get:
                lines.append(
                    f"  DKD − KD at equal epochs: {dkd['test_mean'] - get['KD']['test_mean']:+.2f} points."
                )
            teacher = block[block["row"] == "teacher"]
            if len(teacher) and teacher["test_mean"].iloc[0] > ce["test_mean"]:
                share = gap / (teacher["test_mean"].iloc[0] - ce["test_mean"])
                lines.append(
                    f"  DKD closes {100 * share:.0f}% of the teacher − CE student gap."
                    if share > 0
                    else "  DKD closes none of the teacher − CE student gap here (it is not above CE)."
                )
        else:
            lines.append("  No CE and DKD (α=1, β=8) students at equal epochs to compare.")
    return lines


def _reading_lines() -> list[tuple[str, str, dict[str, str]]]:
    """The lines of the readings table: (key, the line in the reference's words, {reading: row name}).

    The reference's rows come first (the same row name in every reading), then the fair baselines,
    one line per (method, distilled row it is as long as): as described CE 100 ep and as run CE 50+100
    ep share the line "CE, as long as DKD α=1 β=8 100 ep".
    """
    from .recipes import BASELINES, READINGS, REFERENCE

    lines: list[tuple[str, str, dict[str, str]]] = []
    words = {}
    for name, method, epochs, alpha, beta, _, _ in REFERENCE:
        model = "resnet18" if name == "teacher" else STUDENT_MODEL
        words[name] = (
            f"{run_label({'method': method, 'model': model, 'alpha': alpha, 'beta': beta})}, {epochs} ep"
        )
        lines.append((name, words[name], {reading: name for reading in READINGS}))
    for reading in READINGS:
        for name, method, _, like in BASELINES[reading]:
            key = f"{method}~{like}"
            line = next((ln for ln in lines if ln[0] == key), None)
            if line is None:
                line = (key, f"{method.upper()}, as long as {words[like]}", {})
                lines.append(line)
            line[2][reading] = name
    return lines


def _reading_runs(results: pd.DataFrame) -> pd.DataFrame:
    """The `reproduce` runs among `results`, one per run, with their reading, row and data setting."""
    from .recipes import parse_tag

    frame = unique_runs(results) if results is not None and not results.empty else pd.DataFrame()
    if frame.empty or "tag" not in frame:
        return pd.DataFrame(columns=["reading", "ref_row", "data_setting"])
    parsed = [parse_tag(t) for t in frame["tag"]]
    frame = frame.loc[[p is not None for p in parsed]].copy()
    parsed = [p for p in parsed if p is not None]
    frame["reading"] = [p[0] for p in parsed]
    frame["ref_row"] = [p[1] for p in parsed]
    frame["data_setting"] = [_setting(r, recipe=False) for r in frame.to_dict("records")]
    for col in ("test_acc_at_best_val_loss", "init_epochs"):
        if col not in frame:
            frame[col] = np.nan
    return frame


def _epochs_text(block: pd.DataFrame) -> str:
    """'4 ep', or '2+4 ep' for runs that started from a checkpoint trained 2 epochs."""
    epochs = int(block["epochs"].iloc[0])
    before = block["init_epochs"].iloc[0]
    return f"{epochs} ep" if before is None or _isnan(before) else f"{int(before)}+{epochs} ep"


def _cell(block: pd.DataFrame, column: str) -> str:
    """Mean ± std over the block's runs (in %), its epochs and run count; '–' without runs."""
    if block.empty:
        return "–"
    values = 100 * block[column].astype(float)
    return f"{_pm(values.mean(), values.std())} ({_epochs_text(block)}, n={len(block)})"


def reading_recipes() -> pd.DataFrame:
    """What each row of the reference table trains under each reading, from `recipes.reference_configs`
    (at full scale): loss weights, temperature, warm-up, start, batch, weight decay, schedule, epochs,
    and what the as-run reading infers (`recipes.AS_RUN_INFERRED`)."""
    from .recipes import AS_RUN_INFERRED, READINGS, reference_configs

    out = []
    for reading in READINGS:
        for name, c in reference_configs("teacher.pt", reading=reading).items():
            guess = (
                AS_RUN_INFERRED.get(name, AS_RUN_INFERRED.get(c.method, "")) if reading == "as_run" else ""
            )
            start = "CE student" if c.init else "ImageNet" if c.pretrained else "scratch"
            sched = (
                f"plateau ×{c.plateau_factor:g}/{c.plateau_patience}"
                if c.schedule == "plateau"
                else c.schedule
            )
            out.append({
                "row": name, "reading": reading.replace("_", " "), "method": c.method, "model": c.model,
                "CE w": c.ce_weight, "T": c.temperature if c.method != "ce" else None,
                "α": c.alpha if c.method in ("dkd", "tckd") else None,
                "β": c.beta if c.method in ("dkd", "nckd") else None,
                "warm-up": c.warmup, "start": start, "batch": c.batch_size, "wd": c.weight_decay,
                "lr schedule": sched, "std": "copied" if c.std else "true", "epochs": c.epochs,
                "inferred": guess,
            })  # fmt: skip
    frame = pd.DataFrame(out)
    order = {name: i for i, name in enumerate(dict.fromkeys(frame["row"]))}
    return frame.sort_values(["row", "reading"], key=lambda col: col.map(order) if col.name == "row" else col,
                             kind="stable").reset_index(drop=True)  # fmt: skip


def reading_table(results: pd.DataFrame) -> pd.DataFrame:
    """The reference table's rows with our runs of each reading side by side (test accuracy in %).

    One line per reference row and fair baseline, per data setting; for each reading, mean ± std over
    seeds of the last epoch's test accuracy and of the test accuracy at the lowest-validation-loss
    epoch (the reference's own selection), with epochs (a+b: b epochs from a checkpoint trained a) and
    the number of runs. Only `reproduce` records (tag "ref:…") count.
    """
    from .recipes import READINGS, REFERENCE

    ref_test = {name: 100 * test for name, *_, test, _ in REFERENCE}
    columns = ["setting", "row (the reference's words)", "reference (at lowest val loss)"]
    for reading in READINGS:
        name = reading.replace("_", " ")
        columns += [f"{name}: last epoch", f"{name}: at lowest val loss"]
    frame = _reading_runs(results)
    out = []
    for setting, runs in frame.groupby("data_setting", sort=True):
        for key, words, rows in _reading_lines():
            cells = []
            for reading in READINGS:
                block = runs[(runs["reading"] == reading) & (runs["ref_row"] == rows.get(reading))]
                cells += [_cell(block, "test_acc"), _cell(block, "test_acc_at_best_val_loss")]
            if any(c != "–" for c in cells):
                ref = f"{ref_test[key]:.2f}" if key in ref_test else "–"
                out.append([setting, words, ref, *cells])
    return pd.DataFrame(out, columns=columns)


def reading_notes(results: pd.DataFrame) -> list[str]:
    """The notes that `reproduce` runs carry (e.g. a teacher trained from scratch for want of ImageNet
    weights), one line per distinct (setting, reading, note)."""
    frame = _reading_runs(results)
    if frame.empty or "note" not in frame:
        return []
    noted = frame[frame["note"].fillna("").astype(str) != ""]
    keys = noted[["data_setting", "reading", "note"]].drop_duplicates()
    return [f"{s}, {r.replace('_', ' ')}: {n}" for s, r, n in keys.itertuples(index=False)]


def _row_mean(runs: pd.DataFrame, row: str | None, column: str) -> tuple[float, str] | None:
    """Mean (in %) of `column` over the runs of reference row `row`, and their epochs; None if none."""
    block = runs[runs["ref_row"] == row]
    if row is None or block.empty or block[column].isna().all():
        return None
    return 100 * float(block[column].mean()), _epochs_text(block)


def reading_conclusions(results: pd.DataFrame) -> list[str]:
    """What the records say about the reference's "7% increase", per data setting and reading.

    DKD (100 and 200 ep rows) against the 50-epoch CE student, as the reference compared them, and
    against CE trained as long (the fair baselines), at the lowest-validation-loss epoch (the
    reference's selection) and at the last epoch. Every number comes from `results` or the reference.
    """
    from .recipes import READINGS, REFERENCE

    ref = {name: 100 * test for name, *_, test, _ in REFERENCE}
    gain, gain_200 = ref["dkd_100"] - ref["student"], ref["dkd_200"] - ref["student"]
    lines = [
        f"The reference: DKD 100 ep {ref['dkd_100']:.2f}% − student 50 ep {ref['student']:.2f}% = "
        f"{gain:+.2f} points (DKD 200 ep: {gain_200:+.2f}); as its code ran, the DKD students trained "
        "50 CE + 100 (200) DKD epochs, at T = 8 and β = 0.5."
    ]
    fair = {key: rows for key, _, rows in _reading_lines() if key.startswith("ce~")}
    selections = (("test_acc_at_best_val_loss", "at lowest val loss"), ("test_acc", "last epoch"))
    for setting, runs in _reading_runs(results).groupby("data_setting", sort=True):
        for reading in READINGS:
            mine = runs[runs["reading"] == reading]
            if mine.empty:
                continue
            lines.append(f"[{setting}, {reading.replace('_', ' ')}] {len(mine)} runs.")
            for dkd in ("dkd_100", "dkd_200"):
                baseline = fair.get(f"ce~{dkd}", {}).get(reading)
                for column, when in selections:
                    d, s = _row_mean(mine, dkd, column), _row_mean(mine, "student", column)
                    if d is None or s is None:
                        continue
                    text = (f"  {dkd} ({when}): DKD {d[0]:.2f}% ({d[1]}) − CE student {s[0]:.2f}% ({s[1]}) "
                            f"= {d[0] - s[0]:+.2f} points")  # fmt: skip
                    f = _row_mean(mine, baseline, column)
                    if f is not None:
                        text += f"; − CE as long ({baseline}, {f[1]}) {f[0]:.2f}% = {d[0] - f[0]:+.2f} points"
                    lines.append(text + ".")
    return lines


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def _fig(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    return figure(width, height, 1, ncols)


def plot_target_probability(p_t: Mapping[str, np.ndarray], title: str | None = None) -> Figure:
    """Histograms of the teacher's probability of the true class, one per temperature (dict label → p_t)."""
    fig, ax = _fig(6.5, 3.8)
    bins = np.linspace(0, 1, 41)
    for label, values in p_t.items():
        values = np.asarray(values)
        ax.hist(values, bins=bins, alpha=0.55, label=f"{label} (median {np.median(values):.2f})")
    ax.set_xlabel("teacher's probability of the true class, $p_t^{\\mathcal{T}}$")
    ax.set_ylabel("test images")
    ax.set_title(title or "How confident is the teacher? (test set)")
    ax.legend(fontsize="small", loc="upper center")
    return fig


def plot_suppression(frame: pd.DataFrame, temperature: float = 4.0, bins: int = 10) -> Figure:
    """NCKD per sample vs the teacher's p_t, with and without KD's weight (1 − p_t), and binned shares."""
    fig, (ax, ax2) = _fig(11, 4.0, 2)
    floor = 1e-6
    ax.scatter(frame["p_t"], frame["nckd"].clip(lower=floor), s=6, alpha=0.35, color="tab:gray",
               label="NCKD (what DKD weights by β)")  # fmt: skip
    ax.scatter(frame["p_t"], frame["kd_nckd"].clip(lower=floor), s=6, alpha=0.45, color="tab:red",
               label="(1 − $p_t$)·NCKD (what KD keeps)")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel(f"teacher's $p_t$ (T = {temperature:g})")
    ax.set_ylabel("per-sample loss (nats, no T²)")
    ax.set_title("KD shrinks NCKD on confident samples")
    ax.legend(fontsize="small", markerscale=3)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(frame["p_t"], edges) - 1, 0, bins - 1)
    nckd = np.bincount(which, frame["nckd"], minlength=bins)
    kept = np.bincount(which, frame["kd_nckd"], minlength=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    width = 0.9 / bins
    total = max(float(nckd.sum()), 1e-12)
    ax2.bar(centers, nckd / total, width=width, color="tab:gray", alpha=0.6, label="NCKD (DKD)")
    ax2.bar(
        centers, kept / total, width=width * 0.6, color="tab:red", alpha=0.85, label="(1 − $p_t$)·NCKD (KD)"
    )
    ax2.set_xlabel(f"teacher's $p_t$ (bins of {1 / bins:.1f})")
    ax2.set_ylabel("share of the test set's total NCKD")
    ax2.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax2.set_title("Where the non-target signal sits, and what KD keeps")
    ax2.legend(fontsize="small")
    return fig


def plot_tckd_vs_nckd(frame: pd.DataFrame, temperature: float = 4.0) -> Figure:
    """Per-sample TCKD against NCKD (log–log), coloured by the teacher's p_t."""
    fig, ax = _fig(6.2, 4.6)
    floor = 1e-7
    points = ax.scatter(frame["nckd"].clip(lower=floor), frame["tckd"].clip(lower=floor), c=frame["p_t"],
                        cmap="viridis", vmin=0, vmax=1, s=7, alpha=0.6)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor log labels overlap
    ax.set_xlabel("NCKD (nats)")
    ax.set_ylabel("TCKD (nats)")
    ax.set_title(f"Per-sample TCKD vs NCKD, teacher vs student (T = {temperature:g})")
    fig.colorbar(points, ax=ax, label="teacher's $p_t$")
    return fig


def plot_dark_knowledge(matrix: np.ndarray, classes: Sequence[str], temperature: float = 4.0) -> Figure:
    """Heatmap of the teacher's mean non-target distribution p̂ for each true class (diagonal blank)."""

    return _class_heatmap(
        matrix, classes, xlabel="non-target class",
        title=f"Dark knowledge: the teacher's non-target distribution (T = {temperature:g})",
        mask=~np.isfinite(matrix), fmt=".2f", cmap="magma_r", vmin=0,
        cbar_kws={"label": "mean $\\hat p$ (share of the non-target mass)"},
    )  # fmt: skip


def _class_heatmap(matrix: np.ndarray, classes: Sequence[str], xlabel: str, title: str, **heatmap) -> Figure:
    """A square class × class heatmap (rows: true class), annotated when there are few classes."""
    import seaborn as sns

    k = len(classes)
    size = max(5.0, 0.6 * k + 2)
    fig, ax = _fig(size + 1.2, size)
    sns.heatmap(matrix, annot=k <= 12, square=True, xticklabels=classes, yticklabels=classes,
                annot_kws={"fontsize": 7}, ax=ax, **heatmap)  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel("true class")
    ax.set_title(title)
    ax.grid(False)
    ax.tick_params(axis="x", labelrotation=45)
    ax.tick_params(axis="y", labelrotation=0)
    return fig


def plot_warmup(configs: Mapping[str, Config]) -> Figure:
    """The distillation weight min(epoch / warmup, 1) per epoch, for each labelled config."""
    fig, ax = _fig(6.5, 3.4)
    for label, cfg in configs.items():
        epochs = np.arange(1, cfg.epochs + 1)
        ax.plot(epochs, [distill_weight(cfg, int(e)) for e in epochs], marker="o", markersize=3,
                label=f"{label}: warmup {cfg.warmup}, {cfg.epochs} epochs")  # fmt: skip
    ax.set_xlabel("epoch (counted from 1)")
    ax.set_ylabel("weight of α·TCKD + β·NCKD")
    ax.set_ylim(0, 1.05)
    ax.set_title("DKD warm-up: min(epoch / warmup, 1)")
    ax.legend(fontsize="small", loc="lower right")
    return fig


def plot_class_delta(
    per_class: Mapping[str, Sequence[float]], baseline: str, classes: Sequence[str]
) -> Figure:
    """Per-class test accuracy of each run minus `baseline`'s, in percentage points."""
    base = np.asarray(per_class[baseline], float)
    others = [k for k in per_class if k != baseline]
    fig, ax = _fig(max(6.5, 0.75 * len(classes)), 3.8)
    width = 0.8 / max(len(others), 1)
    x = np.arange(len(classes))
    for i, label in enumerate(others):
        delta = 100 * (np.asarray(per_class[label], float) - base)
        ax.bar(x + (i - (len(others) - 1) / 2) * width, delta, width=width, label=f"{label} − {baseline}")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, classes, rotation=45, ha="right")
    ax.set_xlabel("class")
    ax.set_ylabel("test accuracy difference (points)")
    ax.set_title(f"Per-class test accuracy relative to {baseline}")
    ax.legend(fontsize="small")
    return fig


def plot_confusion_delta(confusion_a: np.ndarray, confusion_b: np.ndarray, classes: Sequence[str],
                         labels: tuple[str, str] = ("A", "B")) -> Figure:  # fmt: skip
    """Heatmap of (row-normalised confusion of B) − (that of A), in percentage points."""

    def norm(c: np.ndarray) -> np.ndarray:
        c = np.asarray(c, float)
        return c / np.maximum(c.sum(1, keepdims=True), 1)

    delta = 100 * (norm(confusion_b) - norm(confusion_a))
    limit = max(float(np.abs(delta).max()), 1e-9)
    return _class_heatmap(
        delta, classes, xlabel="predicted class",
        title=f"Confusion: {labels[1]} − {labels[0]} (diagonal: more correct is red)",
        fmt=".0f", cmap="RdBu_r", vmin=-limit, vmax=limit,
        cbar_kws={"label": "change (percentage points of the true class)"},
    )  # fmt: skip


def plot_grid(frame: pd.DataFrame, value: str = "test_acc", title: str | None = None) -> Figure:
    """α×β heatmap of mean test accuracy (in %) over DKD runs in `frame` (columns alpha, beta)."""
    import seaborn as sns

    grid = frame.groupby(["alpha", "beta"])[value].mean().unstack("beta") * 100
    fig, ax = _fig(1.3 * grid.shape[1] + 3, 1.0 * grid.shape[0] + 2.2)
    sns.heatmap(grid, annot=True, fmt=".1f", cmap="viridis", ax=ax,
                cbar_kws={"label": "test accuracy (%)"})  # fmt: skip
    ax.set_xlabel("β (NCKD weight)")
    ax.set_ylabel("α (TCKD weight)")
    ax.tick_params(axis="y", labelrotation=0)
    ax.set_title(title or "DKD test accuracy over α × β")
    ax.grid(False)
    return fig


def plot_sweep(summary: pd.DataFrame, x: str, ax_title: str, reference: Mapping[float, float] | None = None,
               xlabel: str | None = None, ax: Any = None) -> Figure:  # fmt: skip
    """Mean ± std test accuracy (%) against one hyper-parameter; optional reference points {x: acc %}."""
    fig = None
    if ax is None:
        fig, ax = _fig(5.0, 3.6)
    data = summary.sort_values(x)
    single = "runs" not in data or bool((data["runs"] <= 1).all())
    ax.errorbar(data[x], data["test_mean"], yerr=data["test_std"].fillna(0), marker="o", capsize=4,
                label="ours (one run per point)" if single else "ours (mean ± std over seeds)")  # fmt: skip
    if reference:
        xs = sorted(reference)
        ax.plot(xs, [reference[v] for v in xs], linestyle="--", marker="D", color="black",
                label="reference (CIFAR-10, 100 ep)")  # fmt: skip
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(ax_title)
    ax.legend(fontsize="small")
    return fig if fig is not None else ax.figure


def plot_bars(
    summary: pd.DataFrame, reference: Mapping[str, float] | None = None, title: str | None = None
) -> Figure:
    """Horizontal bars of mean ± std test accuracy (%) per row label, with reference values as diamonds."""
    data = summary.reset_index(drop=True)
    fig, ax = _fig(8.0, 0.45 * len(data) + 2.2)
    y = np.arange(len(data))
    runs = data["runs"] if "runs" in data else pd.Series(1, index=data.index)
    ax.barh(y, data["test_mean"], color="tab:blue", alpha=0.75, label="ours: last-epoch test accuracy")
    several = (runs > 1) & data["test_std"].notna()
    if several.any():
        ax.errorbar(data["test_mean"][several], y[several], xerr=data["test_std"][several], fmt="none",
                    ecolor="black", capsize=3, label="± std over seeds")  # fmt: skip
    if reference:
        ref = np.array([reference.get(r, np.nan) for r in data["row"]], dtype=float)
        if np.isfinite(ref).any():
            ax.scatter(ref, y, marker="D", color="black", zorder=3,
                       label="reference table (CIFAR-10, its own recipe and epochs)")  # fmt: skip
    labels = [f"{r} ({int(e)} ep, {int(n)} run{'s' if n > 1 else ''})"
              for r, e, n in zip(data["row"], data["epochs"], runs, strict=True)]  # fmt: skip
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(title or "Test accuracy by recipe")
    fig.legend(loc="outside lower center", ncols=2, fontsize="small")
    return fig


def plot_selection(frame: pd.DataFrame) -> Figure:
    """Per run: last-epoch test accuracy against test accuracy at the best-validation epoch (both in %)."""
    fig, ax = _fig(5.2, 4.6)
    family = frame["row"].str.split().str[0]  # CE, KD, DKD, TCKD, NCKD, teacher
    for name, block in frame.groupby(family, sort=False):
        ax.scatter(100 * block["test_acc"], 100 * block["test_acc_at_best_val"], s=22, alpha=0.8, label=name)
    values = 100 * pd.concat([frame["test_acc"], frame["test_acc_at_best_val"]]).dropna()
    if len(values):
        lo, hi = float(values.min()) - 1, float(values.max()) + 1
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, linestyle="--", label="equal")
    ax.set_xlabel("test accuracy, last epoch (%)")
    ax.set_ylabel("test accuracy at the best-val epoch (%)")
    ax.set_title("Last epoch vs best-validation selection, per run")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig

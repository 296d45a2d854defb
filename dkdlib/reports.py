"""Reports on recorded runs: labels and settings, the results table beside the reference, the two
readings of the reference, and conclusions computed from the records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .methods import METHODS, SYMBOLS
from .verdicts import compare_seeds

if TYPE_CHECKING:
    from .train import Run

__all__ = [
    "run_label",
    "label_head",
    "runs_frame",
    "unique_runs",
    "label_runs",
    "committed_results_dir",
    "gather_runs",
    "run_history",
    "selection_table",
    "compare_recipes",
    "reference_frame",
    "reference_accuracy",
    "reference_matches",
    "summarize_runs",
    "results_table",
    "conclusions",
    "reading_recipes",
    "reading_table",
    "reading_notes",
    "reading_conclusions",
]


STUDENT_MODEL = "resnet8"


def run_label(row: Mapping[str, Any]) -> str:
    """Short recipe name: the method's label ('CE', 'KD', 'DKD'; 'teacher' for a CE run of another model
    than the students'), the settings it always shows ('DKD α=1 β=8', 'TCKD α=0.5'), then every setting
    of the method that differs from its default ('T=2', 'CE×0.1', 'KD×0.9', 'W=2' epochs of warm-up),
    and 'from init' for a run that started from a checkpoint. Runs of one label share every setting of
    their method, so averaging them mixes seeds only."""
    method = METHODS.get(row.get("method"))
    if method is None:
        return str(row.get("method"))
    parts = [method.label]
    if row.get("method") == "ce" and row.get("model", STUDENT_MODEL) != STUDENT_MODEL:
        parts = ["teacher"]
    for name in sorted(method.settings, key=lambda n: (n not in method.shown, list(SYMBOLS).index(n))):
        value, default = row.get(name), method.settings[name]
        value = default if value is None or _isnan(value) else float(value)
        if name in method.shown or value != default:
            parts.append(f"{SYMBOLS[name]}{value:g}")
    init = row.get("init")
    if isinstance(init, str) and init:
        parts.append("from init")
    return " ".join(parts)


def label_head(label: str, drop: tuple[str, ...] = ("W=",)) -> str:
    """A label without its `drop` settings (default: the warm-up, 'DKD α=1 β=8 W=2' → 'DKD α=1 β=8'):
    the row of the reference table a run stands beside, whatever warm-up its scale took."""
    return " ".join(part for part in label.split(" ") if not part.startswith(drop))


def _main_row(rows: Mapping[str, Mapping[str, Any]], head: str) -> Mapping[str, Any] | None:
    """Of the groups `rows` ({label: summary row}), the one that stands for the series' recipe `head`
    ('DKD α=1 β=8', 'KD'): its label is `head` up to the warm-up and the loss weights its scale sets
    (W=, CE×, KD×); of several (a warm-up sweep), the one with the most runs (the seeds)."""
    same = [r for label, r in rows.items() if label_head(label, ("W=", "CE×", "KD×")) == head]
    return max(same, key=lambda r: r["runs"], default=None)


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
        ["|".join(repr(_plain(v)) for v in row) for row in frame[fields].itertuples(index=False)],
        index=frame.index,
    )
    return frame.loc[~key.duplicated(keep="last")]


def _plain(value: Any) -> Any:
    """A config value as its record holds it, whatever pandas made of it: a column with a missing value
    turns None into NaN and 0 into 0.0, lists stay lists."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def label_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the columns `row` (recipe label, see `run_label`) and `setting` (which data) to a runs frame."""
    if frame.empty:
        return frame.assign(row=pd.Series(dtype=str), setting=pd.Series(dtype=str))
    frame = frame.copy()
    records = frame.to_dict("records")
    frame["row"] = [run_label(r) for r in records]
    frame["setting"] = [_setting(r) for r in records]
    return frame


def committed_results_dir() -> Path | None:
    """The run records committed with the repository (`data/results/`), or None where they are not
    reachable: in a clone they sit next to the package (or next to the notebooks' folder); a
    `pip install` (as on Colab) installs the package without them."""
    from .config import repo_root

    for root in filter(None, (repo_root(), repo_root(Path.cwd().parent), repo_root(Path.cwd()))):
        folder = root / "data" / "results"
        if folder.is_dir() and any(folder.glob("*.json")):
            return folder
    return None


def gather_runs(folders: Mapping[str, Path | str | None]) -> pd.DataFrame:
    """Every run recorded in `folders` ({source name: results folder}), one row per distinct run, with
    the columns `source` (where the row's record came from), `record` (its file, see `run_history`),
    `row` and `setting`. Without any record it is an empty frame with the same columns.

    A folder named twice (e.g. this run's outputs are the repository's data/) is read once, under its
    first name; a missing folder (or None) gives no rows. A run recorded in several folders appears
    once: the record of the later folder wins (`unique_runs`), so name the committed records first.
    """
    from .results import load_results

    frames, seen = [], set()
    for source, folder in folders.items():
        if folder is None or not Path(folder).is_dir() or Path(folder).resolve() in seen:
            continue
        seen.add(Path(folder).resolve())
        frame = load_results(folder)
        if not frame.empty:
            frames.append(frame.assign(source=source, record=[str(Path(folder) / f) for f in frame["file"]]))
    if not frames:  # no rows, but a record's columns: a filter on `epochs` finds nothing (no KeyError)
        return label_runs(pd.DataFrame(columns=_record_columns()))
    return label_runs(unique_runs(pd.concat(frames, ignore_index=True)).reset_index(drop=True))


def _record_columns() -> list[str]:
    """The columns of a `gather_runs` frame before `label_runs`: what `results.load_results` gives (config
    fields, metrics, provenance) and where each row came from."""
    from .config import FIELDS
    from .results import PROVENANCE
    from .train import summarize

    # the metrics `summarize` writes for a history with validation, then `train.init_metrics`'
    epoch = dict(epoch=1, seconds=1.0, images_per_s=1.0, val_acc=0.0, val_loss=0.0)
    metrics = [*summarize([epoch]), "init_epochs", "total_epochs", "init_epoch"]
    provenance = [*PROVENANCE, "wall_time_s"]
    return list(dict.fromkeys([*FIELDS, "name", "file", *metrics, *provenance, "source", "record"]))


def run_history(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-epoch history of one run of `gather_runs` (read from its record file)."""
    import json

    return json.loads(Path(row["record"]).read_text()).get("history", [])


def selection_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Does picking the best-validation epoch change the test accuracy? Per setting: the runs, how many
    picked their last epoch anyway, and the change (best-val − last epoch, test accuracy in points)
    over the runs where it differs."""
    columns = ["setting", "runs", "best-val epoch = last epoch", "runs that differ", "change (points)"]
    if frame is None or frame.empty or "test_acc_at_best_val" not in frame:
        return pd.DataFrame(columns=columns)
    out = []
    for setting, block in frame.dropna(subset=["test_acc_at_best_val"]).groupby("setting", sort=False):
        diff = 100 * (block["test_acc_at_best_val"] - block["test_acc"]).astype(float)
        moved = diff[diff.abs() > 1e-9]
        change = (
            "–"
            if moved.empty
            else ", ".join(
                f"{row} {d:+.2f}" for row, d in zip(block.loc[moved.index, "row"], moved, strict=True)
            )
        )
        out.append([setting, len(block), int(len(block) - len(moved)), len(moved), change])
    return pd.DataFrame(out, columns=columns)


# The split sizes count too: the validation split is carved out before the training images are taken.
RECIPE_FIELDS = ("optimizer", "lr", "momentum", "weight_decay", "schedule", "batch_size", "epochs", "warmup",
                 "alpha", "beta", "temperature", "train_size", "val_size", "test_size")  # fmt: skip


def compare_recipes(configs: Mapping[str, Any], fields: Sequence[str] = RECIPE_FIELDS) -> pd.DataFrame:
    """The fields in which labelled `Config`s differ (one column per config), plus what follows from
    them: optimiser steps per epoch and in all (None without `train_size`: the full training split), and
    the distillation weight of each epoch (`warmup`). All values as text, one column per config."""
    from .train import distill_weight

    # Text from the start: pandas would turn None into a missing value, which nunique() does not count.
    table = pd.DataFrame({label: {f: str(c.setting(f)) for f in fields} for label, c in configs.items()})
    table = table.loc[table.nunique(axis=1) > 1]
    derived = {}
    for label, c in configs.items():
        steps = c.train_size // c.batch_size if c.train_size else None  # training drops a last partial batch
        derived[label] = {
            "steps per epoch": str(steps),
            "steps in all": str(None if steps is None else steps * c.epochs),
            "distillation weight per epoch": ", ".join(
                f"{distill_weight(c, e):g}" for e in range(1, c.epochs + 1)
            ),
        }
    return pd.concat([table, pd.DataFrame(derived)])


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


def reference_matches(frame: pd.DataFrame) -> list[tuple[str, ...]]:
    """Per run of `frame`, the rows of the reference table it stands beside (`recipes.REFERENCE` names).

    A `reproduce` run: the row its tag names, or none for a fair baseline the table does not have (CE or
    KD trained as long as DKD, e.g. "ref:as_described:ce_100": a CE run, but not the reference's 50-epoch
    CE student). Any other run: every row with its label (the series' CE student beside the reference's
    student, its DKD α=1 β=8 beside both DKD rows).
    """
    from .recipes import REFERENCE, parse_tag

    names = {row[0] for row in REFERENCE}
    ref = reference_frame()
    out = []
    for run in frame.to_dict("records"):
        parsed = parse_tag(run.get("tag") if isinstance(run.get("tag"), str) else None)
        if parsed is not None:
            out.append((parsed[1],) if parsed[1] in names else ())
        else:
            label = run["row"] if isinstance(run.get("row"), str) else run_label(run)
            out.append(tuple(ref.loc[ref["row"] == label_head(label), "ref_name"]))
    return out


def _reference_text(names: tuple[str, ...], ref: pd.DataFrame) -> str:
    """`ref`: `reference_frame()` indexed by ref_name."""
    return "; ".join(f"{ref.loc[n, 'ref_test']:.2f} ({ref.loc[n, 'ref_epochs']} ep)" for n in names) or "–"


def summarize_runs(frame: pd.DataFrame, by: Sequence[str] = tuple(GROUP)) -> pd.DataFrame:
    """Mean ± std (in %) over seeds of last-epoch test accuracy and test accuracy at the best val epoch.

    `ref_test` is the reference table's test accuracy (%) beside each group (the shortest schedule where
    its runs stand beside two rows; NaN beside none, see `reference_matches`), `ref_text` all of them with
    their epochs ("–" for none).
    """
    by = list(by)
    columns = [*by, "runs", "seeds", "test_mean", "test_std", "best_val_test_mean", "best_val_test_std",
               "ref_test", "ref_text"]  # fmt: skip
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.copy()
    if "test_acc_at_best_val" not in frame:
        frame["test_acc_at_best_val"] = np.nan
    frame["_ref"] = reference_matches(frame)
    grouped = frame.groupby(by, sort=False, dropna=False)
    out = grouped.agg(
        runs=("test_acc", "size"),
        seeds=("seed", lambda s: ",".join(str(int(v)) for v in sorted(set(s)))),
        test_mean=("test_acc", "mean"),
        test_std=("test_acc", "std"),
        best_val_test_mean=("test_acc_at_best_val", "mean"),
        best_val_test_std=("test_acc_at_best_val", "std"),
        _ref=("_ref", lambda s: s.iloc[0] if len(set(s)) == 1 else ()),  # runs that disagree: none
    ).reset_index()
    for col in ("test_mean", "test_std", "best_val_test_mean", "best_val_test_std"):
        out[col] = 100 * out[col].astype(float)
    ref = reference_frame().set_index("ref_name")
    out["ref_test"] = [
        float(ref.loc[min(names, key=lambda n: ref.loc[n, "ref_epochs"]), "ref_test"]) if names else np.nan
        for names in out["_ref"]
    ]
    out["ref_text"] = [_reference_text(names, ref) for names in out["_ref"]]
    return out[columns]


def _pm(mean: float, std: float) -> str:
    if mean is None or _isnan(mean):
        return "–"
    return f"{mean:.2f}" if std is None or _isnan(std) else f"{mean:.2f} ± {std:.2f}"


def results_table(results: pd.DataFrame) -> pd.DataFrame:
    """Every recorded run grouped by recipe (mean ± std over seeds, in %), beside the reference table."""
    columns = ["setting", "row", "model", "epochs", "runs", "seeds", "test acc (last epoch)",
               "test acc (at best val)", "reference test acc"]  # fmt: skip
    if results is not None and "source" in results:  # where the records came from (`gather_runs`)
        columns.append("source")
    if results is None or results.empty:
        return pd.DataFrame(columns=columns)
    frame = label_runs(unique_runs(results))
    summary = summarize_runs(frame)
    if "source" in columns:
        sources = frame.groupby(GROUP, sort=False, dropna=False)["source"].agg(
            lambda s: " + ".join(dict.fromkeys(s))
        )
        summary["source"] = [sources[tuple(key)] for key in summary[GROUP].itertuples(index=False)]
    summary["test acc (last epoch)"] = [
        _pm(m, s) for m, s in zip(summary["test_mean"], summary["test_std"], strict=True)
    ]
    summary["test acc (at best val)"] = [
        _pm(m, s) for m, s in zip(summary["best_val_test_mean"], summary["best_val_test_std"], strict=True)
    ]
    summary["reference test acc"] = summary["ref_text"]  # a fair baseline (CE as long as DKD): none
    order = {label: i for i, label in enumerate(_ROW_ORDER)}
    summary["_order"] = [order.get(label_head(r.split(" T=")[0], ("W=", "CE×", "KD×")), len(order))
                         for r in summary["row"]]  # fmt: skip
    summary = summary.sort_values(["setting", "_order", "row", "epochs"], kind="stable")
    return summary[columns].reset_index(drop=True)


_ROW_ORDER = ["teacher", "CE", "KD", "DKD α=1 β=8"]


def conclusions(results: pd.DataFrame) -> list[str]:
    """Plain sentences computed from the records (one block per setting); true whatever the data say."""
    if results is None or results.empty:
        return ["No run records found: there is nothing to conclude yet."]
    frame = label_runs(unique_runs(results))
    summary = summarize_runs(frame)
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
        lines += _dkd_against_ce(frame[frame["setting"] == setting], block, same, epochs, ref)
    return lines


def _dkd_against_ce(frame: pd.DataFrame, block: pd.DataFrame, same: pd.DataFrame, epochs: int,
                    ref: pd.Series) -> list[str]:  # fmt: skip
    """`conclusions`' sentences on DKD against CE (and KD, and the teacher) in one setting: `frame` its
    runs, `block` its summary, `same` its students at `epochs`, `ref` the reference's test accuracies."""
    lines: list[str] = []
    students = block[block["row"] != "teacher"]
    get = {r["row"]: r for _, r in same.iterrows()}
    ce, dkd, kd = (_main_row(get, head) for head in ("CE", "DKD α=1 β=8", "KD"))
    if ce is None or dkd is None:
        return ["  No CE and DKD (α=1, β=8) students at equal epochs to compare."]
    gap = dkd["test_mean"] - ce["test_mean"]
    # The series' one rule for "beyond the seed spread" (chapters 3, 5, 6 use it too).
    at = frame[frame["epochs"] == epochs]
    per_seed = [
        100 * at.loc[at["row"] == r, "test_acc"].astype(float).to_numpy() for r in (ce["row"], dkd["row"])
    ]
    verdict = compare_seeds(*per_seed, names=("CE", "DKD"))
    lines.append(f"  At equal epochs: {verdict}.")
    ref_gap = ref["dkd_100"] - ref["student"]
    lines.append(
        f"  The reference's gap is {ref_gap:+.2f} points (DKD {ref['dkd_100']:.2f}% vs CE "
        f"{ref['student']:.2f}%), but its CE student trained for 50 epochs "
        f"and DKD for 100; trained equally long, these records give DKD − CE = {gap:+.2f} points."
    )
    lines += _longer_ce(students[students["row"] == ce["row"]], students[students["row"] == dkd["row"]])
    if kd is not None:
        lines.append(f"  DKD − KD at equal epochs: {dkd['test_mean'] - kd['test_mean']:+.2f} points.")
    teacher = block[block["row"] == "teacher"]
    if len(teacher) and teacher["test_mean"].iloc[0] > ce["test_mean"]:
        share = gap / (teacher["test_mean"].iloc[0] - ce["test_mean"])
        lines.append(
            "  DKD closes none of the teacher − CE student gap here (it is not above CE)."
            if share <= 0
            else f"  DKD closes {100 * share:.0f}% of the teacher − CE student gap."
            if share <= 1
            else "  DKD ends above its teacher (it closes the whole teacher − CE student gap)."
        )
    return lines


def _longer_ce(ce_runs: pd.DataFrame, dkd_runs: pd.DataFrame) -> list[str]:
    """How much of DKD's lead over a short CE run a CE run trained as long as DKD closes."""
    lines: list[str] = []
    if ce_runs["epochs"].nunique() > 1 and len(dkd_runs):
        short, long_ = ce_runs.sort_values("epochs").iloc[[0, -1]].to_dict("records")
        d = dkd_runs[dkd_runs["epochs"] == long_["epochs"]]
        if len(d):
            total = float(d["test_mean"].iloc[0]) - short["test_mean"]
            closed = long_["test_mean"] - short["test_mean"]
            n, m = long_["epochs"], short["epochs"]
            if 0 < total and closed <= total:
                lines.append(
                    f"  Training CE for {n} instead of {m} epochs closes {100 * closed / total:.0f}% "
                    f"of the DKD({n} ep) − CE({m} ep) gap."
                )
            elif 0 < total:  # CE trained as long ends above DKD: "% of the gap" would pass 100
                lines.append(
                    f"  Training CE for {n} instead of {m} epochs gains {closed:.2f} points, more "
                    f"than the whole DKD({n} ep) − CE({m} ep) gap of {total:.2f}: trained as long, "
                    "CE ends above DKD."
                )
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
    for col in ("test_acc_at_best_val_loss", "test_acc_at_best_val", "init_epochs"):
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
    the epoch tested, whether it can be run again, and what the as-run reading infers
    (`recipes.AS_RUN_INFERRED`). A row that cannot be run again as run (`recipes.AS_RUN_NOT_REPRODUCIBLE`)
    shows what it ran, with its reason in "inferred"."""
    from .recipes import AS_RUN_INFERRED, AS_RUN_NOT_REPRODUCIBLE, READINGS, _as_run, reference_configs

    out = []
    for reading in READINGS:
        configs = reference_configs("teacher.pt", reading=reading)
        if reading == "as_run":  # what the rows that cannot be run again ran, beside the others
            described = reference_configs("teacher.pt")
            configs.update({name: _as_run(name, described[name]) for name in AS_RUN_NOT_REPRODUCIBLE})
        for name, c in configs.items():
            lost = AS_RUN_NOT_REPRODUCIBLE.get(name) if reading == "as_run" else None
            guess = AS_RUN_INFERRED.get(name, "") if reading == "as_run" else ""
            start = "CE student" if c.init else "ImageNet" if c.pretrained else "scratch"
            if lost:
                start, guess = "an earlier TCKD run", f"cannot be run again: {lost}"
            sched = (
                f"plateau ×{c.plateau_factor:g}/{c.plateau_patience}"
                if c.schedule == "plateau"
                else c.schedule
            )
            out.append({
                "row": name, "reading": reading.replace("_", " "), "method": c.method, "model": c.model,
                "CE w": c.setting("ce_weight"),
                **{column: c.setting(name) if name in METHODS[c.method].settings else None
                   for column, name in (("T", "temperature"), ("α", "alpha"), ("β", "beta"))},
                "warm-up": c.setting("warmup"), "start": start, "batch": c.batch_size, "wd": c.weight_decay,
                "lr schedule": sched, "std": "copied" if c.std else "true",
                "epochs": 23 if lost else c.epochs, "tested at": c.best_by or "last epoch",
                "teacher BN": "batch stats" if c.teacher_batch_stats else "running" if c.teacher else None,
                "reproducible": not lost, "inferred": guess,
            })  # fmt: skip
    frame = pd.DataFrame(out)
    order = {name: i for i, name in enumerate(dict.fromkeys(frame["row"]))}
    return frame.sort_values(["row", "reading"], key=lambda col: col.map(order) if col.name == "row" else col,
                             kind="stable").reset_index(drop=True)  # fmt: skip


def reading_table(results: pd.DataFrame) -> pd.DataFrame:
    """The reference table's rows with our runs of each reading side by side (test accuracy in %).

    One line per reference row and fair baseline, per data setting; for each reading, mean ± std over
    seeds of the last epoch's test accuracy and of the test accuracy at the epoch the reference tested
    (`recipes.REFERENCE_BEST_BY`: the lowest validation loss, for two TCKD rows the best validation
    accuracy), with epochs (a+b: b epochs from a checkpoint trained a) and the number of runs. A row
    that cannot be run again as run reads "not reproducible" there. Only `reproduce` records
    (tag "ref:…") count.
    """
    from .recipes import AS_RUN_NOT_REPRODUCIBLE, READINGS, REFERENCE, REFERENCE_BEST_BY

    ref_test = {name: 100 * test for name, *_, test, _ in REFERENCE}
    columns = ["setting", "row (the reference's words)", "reference (at its tested epoch)"]
    for reading in READINGS:
        name = reading.replace("_", " ")
        columns += [f"{name}: last epoch", f"{name}: at the tested epoch"]
    frame = _reading_runs(results)
    out = []
    for setting, runs in frame.groupby("data_setting", sort=True):
        for key, words, rows in _reading_lines():
            tested = (
                "test_acc_at_best_val"
                if REFERENCE_BEST_BY.get(key) == "val_acc"
                else "test_acc_at_best_val_loss"
            )
            cells = []
            for reading in READINGS:
                if reading == "as_run" and key in AS_RUN_NOT_REPRODUCIBLE:
                    cells += ["not reproducible"] * 2
                    continue
                block = runs[(runs["reading"] == reading) & (runs["ref_row"] == rows.get(reading))]
                cells += [_cell(block, "test_acc"), _cell(block, tested)]
            if any(c not in ("–", "not reproducible") for c in cells):
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
                        seeds = [
                            100 * mine.loc[mine["ref_row"] == r, column].dropna().astype(float).to_numpy()
                            for r in (baseline, dkd)
                        ]
                        text += f", {compare_seeds(*seeds).judgement}"
                    lines.append(text + ".")
    return lines

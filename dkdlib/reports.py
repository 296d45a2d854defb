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
    "reference_frame",
    "reference_accuracy",
    "reference_matches",
    "summarize_runs",
    "results_table",
    "reading_recipes",
    "reading_table",
    "reading_notes",
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

"""Serves the chapters: tables of recorded runs (labels, settings, the results table beside the reference,
and the reference's two readings side by side)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .methods import METHODS, SYMBOLS

if TYPE_CHECKING:
    from .train import Run

STUDENT_MODEL = "resnet8"
GROUP = ["setting", "row", "model", "epochs"]
_ROW_ORDER = ["teacher", "CE", "KD", "DKD α=1 β=8"]


def run_label(row: Mapping[str, Any]) -> str:
    """Short recipe name: the method's label ('teacher' for a CE run of another model than the
    students'), the settings it always shows ('DKD α=1 β=8'), every setting off its default ('T=2',
    'CE×0.1', 'W=2'), and 'from init'. Runs of one label differ in their seed only."""
    method = METHODS.get(row.get("method"))
    if method is None:
        return str(row.get("method"))
    parts = [method.label]
    if row.get("method") == "ce" and row.get("model", STUDENT_MODEL) != STUDENT_MODEL:
        parts = ["teacher"]
    for name in sorted(method.settings, key=lambda n: (n not in method.shown, list(SYMBOLS).index(n))):
        value, default = row.get(name), method.settings[name]
        value = default if pd.isna(value) else float(value)
        if name in method.shown or value != default:
            parts.append(f"{SYMBOLS[name]}{value:g}")
    if isinstance(row.get("init"), str) and row["init"]:
        parts.append("from init")
    return " ".join(parts)


def label_head(label: str, drop: tuple[str, ...] = ("W=",)) -> str:
    """A label without its `drop` settings ('DKD α=1 β=8 W=2' → 'DKD α=1 β=8'): the reference row it
    stands beside, whatever warm-up its scale took."""
    return " ".join(part for part in label.split(" ") if not part.startswith(drop))


def _setting(row: Mapping[str, Any], recipe: bool = True) -> str:
    """Which data (and, unless recipe=False, which reference reading) a run had: 'synthetic (…)',
    'cifar10, N training images[, reference recipe as run] (reduced)' or 'cifar10[, …] (full)'."""
    from .recipes import parse_tag

    if row.get("dataset") == "synthetic":
        return "synthetic (fast mode smoke run)"
    parsed = parse_tag(row.get("tag"))  # the reference's readings never mix with the series' recipe
    text = f", reference recipe {parsed[0].replace('_', ' ')}" if parsed and recipe else ""
    size = row.get("train_size")
    if not pd.isna(size):
        return f"{row.get('dataset')}, {int(size):,} training images{text} (reduced)"
    return f"{row.get('dataset')}{text} (full)"


def runs_frame(runs: Mapping[str, Run] | Iterable[Run]) -> pd.DataFrame:
    """One row per Run: config fields and scalar metrics (the columns `load_results` gives), plus labels."""
    items = runs.items() if isinstance(runs, Mapping) else ((None, r) for r in runs)
    rows = [
        {"key": key, "name": run.config.run_name(), **run.config.to_dict(),
         **{k: v for k, v in run.metrics.items() if not isinstance(v, list)}}
        for key, run in items
    ]  # fmt: skip
    return label_runs(pd.DataFrame(rows))


def unique_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct run (the identity fields of `Config`, seed included): the latest record wins."""
    from .config import FIELDS

    if frame is None or frame.empty:
        return frame
    fields = [name for name, meta in FIELDS.items() if meta["identity"] != "no" and name in frame]
    key = pd.Series(["|".join(repr(_plain(v)) for v in row) for row in frame[fields].itertuples(index=False)],
                    index=frame.index)  # fmt: skip
    return frame.loc[~key.duplicated(keep="last")]


def _plain(value: Any) -> Any:
    """A config value as its record holds it, whatever pandas made of it (None → NaN, 0 → 0.0)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_plain(v) for v in value)
    if pd.isna(value):
        return None
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    return int(value) if isinstance(value, float) and value.is_integer() else value


def label_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the columns `row` (`run_label`) and `setting` (which data) to a runs frame."""
    if frame.empty:
        return frame.assign(row=pd.Series(dtype=str), setting=pd.Series(dtype=str))
    records = frame.to_dict("records")
    return frame.assign(row=[run_label(r) for r in records], setting=[_setting(r) for r in records])


def committed_results_dir() -> Path | None:
    """The run records committed with the repository (`data/results/`); None where a `pip install` (as on
    Colab) has none."""
    from .config import repo_root

    for root in filter(None, (repo_root(), repo_root(Path.cwd().parent), repo_root(Path.cwd()))):
        folder = root / "data" / "results"
        if folder.is_dir() and any(folder.glob("*.json")):
            return folder
    return None


def gather_runs(folders: Mapping[str, Path | str | None]) -> pd.DataFrame:
    """Every run recorded in `folders` ({source name: results folder}), one row per distinct run (the
    later folder's record wins: name the committed records first), with the columns `source`, `record`
    (its file), `row` and `setting`. A folder named twice is read once; no record gives an empty frame
    with the same columns."""
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
    """The columns `results.load_results` gives (config fields, metrics, provenance), and `gather_runs`'."""
    from .config import FIELDS
    from .results import PROVENANCE
    from .train import summarize

    epoch = dict(epoch=1, seconds=1.0, images_per_s=1.0, val_acc=0.0, val_loss=0.0)  # a history with val
    metrics = [*summarize([epoch]), "init_epochs", "total_epochs", "init_epoch"]  # and `train.init_metrics`'
    return list(
        dict.fromkeys([*FIELDS, "name", "file", *metrics, *PROVENANCE, "wall_time_s", "source", "record"])
    )


def reference_frame() -> pd.DataFrame:
    """`recipes.REFERENCE` as a DataFrame with the same `row` labels as our runs (accuracies in %)."""
    from .recipes import REFERENCE

    return pd.DataFrame([
        {"ref_name": name, "ref_epochs": epochs, "ref_test": 100 * test, "ref_val": 100 * val,
         "row": run_label({"method": method, "model": "resnet18" if name == "teacher" else STUDENT_MODEL,
                           "alpha": alpha, "beta": beta, "temperature": 4.0})}
        for name, method, epochs, alpha, beta, test, val in REFERENCE
    ])  # fmt: skip


def reference_accuracy() -> dict[str, float]:
    """Reference test accuracy (%) per row label; the shortest schedule where a row has two."""
    ref = reference_frame().sort_values("ref_epochs", kind="stable").drop_duplicates("row")
    return dict(zip(ref["row"], ref["ref_test"], strict=True))


def reference_matches(frame: pd.DataFrame) -> list[tuple[str, ...]]:
    """Per run, the reference rows it stands beside: a `reproduce` run the row its tag names (none for a
    fair baseline the table lacks, e.g. CE trained as long as DKD); any other run every row of its label."""
    from .recipes import REFERENCE, parse_tag

    names, ref, out = {row[0] for row in REFERENCE}, reference_frame(), []
    for run in frame.to_dict("records"):
        parsed = parse_tag(run.get("tag") if isinstance(run.get("tag"), str) else None)
        if parsed is not None:
            out.append((parsed[1],) if parsed[1] in names else ())
        else:
            label = run["row"] if isinstance(run.get("row"), str) else run_label(run)
            out.append(tuple(ref.loc[ref["row"] == label_head(label), "ref_name"]))
    return out


def summarize_runs(frame: pd.DataFrame, by: Sequence[str] = tuple(GROUP)) -> pd.DataFrame:
    """Mean ± std (in %) over seeds of last-epoch test accuracy and test accuracy at the best val epoch,
    and `ref_text`: the reference rows each group stands beside (`reference_matches`), "–" for none."""
    by = list(by)
    columns = [*by, "runs", "seeds", "test_mean", "test_std", "best_val_test_mean", "best_val_test_std",
               "ref_text"]  # fmt: skip
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.assign(_ref=reference_matches(frame))
    if "test_acc_at_best_val" not in frame:
        frame["test_acc_at_best_val"] = np.nan
    seeds = lambda s: ",".join(str(int(v)) for v in sorted(set(s)))
    out = frame.groupby(by, sort=False, dropna=False).agg(
        runs=("test_acc", "size"), seeds=("seed", seeds), test_mean=("test_acc", "mean"),
        test_std=("test_acc", "std"), best_val_test_mean=("test_acc_at_best_val", "mean"),
        best_val_test_std=("test_acc_at_best_val", "std"),
        _ref=("_ref", lambda s: s.iloc[0] if len(set(s)) == 1 else ()),  # runs that disagree: none
    ).reset_index()  # fmt: skip
    for col in ("test_mean", "test_std", "best_val_test_mean", "best_val_test_std"):
        out[col] = 100 * out[col].astype(float)
    ref = reference_frame().set_index("ref_name")
    out["ref_text"] = [
        "; ".join(f"{ref.loc[n, 'ref_test']:.2f} ({ref.loc[n, 'ref_epochs']} ep)" for n in names) or "–"
        for names in out["_ref"]
    ]
    return out[columns]


def _pm(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


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
    summary["test acc (last epoch)"] = list(map(_pm, summary["test_mean"], summary["test_std"]))
    summary["test acc (at best val)"] = list(
        map(_pm, summary["best_val_test_mean"], summary["best_val_test_std"])
    )
    summary["reference test acc"] = summary["ref_text"]
    order = {label: i for i, label in enumerate(_ROW_ORDER)}
    summary["_order"] = [order.get(label_head(r.split(" T=")[0], ("W=", "CE×", "KD×")), len(order))
                         for r in summary["row"]]  # fmt: skip
    summary = summary.sort_values(["setting", "_order", "row", "epochs"], kind="stable")
    return summary[columns].reset_index(drop=True)


# The reference's two readings (recipes.READINGS) side by side: chapter 7 and the README's table


def _reading_lines() -> list[tuple[str, str, dict[str, str]]]:
    """The lines of the readings table: (key, the line in the reference's words, {reading: row name}):
    the reference's rows, then one line per fair baseline (method, the distilled row it is as long as)."""
    from .recipes import BASELINES, READINGS, REFERENCE

    lines: list[tuple[str, str, dict[str, str]]] = []
    words = {}
    for name, method, epochs, alpha, beta, _, _ in REFERENCE:
        model = "resnet18" if name == "teacher" else STUDENT_MODEL
        words[name] = (
            f"{run_label({'method': method, 'model': model, 'alpha': alpha, 'beta': beta})}, {epochs} ep"
        )
        lines.append((name, words[name], dict.fromkeys(READINGS, name)))
    for reading in READINGS:
        for name, method, _, like in BASELINES[reading]:
            key = f"{method}~{like}"
            line = next((ln for ln in lines if ln[0] == key), None)
            if line is None:
                line = (key, f"{method.upper()}, as long as {words[like]}", {})
                lines.append(line)
            line[2][reading] = name
    return lines


def reading_runs(results: pd.DataFrame) -> pd.DataFrame:
    """The `reproduce` runs among `results`, one per run, with their reading, row and data setting."""
    from .recipes import parse_tag

    frame = unique_runs(results) if results is not None and not results.empty else pd.DataFrame()
    parsed = [parse_tag(t) for t in frame["tag"]] if "tag" in frame else []
    if not any(parsed):
        return pd.DataFrame(columns=["reading", "ref_row", "data_setting"])
    frame = frame.loc[[p is not None for p in parsed]]
    parsed = [p for p in parsed if p is not None]
    settings = [_setting(r, recipe=False) for r in frame.to_dict("records")]
    frame = frame.assign(
        reading=[p[0] for p in parsed], ref_row=[p[1] for p in parsed], data_setting=settings
    )
    for col in ("test_acc_at_best_val_loss", "test_acc_at_best_val", "init_epochs"):
        if col not in frame:
            frame[col] = np.nan
    return frame


def _cell(block: pd.DataFrame, column: str) -> str:
    """Mean ± std over the block's runs (in %), its epochs ('2+4 ep': 4 from a checkpoint trained 2) and
    run count; '–' without runs."""
    if block.empty:
        return "–"
    values = 100 * block[column].astype(float)
    epochs, before = int(block["epochs"].iloc[0]), block["init_epochs"].iloc[0]
    epochs_text = f"{epochs} ep" if pd.isna(before) else f"{int(before)}+{epochs} ep"
    return f"{_pm(values.mean(), values.std())} ({epochs_text}, n={len(block)})"


def reading_recipes() -> pd.DataFrame:
    """What each reference row trains under each reading (`recipes.reference_configs`, full scale): loss
    weights, temperature, warm-up, start, batch, schedule, epochs, the epoch tested, whether it can be run
    again, and what the as-run reading infers (`recipes.AS_RUN_INFERRED`)."""
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
            plateau = f"plateau ×{c.plateau_factor:g}/{c.plateau_patience}"
            out.append({
                "row": name, "reading": reading.replace("_", " "), "method": c.method, "model": c.model,
                "CE w": c.setting("ce_weight"),
                **{column: c.setting(name) if name in METHODS[c.method].settings else None
                   for column, name in (("T", "temperature"), ("α", "alpha"), ("β", "beta"))},
                "warm-up": c.setting("warmup"), "start": start, "batch": c.batch_size, "wd": c.weight_decay,
                "lr schedule": plateau if c.schedule == "plateau" else c.schedule,
                "std": "copied" if c.std else "true",
                "epochs": 23 if lost else c.epochs, "tested at": c.best_by or "last epoch",
                "teacher BN": "batch stats" if c.teacher_batch_stats else "running" if c.teacher else None,
                "reproducible": not lost, "inferred": guess,
            })  # fmt: skip
    frame = pd.DataFrame(out)
    order = {name: i for i, name in enumerate(dict.fromkeys(frame["row"]))}
    return frame.sort_values(["row", "reading"], key=lambda col: col.map(order) if col.name == "row" else col,
                             kind="stable").reset_index(drop=True)  # fmt: skip


def reading_table(results: pd.DataFrame) -> pd.DataFrame:
    """The reference's rows and fair baselines with our `reproduce` runs (tag "ref:…") of each reading side
    by side, per data setting: mean ± std test accuracy (%) at the last epoch and at the epoch the
    reference tested (`recipes.REFERENCE_BEST_BY`); "not reproducible" where a row cannot be run again."""
    from .recipes import AS_RUN_NOT_REPRODUCIBLE, READINGS, REFERENCE, REFERENCE_BEST_BY

    ref_test = {name: 100 * test for name, *_, test, _ in REFERENCE}
    columns = ["setting", "row (the reference's words)", "reference (at its tested epoch)"]
    columns += [
        f"{r.replace('_', ' ')}: {when}" for r in READINGS for when in ("last epoch", "at the tested epoch")
    ]
    out = []
    for setting, runs in reading_runs(results).groupby("data_setting", sort=True):
        for key, words, rows in _reading_lines():
            by_acc = REFERENCE_BEST_BY.get(key) == "val_acc"
            tested = "test_acc_at_best_val" if by_acc else "test_acc_at_best_val_loss"
            cells = []
            for reading in READINGS:
                if reading == "as_run" and key in AS_RUN_NOT_REPRODUCIBLE:
                    cells += ["not reproducible"] * 2
                    continue
                block = runs[(runs["reading"] == reading) & (runs["ref_row"] == rows.get(reading))]
                cells += [_cell(block, "test_acc"), _cell(block, tested)]
            if any(c not in ("–", "not reproducible") for c in cells):
                out.append([setting, words, f"{ref_test[key]:.2f}" if key in ref_test else "–", *cells])
    return pd.DataFrame(out, columns=columns)

"""Command line: `python -m dkdlib COMMAND --help`. Every Config field is a flag (--field-name).

Examples
  python -m dkdlib demo                                   # the committed CPU-scale runs, tested: one table
  python -m dkdlib demo --train                           # train them here instead (hours on a CPU)
  python -m dkdlib demo --fast                            # synthetic data, two epochs: a smoke run
  python -m dkdlib train --model resnet18 --epochs 15 --batch-size 256 --lr 0.1
  python -m dkdlib distill --teacher data/checkpoints/T.pt --method dkd --beta 8
  python -m dkdlib evaluate data/checkpoints/T.pt
  python -m dkdlib reproduce --seeds 0 1 2 --scale 0.1 --data /tmp/cifar10.npz
  python -m dkdlib reproduce --reading as_run --seeds 0     # the reference as its code ran it
  python -m dkdlib results
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from .errors import DKDError


def _add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    from .config import FIELDS, HINTS, TUPLES

    group = parser.add_argument_group("run configuration (dkdlib.Config)")
    for name, meta in FIELDS.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        hint, default, choices = HINTS[name], meta["default"], meta["choices"]
        text = meta["help"] + (f"; one of: {', '.join(choices)}" if choices else "")
        text += f" (default: {default})"
        base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif name in TUPLES:
            group.add_argument(flag, type=float, nargs="+", default=None, help=text)
        else:  # a bad choice or bound: Config.validate says what is wrong, in one line
            group.add_argument(flag, type=base, default=None, help=text)


def _overrides(args: argparse.Namespace) -> dict:
    from .config import TUPLES, Config

    names = {f.name for f in dataclasses.fields(Config)}
    out = {k: v for k, v in vars(args).items() if k in names and v is not None}
    for key in TUPLES:
        if key in out:
            out[key] = tuple(out[key])
    return out


def build_parser() -> argparse.ArgumentParser:
    from .methods import METHODS

    parser = argparse.ArgumentParser(
        prog="python -m dkdlib", epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Decoupled Knowledge Distillation on CIFAR: train teachers, distil students, reproduce "
        "the reference table. Runs resume from their checkpoint when re-run.")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    settings = dict.fromkeys(name for m in METHODS.values() for name in m.settings)  # a method's own
    commands = (("train", "train with cross-entropy (a teacher or a baseline)", ("method", "teacher")),
                ("distill", "distil a student from a teacher checkpoint (kd, dkd, ...)", None))  # fmt: skip
    for name, text, skip in commands:
        p = sub.add_parser(name, help=text)
        _add_config_flags(p, skip=(*skip, *settings) if skip else ())
        p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint; start over")
        p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    p = sub.add_parser("evaluate", help="test accuracy, per-class accuracy and confusion of a checkpoint")
    p.add_argument("checkpoint", help="a .pt file written by train/distill")
    p.add_argument("--data", help="an .npz to evaluate on instead of downloading")
    p.add_argument("--out-dir", default="data", help="where the dataset is downloaded")
    p.add_argument("--device", default="auto")
    p = sub.add_parser("demo", help="teacher → CE, KD and DKD students, side by side, one table")
    p.add_argument("--mode", default="cpu", choices=("cpu", "full"),
                   help="the series' scale: cpu (ResNet20 teacher) or full (ResNet18: a GPU's)")  # fmt: skip
    p.add_argument("--train", action="store_true", help="train every run here instead of loading it")
    p.add_argument("--fast", action="store_true", help="synthetic data and two epochs: a CPU smoke run")
    p.add_argument("--data", help="an .npz of CIFAR-10 to use instead of downloading")
    p.add_argument("--epochs", type=int, help="student epochs (default: the scale's)")
    p.add_argument("--seeds", type=int, nargs="+", help="student seeds (default 0 1 2; fast: 0)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out-dir", help="where checkpoints/ and results/ go (default: data)")
    _add_reproduce(
        sub.add_parser("reproduce", help="run the reference table's rows (teacher first), several seeds")
    )
    p = sub.add_parser("results", help="print the recorded runs as a table")
    p.add_argument("--dir", default="data/results", help="folder of result records")
    return parser


def _add_reproduce(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reading", choices=["as_described", "as_run", "both"], default="as_described",
                   help="as_described: the table's words (T=4, from scratch); as_run: what the reference's "
                   "code ran (T=8, β=0.5, from the CE student, plateau schedule; see chapter 7); both: one "
                   "after the other")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--scale", type=float, default=1.0, help="multiply every row's epochs (0.1 = reduced)")
    p.add_argument("--rows", nargs="+", help="only these rows (teacher, student, dkd_100, ce_150, ...)")
    p.add_argument("--teacher", help="use this teacher checkpoint instead of training the teacher row")
    p.add_argument("--teacher-model", help="teacher row's model (default resnet18; resnet20 for CPU runs)")
    p.add_argument("--teacher-epochs", type=int, help="teacher row's epochs (default: 50 × --scale)")
    p.add_argument("--data", help="an .npz of CIFAR-10 to use instead of downloading")
    p.add_argument("--train-size", type=int, help="use only this many training images")
    p.add_argument("--val-size", type=int, help="validation images held out (default 5000)")
    p.add_argument("--test-size", type=int, help="use only this many test images")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the students")
    p.add_argument("--graph", action="store_true", help="capture each training step as a CUDA graph (GPU)")
    p.add_argument("--cache-teacher", action="store_true", help="the teacher's logits once, on all 162 views")
    p.add_argument("--out-dir", default="data")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")


def _print_run(run) -> None:
    m = run.metrics
    best = ""
    if "best_epoch" in m:
        best = f", test at best val (epoch {m['best_epoch']}): {m['test_acc_at_best_val']:.4f}"
    print(f"{run.config.run_name()}: test acc {m['test_acc']:.4f}{best}")
    print(f"  checkpoint: {run.checkpoint}" + (f"\n  record: {run.record}" if run.record else ""))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"train": _fit, "distill": _fit, "evaluate": _evaluate, "demo": _demo, "reproduce": _reproduce,
                "results": _results}  # fmt: skip
    try:
        return commands[args.command](args)
    except DKDError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _fit(args: argparse.Namespace) -> int:
    from .config import Config
    from .methods import METHODS, distills
    from .train import fit

    over = _overrides(args)
    if args.command == "distill":
        over.setdefault("method", "dkd")
        if over["method"] in METHODS and not distills(over["method"]):
            choices = ", ".join(m for m in METHODS if distills(m))
            raise DKDError(f"distill needs a method with a teacher ({choices}); use `train` for ce")
    _print_run(fit(Config(**over), fresh=args.fresh, progress=args.progress))
    return 0


def _results(args) -> int:
    from .results import load_results

    df = load_results(args.dir)
    if df.empty:
        print(f"no records in {args.dir}")
        return 0
    cols = ["tag", "name", "seed", "epochs", "test_acc", "test_acc_at_best_val", "hardware", "wall_time_s"]
    print(df[[c for c in cols if c in df]].to_string(index=False))
    return 0


def _evaluate(args) -> int:
    from .checkpoint import load_checkpoint, load_model
    from .data import DeviceLoader, load_data
    from .train import evaluate, pick_device

    state = load_checkpoint(args.checkpoint)
    device = pick_device(args.device)
    data = load_data(state["dataset"], npz=args.data, root=args.out_dir, val_size=0)
    model = load_model(args.checkpoint, device, num_classes=data.num_classes, dataset=data.name, state=state)
    # The normalisation the model was trained with (a run may set its own: Config.mean / std).
    mean, std = state.get("mean", data.mean), state.get("std", data.std)
    loader = DeviceLoader(data.x_test, data.y_test, 1000, mean=mean, std=std, train=False, device=device)
    result = evaluate(model, loader, data.num_classes)
    print(f"{args.checkpoint}: {state['model_name']} on {data.name} test ({len(data.y_test)} images)")
    print(f"accuracy {result['acc']:.4f}   loss {result['loss']:.4f}")
    for name, acc in zip(data.classes, result["per_class_acc"], strict=False):
        print(f"  {name:>12s} {acc:.4f}")
    return 0


def _demo(args) -> int:
    """The series' teacher and its CE, KD and DKD students at every seed it has: loaded from the
    committed weights where they exist (train-or-load), each evaluated on the test set, one table."""
    import os

    import numpy as np

    from . import recipes
    from .train import data_for, evaluate, fit, make_loaders, pick_device

    if args.out_dir:
        os.environ["DKDLIB_OUT"] = args.out_dir
    if args.train:
        os.environ["DKDLIB_WEIGHTS"] = "0"  # train every run here, ignoring the committed weights
    mode = "fast" if args.fast else args.mode
    args.seeds = args.seeds or ([0] if args.fast else [0, 1, 2])
    if mode == "fast":
        print("FAST MODE: synthetic images (not CIFAR-10), 2 epochs — a smoke run, not a result.")
    common = {"device": args.device, **({"data": args.data} if args.data else {})}
    queue = [cfg for stage, _, cfg in recipes.campaign_queue(mode) if stage == "teacher" or
             (stage.startswith("seed ") and cfg.seed in args.seeds)]  # fmt: skip
    queue = [dataclasses.replace(cfg, **common) for cfg in queue]
    if args.epochs:
        queue = [queue[0]] + [dataclasses.replace(cfg, epochs=args.epochs) for cfg in queue[1:]]
    available = [cfg for cfg in queue if args.train or mode == "fast" or _finished(cfg)]
    missing = [cfg.run_name() for cfg in queue if cfg not in available]
    if not available or available[0] is not queue[0]:
        raise DKDError(
            f"the {mode} scale's teacher is neither committed nor trained here; run "
            f"`python -m dkdlib demo --mode {mode} --train` to train it and its students"
        )
    data = data_for(available[0])
    test = make_loaders(available[0], data, pick_device(args.device))[1]["test"]
    accs: dict[str, list[float]] = {}
    for cfg in available:
        run = fit(cfg, data=data, progress=not args.fast)
        label = f"teacher {cfg.model}" if cfg is queue[0] else cfg.method
        accs.setdefault(label, []).append(evaluate(run.model, test)["acc"])
    what = "CIFAR-10" if data.name == "cifar10" else f"{data.name.upper()} (not CIFAR-10)"
    print(f"\n{what} test accuracy ({len(data.y_test)} images), {mode} scale; seeds {args.seeds}")
    print(f"{'run':>16s} {'mean':>7s} {'spread':>14s}  seeds")
    for label, values in accs.items():
        v = np.array(values) * 100
        spread = f"{v.min():.2f}–{v.max():.2f}" if len(v) > 1 else ""
        print(f"{label:>16s} {v.mean():7.2f} {spread:>14s}  {len(v)}")
    if "ce" in accs and "dkd" in accs and len(accs["ce"]) == len(accs["dkd"]):
        gap = (np.array(accs["dkd"]) - np.array(accs["ce"])) * 100
        print(f"DKD − CE: {gap.mean():+.2f} points (per seed: {', '.join(f'{g:+.2f}' for g in gap)})")
    if missing:
        print(f"not committed yet, left out: {', '.join(missing)} (--train trains them)")
    return 0


def _finished(cfg) -> bool:
    """Whether `cfg`'s run can be loaded without training: committed weights or a finished checkpoint."""
    from .checkpoint import load_checkpoint
    from .weights import committed

    if committed(cfg) is not None:
        return True
    return cfg.checkpoint_path.is_file() and bool(load_checkpoint(cfg.checkpoint_path).get("complete"))


def _reproduce(args) -> int:
    from .recipes import AS_RUN_NOT_REPRODUCIBLE, READINGS, reference_rows

    readings = list(READINGS) if args.reading == "both" else [args.reading]
    known = {name for reading in readings for name in reference_rows(reading)}
    unknown = sorted(set(args.rows or ()) - known)
    lost = [name for name in unknown if name in AS_RUN_NOT_REPRODUCIBLE]
    if lost:
        raise DKDError(f"row {lost[0]} cannot be run again as run: {AS_RUN_NOT_REPRODUCIBLE[lost[0]]}")
    if unknown:
        raise DKDError(
            f"unknown rows {unknown} for --reading {args.reading}; choose from: {', '.join(sorted(known))}"
        )
    if args.scale != 1.0:
        print(f"REDUCED SCHEDULE: every row's epochs × {args.scale}")
    for reading in readings:
        rows = [name for name in reference_rows(reading) if not args.rows or name in args.rows]
        for name, why in AS_RUN_NOT_REPRODUCIBLE.items() if reading == "as_run" else ():
            if not args.rows or name in args.rows:
                print(f"reading as_run: row {name} cannot be run again: {why}")
        if rows:
            print(f"reading {reading}: rows {', '.join(rows)}")
            _reproduce_reading(args, reading, rows)
    return 0


def _reproduce_reading(args, reading: str, rows: list[str]) -> None:
    """Every seed's `rows` of one reading: the teacher (trained once, seed 0) first; as run, the CE
    student before the rows that start from it."""
    from .methods import distills
    from .recipes import reference_configs, teacher_file, with_pretrained_fallback
    from .train import fit

    over = {"device": args.device, "out_dir": args.out_dir, "compile": args.compile, "graph": args.graph,
            "cache_teacher": args.cache_teacher}  # fmt: skip
    if args.data:
        over["data"] = args.data
    for key in ("train_size", "val_size", "test_size"):
        if getattr(args, key) is not None:
            over[key] = getattr(args, key)

    def configs(teacher, seed, **extra):
        tover = {"model": args.teacher_model} if args.teacher_model else {}
        if args.teacher_epochs:
            tover["epochs"] = args.teacher_epochs
        built = reference_configs(teacher, seed=seed, scale=args.scale, teacher_overrides=tover,
                                  reading=reading, **over, **extra)  # fmt: skip
        # A teacher on batch statistics (as run) gives logits that depend on the batch: none to cache.
        return {n: dataclasses.replace(c, cache_teacher="off" if c.teacher_batch_stats else c.cache_teacher)
                for n, c in built.items()}  # fmt: skip

    teacher, note = args.teacher, {}
    untaught = configs(None, 0)
    distilled = any(distills(untaught[name].method) for name in rows)  # CE rows alone need no teacher
    if teacher is None and ("teacher" in rows or distilled):
        row = untaught["teacher"]  # one teacher for all seeds
        if not row.checkpoint_path.exists():  # a started teacher needs no ImageNet weights any more
            row = with_pretrained_fallback(row)
        note = {"note": f"teacher: {row.note}"} if row.note else {}
        teacher = teacher_file(fit(row, progress=args.progress))
    for seed in args.seeds:
        students = configs(teacher, seed, **note)
        names = [n for n in rows if n != "teacher"]
        if "student" not in names and any(students[n].init for n in names):
            names.insert(0, "student")  # the rows that start from the CE student need it first
        for name in names:
            _print_run(fit(students[name], progress=args.progress))

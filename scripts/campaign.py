"""Train the whole series in the background, in order of value, over as many sittings as it takes.

    python scripts/campaign.py --mode cpu --hours 2.5 --data cifar10.npz    # train for 2.5 hours
    python scripts/campaign.py --mode cpu --list                           # the queue, and what is left

The queue is `recipes.campaign_queue(mode)`: the teacher; CE, KD and DKD at seed 0, then seeds 1 and
2; the reference's TCKD-only and NCKD-only rows; the rest of chapter 6; the rows' further seeds. Each
run:
- is skipped when its record is committed (data/results/ holds a record of that run name);
- resumes from its last epoch checkpoint, kept outside the work tree (--out, default
  ~/.cache/dkdlib/campaign-<mode>), so a new checkout loses nothing;
- when it finishes, writes its record into data/results/ and its fp16 weights into data/weights/ at
  once: commit them.
It stops at the deadline (--hours), or on Ctrl-C or `kill`, keeping the last finished epoch; run the
same command again to go on. One campaign at a time per output folder (a lock file says who runs).
Students of one seed share the teacher's logits (`cache_teacher="seen"`): the first distilled student
of a seed runs the teacher, the others read its logits.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Seconds per epoch on a 2-core CPU at 2 threads (45k training images, validation and test included),
# used until this campaign has timed a run of the same kind: measured with dkdlib's fit.
DEFAULT_EPOCH_S = {("resnet20", "own"): 110.0, ("resnet8", "own"): 40.0, ("resnet8", "teacher"): 75.0}


def committed_names(results: Path) -> set[str]:
    from dkdlib.results import load_records

    return {r.get("name") for r in load_records(results)} if results.is_dir() else set()


def epoch_seconds(out: Path) -> dict[tuple[str, str], float]:
    """Mean seconds per epoch of each kind of run this campaign finished (train + evaluation)."""
    from dkdlib.results import load_records

    seen: dict[tuple[str, str], list[float]] = {}
    folder = out / "results"
    for record in load_records(folder) if folder.is_dir() else []:
        cfg, history = record["config"], record.get("history", [])
        if history:  # the run that fills the 'seen' cache pays the teacher; later ones barely do
            kind = (cfg["model"], "teacher" if cfg.get("teacher") else "own")
            if kind in seen and kind[1] == "teacher":
                kind = (cfg["model"], "own")
            seen.setdefault(kind, []).append(record["wall_time_s"] / len(history))
    return {kind: sum(v) / len(v) for kind, v in seen.items()}


def status(queue, done: set[str], out: Path) -> list[tuple[str, str, str, str, float]]:
    """[(stage, label, run name, state, minutes left)] of every queued run."""
    from dkdlib.checkpoint import load_checkpoint

    measured = {**DEFAULT_EPOCH_S, **epoch_seconds(out)}
    rows, paid = [], set()  # the seeds whose teacher logits a queued run computes first
    for stage, label, cfg in queue:
        first = cfg.teacher and (cfg.cache_teacher != "seen" or cfg.seed not in paid)
        paid |= {cfg.seed} if cfg.teacher else set()
        kind = (cfg.model, "teacher" if first else "own")
        per_epoch = measured.get(kind, measured[("resnet8", "teacher")])
        epochs_done = 0
        if cfg.run_name() in done:
            state = "committed"
        elif cfg.checkpoint_path.is_file():
            saved = load_checkpoint(cfg.checkpoint_path)
            epochs_done = saved["epoch"]
            state = "finished" if saved.get("complete") else f"epoch {epochs_done}/{cfg.epochs}"
        else:
            state = "queued"
        left = 0.0 if state in ("committed", "finished") else (cfg.epochs - epochs_done) * per_epoch / 60
        rows.append((stage, label, cfg.run_name(), state, left))
    return rows


def print_status(rows, running: str | None = None) -> None:
    print(f"{'stage':<10} {'run':<22} {'name':<34} {'state':<12} {'min left':>8}")
    for stage, label, name, state, left in rows:
        mark = "running" if name == running else state
        print(f"{stage:<10} {label:<22} {name:<34} {mark:<12} {left:8.0f}")
    left = sum(r[4] for r in rows)
    finished = sum(r[3] in ("committed", "finished") for r in rows)
    print(f"{finished} of {len(rows)} runs done; about {left / 60:.1f} h of training left at this pace")


def keep(cfg, label: str, out: Path) -> None:
    """Copy a finished run's newest record and its fp16 weights into the work tree."""
    from export_weights import add  # beside this script

    from dkdlib.results import load_records

    records = [r for r in load_records(out / "results") if r.get("name") == cfg.run_name()]
    if not records:
        raise SystemExit(f"{cfg.run_name()} finished but its record is not in {out / 'results'}")
    source = out / "results" / records[-1]["file"]
    shutil.copyfile(source, ROOT / "data" / "results" / source.name)
    entry = add(cfg, label, ROOT / "data" / "weights")
    size = entry["bytes"] / 1e6
    print(f"kept {cfg.run_name()}: test {entry['test_acc']:.4f}, its record and {size:.2f} MB of weights")


def lock(out: Path) -> Path:
    path = out / "campaign.lock"
    if path.is_file():
        pid = int(path.read_text().split()[0])
        try:
            os.kill(pid, 0)
            raise SystemExit(f"a campaign (pid {pid}) is training into {out}; stop it first")
        except ProcessLookupError:
            pass  # a campaign that died without removing its lock
    path.write_text(f"{os.getpid()}\n")
    return path


def stop(signum, frame):  # the deadline's alarm and `kill` stop like Ctrl-C: at the last saved epoch
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", default="cpu", help="the series' scale: cpu, full or fast")
    p.add_argument(
        "--hours", type=float, default=None, help="stop after this long (default: the whole queue)"
    )
    p.add_argument("--data", default=None, help="CIFAR-10 as .npz (default: DKDLIB_DATA, else download)")
    p.add_argument("--out", type=Path, default=None, help="checkpoints and caches (outside the work tree)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--list", action="store_true", help="print the queue and what is left, train nothing")
    args = p.parse_args(argv)

    out = args.out or Path.home() / ".cache" / "dkdlib" / f"campaign-{args.mode}"
    out.mkdir(parents=True, exist_ok=True)
    os.environ["DKDLIB_OUT"] = str(out)  # where the recipes put (and so find) every run
    if args.data:
        os.environ["DKDLIB_DATA"] = str(Path(args.data).resolve())
    import torch

    from dkdlib import recipes, weights
    from dkdlib.train import data_for, fit

    if args.threads:
        torch.set_num_threads(args.threads)
    queue = recipes.campaign_queue(args.mode)
    done = committed_names(ROOT / "data" / "results")
    if args.list:
        print_status(status(queue, done, out))
        return 0

    lock_path = lock(out)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop)
    if args.hours is not None:
        signal.alarm(max(1, int(args.hours * 3600)))
    teachers = {cfg.checkpoint_path.name: cfg for _, _, cfg in queue}
    data = None
    try:
        for stage, label, cfg in queue:
            if cfg.run_name() in done:
                continue
            print_status(status(queue, done, out), running=cfg.run_name())
            if cfg.teacher and Path(cfg.teacher).name in teachers:  # a committed teacher, new machine
                weights.materialise(teachers[Path(cfg.teacher).name])
            data = data if data is not None else data_for(cfg)
            t0 = time.time()
            print(f"\n== {stage}: {label} ({cfg.run_name()}), {time.strftime('%H:%M')}", flush=True)
            fit(cfg, data=data, progress=False)
            print(f"== {label} finished in {(time.time() - t0) / 60:.1f} min", flush=True)
            keep(cfg, label, out)
            done.add(cfg.run_name())
    except KeyboardInterrupt:
        print(
            "\nstopped; the last finished epoch of the running run is saved. Run the same command to go on."
        )
    finally:
        signal.alarm(0)
        lock_path.unlink(missing_ok=True)
    print_status(status(queue, done, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pair the run records of two results folders by run name and show how far apart the pairs ended.

    python benchmarks/compare_runs.py RESULTS_A RESULTS_B [--out FILE.json]

For checking that a speed path trains the same maths: e.g. graphed against eager runs, or runs that read
the teacher-logit cache against runs with the live teacher. Runs with the same name have the same
identity (config, seed, teacher file), so any gap comes from how they were computed. Prints, per pair:
the test accuracy at the last epoch and at the best validation epoch on both sides, and the largest
relative gap between their per-epoch training losses; plus each side's wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dkdlib.results import load_records  # noqa: E402


def latest_by_name(folder: Path) -> dict[str, dict]:
    records = sorted(load_records(folder), key=lambda r: r.get("environment", {}).get("date", ""))
    return {r["name"]: r for r in records}  # the latest record of a name wins


def compare(a: dict[str, dict], b: dict[str, dict]) -> list[dict]:
    rows = []
    for name in sorted(set(a) & set(b)):
        ra, rb = a[name], b[name]
        la = [h["train_loss"] for h in ra["history"]]
        lb = [h["train_loss"] for h in rb["history"]]
        gap = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(la, lb, strict=True))
        ma, mb = ra["metrics"], rb["metrics"]
        rows.append({
            "name": name, "tag": ra["config"].get("tag", ""), "epochs": len(la),
            "test_acc_a": ma["test_acc"], "test_acc_b": mb["test_acc"],
            "best_val_test_acc_a": ma.get("test_acc_at_best_val"),
            "best_val_test_acc_b": mb.get("test_acc_at_best_val"),
            "max_rel_train_loss_gap": gap,
            "wall_time_s_a": ra.get("wall_time_s"), "wall_time_s_b": rb.get("wall_time_s"),
        })  # fmt: skip
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path, help="results folder A (e.g. runs trained one by one)")
    p.add_argument("b", type=Path, help="results folder B (e.g. the same runs trained together)")
    p.add_argument("--out", type=Path, help="also write the pairs as JSON here")
    args = p.parse_args(argv)
    rows = compare(latest_by_name(args.a), latest_by_name(args.b))
    if not rows:
        print(f"no run names in common between {args.a} and {args.b}", file=sys.stderr)
        return 1
    print(f"A = {args.a}\nB = {args.b}\n")
    print("| row | epochs | test acc A | test acc B | at best val A | at best val B | max train-loss gap |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['tag'] or r['name']} | {r['epochs']} | {r['test_acc_a']:.4f} | {r['test_acc_b']:.4f} | "
              f"{r['best_val_test_acc_a']:.4f} | {r['best_val_test_acc_b']:.4f} | "
              f"{r['max_rel_train_loss_gap']:.1e} |")  # fmt: skip
    diffs = [abs(r["test_acc_a"] - r["test_acc_b"]) for r in rows]
    wall_a = sum(r["wall_time_s_a"] or 0 for r in rows)
    wall_b = sum(r["wall_time_s_b"] or 0 for r in rows)
    print(f"\n{len(rows)} pairs; |test acc A − B|: mean {sum(diffs) / len(diffs):.4f}, max {max(diffs):.4f}; "
          f"wall time A {wall_a / 60:.1f} min, B {wall_b / 60:.1f} min")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"a": str(args.a), "b": str(args.b), "pairs": rows}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Put what a GPU window's call B sent back into data/, where the chapters and `reproduce` find it.

    python scripts/gpu_unpack.py DIR [--out data]

DIR: the folder the device's files came back in (runs.json, weights-N.bin). Each finished run's
record goes to OUT/results/, its model-only fp16 checkpoint to OUT/checkpoints/<run name>.pt, so that
`fit(config)` loads it as finished instead of training it (train-or-load). Failed and skipped runs are
listed. Nothing already there is overwritten.

A run's identity leaves out where its images were read from (`data`), so runs trained on the
device's decoded CIFAR-10 match the chapters' configs on any machine.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_bundle  # noqa: E402


def _config(d: dict):
    from dkdlib.train import Config

    return Config(**{**d, "milestones": tuple(d.get("milestones", ()))})


def unpack(directory: Path, out: Path = Path("data")) -> dict:
    """Unpack DIR into OUT; returns {status: [run names]}."""
    import torch

    from dkdlib.checkpoint import atomic_write

    directory, out = Path(directory), Path(out)
    manifest = json.loads((directory / gpu_bundle.MANIFEST).read_text())
    print(f"{directory}: {len(manifest['runs'])} queue entries; window info: {json.dumps(manifest['info'])}")
    renamed: dict[str, str] = {}  # device checkpoint file name → local path, for students' teachers
    summary: dict[str, list[str]] = {}
    for entry in manifest["runs"]:
        status, name = entry["status"], entry["name"]
        summary.setdefault(status, []).append(name)
        if status != "done":
            why = entry.get("reason") or (entry.get("error") or "").strip().splitlines()[-1:]
            print(f"  {status:>7}: {entry['label']} ({name}) {why}")
            continue
        weights = gpu_bundle.read_weights(directory, entry)
        state = torch.load(io.BytesIO(weights), weights_only=True) if weights else None
        record = entry.get("record")
        cfg = _config(entry["config"])
        local = replace(cfg, out_dir=str(out))
        if local.teacher:
            teacher = Path(cfg.teacher).name
            local = replace(local, teacher=renamed.get(teacher, str(out / "checkpoints" / teacher)))
        new_name = local.run_name()
        renamed[cfg.checkpoint_path.name] = str(local.checkpoint_path)
        note = {"run_name_on_device": name, "config_on_device": entry["config"]} if new_name != name else None
        if state is not None:
            if note:
                state["config"], state["unpacked"] = local.to_dict(), note
            path = local.checkpoint_path
            if path.exists():
                print(f"  exists:  {path} (left as it is)")
            else:
                atomic_write(path, lambda tmp, s=state: torch.save(s, tmp))
        if record is not None:
            if note:
                record = {**record, "name": new_name, "config": local.to_dict(), "unpacked": note}
            file = (entry.get("record_file") or f"{new_name}.json").replace(name, new_name)
            target = out / "results" / file
            if not target.exists():
                atomic_write(
                    target, lambda tmp, r=record: Path(tmp).write_text(json.dumps(r, indent=1) + "\n")
                )
        kept = "weights" if state is not None else "NO weights (left out on the device)"
        print(f"     done: {entry['label']} → {new_name}: test acc {entry.get('test_acc')}, record + {kept}")
    print("; ".join(f"{k}: {len(v)}" for k, v in summary.items()))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path, help="the folder the device's files came back in")
    p.add_argument("--out", type=Path, default=ROOT / "data", help="where checkpoints/ and results/ go")
    args = p.parse_args(argv)
    unpack(args.dir, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

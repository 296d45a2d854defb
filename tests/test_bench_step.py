"""benchmarks/bench_step.py's bookkeeping, with the timed steps replaced by fakes (no training here):
every variant the GPU window asks for runs, a variant that fails is recorded as failed while the others
go on, and the JSON on disk holds the variants so far after each one."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_step  # noqa: E402


@pytest.fixture
def fake_steps(monkeypatch):
    """Each dkdlib variant takes 1 s for its steps; the compiled one raises."""
    seen: list[dict] = []

    def conventional(data, device, workers, steps, untimed):
        return {"startup_s": 0.1, "seconds": 4.0, "last_loss": 2.0}

    def dkdlib(data, device, steps, untimed, **kw):
        seen.append(kw)
        if kw.get("compile"):
            raise RuntimeError("the compiler failed (fake)")
        return {"startup_s": 0.1, "seconds": 1.0, "last_loss": 2.0}

    monkeypatch.setattr(bench_step, "bench_conventional", conventional)
    monkeypatch.setattr(bench_step, "bench_dkdlib", dkdlib)
    return seen


def test_a_failing_variant_is_recorded_and_the_others_still_run(tmp_path, fake_steps, monkeypatch):
    out = tmp_path / "bench.json"
    written: list[dict] = []
    write_text = Path.write_text

    def spy(path, text, *a, **k):  # every JSON version written along the way
        written.append(json.loads(text))
        return write_text(path, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", spy)
    args = ["--device", "cpu", "--steps", "4", "--untimed", "1", "--workers", "2", "--compile",
            "--out", str(out)]  # fmt: skip
    report = bench_step.main(args)
    saved = json.loads(out.read_text())
    assert saved == report and saved["complete"]
    names = [v["variant"] for v in saved["variants"]]
    assert names == [
        "conventional, 2 workers",
        "dkdlib eager",
        "dkdlib + torch.compile",
        "dkdlib eager + logit cache",  # a CPU has no CUDA graphs: the cache goes on the eager step
    ]
    assert saved["failed"] == ["dkdlib + torch.compile"]
    failed = saved["variants"][2]
    assert "the compiler failed" in failed["failed"] and "images_per_s" not in failed
    by_name = {v["variant"]: v for v in saved["variants"]}
    assert saved["baseline"] == "conventional, 2 workers"
    assert by_name["dkdlib eager"]["ratio"] == pytest.approx(4.0)  # 4 s against 1 s for the same steps
    assert by_name["dkdlib eager + logit cache"]["images_per_s"] == pytest.approx(4 * 128)
    # After each variant the file on disk held every variant so far, marked incomplete until the end.
    assert [len(w["variants"]) for w in written] == [1, 2, 3, 4, 4]
    assert [w["complete"] for w in written] == [False] * 4 + [True]
    assert [kw.get("compile", False) for kw in fake_steps].count(True) == 1
    assert [kw.get("cache", False) for kw in fake_steps].count(True) == 1


def test_steps_must_be_at_least_one():
    with pytest.raises(SystemExit):
        bench_step.parse_args(["--steps", "0"])

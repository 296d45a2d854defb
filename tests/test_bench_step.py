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
    """Each variant takes 1 s for its steps, K packed students K x 0.5 s; packing 4 students raises."""
    seen: list[dict] = []

    def conventional(data, device, workers, steps, untimed):
        return {"startup_s": 0.1, "seconds": 4.0, "last_loss": 2.0}

    def dkdlib(data, device, steps, untimed, **kw):
        seen.append(kw)
        if kw.get("k") == 4:
            raise RuntimeError("grouped convolution failed (fake)")
        seconds = 0.5 * kw["k"] if kw.get("packed") else 1.0
        return {"startup_s": 0.1, "seconds": seconds, "last_loss": 2.0, "students": kw.get("k", 1),
                "packed": kw.get("packed", False)}  # fmt: skip

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
            "--students", "1", "4", "8", "--out", str(out)]  # fmt: skip
    report = bench_step.main(args)
    saved = json.loads(out.read_text())
    assert saved == report and saved["complete"]
    names = [v["variant"] for v in saved["variants"]]
    assert names == [
        "conventional, 2 workers",
        "dkdlib eager",
        "dkdlib + torch.compile",
        "dkdlib eager + logit cache",  # a CPU has no CUDA graphs: the cache goes on the eager step
        "dkdlib eager + logit cache, 1 student packed",
        "dkdlib eager + logit cache, 4 students packed",
        "dkdlib eager + logit cache, 8 students packed",
    ]
    assert saved["failed"] == ["dkdlib eager + logit cache, 4 students packed"]
    failed = saved["variants"][5]
    assert "grouped convolution failed" in failed["failed"] and "images_per_s" not in failed
    by_name = {v["variant"]: v for v in saved["variants"]}
    assert saved["baseline"] == "conventional, 2 workers"
    assert by_name["dkdlib eager"]["ratio"] == pytest.approx(4.0)  # 4 s against 1 s for the same steps
    eight = by_name["dkdlib eager + logit cache, 8 students packed"]
    assert eight["wall_vs_one_student"] == pytest.approx(4.0)  # 8 x 0.5 s against 1 s alone
    # After each variant the file on disk held every variant so far, marked incomplete until the end.
    assert [len(w["variants"]) for w in written] == [1, 2, 3, 4, 5, 6, 7, 7]
    assert [w["complete"] for w in written] == [False] * 7 + [True]
    assert [kw.get("compile", False) for kw in fake_steps].count(True) == 1


def test_the_packed_variants_need_at_least_one_student():
    with pytest.raises(SystemExit):
        bench_step.parse_args(["--students", "0"])

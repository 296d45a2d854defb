"""benchmarks/gpu_check.py as the GPU window calls it, on the CPU at tiny sizes (--cpu --quick).

Two runs of the script (at most a minute of CPU each): one where every path works, and one where the
cache path is broken on purpose (GPU_CHECK_BREAK), which must turn exactly that path off and leave the
check of the path below it running. A check that raises is shown failing alone, without training.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = {"graph", "cache", "compile"}


def gpu_check(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    verdicts = tmp_path / "verdicts.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu", "--quick", "--verdicts",
               str(verdicts)]  # fmt: skip
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "GPU_CHECK_BREAK": "", **env})  # fmt: skip
    return proc, json.loads(verdicts.read_text())


def assert_shape(report: dict) -> None:
    assert isinstance(report["device"], str) and report["device"].startswith("cpu")
    assert set(report["paths"]) == PATHS and all(isinstance(v, bool) for v in report["paths"].values())
    assert isinstance(report["seconds"], float) and report["seconds"] > 0
    assert report["finished"] is True
    for c in report["checks"]:
        assert {"name", "path", "ok", "detail"} <= set(c)
        assert isinstance(c["name"], str) and isinstance(c["detail"], str) and isinstance(c["ok"], bool)
        assert c["path"] in PATHS | {"eager"}


def learning_checks(report: dict, path: str) -> list[dict]:
    return [c for c in report["checks"] if c["path"] == path and c["name"].endswith("learns")]


def test_the_cpu_dry_run_passes_with_runs_that_learn(tmp_path):
    proc, report = gpu_check(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_shape(report)
    assert "all checks passed" in proc.stdout
    # No CUDA graphs on a CPU: the path is off, said by a skipped check that is not a failure.
    assert report["paths"] == {"graph": False, "cache": True, "compile": True}
    (graph,) = [c for c in report["checks"] if c["path"] == "graph"]
    assert graph["skipped"] and graph["ok"] and "not available" in graph["detail"]
    # Every comparison is made between runs that learned: the bar is well above chance.
    assert report["sizes"]["learn"] >= 3 * report["chance"]
    for path in ("eager", "cache", "compile"):
        assert learning_checks(report, path), f"no learning check for {path}"
        assert all(c["ok"] for c in learning_checks(report, path))
    names = " ".join(c["name"] for c in report["checks"])
    assert "reference DKD" in names and "series DKD" in names  # Adam + constant lr; SGD + one-cycle


def test_a_broken_path_is_turned_off_and_the_later_checks_still_run(tmp_path):
    proc, report = gpu_check(tmp_path, GPU_CHECK_BREAK="cache")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_shape(report)
    assert report["paths"] == {"graph": False, "cache": False, "compile": True}
    # cache: logits paired with the neighbouring view; the comparison with the live teacher sees it
    equal = next(c for c in report["checks"] if c["name"].startswith("cached logits == live teacher"))
    assert not equal["ok"]
    # the compile check ran after it, without the broken path, and passed
    order = [c["path"] for c in report["checks"]]
    assert order.index("compile") > max(i for i, p in enumerate(order) if p == "cache")
    compiled = [c for c in report["checks"] if c["path"] == "compile"]
    assert compiled and all(c["ok"] for c in compiled)
    assert all("cache_teacher" not in c["name"] for c in compiled)
    assert all(c["ok"] for c in report["checks"] if c["path"] == "eager")


def test_a_check_that_raises_fails_its_path_and_the_later_checks_still_run(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check

    def raises(s):
        raise RuntimeError("broken on purpose")

    def passes(path):
        return lambda s: gpu_check.check(s, path, f"{path} works", True, "fine")

    checks = [("eager", passes("eager")), ("cache", raises), ("compile", passes("compile"))]
    monkeypatch.setattr(gpu_check, "CHECKS", checks)
    report = {"paths": dict.fromkeys(gpu_check.PATHS, False), "checks": [], "path_seconds": {},
              "_t0": time.perf_counter()}  # fmt: skip
    gpu_check.run_checks(gpu_check.Session(None, None, None, gpu_check.QUICK, Path("."), None, report))
    assert report["paths"] == {"graph": False, "cache": False, "compile": True}
    (raised,) = [c for c in report["checks"] if c["path"] == "cache"]
    assert not raised["ok"] and "Traceback" in raised["detail"] and "broken on purpose" in raised["detail"]
    assert [c["path"] for c in report["checks"]] == ["eager", "cache", "compile"]

"""Records name the commit of the code that ran, also where .git is absent (as on a GPU machine)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dkdlib import results as results_mod

ROOT = Path(__file__).resolve().parent.parent
PRINT_COMMIT = "import dkdlib.results as r; print(r.environment()['git_commit'])"


def _commit_in_copy_without_git(tmp_path: Path, env_commit: str | None) -> str:
    """Import dkdlib from a copy of the package outside any git checkout; the recorded commit."""
    shutil.copytree(ROOT / "dkdlib", tmp_path / "dkdlib", ignore=shutil.ignore_patterns("__pycache__"))
    probe = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True)
    if probe.returncode == 0:
        pytest.skip(f"{tmp_path} lies inside a git checkout")
    env = {k: v for k, v in os.environ.items() if k != "DKDLIB_GIT_COMMIT"}
    env["PYTHONPATH"] = str(tmp_path)
    if env_commit is not None:
        env["DKDLIB_GIT_COMMIT"] = env_commit
    out = subprocess.run(
        [sys.executable, "-c", PRINT_COMMIT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_without_git_the_commit_comes_from_the_environment(tmp_path):
    assert _commit_in_copy_without_git(tmp_path, "0123abcd-dirty") == "0123abcd-dirty"


def test_without_git_and_without_the_variable_the_commit_is_unknown(tmp_path):
    assert _commit_in_copy_without_git(tmp_path, None) == "unknown"


def test_git_missing_altogether(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(results_mod.subprocess, "run", no_git)
    monkeypatch.delenv("DKDLIB_GIT_COMMIT", raising=False)
    assert results_mod._git_commit() == "unknown"
    monkeypatch.setenv("DKDLIB_GIT_COMMIT", "feedc0de")
    assert results_mod._git_commit() == "feedc0de"


def test_git_wins_over_the_variable_in_a_checkout(monkeypatch):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    monkeypatch.setenv("DKDLIB_GIT_COMMIT", "not-this-one")
    commit = results_mod._git_commit()
    assert commit != "not-this-one" and len(commit.removesuffix("-dirty")) == 40

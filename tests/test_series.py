"""The series' runs are listed once, in dkdlib.recipes: chapter 6 trains exactly `ablation_specs`, and
`series_configs` (what a GPU window trains) holds every run the chapters train."""

import ast
import json
import re
from pathlib import Path

import pytest

from dkdlib import recipes
from dkdlib.recipes import ablation_specs, series_configs, student_config, teacher_config

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _code(name: str) -> list[ast.Module]:
    nb = json.loads(next(NOTEBOOKS.glob(f"{name}_*.ipynb")).read_text())
    sources = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    return [ast.parse(re.sub(r"(?m)^(\s*)[%!].*$", r"\1pass", s)) for s in sources]


def test_chapter6_trains_the_recipe_sweeps_and_nothing_else():
    trees = _code("06")
    calls = [
        node
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "students"
    ]
    keys = []
    for call in calls:
        arg = call.args[0]
        assert isinstance(arg, ast.Subscript) and getattr(arg.value, "id", None) == "SPECS", (
            f"chapter 6 calls students({ast.unparse(arg)}); its sweeps belong in recipes.ablation_specs"
        )
        keys.append(arg.slice.value)
    assert sorted(keys) == sorted(ablation_specs("full")), "chapter 6 trains every sweep once"
    source = "\n".join(ast.unparse(t) for t in trees)
    assert "SPECS = ablation_specs(info['mode'])" in source


def test_series_holds_every_chapter_run_once():
    teacher = "data/checkpoints/some-teacher.pt"
    configs = series_configs(teacher, fast=False)
    names = [c.run_name() for c in configs.values()]
    assert len(names) == len(set(names))
    assert list(configs)[0] == "teacher" and configs["teacher"] == teacher_config(False)
    for method in ("ce", "kd", "dkd"):  # chapters 2–5
        assert student_config(method, teacher, False).run_name() in names
    for specs in ablation_specs("full").values():  # chapter 6
        for method, overrides in specs.values():
            assert student_config(method, teacher, False, **overrides).run_name() in names
    # 1 teacher + CE/KD/DKD + 6 TCKD/NCKD + 8 new grid cells + 3 new temperatures + 6 new seeds
    # + 3 new warm-ups (W = 20 is the DKD student)
    assert len(configs) == 30
    assert all(c.teacher == teacher for c in configs.values() if c.method != "ce")


def test_series_defaults_to_the_series_teacher_and_follows_the_mode():
    full = series_configs(fast=False)
    assert full["dkd"].teacher == str(teacher_config(False).checkpoint_path)
    small = series_configs(fast=True)
    assert len(small) < len(full) and all(c.dataset == "synthetic" for c in small.values())
    assert recipes.ABLATION_SIZES["small"]["seeds"] == (0, 1)


def test_a_mode_can_be_named_without_the_environment(monkeypatch):
    from dkdlib.recipes import student_config

    monkeypatch.setenv("DKDLIB_MODE", "cpu")
    from_env = student_config("dkd", "t.pt")
    monkeypatch.delenv("DKDLIB_MODE")
    assert student_config("dkd", "t.pt", fast="cpu") == from_env
    assert from_env.train_size is None and from_env.epochs == 20 and from_env.cache_teacher == "seen"
    with pytest.raises(ValueError, match="^mode must be one of") as error:  # an argument is no variable
        student_config(fast="tiny")
    assert "DKDLIB_MODE" not in str(error.value)
    monkeypatch.setenv("DKDLIB_MODE", "tiny")  # one variable chooses the scale; a typo is one clear error
    with pytest.raises(ValueError, match="^DKDLIB_MODE must be one of"):
        recipes.mode()
    monkeypatch.setenv("DKDLIB_MODE", "")
    assert recipes.mode() == "full"


def test_campaign_queue_in_order_of_value():
    from dkdlib.recipes import campaign_queue

    queue = campaign_queue("cpu", teacher="t.pt")
    names = [cfg.run_name() for _, _, cfg in queue]
    assert len(names) == len(set(names)), "every run once"
    labels = [label for _, label, _ in queue]
    assert labels[:4] == ["teacher", "ce seed 0", "dkd seed 0", "kd seed 0"]
    stages = list(dict.fromkeys(stage for stage, _, _ in queue))
    assert stages == ["teacher", "seed 0", "seed 1", "seed 2", "rows", "chapter 6", "row seeds"]
    series = {cfg.run_name() for cfg in series_configs("t.pt", "cpu").values()}
    assert series <= set(names), "the campaign trains every run the chapters use"
    assert all(cfg.cache_teacher == "seen" for _, _, cfg in queue if cfg.teacher), (
        "the teacher runs once a seed"
    )

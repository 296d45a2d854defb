"""Serves the chapters: many configs trained with as few loops as possible (`fit_all`).

On a GPU at batch 128 a ResNet8 step is bound by kernel launches, so the configs that can share a loop
(`schedule_groups`) train as one packed `fit_many`; on a CPU each trains alone. Either way every run is
the same experiment, with its own checkpoint and record. Plateau schedules are never packed: each
student would need its own learning rate, set by its own loss.
"""

from __future__ import annotations

from .config import SHARED, Config, data_seed
from .data import Data
from .methods import distills
from .train import Run, fit_many, pick_device


def schedule_groups(configs: list[Config]) -> list[list[Config]]:
    """The configs grouped by what they must share to train together (data, schedule, data seed, teacher;
    CE students join the first group that matches them otherwise), in first-seen order, each run once."""

    def key(cfg: Config) -> tuple:
        return tuple(repr(getattr(cfg, k)) for k in SHARED if k != "teacher") + (data_seed(cfg),)

    groups: dict[tuple, list[Config]] = {}
    seen: set[str] = set()
    for cfg in sorted(configs, key=lambda c: not distills(c.method)):  # distilled students first (stable)
        if cfg.run_name() in seen:
            continue
        seen.add(cfg.run_name())
        if cfg.schedule == "plateau":  # its own group: fit_all trains it with fit()
            home = ("plateau", cfg.run_name())
        elif not distills(cfg.method):
            home = next((k for k in groups if k[:-1] == key(cfg)), key(cfg) + (None,))
        else:
            home = key(cfg) + (cfg.teacher,)
        groups.setdefault(home, []).append(cfg)
    order = {c.run_name(): i for i, c in reversed(list(enumerate(configs)))}
    return sorted(groups.values(), key=lambda g: min(order[c.run_name()] for c in g))


def fit_all(
    configs: list[Config], *, data: Data | None = None, packed: bool | None = None, progress: bool = True
) -> list[Run]:
    """Train (or load) every config; their runs in order. packed: train the configs that can share a loop
    together (default: on CUDA, where that is faster)."""
    if not configs:
        return []
    if packed is None:
        packed = pick_device(configs[0].device).type == "cuda"
    runs: dict[str, Run] = {}
    groups = schedule_groups(configs) if packed else [[c] for c in configs]
    for group in groups:
        group = [c for c in group if c.run_name() not in runs]  # a run asked for twice trains once
        if group:
            done = fit_many(group, data=data, progress=progress)
            runs.update({run.config.run_name(): run for run in done})
    return [runs[c.run_name()] for c in configs]

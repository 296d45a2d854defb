"""Several students in one training loop: an ablation sweep for the price of (nearly) one run on a GPU.

`fit_many(configs)` trains K students that share a schedule — the same data, batch size, epochs,
optimizer and learning-rate schedule, and the same teacher — but may differ in everything the loss
does (method, α, β, T, warm-up, CE/KD weights) and in their initialisation (seed, or `init`
checkpoint). The K ResNets become
one grouped network (`dkdlib.packed`), every batch and the teacher's logits on it are shared, and one
vectorised loss gives each student its own loss; their sum's gradient is each student's own gradient,
and SGD/Adam update elementwise, so every student follows the path it would follow alone (up to
floating-point rounding: grouped convolutions add in another order).

Each student gets its own checkpoint and results record, exactly as `fit` writes them, so a student
of a sweep can be loaded, evaluated or resumed alone with `fit(config)`. Students share the shuffling
and augmentation stream (`Config.data_seed`, default `seed`): give students with different seeds an
explicit common `data_seed` to train them together. Plateau schedules (`schedule="plateau"`) are not
packed: each student would need its own learning rate, set by its own loss; `fit_all` trains them alone.

On a GPU at batch 128 a ResNet8 step is bound by kernel launches, so K students cost little more than
one. On a CPU grouped convolutions are slower than K separate ones: use `fit` there.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import losses
from .checkpoint import load_checkpoint, save_checkpoint
from .data import Data
from .errors import DKDError
from .models import create_model
from .packed import (
    pack,
    pack_optimizer_states,
    pack_state_dicts,
    split_logits,
    unpack,
    unpack_optimizer_state,
)
from .results import write_record
from .train import (
    Config,
    LossFn,
    Run,
    _amp_dtype,
    _channels_last,
    _check_same_run,
    _loaders,
    _make_optimizer,
    _make_scheduler,
    _use_graph,
    checkpoint_dict,
    data_for,
    data_seed,
    distill_weight,
    finish_best,
    fit,
    init_metrics,
    is_best,
    load_init,
    load_optimizer_state,
    load_teacher,
    make_step,
    pick_device,
    predict,
    record_dict,
    save_best,
    summarize,
)

__all__ = ["fit_many", "fit_all", "schedule_groups", "packed_loss", "SHARED"]

# What the students of one sweep must share: their data, schedule and teacher.
SHARED = (
    "model",
    "teacher",
    "pretrained",
    "dataset",
    "data",
    "val_size",
    "train_size",
    "test_size",
    "mean",
    "std",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "milestones",
    "gamma",
    "plateau_factor",
    "plateau_patience",
    "device",
    "amp",
    "channels_last",
    "compile",
    "graph",
    "cache_teacher",
    "out_dir",
)


def packed_loss(configs: list[Config]) -> LossFn:
    """The K students' training losses (K,) from their logits K×N×C, in one vectorised computation.

    Every method is a point in one family: ce_w·CE + w·T²·(α·TCKD + β·NCKD + kd_w·KD), with
    ce: α=β=kd_w=0, kd: α=β=0, tckd: β=0, nckd: α=0, dkd: kd_w=0. KD per sample is computed from the
    same terms through the identity KD = TCKD + (1 − p_t)·NCKD.
    """

    def column(values, device):
        return torch.tensor(values, dtype=torch.float32, device=device)

    ce_w = [c.ce_weight for c in configs]
    alpha = [c.alpha if c.method in ("dkd", "tckd") else 0.0 for c in configs]
    beta = [c.beta if c.method in ("dkd", "nckd") else 0.0 for c in configs]
    kd_w = [c.kd_weight if c.method == "kd" else 0.0 for c in configs]
    temps = [c.temperature for c in configs]
    consts: dict = {}

    def loss_fn(logits, logits_teacher, y, weight):
        k, n, c = logits.shape
        if not consts:  # made once, on the logits' device (no host-to-device copies in a captured step)
            named = {"ce_w": ce_w, "alpha": alpha, "beta": beta, "kd_w": kd_w, "t": temps}
            consts.update({name: column(v, logits.device) for name, v in named.items()})
        yk = y.repeat(k)
        ce = F.cross_entropy(logits.float().reshape(k * n, c), yk, reduction="none").view(k, n).mean(1)
        if logits_teacher is None:
            return consts["ce_w"] * ce
        t = consts["t"].view(k, 1, 1)
        zs = (logits.float() / t).reshape(k * n, c)
        zt = (logits_teacher.float()[None] / t).expand(k, n, c).reshape(k * n, c)
        tckd, nckd, p_t = (v.view(k, n) for v in losses._dkd_terms(zs, zt, yk, 1.0))
        kd = tckd + (1 - p_t) * nckd
        distill = consts["t"] ** 2 * (
            consts["alpha"] * tckd.mean(1) + consts["beta"] * nckd.mean(1) + consts["kd_w"] * kd.mean(1)
        )
        return consts["ce_w"] * ce + weight * distill

    return loss_fn


def _check_group(configs: list[Config]) -> None:
    if not configs:
        raise DKDError("fit_many needs at least one config")
    first = configs[0]
    for i, cfg in enumerate(configs):
        cfg.validate()
        if cfg.schedule == "plateau":
            raise DKDError(
                f"configs[{i}] ({cfg.run_name()}) has schedule='plateau', which lowers the learning rate "
                "when the run's own training loss stalls: students trained together would each need their "
                "own rate. Train plateau runs one by one with fit() (fit_all does this by itself)"
            )
        diff = [
            f"{k}: {getattr(first, k)!r} vs {getattr(cfg, k)!r}"
            for k in SHARED
            if getattr(first, k) != getattr(cfg, k)
        ]
        if cfg.method == "ce" or first.method == "ce":  # a CE student needs no teacher
            diff = [d for d in diff if not d.startswith("teacher:")]
        if diff:
            raise DKDError(
                f"configs[{i}] cannot train together with configs[0]: they must share data, schedule and "
                f"teacher ({'; '.join(diff)})"
            )
        if data_seed(cfg) != data_seed(first):
            raise DKDError(
                f"configs[{i}] shuffles with seed {data_seed(cfg)}, configs[0] with {data_seed(first)}: "
                "students trained together see the same batches. Set the same data_seed on all of them "
                "(it becomes part of each run's identity), or train them one by one with fit()"
            )
    names = [c.run_name() for c in configs]
    if len(set(names)) != len(names):
        raise DKDError(f"two configs describe the same run ({names}); a sweep needs distinct runs")
    teachers = {c.teacher for c in configs if c.method != "ce"}
    if len(teachers) > 1:
        raise DKDError(f"students trained together must share one teacher; got {sorted(teachers)}")


def fit_many(
    configs: list[Config],
    *,
    data: Data | None = None,
    fresh: bool = False,
    progress: bool = True,
    save: bool = True,
) -> list[Run]:
    """Train the students `configs` together (see the module docstring); returns one `Run` each.

    Train-or-load like `fit`: finished students are loaded and left out; the others resume from their
    checkpoints if they all stopped at the same epoch.
    """
    from tqdm.auto import tqdm

    _check_group(configs)
    cfg0 = configs[0]
    device = pick_device(cfg0.device)
    data = data_for(cfg0, data)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # Train-or-load: finished students are loaded; the rest must all be fresh or at one epoch.
    runs: dict[int, Run] = {}
    states: dict[int, dict] = {}
    for i, cfg in enumerate(configs):
        path = cfg.checkpoint_path
        if path.exists() and not fresh and save:
            state = load_checkpoint(path)
            _check_same_run(state, cfg, path)
            if state.get("complete"):
                model = create_model(cfg.model, data.num_classes).to(device)
                model.load_state_dict(state["model"])
                print(f"loaded finished run {cfg.run_name()} from {path}")
                runs[i] = Run(cfg, model.eval(), state["history"], state["metrics"], path, None, data)
            else:
                states[i] = state
    todo = [i for i in range(len(configs)) if i not in runs]
    if not todo:
        return [runs[i] for i in range(len(configs))]
    epochs_done = {states[i]["epoch"] if i in states else 0 for i in todo}
    if len(epochs_done) > 1:
        raise DKDError(
            "the unfinished students' checkpoints stopped at different epochs "
            f"({ {configs[i].run_name(): states[i]['epoch'] if i in states else 0 for i in todo} }); "
            "resume them one by one with fit(), or pass fresh=True"
        )
    group = [configs[i] for i in todo]
    k = len(group)

    start_epoch = epochs_done.pop() + 1
    inits = [load_init(cfg, data) for cfg in group]
    solos = []
    for cfg, init in zip(group, inits, strict=True):
        torch.manual_seed(cfg.seed)  # each student's initialisation, exactly as fit() makes it
        solos.append(create_model(cfg.model, data.num_classes, pretrained=cfg.pretrained))
        if init is not None and start_epoch == 1:
            solos[-1].load_state_dict(init["model"])
    model = pack(solos).to(device)
    if start_epoch > 1:
        model.load_state_dict(pack_state_dicts([states[i]["model"] for i in todo], model))
    if _channels_last(cfg0, device):
        model = model.to(memory_format=torch.channels_last)
    teacher_cfg = next((c for c in group if c.method != "ce"), None)
    teacher = load_teacher(teacher_cfg, data, device) if teacher_cfg is not None else None
    train_loader, eval_loaders = _loaders(cfg0, data, device)
    graph = _use_graph(cfg0, device)
    optimizer = _make_optimizer(cfg0, model, graph)
    scheduler = _make_scheduler(cfg0, optimizer, len(train_loader))
    amp_dtype = _amp_dtype(cfg0, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    histories: list[list[dict]] = [[] for _ in group]
    if start_epoch > 1:
        first = states[todo[0]]
        load_optimizer_state(optimizer, pack_optimizer_states([states[i]["optimizer"] for i in todo]), graph)
        scheduler.load_state_dict(first["scheduler"])
        scaler.load_state_dict(first["scaler"])
        histories = [states[i]["history"] for i in todo]
        print(f"resuming {k} students from epoch {start_epoch - 1}")
    step = make_step(cfg0, packed_loss(group), model, train_loader, optimizer, scaler, data=data,
                     teacher=teacher, amp_dtype=amp_dtype, graph=graph, k=k, progress=progress)  # fmt: skip

    def save_all(epoch: int, complete: bool, metrics: list[dict] | None = None) -> None:
        if not save:
            return
        model_states = unpack(model, k)
        opt_states = unpack_optimizer_state(optimizer.state_dict(), k)
        for j, cfg in enumerate(group):
            save_checkpoint(
                cfg.checkpoint_path,
                checkpoint_dict(
                    cfg,
                    data,
                    epoch,
                    complete,
                    model_states[j],
                    opt_states[j],
                    scheduler.state_dict(),
                    scaler.state_dict(),
                    histories[j],
                    metrics[j] if metrics else None,
                ),
            )

    t_start = time.perf_counter()
    bar = tqdm(
        range(start_epoch, cfg0.epochs + 1),
        desc=f"{k} students",
        disable=not progress,
        initial=start_epoch - 1,
        total=cfg0.epochs,
    )
    epoch = start_epoch - 1
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            lr = float(optimizer.param_groups[0]["lr"])
            model.train()
            step.start_epoch(epoch, [distill_weight(c, epoch) if c.method != "ce" else 0.0 for c in group])
            steps = len(train_loader)
            for s in range(steps):
                step()
                scheduler.step()
                if (s + 1) % 50 == 0 or s + 1 == steps:
                    step.check_finite(epoch, steps)
            stats = step.epoch_stats()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            rows = [
                {
                    "epoch": epoch,
                    "lr": lr,
                    **stats[j],
                    "seconds": seconds,
                    "images_per_s": steps * cfg0.batch_size / seconds,
                    "students": k,
                    "distill_weight": distill_weight(c, epoch) if c.method != "ce" else 0.0,
                }
                for j, c in enumerate(group)
            ]
            for split, loader in eval_loaders.items():
                logits, y = predict(model, loader, amp_dtype)
                for j, z in enumerate(split_logits(logits, k)):
                    rows[j][f"{split}_acc"] = float((z.argmax(1) == y).float().mean())
                    rows[j][f"{split}_loss"] = float(F.cross_entropy(z, y))
            for j, row in enumerate(rows):
                histories[j].append(row)
            best = [j for j, c in enumerate(group) if save and is_best(histories[j], c.best_by)]
            if best:
                model_states = unpack(model, k)
                for j in best:
                    save_best(group[j], data, model_states[j], histories[j])
            bar.set_postfix({"test_acc": " ".join(f"{r.get('test_acc', 0):.3f}" for r in rows)})
            if epoch < cfg0.epochs:
                save_all(epoch, complete=False)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted during epoch {epoch}; the students' last checkpoints are intact. "
            "Run the same call again to resume."
        )
        raise

    wall = time.perf_counter() - t_start
    metrics = [
        summarize(h) | init_metrics(c, init) for h, c, init in zip(histories, group, inits, strict=True)
    ]
    if "test" in eval_loaders:
        logits, y = predict(model, eval_loaders["test"], amp_dtype)
        c = data.num_classes
        for j, z in enumerate(split_logits(logits, k)):
            confusion = torch.bincount(y * c + z.argmax(1), minlength=c * c).view(c, c).cpu()
            per_class = confusion.diagonal() / confusion.sum(1).clamp(min=1)
            metrics[j]["per_class_acc"] = per_class.round(decimals=4).tolist()
            metrics[j]["confusion"] = confusion.tolist()
    save_all(cfg0.epochs, complete=True, metrics=metrics)
    students = []
    for j, (cfg, state) in enumerate(zip(group, unpack(model, k), strict=True)):
        solo = create_model(cfg.model, data.num_classes).to(device)
        solo.load_state_dict(state)
        record = None
        if save:
            finish_best(cfg, histories[j], metrics[j])
            record = write_record(
                Path(cfg.out_dir) / "results",
                record_dict(
                    cfg,
                    data,
                    metrics[j],
                    histories[j],
                    wall / k,
                    device,  # this student's share
                    trained_with={
                        "fit_many": k,
                        "group": [c.run_name() for c in group],
                        "group_wall_time_s": round(wall, 2),
                    },
                ),
            )
        students.append(Run(cfg, solo.eval(), histories[j], metrics[j], cfg.checkpoint_path, record, data))
    for i, run in zip(todo, students, strict=True):
        runs[i] = run
    return [runs[i] for i in range(len(configs))]


def schedule_groups(configs: list[Config]) -> list[list[Config]]:
    """The configs grouped so that each group can train together (`fit_many`), in first-seen order.

    Students group by what they must share (data, schedule, data seed, teacher); CE students need no
    teacher and join the first group that matches them otherwise. Plateau runs stay alone (see the
    module docstring). A config describing the same run as one already grouped is left out (its result
    is that run's).
    """

    def key(cfg: Config) -> tuple:
        return tuple(repr(getattr(cfg, k)) for k in SHARED if k != "teacher") + (data_seed(cfg),)

    groups: dict[tuple, list[Config]] = {}
    seen: set[str] = set()
    for cfg in sorted(configs, key=lambda c: c.method == "ce"):  # distilled students first (stable)
        if cfg.run_name() in seen:
            continue
        seen.add(cfg.run_name())
        if cfg.schedule == "plateau":  # its own group: fit_all trains it with fit()
            home = ("plateau", cfg.run_name())
        elif cfg.method == "ce":
            home = next((k for k in groups if k[:-1] == key(cfg)), key(cfg) + (None,))
        else:
            home = key(cfg) + (cfg.teacher,)
        groups.setdefault(home, []).append(cfg)
    order = {c.run_name(): i for i, c in reversed(list(enumerate(configs)))}
    return sorted(groups.values(), key=lambda g: min(order[c.run_name()] for c in g))


def fit_all(
    configs: list[Config], *, data: Data | None = None, packed: bool | None = None, progress: bool = True
) -> list[Run]:
    """Train (or load) every config; returns their runs in order.

    packed: train the configs that can share a loop together with `fit_many` (default: on CUDA, where
    that is faster; on a CPU each runs alone with `fit`). Either way each run is the same experiment,
    with its own checkpoint and record.
    """
    if not configs:
        return []
    if packed is None:
        packed = pick_device(configs[0].device).type == "cuda"
    runs: dict[str, Run] = {}
    if packed:
        for group in schedule_groups(configs):
            done = (
                fit_many(group, data=data, progress=progress)
                if len(group) > 1
                else [fit(group[0], data=data, progress=progress)]
            )
            runs.update({run.config.run_name(): run for run in done})
    else:
        for cfg in configs:
            if cfg.run_name() not in runs:
                runs[cfg.run_name()] = fit(cfg, data=data, progress=progress)
    return [runs[c.run_name()] for c in configs]

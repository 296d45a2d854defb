"""The training step: one optimisation step, ready to be captured as a CUDA graph (`fit` runs it; the
benchmarks time it)."""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from .data import DeviceLoader
from .errors import DKDError
from .methods import LossFn

__all__ = ["TrainStep", "NonFiniteLoss"]


class NonFiniteLoss(DKDError, FloatingPointError):
    """The training loss became NaN or infinite."""


class TrainStep:
    """One optimisation step on batch number `counter` of the epoch's plan. All it reads
    (plan, counter, weights, accumulators, logit cache) stays in place, so on CUDA the whole step is
    captured once as a CUDA graph and replayed: one launch, no host sync. Elsewhere it runs eagerly."""

    def __init__(
        self, loss_fn: LossFn, model: nn.Module, loader: DeviceLoader, optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None = None, *, teacher: nn.Module | None = None,
        cache: torch.Tensor | None = None, seen=None, amp_dtype: torch.dtype | None = None,
        graph: bool = False, steps_before_capture: int = 3,
    ):  # fmt: skip
        dev = loader.device
        if graph and scaler is not None and scaler.is_enabled():
            raise DKDError("graph capture does not support fp16 loss scaling; use bf16 or no autocast")
        if graph and seen is not None:
            raise DKDError("graph=True cannot read the 'seen' teacher cache (it chooses on the host)")
        if graph and dev.type != "cuda":
            raise DKDError("graph=True captures a CUDA graph and needs a CUDA device")
        self.loss_fn, self.model, self.loader, self.optimizer = loss_fn, model, loader, optimizer
        self.scaler, self.teacher, self.cache, self.amp_dtype = scaler, teacher, cache, amp_dtype
        self.seen = seen  # a `SeenLogits`: the teacher's logits of this data seed, stored or computed
        self.graph, self.steps_before_capture = graph, steps_before_capture
        self.cuda_index = dev.index if dev.type == "cuda" else None  # the device a graph is captured on
        steps, batch = len(loader), loader.batch_size
        self.plan_idx = torch.zeros(steps, batch, dtype=torch.long, device=dev)
        self.plan_view = torch.zeros(steps, batch, dtype=torch.long, device=dev)
        self.counter = torch.zeros((), dtype=torch.long, device=dev)  # batch number within the epoch
        self.weight = torch.zeros((), device=dev)  # this epoch's distillation weight
        self.loss_sum = torch.zeros((), device=dev)
        self.correct = torch.zeros((), dtype=torch.long, device=dev)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=dev)  # first step with a bad loss
        self._cuda_graph: torch.cuda.CUDAGraph | None = None
        self._eager_steps = 0
        self.graph_error: str | None = None  # why capture failed, if it did (the step then runs eagerly)

    def start_epoch(self, epoch: int, weight: float) -> None:
        """Load epoch `epoch`'s plan and distillation weight into the step's buffers (in place)."""
        idx, view = self.loader.epoch_batches(epoch)
        self.plan_idx.copy_(idx)
        self.plan_view.copy_(view)
        self.weight.fill_(weight)
        for t in (self.counter, self.loss_sum, self.correct):
            t.zero_()
        self.first_bad.fill_(-1)
        if self.seen is not None:
            self.seen.start_epoch(epoch)

    def end_epoch(self) -> None:
        """The epoch's steps are done: store the teacher logits it computed, if it did."""
        if self.seen is not None:
            self.seen.end_epoch()

    def _step(self, zero_grad: bool = True) -> None:
        s = self.counter.view(1)
        idx = self.plan_idx.index_select(0, s).view(-1)  # device-side pick: no host involvement
        view = self.plan_view.index_select(0, s).view(-1)
        x, y = self.loader.batch(idx, view)
        # Autocast's weight-cast cache must be off inside a captured graph (PyTorch's CUDA-graph notes).
        amp = self.amp_dtype
        with torch.autocast(x.device.type, dtype=amp or torch.float32, enabled=amp is not None,
                            cache_enabled=not self.graph):  # fmt: skip
            logits = self.model(x)
            if self.cache is not None:
                logits_teacher = self.cache[idx, view].float()  # exactly this view's teacher logits
            elif self.seen is not None:
                logits_teacher = self.seen(x, idx)
            elif self.teacher is not None:
                with torch.no_grad():
                    logits_teacher = self.teacher(x)
            else:
                logits_teacher = None
            loss = self.loss_fn(logits, logits_teacher, y, self.weight)
        if zero_grad:
            self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None and self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        loss = loss.detach()
        self.loss_sum += loss
        self.correct += (logits.detach().argmax(-1) == y).sum()
        bad = (self.first_bad < 0) & ~torch.isfinite(loss)
        self.first_bad.copy_(torch.where(bad, self.counter, self.first_bad))
        self.counter += 1

    def __call__(self) -> None:
        """Train on the next batch of the epoch."""
        if not self.graph:
            return self._step()
        # On cuda:N the side stream, capture and replay belong to the loader's device, not the current one.
        guard = contextlib.nullcontext() if self.cuda_index is None else torch.cuda.device(self.cuda_index)
        with guard:
            return self._graph_step()

    def _graph_step(self) -> None:
        if self._cuda_graph is None:
            if self._eager_steps < self.steps_before_capture:
                self._step_before_capture()
                return None
            try:
                self._cuda_graph = self._capture()
            except Exception as err:  # whatever made capture fail, the eager step still works
                self._fall_back(err)
                return self._step()
        self._cuda_graph.replay()
        return None

    def _step_before_capture(self) -> None:
        # Real eager steps on a side stream first: cuDNN picks its kernels, the optimizer makes its state.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._step()
        torch.cuda.current_stream().wait_stream(side)
        self._eager_steps += 1

    def _capture(self) -> torch.cuda.CUDAGraph:
        """Record one step as a CUDA graph. Capture records, it does not run: the caller replays it."""
        self.optimizer.zero_grad(set_to_none=True)  # backward in the graph allocates static grads
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step(zero_grad=False)
        return graph

    def _fall_back(self, err: Exception) -> None:
        """A capture failed (it ran nothing): go on eagerly at the same step, and say so once."""
        self.graph = False
        self.graph_error = f"{type(err).__name__}: {err}"
        self.optimizer.zero_grad(set_to_none=True)  # drop gradients allocated inside the failed capture
        warnings.warn(f"CUDA-graph capture failed ({self.graph_error}); this run goes on with the eager step",
                      stacklevel=3)  # fmt: skip

    def check_finite(self, epoch: int, steps: int) -> None:
        """Raise `NonFiniteLoss` if a step of this epoch had a NaN/inf loss (one host sync)."""
        first_bad = int(self.first_bad)
        if first_bad >= 0:
            raise NonFiniteLoss(f"the training loss became {float(self.loss_sum)} at epoch {epoch}, step "
                                f"{first_bad + 1} of {steps}; the checkpoint of the last good epoch is kept. "
                                "Lower the learning rate, or check the data and loss weights")  # fmt: skip

    def epoch_stats(self) -> dict[str, float]:
        """The mean training loss and accuracy over the epoch's steps so far (one host sync)."""
        steps = max(int(self.counter), 1)
        return {"train_loss": float(self.loss_sum) / steps,
                "train_acc": int(self.correct) / (steps * self.loader.batch_size)}  # fmt: skip

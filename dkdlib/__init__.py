"""dkdlib: Decoupled Knowledge Distillation (Zhao et al., CVPR 2022), small and fast.

from dkdlib import Config, fit
teacher = fit(Config(model="resnet18", epochs=15))
student = fit(Config(model="resnet8", method="dkd", teacher=str(teacher.checkpoint)))

Two groups of modules. The core trains (`train` and what it imports: config, data, models, methods,
step, cache, checkpoint, results, errors). Around it: `losses` (KD and DKD for one student, the
registry's own terms) and `weights` (the committed runs); what serves the chapters says so in its
docstring: recipes, reports, plots, decomposition, verdicts, notebook, and the `cli`.
"""

__version__ = "0.1.0"

from .data import Data, DeviceLoader, load_data  # noqa: E402
from .errors import DKDError  # noqa: E402
from .losses import dkd_loss, dkd_terms, kd_loss  # noqa: E402
from .models import count_macs, count_parameters, create_model  # noqa: E402
from .train import Config, Run, amp_dtype, evaluate, fit, predict  # noqa: E402

__all__ = [
    "Config", "Data", "DKDError", "DeviceLoader", "Run", "amp_dtype", "count_macs", "count_parameters",
    "create_model", "dkd_loss", "dkd_terms", "evaluate", "fit", "kd_loss", "load_data", "predict",
]  # fmt: skip

"""The trainer's state and evaluation metrics, as pytree classes in a module of their own.

They live here, not in looksam/train.py, because `python -m looksam.train` runs that file as
`__main__`, and a launcher that pickles the job (submitit) sends `__main__`'s classes by value:
rebuilt that way, a flax struct subclass loses its added fields as a pytree (unflattening then
fails with "missing ... 'est_state'", and a clu Collection made by `create` is no JAX type
any more). A class of an importable module is pickled by reference.
"""

from typing import Any

import flax
from clu import metrics as clu_metrics
from flax.training import train_state


class TrainState(train_state.TrainState):
    """flax's TrainState (step, params, the optax chain tx and its opt_state; `apply_gradients` is
    the optimizer step) with the estimator's state (its own step counter, equal to `step`, and
    LookSAM's g_v) and the BatchNorm statistics (None for a model without BatchNorm)."""
    est_state: Any
    batch_stats: Any = None


# No `from __future__ import annotations` in this module: clu reads a Collection's annotations as
# the metric classes themselves.
@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
    """Accuracy and mean cross-entropy over the examples with mask=True (padding left out)."""
    accuracy: clu_metrics.Accuracy
    loss: clu_metrics.Average.from_output("loss")

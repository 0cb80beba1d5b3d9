"""The sharpness-aware gradient family of LookSAM (CVPR 2022) and ESAM (ICLR 2022).

    from looksam import sam
    est = sam.make("looksam", rho=0.05, k=5, alpha=0.7)
    state = est.init(params)
    grads, state, out = est.gradient(loss_fn, params, batch, state, rng)

`loss_fn(params, batch) -> (per_example_losses [n], aux)`. Exact semantics: docs/sharpness-aware.md.
"""

from looksam.sam.estimator import (
    DEFAULTS,
    HPARAMS,
    METHODS,
    Estimator,
    EstimatorState,
    GradientOutput,
    Parts,
    make,
)

__all__ = ["DEFAULTS", "HPARAMS", "METHODS", "Estimator", "EstimatorState", "GradientOutput",
           "Parts", "make"]

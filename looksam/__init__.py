"""looksam: efficient sharpness-aware minimization (LookSAM, Look-LayerSAM, ESAM) in JAX."""

__version__ = "0.1.0"

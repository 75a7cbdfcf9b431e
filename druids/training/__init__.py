"""Training of the denoiser: the loop (:mod:`.loop`), what each step sees (:mod:`.batches`),
the run on disk (:mod:`.checkpoint`) and evaluation (:mod:`.diagnostics`). This face
re-exports what chapters and the command line use.
"""

from druids.training.checkpoint import (
    CheckpointError,
    RunConfig,
    default_run_dir,
    read_extra_validation,
    read_metrics,
)
from druids.training.diagnostics import (
    gradient_errors,
    largest_relative_error,
    tendency_bias,
    tendency_bias_per_day,
    validation_loss_by_sigma,
)
from druids.training.loop import TrainedModel, TrainResult, Validator, auto_processes, build_model, load_trained, train

__all__ = [
    "CheckpointError",
    "RunConfig",
    "TrainResult",
    "TrainedModel",
    "Validator",
    "auto_processes",
    "build_model",
    "default_run_dir",
    "gradient_errors",
    "largest_relative_error",
    "load_trained",
    "read_extra_validation",
    "read_metrics",
    "tendency_bias",
    "tendency_bias_per_day",
    "train",
    "validation_loss_by_sigma",
]

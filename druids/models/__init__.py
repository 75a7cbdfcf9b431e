"""The conditional denoiser: network (:mod:`.network`), preconditioning (:mod:`.denoisers`), losses (:mod:`.losses`).

Preconditioning, loss and network are separate pieces, as in Karras et al.
(2022): a sampler sees only ``denoise(y, c, sigma)``, the network knows
nothing of noise schedules beyond its conditioning input, and the objective's
loss holds the noise-level distribution and the weights. This face re-exports
what callers use.
"""

from druids.models.denoisers import (
    OBJECTIVES,
    Denoiser,
    EDMDenoiser,
    FlowMatchingDenoiser,
    build_denoiser,
    denoise_at_levels,
    flow_sigma,
    flow_time,
    homogeneity_error,
    noise_band,
)
from druids.models.losses import EDMLoss, FlowMatchingLoss, build_loss, check_model_config, weighted_mse
from druids.models.network import UNet, pad_sphere

__all__ = [
    "OBJECTIVES",
    "Denoiser",
    "EDMDenoiser",
    "EDMLoss",
    "FlowMatchingDenoiser",
    "FlowMatchingLoss",
    "UNet",
    "build_denoiser",
    "build_loss",
    "check_model_config",
    "denoise_at_levels",
    "flow_sigma",
    "flow_time",
    "homogeneity_error",
    "noise_band",
    "pad_sphere",
    "weighted_mse",
]

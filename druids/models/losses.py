"""Training objectives apart from preconditioning: noise-level distribution, loss weighting, latitude weights.

A loss is called as ``loss(denoiser, x0, c, generator) -> scalar`` on a batch
of clean targets ``x0`` ``(B, C, H, W)`` and conditions ``c`` ``(B, Cc, H, W)``;
it draws noise levels and diffusion noise from ``generator`` (in that order,
so a seeded step is reproducible) and weights the squared error per latitude
(``ModelConfig.latitude_weighting``, :func:`druids.sphere.latitude_weights`)
and per channel.

* :class:`EDMLoss`: GenCast's noise levels (Price et al. 2025), the
  distribution induced by the rho-schedule, ``sigma = (smax^(1/rho) + u
  (smin^(1/rho) - smax^(1/rho)))^rho`` with ``u ~ U(0, 1)``, ``[smin, smax] =
  [0.02, 88]``, ``rho = 7``; EDM's loss weight ``lambda(sigma) = (sigma^2 +
  sd^2) / (sigma sd)^2`` (Karras et al. 2022).
* :class:`FlowMatchingLoss`: interpolant times uniform on [0, 1] (Liu et al.
  2023) and the MSE of the velocity ``eps - x0``.
"""

from __future__ import annotations

import torch
from torch import nn

from druids import sphere
from druids.config import ModelConfig
from druids.models.denoisers import Denoiser, FlowMatchingDenoiser, check_objective
from druids.models.network import check_network_config


def weighted_mse(
    pred: torch.Tensor, target: torch.Tensor, lat_weights: torch.Tensor, channel_weights: torch.Tensor
) -> torch.Tensor:
    """Latitude- and channel-weighted mean squared error per sample.

    ``pred, target`` (B, C, H, W), ``lat_weights`` (H,) (mean 1, see
    :func:`druids.sphere.latitude_weights`), ``channel_weights`` (C,) -> (B,).
    """
    if lat_weights.shape[0] != pred.shape[-2] or channel_weights.shape[0] != pred.shape[1]:
        raise ValueError(
            f"Loss weights do not fit the data: {lat_weights.shape[0]} latitude weights and "
            f"{channel_weights.shape[0]} channel weights for fields of shape {tuple(pred.shape)} "
            "(B, C, H, W); build the loss with the grid's latitudes and one weight per target channel."
        )
    weights = channel_weights[:, None, None] * lat_weights[:, None]
    return (weights * (pred - target) ** 2).mean(dim=(1, 2, 3))


class WeightedLoss(nn.Module):
    """The weights every objective shares: ``lat_weights`` (H,) of mean 1 and ``channel_weights`` (C,)."""

    def __init__(self, lat_weights: torch.Tensor, channel_weights: torch.Tensor):
        super().__init__()
        self.register_buffer("lat_weights", torch.as_tensor(lat_weights, dtype=torch.float32).clone())
        self.register_buffer("channel_weights", torch.as_tensor(channel_weights, dtype=torch.float32).clone())

    def weighted_mse(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Latitude- and channel-weighted MSE per sample: (B, C, H, W) x 2 -> (B,)."""
        return weighted_mse(pred, target, self.lat_weights.to(pred.dtype), self.channel_weights.to(pred.dtype))


class EDMLoss(WeightedLoss):
    """EDM's denoising loss with GenCast's noise-level distribution (see the module docstring)."""

    def __init__(self, lat_weights, channel_weights, sigma_data=1.0, sigma_min=0.02, sigma_max=88.0, rho=7.0):
        super().__init__(lat_weights, channel_weights)
        self.sigma_data, self.sigma_min, self.sigma_max, self.rho = sigma_data, sigma_min, sigma_max, rho

    def sample_sigma(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """``n`` training noise levels from the rho-schedule-induced distribution: (n,) float64."""
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (hi + u * (lo - hi)) ** self.rho

    def forward(self, denoiser: Denoiser, x0: torch.Tensor, c: torch.Tensor, generator=None) -> torch.Tensor:
        """Batch-mean of ``lambda(sigma) * weighted_mse(D(x0 + sigma eps, c; sigma), x0)``; scalar."""
        sigma = self.sample_sigma(x0.shape[0], generator, x0.device).to(x0.dtype)
        eps = denoiser.noise_like(x0, generator)
        y = x0 + sigma[:, None, None, None] * eps
        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        return (weight * self.weighted_mse(denoiser.denoise(y, c, sigma), x0)).mean()


class FlowMatchingLoss(WeightedLoss):
    """Rectified-flow loss: ``t ~ U(0, 1)``, ``x_t = (1 - t) x0 + t eps``, MSE of the velocity ``eps - x0``."""

    def forward(self, denoiser: FlowMatchingDenoiser, x0: torch.Tensor, c: torch.Tensor, generator=None) -> torch.Tensor:
        """Batch-mean of ``weighted_mse(velocity(x_t, c, t), eps - x0)``; scalar."""
        t = torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype)
        eps = denoiser.noise_like(x0, generator)
        tt = t[:, None, None, None]
        x_t = (1 - tt) * x0 + tt * eps
        return self.weighted_mse(denoiser.velocity(x_t, c, t), eps - x0).mean()


def build_loss(model_cfg: ModelConfig, latitudes, n_target: int, channel_weights=None) -> EDMLoss | FlowMatchingLoss:
    """The loss of ``model_cfg.objective`` for ``n_target`` channels on a grid with ``latitudes`` (degrees, (H,)).

    ``channel_weights`` (n_target,): per-channel loss weights, default ones.
    """
    check_model_config(model_cfg)
    lat_weights = sphere.latitude_weights(latitudes, model_cfg.latitude_weighting)
    channel_weights = torch.ones(n_target) if channel_weights is None else torch.as_tensor(channel_weights)
    if model_cfg.objective == "flow":
        return FlowMatchingLoss(lat_weights, channel_weights)
    return EDMLoss(lat_weights, channel_weights, model_cfg.sigma_data, model_cfg.sigma_min, model_cfg.sigma_max, model_cfg.rho)


def check_model_config(cfg: ModelConfig) -> None:
    """Raise a clear ``ValueError`` for an unusable :class:`ModelConfig` (objective, network or loss)."""
    check_objective(cfg.objective)
    check_network_config(cfg)
    if cfg.latitude_weighting not in sphere.LATITUDE_WEIGHTINGS:
        raise ValueError(
            f"ModelConfig.latitude_weighting={cfg.latitude_weighting!r}; "
            f"choose one of {', '.join(sphere.LATITUDE_WEIGHTINGS)}"
        )

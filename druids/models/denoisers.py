"""Preconditioned denoisers: the network wrapped as D(y, c; sigma), for EDM and for flow matching.

Shapes: ``y`` noisy target ``(B, C, H, W)``, ``c`` condition ``(B, Cc, H, W)``,
``sigma`` ``(B,)`` or a scalar. Both wrappers share one interface,
``denoise(y, c, sigma) -> x_hat`` in the convention ``y = x0 + sigma * eps``,
so that samplers and explainability treat them alike; a denoiser only
computes D. What it is trained on (noise-level distribution, loss weighting,
latitude weights) is its objective's loss in :mod:`druids.models.losses`, as in
Karras et al. (2022), whose design separates preconditioning, network, loss and
sampler.

* :class:`EDMDenoiser`: Karras et al. 2022 (NeurIPS, "Elucidating the design
  space of diffusion-based generative models") preconditioning, GenCast
  settings (Price et al. 2025, Nature).
* :class:`FlowMatchingDenoiser`: rectified flow / linear stochastic interpolant
  (Lipman et al. 2023; Liu et al. 2023, ICLR; as in Finn et al. 2024's
  generative sea-ice model) predicting the velocity ``eps - x0``. The time
  ``t`` of the interpolant and the noise level ``sigma`` of the EDM
  convention convert through :func:`flow_time` and :func:`flow_sigma`.

With the bias-free network (:mod:`druids.models.network`) both wrappers are
positively homogeneous of degree one in ``(y, c)`` for fixed ``sigma`` (their
skip and input scalings depend on ``sigma`` only)::

    denoise(a*y, a*c, sigma) = a * denoise(y, c, sigma)     for a > 0
    denoise(y, c, sigma) = J_y y + J_c c                     (Euler)

Diffusion noise (:meth:`Denoiser.noise_like`) is drawn by
:func:`druids.sphere.noise`, the same function the samplers use: white on the
grid, or isotropic on the sphere and band-limited (``noise_band``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from druids import sphere
from druids.config import ModelConfig
from druids.models.network import UNet

OBJECTIVES = ("edm", "flow")


def flow_time(sigma):
    """Interpolant time ``t = sigma / (1 + sigma)`` of EDM noise level ``sigma`` (``x_t = (1 - t) y``)."""
    return sigma / (1 + sigma)


def flow_sigma(t):
    """EDM noise level ``sigma = t / (1 - t)`` of interpolant time ``t`` (inverse of :func:`flow_time`)."""
    return t / (1 - t)


class Denoiser(nn.Module):
    """Common part of the two wrappers: the network, its diffusion noise and its largest noise level.

    ``noise_band``: ``(latitudes in degrees, truncation)`` to diffuse with noise
    white on the sphere up to that total wavenumber, or None for noise white on
    the grid (:func:`druids.sphere.noise`). ``sigma_max``: the largest noise
    level of training, where the denoiser's estimate is its conditional mean
    (the one-step forecast without noise).
    """

    def __init__(self, net: UNet, noise_band: sphere.NoiseBand = None, sigma_max: float = 88.0):
        super().__init__()
        self.net = net
        self.noise_band = noise_band
        self.sigma_max = sigma_max
        self.n_target = net.out_channels

    def _per_sample(self, value, like: torch.Tensor) -> torch.Tensor:
        """A noise level or time as a (B,) tensor of ``like``'s dtype; a scalar is broadcast."""
        return torch.as_tensor(value, dtype=like.dtype, device=like.device).expand(like.shape[0])

    def noise_like(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal diffusion noise shaped like ``x`` (B, C, H, W), from ``generator`` on its device."""
        return sphere.noise(x.shape, generator, self.noise_band, x.dtype, x.device)


class EDMDenoiser(Denoiser):
    """EDM-preconditioned denoiser (Karras et al. 2022, Table 1).

    ``D(y, c; sigma) = c_skip y + c_out F([c_in y, c]; c_noise)`` with
    ``c_skip = sd^2 / (sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``,
    ``c_in = 1 / sqrt(sigma^2 + sd^2)``, ``c_noise = log(sigma) / 4`` and
    ``sd = sigma_data`` (1 for residual targets normalised to unit variance, as
    in GenCast). The condition ``c`` is not scaled.
    """

    def __init__(self, net: UNet, sigma_data: float = 1.0, noise_band: sphere.NoiseBand = None, sigma_max: float = 88.0):
        super().__init__(net, noise_band, sigma_max)
        self.sigma_data = sigma_data

    def denoise(self, y: torch.Tensor, c: torch.Tensor, sigma) -> torch.Tensor:
        """``y`` (B, C, H, W), ``c`` (B, Cc, H, W), ``sigma > 0`` (B,) or scalar -> x0 estimate (B, C, H, W)."""
        sigma = self._per_sample(sigma, y)
        sd = self.sigma_data
        s = sigma[:, None, None, None]
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / torch.sqrt(s**2 + sd**2)
        c_in = 1.0 / torch.sqrt(s**2 + sd**2)
        out = self.net(torch.cat([c_in * y, c], dim=1), torch.log(sigma) / 4)
        return c_skip * y + c_out * out


class FlowMatchingDenoiser(Denoiser):
    """Rectified flow / linear interpolant (Lipman et al. 2023; Liu et al. 2023).

    ``x_t = (1 - t) x0 + t eps`` with ``t`` in [0, 1]; the network predicts the
    velocity ``v = eps - x0`` from ``[x_t, c]`` and ``c_noise = t``. As a
    denoiser in the EDM convention ``y = x0 + sigma eps``: ``x_t = (1 - t) y``
    with ``t = flow_time(sigma)``, and ``x0_hat = x_t - t v_hat``.
    """

    def velocity(self, x_t: torch.Tensor, c: torch.Tensor, t) -> torch.Tensor:
        """``x_t`` (B, C, H, W), ``c`` (B, Cc, H, W), ``t`` (B,) or scalar -> v (B, C, H, W)."""
        t = self._per_sample(t, x_t)
        return self.net(torch.cat([x_t, c], dim=1), t)

    def denoise(self, y: torch.Tensor, c: torch.Tensor, sigma) -> torch.Tensor:
        """``y`` (B, C, H, W), ``c`` (B, Cc, H, W), ``sigma`` (B,) or scalar -> x0 estimate (B, C, H, W)."""
        sigma = self._per_sample(sigma, y)
        t = flow_time(sigma)
        x_t = y / (1 + sigma)[:, None, None, None]  # (1 - t) y without cancellation
        return x_t - t[:, None, None, None] * self.velocity(x_t, c, t)


def check_objective(objective: str) -> None:
    """Raise a clear ``ValueError`` for an unknown ``ModelConfig.objective``."""
    if objective not in OBJECTIVES:
        raise ValueError(f"ModelConfig.objective={objective!r}; choose 'edm' or 'flow'")


def build_denoiser(
    model_cfg: ModelConfig, n_target: int, n_condition: int, noise_band: sphere.NoiseBand = None
) -> EDMDenoiser | FlowMatchingDenoiser:
    """The denoiser of ``model_cfg.objective`` ("edm" or "flow") for ``n_target`` and ``n_condition`` channels.

    ``noise_band``: ``(latitudes, truncation)`` to diffuse with noise white on
    the sphere up to that total wavenumber (``DatasetConfig.spectral_truncation``;
    needs a Gaussian grid), or None for noise white on the grid.
    """
    check_objective(model_cfg.objective)
    net = UNet(n_target + n_condition, n_target, model_cfg)
    if model_cfg.objective == "flow":
        return FlowMatchingDenoiser(net, noise_band, model_cfg.sigma_max)
    return EDMDenoiser(net, model_cfg.sigma_data, noise_band, model_cfg.sigma_max)


def noise_band(latitudes, truncation: int | None) -> sphere.NoiseBand:
    """The :data:`~druids.sphere.NoiseBand` of a grid with ``latitudes`` (degrees) at ``truncation`` (None: white)."""
    return None if truncation is None else (np.asarray(latitudes, dtype=np.float64), int(truncation))


@torch.no_grad()
def homogeneity_error(denoiser: Denoiser, y: torch.Tensor, c: torch.Tensor, sigma: torch.Tensor, scales) -> np.ndarray:
    """Relative error ||D(a y, a c) - a D(y, c)|| / ||a D(y, c)|| for each scale ``a`` (0 for a bias-free net)."""
    base = denoiser.denoise(y, c, sigma)
    errors = [
        float(torch.linalg.vector_norm(denoiser.denoise(a * y, a * c, sigma) - a * base) / torch.linalg.vector_norm(a * base))
        for a in scales
    ]
    return np.asarray(errors)


@torch.no_grad()
def denoise_at_levels(denoiser: Denoiser, x0: torch.Tensor, c: torch.Tensor, sigmas, generator: torch.Generator):
    """Noisy inputs y = x0 + sigma * eps and their denoised estimates, for one sample.

    ``x0`` (C, H, W), ``c`` (Cc, H, W); returns two tensors (len(sigmas), C, H, W).
    """
    sigma = torch.as_tensor(np.asarray(sigmas), dtype=x0.dtype)
    eps = denoiser.noise_like(x0[None].expand(len(sigma), *x0.shape), generator)
    noisy = x0[None] + sigma[:, None, None, None] * eps
    return noisy, denoiser.denoise(noisy, c[None].expand(len(sigma), *c.shape), sigma)

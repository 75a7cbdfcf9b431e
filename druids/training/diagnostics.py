"""Evaluation of a denoiser on a split: denoising error by noise level, and its one-step tendency bias."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr

from druids.config import ModelConfig
from druids.data.dataset import ForecastDataset, collate
from druids.data.normalisation import NormStats
from druids.models import Denoiser
from druids.models.losses import WeightedLoss
from druids.sphere import area_weights

N_VAL_SIGMAS = 6


def validation_sigmas(model_cfg: ModelConfig, n: int = N_VAL_SIGMAS) -> np.ndarray:
    """``n`` log-spaced noise levels over ``[sigma_min, sigma_max]``: (n,)."""
    return np.geomspace(model_cfg.sigma_min, model_cfg.sigma_max, n)


@torch.no_grad()
def validation_loss_by_sigma(
    denoiser: Denoiser, loss: WeightedLoss, dataset: ForecastDataset, sigmas, n_samples: int, batch_size: int, seed: int = 0
) -> xr.DataArray:
    """Denoising error of ``denoiser`` on ``dataset`` at fixed noise levels ``sigmas``.

    For each ``sigma``, the mean over ``n_samples`` evenly spaced samples
    ``(c, x0)`` of the loss's latitude- and channel-weighted MSE
    ``loss.weighted_mse(denoise(x0 + sigma eps, c, sigma), x0)`` (EDM
    convention for both objectives; units of the normalised residual squared,
    so about 1 at large sigma). ``eps`` comes from ``seed`` and is shared by
    all noise levels. Returns dims ``(sigma,)``.
    """
    device = next(denoiser.parameters()).device
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(n_samples, len(dataset))).round().astype(int))
    generator = torch.Generator(device).manual_seed(seed)
    total = np.zeros(len(sigmas))
    for start in range(0, len(indices), batch_size):
        condition, x0 = collate(dataset, indices[start : start + batch_size], device)
        eps = denoiser.noise_like(x0, generator)
        for k, sigma in enumerate(sigmas):
            estimate = denoiser.denoise(x0 + float(sigma) * eps, condition, float(sigma))
            total[k] += loss.weighted_mse(estimate, x0).sum().item()
    return xr.DataArray(total / len(indices), dims="sigma", coords={"sigma": np.asarray(sigmas)}, name="val_mse")


@torch.no_grad()
def tendency_bias(
    denoiser: Denoiser, dataset: ForecastDataset, sigma: float | None = None, batch_size: int = 16, seed: int = 0
) -> torch.Tensor:
    """The model's zonal-mean tendency bias on ``dataset``: (C, H, 1), normalised residual units.

    The mean over all samples and longitudes of ``denoise(sigma * eps, c; sigma)
    - target`` at ``sigma`` (default the denoiser's largest training noise
    level, ``Denoiser.sigma_max``): there the denoiser's estimate is its
    conditional-mean residual, so this is the systematic part of its one-step
    error. Subtracting it from every sampled residual (``residual_bias`` of
    :func:`druids.sampling.ensembles` and :func:`druids.sampling.rollout_climate`)
    is a tendency bias correction as in Danforth, Kalnay & Miyoshi (2007,
    Monthly Weather Review, "Estimating and correcting global weather model
    error"); estimate it on the training split.
    """
    sigma = denoiser.sigma_max if sigma is None else sigma
    device = next(denoiser.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, len(dataset), batch_size):
        condition, target = collate(dataset, range(start, min(start + batch_size, len(dataset))), device)
        noisy = sigma * denoiser.noise_like(target, generator)
        level = torch.full((len(target),), sigma, dtype=target.dtype, device=device)
        error = (denoiser.denoise(noisy, condition, level) - target).double().cpu()
        total = total + error.mean(dim=-1, keepdim=True).sum(dim=0)
    return (total / len(dataset)).float()


def tendency_bias_per_day(bias: torch.Tensor, stats: NormStats, step_hours: float) -> pd.DataFrame:
    """:func:`tendency_bias` in physical units per day, one row per channel.

    Columns: its area-weighted global mean and its largest absolute zonal mean
    (over latitudes); ``step_hours`` is the model's time step.
    """
    per_day = bias.squeeze(-1).numpy() * stats.residual_std.values[:, None] * 24 / step_hours  # (channel, latitude)
    weights = area_weights(stats.latitude).values  # mean 1
    return pd.DataFrame(
        {
            "global mean [units/day]": (per_day * weights).mean(axis=1),
            "largest zonal mean [units/day]": np.abs(per_day).max(axis=1),
        },
        index=stats.channel_names,
    )


def gradient_errors(
    denoiser: Denoiser, loss: WeightedLoss, draws: Sequence[tuple[torch.Tensor, torch.Tensor, int]],
    backend: str | None = None,
) -> pd.DataFrame:
    """Error of the float32 training gradient against float64, per draw and parameter.

    Each draw ``(target, condition, seed)`` (``(B, C, H, W)``, ``(B, Cc, H, W)``, the noise seed)
    is one loss evaluation ``loss(denoiser, target, condition, generator)`` as a training step
    makes it, differentiated on a float32 copy of ``denoiser`` (its network compiled once with
    ``torch.compile(backend=backend)`` unless ``backend`` is None: eager) and on a float64 copy.
    Returns rows indexed by (``draw``, ``parameter``): ``gradient_norm`` (float64's, Frobenius),
    ``error_norm`` (of float32 minus float64) and ``relative`` (their ratio; meaningless for
    parameters whose gradient is zero up to rounding). Eager float32 is at float precision
    (about 1e-6 relative); generated code that loses precision in the backward pass shows here.
    """
    reference = copy.deepcopy(denoiser).double().train().requires_grad_(True)
    tested = copy.deepcopy(denoiser).float().train().requires_grad_(True)
    if backend is not None:
        tested.net.compile(dynamic=False, backend=backend)

    def gradients(model: Denoiser, target: torch.Tensor, condition: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        dtype = next(model.parameters()).dtype
        generator = torch.Generator(target.device).manual_seed(seed)
        loss(model, target.to(dtype), condition.to(dtype), generator).backward()
        return {name: p.grad.double() for name, p in model.named_parameters() if p.grad is not None}

    rows = []
    for k, (target, condition, seed) in enumerate(draws):
        exact, approximate = gradients(reference, target, condition, seed), gradients(tested, target, condition, seed)
        for name, g in exact.items():
            rows.append({"draw": k, "parameter": name, "gradient_norm": g.norm().item(), "error_norm": (approximate[name] - g).norm().item()})
    frame = pd.DataFrame(rows).set_index(["draw", "parameter"])
    return frame.assign(relative=frame.error_norm / frame.gradient_norm)


def largest_relative_error(errors: pd.DataFrame, floor: float = 1e-3) -> pd.Series:
    """Per draw of :func:`gradient_errors`, the largest ``relative`` error over the parameters that carry
    gradient: those whose ``gradient_norm`` exceeds ``floor`` times the draw's largest (the others are
    zero up to rounding, where a relative error means nothing). Indexed by ``draw``."""
    largest = errors.gradient_norm.groupby("draw").transform("max")
    return errors[errors.gradient_norm > floor * largest].relative.groupby("draw").max()

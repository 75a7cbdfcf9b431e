"""The model's sensitivity of a forecast target to the initial state, and how to compare it with the truth.

Target: ``J_L = sum_ij w_ij T_L(ij)``, the area-weighted mean of one channel
(mid-level temperature) over a box (:func:`box_weights`) at lead ``L``. The
model's forecast is its *conditional-mean rollout* (:class:`ConditionalMeanStep`):
6-h steps of the denoiser at its largest noise level, where its estimate is
the mean of the next state given the current one. Its sensitivity is
``dJ_L / dx_0`` by autograd through the rollout (:func:`rollout_gradients`), and
its Integrated Gradients attribution (Sundararajan et al. 2017, ICML, "Axiomatic
attribution for deep networks"), by ``captum``, along the straight path from a
climatological baseline (:func:`integrated_gradients`). The world's own
sensitivity is the adjoint of its simulator (:mod:`druids.explain.adjoint`).

Gradients are per grid value in physical units (``K`` per unit of each
channel); to compare them they are turned into densities per unit area and
projected on the spectral model's space (:func:`density`: ``T G^-1 g``, ``G``
the quadrature weights): grid-point gradients carry the weight of the grid
point's area, densities do not. Comparisons (:func:`compare_maps`) use the
``G`` inner product: the uncentred pattern correlation ``<a, b> / (|a| |b|)``
and the amplitude ratio ``|a| / |b|``, per group of channels.

Sanity checks of saliency maps (Adebayo et al. 2018, NeurIPS, "Sanity checks for
saliency maps"): a map must change when the model's parameters are randomised
(compare :func:`rollout_gradients` of a randomly initialised network), and
gradients must agree with finite differences (:func:`finite_difference_error`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from captum.attr import IntegratedGradients

from druids import sphere
from druids.data.diagnostics import Region, region_mask
from druids.data.normalisation import NormStats, per_channel, static_condition
from druids.explain.geometry import NoiseGeometry

Step = Callable[[torch.Tensor], torch.Tensor]
Target = Callable[[torch.Tensor], torch.Tensor]


def box_weights(latitude, longitude, region: Region) -> np.ndarray:
    """Weights ``(H, W)`` summing to 1: cos(latitude) inside ``region``, 0 outside (the box mean's weights)."""
    inside = region_mask(latitude, longitude, region).values.astype(np.float64)
    weights = np.cos(np.deg2rad(np.asarray(latitude, dtype=np.float64)))[:, None] * inside
    if weights.sum() == 0:
        raise ValueError(f"The region {region} holds no grid point")
    return weights / weights.sum()


class BoxTarget:
    """``J(x) = sum_ij w_ij x[channel, i, j]`` for states ``x`` (B, C, H, W): (B,)."""

    def __init__(self, channel: int, weights: np.ndarray):
        self.channel = channel
        self.weights = torch.as_tensor(weights)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, self.channel] * self.weights.to(x.device, x.dtype)).sum(dim=(-2, -1))


def project_state(x: torch.Tensor, variables: Sequence[str], latitude, truncation: int | None) -> torch.Tensor:
    """States ``(B, C, H, W)`` (physical units; ``variables``: each channel's variable) projected on the
    spectral model's space as :func:`druids.sphere.truncate_state` does (winds as ``cos(lat) u`` at
    ``truncation + 1``, surface pressure through its logarithm); unchanged for ``truncation`` None."""
    if truncation is None:
        return x
    cos_lat = torch.as_tensor(np.cos(np.deg2rad(np.asarray(latitude))), dtype=x.dtype, device=x.device)[:, None]
    channels = []
    for k, name in enumerate(variables):
        field = x[:, k]
        if name in sphere.WIND_VARIABLES:
            field = sphere.truncate(field * cos_lat, latitude, truncation + 1) / cos_lat
        elif name in sphere.LOG_VARIABLES:
            field = torch.exp(sphere.truncate(torch.log(field), latitude, truncation))
        else:
            field = sphere.truncate(field, latitude, truncation)
        channels.append(field)
    return torch.stack(channels, dim=1)


class ConditionalMeanStep:
    """One 6-h step of the model's conditional mean in physical units: ``x (B, C, H, W) -> x + r``.

    ``r`` is the denoiser's estimate at its largest noise level
    (``denoiser.sigma_max``) from a zero noisy input, denormalised (the
    condition is the normalised ``x`` and the static channels, as in
    :class:`~druids.data.dataset.ForecastDataset` with ``history = 1``); the
    new state is projected as :func:`project_state` (``truncation``: the data's
    spectral truncation, None for none), as the model's rollouts are.
    """

    def __init__(self, denoiser, stats: NormStats, truncation: int | None):
        self.denoiser = denoiser
        device = next(denoiser.parameters()).device
        tensor = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), device=device)  # noqa: E731
        self.mean, self.std = tensor(per_channel(stats.mean)), tensor(per_channel(stats.std))
        self.res_mean, self.res_std = tensor(per_channel(stats.residual_mean)), tensor(per_channel(stats.residual_std))
        self.static = tensor(static_condition(stats))
        self.variables = [str(v) for v in stats.mean["variable"].values]
        self.latitude, self.truncation = stats.latitude, truncation

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dtype = next(self.denoiser.parameters()).dtype
        normalised = ((x - self.mean) / self.std).to(dtype)
        condition = torch.cat([normalised, self.static.to(dtype).expand(len(x), -1, -1, -1)], dim=1)
        residual = self.denoiser.denoise(torch.zeros_like(normalised), condition, self.denoiser.sigma_max)
        return project_state(x + self.res_mean + self.res_std * residual.to(x.dtype), self.variables, self.latitude, self.truncation)


def rollout_targets(step: Step, x0: torch.Tensor, n_steps: int, target: Target) -> torch.Tensor:
    """``target`` after each of ``n_steps`` steps from states ``x0`` (B, C, H, W): (n_steps, B)."""
    values, x = [], x0
    for _ in range(n_steps):
        x = step(x)
        values.append(target(x))
    return torch.stack(values)


def rollout_gradients(step: Step, x0: torch.Tensor, lead_steps: Sequence[int], target: Target) -> tuple[np.ndarray, np.ndarray]:
    """``dJ_L / dx_0`` for each lead ``L`` in ``lead_steps`` (steps), by autograd through one rollout from
    ``x0`` (C, H, W): gradients ``(leads, C, H, W)`` and the targets ``J_L`` (leads,), float64."""
    x = x0[None].detach().double().requires_grad_(True)
    values = rollout_targets(step, x, max(lead_steps), target)[:, 0]
    gradients = [torch.autograd.grad(values[lead - 1], x, retain_graph=True)[0][0] for lead in lead_steps]
    chosen = [float(values[lead - 1].detach()) for lead in lead_steps]
    return torch.stack(gradients).cpu().numpy(), np.asarray(chosen)


def integrated_gradients(
    step: Step, x0: torch.Tensor, baseline: torch.Tensor, lead: int, target: Target, n_points: int, batch: int = 8
) -> tuple[np.ndarray, float]:
    """Integrated Gradients of ``J_lead`` at ``x0`` (C, H, W) from ``baseline`` (C, H, W), by ``captum``
    (Gauss–Legendre rule on ``n_points``): attributions ``(C, H, W)`` (summing to ``J(x0) - J(baseline)``)
    and captum's convergence delta (the sum's error, in units of ``J``)."""
    def forecast(x: torch.Tensor) -> torch.Tensor:
        return rollout_targets(step, x, lead, target)[-1]

    method = IntegratedGradients(forecast)
    attribution, delta = method.attribute(
        x0[None].double(), baselines=baseline[None].double(), n_steps=n_points, internal_batch_size=batch,
        return_convergence_delta=True,
    )  # fmt: skip
    return attribution[0].detach().cpu().numpy(), float(delta.abs().max())


def finite_difference_error(value: Callable[[np.ndarray], float], gradient: np.ndarray, direction: np.ndarray) -> float:
    """``|FD - <g, d>| / |<g, d>|`` for ``value(delta) = J(x_0 + delta)`` and the central difference
    ``FD = (value(d) - value(-d)) / 2`` along ``direction`` ``d`` (the shape of ``gradient``)."""
    difference = 0.5 * (value(direction) - value(-direction))
    predicted = float((np.asarray(gradient) * np.asarray(direction)).sum())
    return abs(difference - predicted) / abs(predicted)


def density(gradient: np.ndarray, geometry: NoiseGeometry) -> np.ndarray:
    """Sensitivity per unit area ``T G^-1 g`` of grid-point gradients ``g`` (..., H, W) (``geometry``'s weights
    ``G``, mean 1, and projection ``T``)."""
    per_area = torch.as_tensor(np.asarray(gradient, dtype=np.float64) / geometry.weights[:, None])
    return geometry.project(per_area).numpy()


def pattern_correlation(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> float:
    """Uncentred area-weighted pattern correlation ``<a, b>_G / (|a|_G |b|_G)`` of fields ``(..., H, W)``."""
    w = np.asarray(weights)[:, None]
    return float((w * a * b).sum() / np.sqrt((w * a * a).sum() * (w * b * b).sum()))


def amplitude_ratio(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> float:
    """``|a|_G / |b|_G`` of fields ``(..., H, W)``."""
    w = np.asarray(weights)[:, None]
    return float(np.sqrt((w * a * a).sum() / (w * b * b).sum()))


def compare_maps(model: np.ndarray, truth: np.ndarray, leads_hours: Sequence[int], groups: Mapping[str, Sequence[int]], weights: np.ndarray) -> pd.DataFrame:
    """Pattern correlation and amplitude ratio of ``model`` against ``truth`` maps (leads, C, H, W) per lead and
    group of channels (``groups``: name -> channel indices): columns ``lead_hours``, ``group``, ``correlation``,
    ``amplitude_ratio``."""
    rows = []
    for k, lead in enumerate(leads_hours):
        for name, channels in groups.items():
            a, b = model[k][list(channels)], truth[k][list(channels)]
            rows.append({"lead_hours": lead, "group": name, "correlation": pattern_correlation(a, b, weights),
                         "amplitude_ratio": amplitude_ratio(a, b, weights)})  # fmt: skip
    return pd.DataFrame(rows)


def steepest_direction(gradient: np.ndarray, std: np.ndarray, size: float) -> np.ndarray:
    """The perturbation (C, H, W; physical units) along a gradient (C, H, W) in normalised units: ``std_c u_c``
    with ``u = g std`` scaled to root-mean-square ``size`` (in units of each channel's std ``std`` (C,))."""
    scale = np.asarray(std, dtype=np.float64)[:, None, None]
    u = np.asarray(gradient) * scale
    return size * scale * u / np.sqrt(np.mean(u**2))


def persistence_gradient(target: Target, x0: torch.Tensor, variables: Sequence[str], latitude, truncation: int | None) -> np.ndarray:
    """``d J(P x_0) / d x_0`` (C, H, W): the part of every lead's gradient that is persistence (``P`` the
    projection of :func:`project_state`). Subtracted from a gradient, it leaves the sensitivity of the
    forecast *change* ``J_L - J_0``, the part that the dynamics (the world's or the model's) contribute."""
    x = x0[None].detach().double().requires_grad_(True)
    value = target(project_state(x, variables, latitude, truncation))[0]
    return torch.autograd.grad(value, x)[0][0].cpu().numpy()

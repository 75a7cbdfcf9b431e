"""The oracle link: the denoiser's Jacobian against the exact forecast distribution.

Tweedie's second moment (Efron 2011) for noise ``n ~ N(0, S)``:
``sigma^2 J S = Cov[x | y]``. At large ``sigma`` the noisy target says little
and the posterior tends to the forecast distribution ``p(x_{t+1} | x_t)``
itself, which the Held–Suarez world's oracle ensemble samples exactly. In the
whitened coordinates of the noise space (:mod:`druids.explain.geometry`:
``S = c T G^-1``) the relation reads ``sigma^2 c J_hat = G^(1/2) Cov G^(1/2)``:
the model's implied posterior variances are ``sigma^2 c lambda_i`` along its
eigenvectors, to be compared with the oracle's EOF variances and EOFs, both in
the ``G`` inner product on the noise space.

Residuals are the model's target: ``(x_{t+1} - x_t - residual_mean) / residual_std``
per channel (:mod:`druids.data.normalisation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from scipy.linalg import subspace_angles

from druids.data.channels import to_channels
from druids.data.normalisation import NormStats, check_channels, per_channel
from druids.explain.geometry import NoiseGeometry


def oracle_residuals(ensemble: xr.Dataset, stats: NormStats, variables: Sequence[str]) -> np.ndarray:
    """Normalised one-step residuals of an oracle ensemble (``member, lead_time, ...``; leads 0 and 1 used): ``(members, C, H, W)``."""
    channels = to_channels(ensemble[list(variables)], variables)
    check_channels([str(c) for c in channels["channel"].values], stats)
    step = channels.isel(lead_time=1) - channels.isel(lead_time=0)
    residual = (step - per_channel(stats.residual_mean)) / per_channel(stats.residual_std)
    return residual.transpose("member", "channel", "latitude", "longitude").values.astype(np.float64)


@dataclass(frozen=True)
class ForecastEOFs:
    """Leading EOFs of an ensemble in the noise space: ``variances`` (k,) and ``G``-orthonormal ``eofs`` (k, C, H, W);
    ``total``: ``tr(G Cov)`` (unbiased, ddof 1), the sum of all EOF variances."""

    variances: np.ndarray
    eofs: np.ndarray
    total: float


def forecast_eofs(members: np.ndarray, geometry: NoiseGeometry, k: int) -> ForecastEOFs:
    """EOFs of ``members`` ``(n, C, H, W)`` projected onto the noise space, in the ``G`` inner product (SVD of anomalies)."""
    anomalies = torch.from_numpy(members - members.mean(axis=0, keepdims=True))
    whitened = geometry.to_whitened(geometry.project(anomalies)).reshape(len(members), -1).numpy()
    _, singular, rows = np.linalg.svd(whitened / np.sqrt(len(members) - 1), full_matrices=False)
    eofs = geometry.from_whitened(torch.from_numpy(rows[:k].copy()).reshape(k, *members.shape[1:])).numpy()
    return ForecastEOFs(singular[:k] ** 2, eofs, float((singular**2).sum()))


def principal_angles_deg(a: np.ndarray, b: np.ndarray, geometry: NoiseGeometry) -> np.ndarray:
    """Principal angles (degrees, ascending) between the spans of fields ``a`` (k, ...) and ``b`` (l, ...) in the ``G`` inner product."""
    root = np.sqrt(geometry.weights)[:, None]
    flat_a = (root * a).reshape(len(a), -1).T
    flat_b = (root * b).reshape(len(b), -1).T
    return np.sort(np.rad2deg(subspace_angles(flat_a, flat_b)))


def implied_variances(eigenvalues: np.ndarray, sigma: float, geometry: NoiseGeometry) -> np.ndarray:
    """The model's posterior variances along its eigenvectors, ``sigma^2 c lambda`` (comparable with EOF variances)."""
    return sigma**2 * geometry.variance_per_direction * np.asarray(eigenvalues)


def split_half_angles(members: np.ndarray, geometry: NoiseGeometry, k: int, seed: int = 0) -> np.ndarray:
    """Principal angles between the EOFs of two random halves of ``members``: the sampling-noise floor of the comparison."""
    order = np.random.default_rng(seed).permutation(len(members))
    half = len(members) // 2
    first, second = (forecast_eofs(members[part], geometry, k).eofs for part in (order[:half], order[half:]))
    return principal_angles_deg(first, second, geometry)

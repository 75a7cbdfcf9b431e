"""Recalibration fitted on the validation split and applied to held-out initial times.

Post-hoc, per field and lead time (dims of the ensembles beyond ``init_time,
member, latitude, longitude``), each method returns an ensemble of the same
shape, so that every score of :mod:`druids.calibration.scores` applies:

* :func:`fit_spread_scale` / :func:`scale_spread`: members pulled towards
  or pushed away from the ensemble mean, ``x' = mean + k (x - mean)``, with
  ``k = 1 / SSR`` on the validation split (spread inflation or deflation).
* :func:`fit_emos` / :func:`emos_ensemble`: EMOS, non-homogeneous Gaussian
  regression (Gneiting et al. 2005), ``N(a + b (x_mean - c0), c^2 + d^2 s^2)``
  (``s^2`` the unbiased ensemble variance, ``c0`` the validation mean of
  ``x_mean``), fitted by minimum area-weighted closed-form CRPS
  (``scoringrules.crps_normal``). It becomes an ensemble by ensemble copula
  coupling (ECC-R, Schefzik, Thorarinsdottir & Gneiting 2013): ``M`` draws
  from the predictive distribution at each point go to the members in the
  order of the raw members, which keeps the raw spatial structure.

In the model: :func:`best_noise_scale` picks the sampling temperature (the
sampler's noise scale, :class:`druids.calibration.ensembles.Controls`) whose
validation ensembles have the lowest fair CRPS.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.stats
import scoringrules
import xarray as xr

from druids.calibration.scores import components, headline
from druids.sphere import area_weights

SPATIAL = ("latitude", "longitude")


def fit_spread_scale(ensemble: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    """The factor ``k = 1 / SSR`` (:func:`~druids.calibration.scores.headline`) per field and lead."""
    return 1.0 / headline(components(ensemble, truth)).ssr


def scale_spread(ensemble: xr.DataArray, factor: xr.DataArray) -> xr.DataArray:
    """``mean + factor * (x - mean)`` over ``member``."""
    mean = ensemble.mean("member")
    return (mean + factor * (ensemble - mean)).transpose(*ensemble.dims)


def _emos_crps(params: np.ndarray, mean: np.ndarray, variance: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> float:
    a, b, c, d = params
    sigma = np.sqrt(c**2 + d**2 * variance)
    return float(np.average(scoringrules.crps_normal(truth, a + b * mean, sigma, backend="numpy"), weights=weights))


def _fit_one(mean: np.ndarray, variance: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(a, b, c, d, c0)`` minimising the weighted mean CRPS of one field and lead; all arrays flat."""
    c0 = float(np.average(mean, weights=weights))
    start = np.array([np.average(truth - mean, weights=weights), 1.0, 0.1 * np.sqrt(variance.mean()) + 1e-6, 1.0])
    result = scipy.optimize.minimize(_emos_crps, start, args=(mean - c0, variance, truth - c0, weights), method="L-BFGS-B")
    a, b, c, d = result.x
    return np.array([a + c0, b, abs(c), abs(d), c0])


def fit_emos(ensemble: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    """EMOS coefficients per field and lead: dim ``parameter`` = ``a, b, c, d, c0`` (see module docstring)."""
    mean, variance = ensemble.mean("member"), ensemble.var("member", ddof=1)
    weights = area_weights(truth.latitude).broadcast_like(truth)
    cases = ["init_time", *SPATIAL]
    return xr.apply_ufunc(
        lambda m, v, y, w: _fit_one(m.ravel(), v.ravel(), y.ravel(), w.ravel()),
        mean, variance, truth, weights, input_core_dims=[cases] * 4, output_core_dims=[["parameter"]], vectorize=True,
    ).assign_coords(parameter=["a", "b", "c", "d", "c0"])  # fmt: skip


def emos_distribution(ensemble: xr.DataArray, coefficients: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Predictive mean and standard deviation of EMOS for ``ensemble``."""
    a, b, c, d, c0 = (coefficients.sel(parameter=name, drop=True) for name in ("a", "b", "c", "d", "c0"))
    return a + b * (ensemble.mean("member") - c0), np.sqrt(c**2 + d**2 * ensemble.var("member", ddof=1))


def _ecc_draws(raw: np.ndarray, mean: np.ndarray, sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian draws ``(..., M)``, sorted and given to the members in the order of ``raw`` ``(..., M)``."""
    draws = np.sort(mean[..., None] + sigma[..., None] * rng.standard_normal(raw.shape), axis=-1)
    order = np.argsort(np.argsort(raw, axis=-1), axis=-1)
    return np.take_along_axis(draws, order, axis=-1)


def emos_ensemble(ensemble: xr.DataArray, coefficients: xr.DataArray, seed: int = 0) -> xr.DataArray:
    """``M`` independent draws from the EMOS distribution at every point, ordered as the raw members (ECC-R).

    Draws, not quantiles, so that the members are a sample of the EMOS
    distribution and the sample-based scores (fair CRPS, SSR, energy distance,
    ranks) apply unchanged; the raw order keeps the spatial structure
    (Schefzik, Thorarinsdottir & Gneiting 2013).
    """
    mean, sigma = emos_distribution(ensemble, coefficients)
    rng = np.random.default_rng(seed)
    return xr.apply_ufunc(
        _ecc_draws, ensemble, mean, sigma, kwargs={"rng": rng}, input_core_dims=[["member"], [], []], output_core_dims=[["member"]],
    ).transpose(*ensemble.dims)


def best_noise_scale(cards: dict[float, xr.Dataset]) -> float:
    """The noise scale whose scorecard has the lowest fair CRPS, each field's CRPS relative to its mean over scales.

    ``cards``: noise scale -> :func:`~druids.calibration.scores.scorecard` (or
    :func:`~druids.calibration.scores.headline`) of validation ensembles; the
    criterion averages the relative fair CRPS over fields and leads.
    """
    crps = xr.concat([c.crps_fair.sel(bound="estimate", drop=True) if "bound" in c.dims else c.crps_fair for c in cards.values()], dim="scale")
    relative = (crps / crps.mean("scale")).mean([d for d in crps.dims if d != "scale"])
    return list(cards)[int(relative.argmin("scale"))]

"""Probabilistic scores of an ensemble against the truth, latitude-weighted, with bootstrap intervals.

Layout: ``ensemble`` dims ``(init_time, member, lead_time, field, latitude,
longitude)`` (any other dims are kept, ``field`` from
:func:`druids.data.diagnostics.field_stack`), ``truth`` the same without
``member`` (:func:`druids.calibration.verifying_truth`). Spatial means are
area-weighted (:func:`druids.sphere.area_weights`, cos latitude, mean 1), as
in WeatherBench2. Every score is computed per initial time first
(:func:`components`) so that :func:`scorecard` can put block-bootstrap
confidence intervals over initial times on it (:func:`bootstrap`).

Conventions, for an ensemble ``x_1..x_M`` and truth ``y`` at one point:

* fair CRPS (headline; Ferro 2014): ``mean_i |x_i - y| - sum_{i,j} |x_i - x_j| /
  (2 M (M - 1))``, unbiased for the CRPS of the distribution the members are
  drawn from, whatever ``M``. ``scoringrules.crps_ensemble`` with
  ``estimator="pwm"`` (the probability-weighted-moment form, algebraically the
  fair CRPS and O(M log M); tested equal to ``"fair"``).
* CRPS (Gneiting & Raftery 2007), of the ensemble's empirical distribution:
  the same with ``2 M^2``; ``estimator="qd"`` (equal to ``"nrg"``; tested).
* RMSE of the ensemble mean: sqrt of the area- and init-mean squared error.
* spread: sqrt of the area- and init-mean unbiased (ddof = 1) ensemble variance.
* spread-skill ratio (Fortin et al. 2014; GenCast, Price et al. 2025):
  ``SSR = sqrt((M + 1) / M) * spread / RMSE``, variances averaged before the
  square root; 1 in expectation for an ensemble exchangeable with the truth.
* energy score (Gneiting & Raftery 2007) of a whole field, fair estimator, with
  the norm ``||v||^2 = area-weighted mean of v^2`` (field units);
* variogram score of order 1/2 (Scheuerer & Hamill 2015) along each latitude
  circle, all longitude pairs weighted 1, ``estimator="nrg"`` (the original
  score), then area-weighted over latitudes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import scoringrules
import scores
import xarray as xr

from druids.sphere import area_weights

SPATIAL = ("latitude", "longitude")
#: scoringrules estimators, named explicitly (its default changed between releases).
FAIR_CRPS_ESTIMATOR = "pwm"
ECDF_CRPS_ESTIMATOR = "qd"


def crps(ensemble: xr.DataArray, truth: xr.DataArray, fair: bool = True) -> xr.DataArray:
    """CRPS per point (no reduction): fair (``fair=True``) or of the ensemble's empirical distribution."""
    estimator = FAIR_CRPS_ESTIMATOR if fair else ECDF_CRPS_ESTIMATOR
    return xr.apply_ufunc(
        lambda obs, fct: scoringrules.crps_ensemble(obs, fct, m_axis=-1, estimator=estimator, backend="numpy"),
        truth, ensemble, input_core_dims=[[], ["member"]], dask="forbidden",
    )  # fmt: skip


def spatial_mean(da: xr.DataArray) -> xr.DataArray:
    """Area-weighted mean over latitude and longitude."""
    return da.weighted(area_weights(da.latitude)).mean(SPATIAL)


def components(ensemble: xr.DataArray, truth: xr.DataArray) -> xr.Dataset:
    """Per initial time, the area means that every headline score is made of.

    ``crps_fair`` and ``crps`` (area means of the point CRPS), ``squared_error``
    (of the ensemble mean) and ``variance`` (unbiased ensemble variance); dims
    of ``truth`` without latitude and longitude. Attribute ``n_members``.
    """
    ensemble, truth = xr.align(ensemble.astype("float64").load(), truth.astype("float64").load(), join="exact", exclude=["member"])
    parts = {
        "crps_fair": spatial_mean(crps(ensemble, truth, fair=True)),
        "crps": spatial_mean(crps(ensemble, truth, fair=False)),
        "squared_error": spatial_mean((ensemble.mean("member") - truth) ** 2),
        "variance": spatial_mean(ensemble.var("member", ddof=1)),
    }
    return xr.Dataset(parts).assign_attrs(n_members=ensemble.sizes["member"])


def ensemble_spread(ensemble: xr.DataArray) -> xr.DataArray:
    """Spread without a truth: sqrt of the area- and init-mean unbiased ensemble variance (field units)."""
    return np.sqrt(spatial_mean(ensemble.var("member", ddof=1)).mean("init_time"))


def headline(parts: xr.Dataset) -> xr.Dataset:
    """Scores from :func:`components` averaged over ``init_time``: fair CRPS, CRPS, RMSE, spread and SSR."""
    mean = parts.mean("init_time")
    m = parts.attrs["n_members"]
    return xr.Dataset(
        {
            "crps_fair": mean.crps_fair,
            "crps": mean.crps,
            "rmse": np.sqrt(mean.squared_error),
            "spread": np.sqrt(mean.variance),
            "ssr": np.sqrt((m + 1) / m * mean.variance / mean.squared_error),
        }
    )


@contextlib.contextmanager
def numpy_seed(seed: int):
    """``numpy.random``'s global state seeded inside the block and restored after it
    (``scores.processing`` bootstraps draw from the global state)."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def bootstrap(
    parts: xr.Dataset,
    statistic: Callable[[xr.Dataset], xr.Dataset],
    n_boot: int = 200,
    block: int = 1,
    confidence: float = 0.9,
    seed: int = 0,
) -> xr.Dataset:
    """``statistic(parts)`` with a block-bootstrap interval over ``init_time``; new dim ``bound``.

    Initial times are resampled with replacement in circular blocks of
    ``block`` consecutive times (``scores.processing.block_bootstrap``; use
    blocks longer than the correlation time of the initial times), the whole
    ``statistic`` (which averages over ``init_time``, e.g. :func:`headline`) is
    recomputed on each of ``n_boot`` resamples, and ``bound`` holds
    ``estimate`` (full sample), ``lower`` and ``upper`` (percentiles
    ``(1 -/+ confidence) / 2``) and ``std_error`` (bootstrap standard deviation).
    """
    estimate = statistic(parts)
    with numpy_seed(seed):
        resampled = scores.processing.block_bootstrap(parts, blocks={"init_time": block}, n_iteration=n_boot)
    samples = statistic(resampled.assign_attrs(parts.attrs))
    tail = (1 - confidence) / 2
    bounds = [
        estimate,
        samples.quantile(tail, "iteration").drop_vars("quantile"),
        samples.quantile(1 - tail, "iteration").drop_vars("quantile"),
        samples.std("iteration", ddof=1),
    ]
    return xr.concat(bounds, dim="bound", coords="minimal").assign_coords(bound=["estimate", "lower", "upper", "std_error"])


def scorecard(
    ensemble: xr.DataArray, truth: xr.DataArray, n_boot: int = 200, block: int = 1, confidence: float = 0.9, seed: int = 0
) -> xr.Dataset:
    """Fair CRPS, CRPS, RMSE, spread and SSR (:func:`headline`) with bootstrap intervals (:func:`bootstrap`).

    Dims: those of ``truth`` without ``init_time``, latitude and longitude
    (typically ``lead_time, field``), plus ``bound``. Field units, SSR unitless.
    """
    parts = components(ensemble, truth)
    return bootstrap(parts, headline, n_boot, block, confidence, seed).assign_attrs(
        n_members=parts.attrs["n_members"], n_init=parts.sizes["init_time"], confidence=confidence
    )


# ----------------------------------------------------------- multivariate scores


def area_vector(da: xr.DataArray) -> xr.DataArray:
    """``da`` with latitude and longitude stacked into ``point``, scaled by ``sqrt(area weight / n_points)``,
    so that the Euclidean norm of a field is its area-weighted root-mean-square."""
    scale = np.sqrt(area_weights(da.latitude) / (da.sizes["latitude"] * da.sizes["longitude"]))
    return (da * scale).stack(point=SPATIAL).drop_vars(["point", *SPATIAL], errors="ignore")


def energy_score(ensemble: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    """Fair energy score of each whole field (``scoringrules.es_ensemble``, ``estimator="fair"``), field units.

    The vector is the field at every grid point with the area-weighted norm of
    :func:`area_vector`. Dims: ``truth``'s without latitude and longitude.
    """
    fct, obs = area_vector(ensemble.astype("float64")), area_vector(truth.astype("float64"))
    return xr.apply_ufunc(
        lambda o, f: scoringrules.es_ensemble(o, f, m_axis=-2, v_axis=-1, estimator="fair", backend="numpy"),
        obs, fct, input_core_dims=[["point"], ["member", "point"]],
    )  # fmt: skip


def variogram_score(ensemble: xr.DataArray, truth: xr.DataArray, p: float = 0.5) -> xr.DataArray:
    """Variogram score of order ``p`` along each latitude circle, area-weighted over latitudes.

    ``scoringrules.vs_ensemble`` with ``estimator="nrg"`` (Scheuerer & Hamill
    2015) over the longitudes of one latitude, every pair weighted 1; units
    (field units)^(2p). Dims: ``truth``'s without latitude and longitude.
    """
    n_lon = ensemble.sizes["longitude"]
    weights = np.ones((n_lon, n_lon))
    score = xr.apply_ufunc(
        lambda o, f: scoringrules.vs_ensemble(o, f, weights, m_axis=-2, v_axis=-1, p=p, estimator="nrg", backend="numpy"),
        truth.astype("float64"), ensemble.astype("float64"), input_core_dims=[["longitude"], ["member", "longitude"]],
    )  # fmt: skip
    return score.weighted(area_weights(score.latitude)).mean("latitude")

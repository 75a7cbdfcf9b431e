"""The Held–Suarez world's oracle as the reference ensemble, and the model ensemble measured against it.

:func:`oracle_forecast` puts oracle ensembles (samples of the exact forecast
distribution, :func:`druids.data.heldsuarez.oracle_ensemble`) in the model's
forecast layout. The comparison of a model ensemble ``X`` (``M`` members) with
the oracle ensemble ``Y`` (``N`` members) from the same initial states needs
no verifying truth:

* :func:`energy_distance` per point, ``D = 2 E|X - Y| - E|X - X'| - E|Y - Y'|``
  (Szekely & Rizzo 2013), with unbiased (U-statistic) within-ensemble means,
  so ``E[D] = 0`` when the model samples the oracle's distribution. ``D`` is the
  squared MMD of the distance kernel (Sejdinovic et al. 2013), and ``D / 2`` is
  the model's fair-CRPS excess over the oracle's when both are scored against
  oracle draws.
* :func:`field_energy_distance`: the same for whole fields, with the
  area-weighted norm of :mod:`druids.calibration.scores` (field units).
* :func:`interval_coverage`: how often oracle members fall inside the model's
  central intervals. The interval between the model's ``i``-th smallest and
  ``i``-th largest member holds an exchangeable draw with probability
  ``(M + 1 - 2 i) / (M + 1)`` exactly, its nominal coverage.
* :func:`spread_ratio`: model over oracle spread (sqrt of the ratio of mean
  unbiased variances), by lead and field or by latitude.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from druids.calibration.scores import SPATIAL, area_vector, spatial_mean
from druids.data import heldsuarez


def oracle_forecast(world, init_times, n_members: int, n_steps: int, seed: int, variables=None) -> xr.Dataset:
    """Oracle ensembles (``heldsuarez.oracle_ensemble``) from ``init_times`` in the model forecast layout.

    Dims (init_time, member, lead_time, [level,] latitude, longitude), physical
    units; ``variables`` (default: all) keeps those of a model forecast.
    """
    parts = []
    for time in np.asarray(init_times, dtype="datetime64[ns]"):
        ens = heldsuarez.oracle_ensemble(world, time, n_members, n_steps, seed)
        ens = ens if variables is None else ens[list(variables)]
        parts.append(ens.drop_vars("init_time").expand_dims(init_time=[time]))
    return xr.concat(parts, dim="init_time").transpose("init_time", "member", "lead_time", ...)


def _pair_sum(values: np.ndarray) -> np.ndarray:
    """``sum_{i<j} |v_i - v_j|`` over the last axis, by sorting: ``sum_k (2k - n - 1) v_(k)``."""
    n = values.shape[-1]
    return np.sum(np.sort(values, axis=-1) * (2 * np.arange(1, n + 1) - n - 1), axis=-1)


def _energy_distance(x: np.ndarray, y: np.ndarray, unbiased: bool) -> np.ndarray:
    m, n = x.shape[-1], y.shape[-1]
    within_x, within_y = _pair_sum(x), _pair_sum(y)
    cross = _pair_sum(np.concatenate([x, y], axis=-1)) - within_x - within_y
    dx, dy = (m * (m - 1), n * (n - 1)) if unbiased else (m * m, n * n)
    return 2 * cross / (m * n) - 2 * within_x / dx - 2 * within_y / dy


def energy_distance(model: xr.DataArray, oracle: xr.DataArray, unbiased: bool = True) -> xr.DataArray:
    """Energy distance per point between the ``member`` samples of two ensembles (field units).

    ``unbiased=False`` uses V-statistics (``1/M^2`` within-ensemble means, as
    ``scipy.stats.energy_distance``, which returns the square root of this).
    The unbiased form assumes each ensemble's members are independent draws.
    Dims: the inputs' without ``member``.
    """
    model, oracle = xr.align(model, oracle, join="exact", exclude=["member"])
    kwargs = {"unbiased": unbiased}
    return xr.apply_ufunc(
        _energy_distance, model.astype("float64"), oracle.astype("float64"), kwargs=kwargs,
        input_core_dims=[["member"], ["member"]], exclude_dims={"member"},
    )  # fmt: skip


def mean_absolute_difference(ensemble: xr.DataArray) -> xr.DataArray:
    """``E|Y - Y'|`` per point over distinct pairs of members (Gini's mean difference, unbiased), field units."""
    m = ensemble.sizes["member"]
    return xr.apply_ufunc(lambda v: 2 * _pair_sum(v) / (m * (m - 1)), ensemble.astype("float64"), input_core_dims=[["member"]])


def _pairwise_norms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``(..., A, B)`` between rows of ``a`` ``(..., A, D)`` and ``b`` ``(..., B, D)``."""
    squared = (a**2).sum(-1)[..., :, None] + (b**2).sum(-1)[..., None, :] - 2 * np.einsum("...ad,...bd->...ab", a, b)
    return np.sqrt(np.maximum(squared, 0.0))


def _field_energy_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    m, n = x.shape[-2], y.shape[-2]
    within_x, within_y = _pairwise_norms(x, x).sum((-2, -1)), _pairwise_norms(y, y).sum((-2, -1))
    return 2 * _pairwise_norms(x, y).mean((-2, -1)) - within_x / (m * (m - 1)) - within_y / (n * (n - 1))


def field_energy_distance(model: xr.DataArray, oracle: xr.DataArray) -> xr.DataArray:
    """Unbiased energy distance between whole fields (latitude x longitude), area-weighted norm, field units.

    Dims: the inputs' without ``member``, latitude and longitude.
    """
    x, y = area_vector(model.astype("float64")), area_vector(oracle.astype("float64"))
    x, y = xr.align(x, y, join="exact", exclude=["member"])
    return xr.apply_ufunc(
        _field_energy_distance, x, y, input_core_dims=[["member", "point"], ["member", "point"]], exclude_dims={"member"}
    )


def interval_coverage(model: xr.DataArray, samples: xr.DataArray, sample_dim: str = "member") -> xr.DataArray:
    """Area-weighted fraction of ``samples`` inside the model's central intervals, by ``nominal`` coverage.

    Interval ``i = 1 .. M // 2``: from the ``i``-th smallest to the ``i``-th
    largest model member, nominal coverage ``(M + 1 - 2 i) / (M + 1)``.
    ``samples``: oracle members along ``sample_dim`` (or the truth, without
    it). Dims: the inputs' without members, latitude and longitude, plus ``nominal``.
    """
    m = model.sizes["member"]
    ordered = xr.apply_ufunc(np.sort, model, input_core_dims=[["member"]], output_core_dims=[["member"]])
    fractions = []
    for i in range(1, m // 2 + 1):
        low, high = ordered.isel(member=i - 1, drop=True), ordered.isel(member=m - i, drop=True)
        other = samples.rename({sample_dim: "sample"}) if sample_dim in samples.dims else samples
        inside = ((other >= low) & (other <= high)).astype("float64")
        fractions.append(spatial_mean(inside.mean("sample") if "sample" in inside.dims else inside).mean("init_time"))
    nominal = [(m + 1 - 2 * i) / (m + 1) for i in range(1, m // 2 + 1)]
    return xr.concat(fractions, dim="nominal").assign_coords(nominal=nominal)


def spread_ratio(model: xr.DataArray, oracle: xr.DataArray, by_latitude: bool = False) -> xr.DataArray:
    """``sqrt(mean var_model / mean var_oracle)`` (unbiased variances), means over initial times and area.

    ``by_latitude``: means over initial times and longitude only, keeping latitude.
    """
    over = ["init_time", "longitude"] if by_latitude else ["init_time"]

    def mean_variance(ensemble):
        variance = ensemble.var("member", ddof=1)
        return variance.mean(over) if by_latitude else spatial_mean(variance).mean(over)

    return np.sqrt(mean_variance(model) / mean_variance(oracle))


def oracle_comparison(model: xr.DataArray, oracle: xr.DataArray) -> xr.Dataset:
    """The model ensemble beside the oracle's from the same states, dims ``(lead_time, field)`` (as the inputs').

    ``spread_ratio``; ``energy_distance`` (area and init mean of the per-point
    distance, field units) and ``relative_energy_distance`` (the same over the
    oracle's mean absolute member difference ``E|Y - Y'|``: unitless, 0 for the
    oracle's own distribution, comparable between fields); ``field_energy_distance``
    (init mean); and, by latitude (dims ``lead_time, field, latitude``),
    ``spread_ratio_by_latitude`` and ``energy_distance_by_latitude`` (zonal and init mean).
    """
    points = energy_distance(model, oracle)
    scale = spatial_mean(mean_absolute_difference(oracle)).mean("init_time")
    return xr.Dataset(
        {
            "spread_ratio": spread_ratio(model, oracle),
            "energy_distance": spatial_mean(points).mean("init_time"),
            "relative_energy_distance": spatial_mean(points).mean("init_time") / scale,
            "field_energy_distance": field_energy_distance(model, oracle).mean("init_time"),
            "spread_ratio_by_latitude": spread_ratio(model, oracle, by_latitude=True),
            "energy_distance_by_latitude": points.mean(["init_time", SPATIAL[1]]),
        }
    )

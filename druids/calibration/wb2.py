"""Scoring ensembles stored in WeatherBench2 layout (e.g. GenCast's published forecasts) against a WB2 truth store.

A WeatherBench2 ensemble store has dims ``time`` (initial time),
``number`` (or ``member``, ``realization``, ``sample``), ``prediction_timedelta``,
``[level,] latitude, longitude``. :func:`to_forecast_layout` renames them to
this package's forecast layout ``(init_time, member, lead_time, [level,]
latitude, longitude)``, latitude ascending and longitude in [0, 360); the
truth is read with :func:`druids.data.era5.open_wb2` at the valid times, and
:func:`score_wb2_ensemble` makes the same scorecards and rank histograms as
for the package's own ensembles. Both stores must be on the same grid (e.g.
WeatherBench2's 64 x 32 equiangular stores); no regridding happens here.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from druids.calibration.reliability import flatness_test, rank_histogram
from druids.calibration.scores import bootstrap, components, headline
from druids.calibration.skill import verifying_truth
from druids.data import era5
from druids.data.diagnostics import field_stack

MEMBER_NAMES = ("number", "member", "realization", "sample")
RENAMES = {"time": "init_time", "prediction_timedelta": "lead_time"}


def to_forecast_layout(ds: xr.Dataset) -> xr.Dataset:
    """A WB2-layout ensemble as ``(init_time, member, lead_time, [level,] latitude, longitude)``; raises if a dim is missing."""
    members = [name for name in MEMBER_NAMES if name in ds.dims]
    missing = [name for name in ("time", "prediction_timedelta", "latitude", "longitude") if name not in ds.dims]
    if missing or not members:
        raise ValueError(
            f"Not a WeatherBench2 ensemble: dims {sorted(map(str, ds.dims))} lack {missing or []}"
            f"{'' if members else ' and an ensemble dim (one of ' + ', '.join(MEMBER_NAMES) + ')'}"
        )
    ds = ds.rename({**RENAMES, members[0]: "member"})
    ds = ds.assign_coords(longitude=ds.longitude % 360.0).sortby(["latitude", "longitude"])
    return ds.transpose("init_time", "member", "lead_time", ..., "latitude", "longitude")


def open_wb2_ensemble(store) -> xr.Dataset:
    """The ensemble of a WB2-layout zarr store (path or fsspec URL, or an open Dataset) in the forecast layout, lazily."""
    return to_forecast_layout(store if isinstance(store, xr.Dataset) else xr.open_zarr(store))


def wb2_truth(forecast: xr.Dataset, truth_store, fields) -> xr.Dataset:
    """The truth of ``fields`` at every valid time of ``forecast``, from a WB2 store (path, URL or open Dataset)."""
    variables = list(dict.fromkeys(name for name, _ in fields))
    levels = sorted({level for _, level in fields if level is not None}) or None
    valid = np.unique((forecast.init_time + forecast.lead_time).values.ravel())
    if isinstance(truth_store, xr.Dataset):
        truth = truth_store[variables].sel(time=valid)
        return era5.to_wb2_layout(truth if levels is None else truth.sel(level=levels)).load()
    return era5.open_wb2(truth_store, variables, levels=levels, times=valid).load()


def score_wb2_ensemble(
    forecast_store, truth_store, fields, lead_times=None, n_boot: int = 200, block: int = 1, seed: int = 0
) -> dict:
    """Scorecard (:func:`~druids.calibration.scores.scorecard`), rank histogram and flatness test of a WB2 ensemble.

    ``fields``: (variable, level or None) pairs; ``lead_times``: timedelta64
    leads to score (default: all but 0). The store is read one lead at a time,
    so memory holds one lead of the ensemble. Returns ``scorecard`` (dims
    ``bound, lead_time, field``), ``ranks`` (dims ``field, rank``, pooled over
    leads) and ``flatness`` (:func:`~druids.calibration.reliability.flatness_test`
    with the number of initial times as independent cases: a conservative count).
    """
    forecast = open_wb2_ensemble(forecast_store)
    if lead_times is None:
        lead_times = forecast.lead_time.values[forecast.lead_time.values > np.timedelta64(0)]
    variables = list(dict.fromkeys(name for name, _ in fields))
    parts, ranks = [], []
    for lead in np.asarray(lead_times, dtype="timedelta64[ns]"):
        one = forecast[variables].sel(lead_time=[lead]).load()
        ensemble = field_stack(one, fields)
        observed = field_stack(verifying_truth(one, wb2_truth(one, truth_store, fields)), fields)
        parts.append(components(ensemble, observed))
        ranks.append(rank_histogram(ensemble, observed, keep=("field",)))
    parts = xr.concat(parts, dim="lead_time").assign_attrs(parts[0].attrs)
    card = bootstrap(parts, headline, n_boot, block, seed=seed).assign_attrs(n_members=parts.attrs["n_members"])
    pooled = xr.concat(ranks, dim="lead_time").mean("lead_time")
    return {"scorecard": card, "ranks": pooled, "flatness": flatness_test(pooled, n_cases=forecast.sizes["init_time"])}

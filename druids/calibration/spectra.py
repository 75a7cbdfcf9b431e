"""Spread and error per total wavenumber: at which scales an ensemble is too wide or too narrow.

For fields on a Gaussian grid (the Held–Suarez world), every member's
departure from the ensemble mean and the ensemble mean's error are analysed
into spherical harmonics (:func:`druids.sphere.power_by_total_wavenumber`).
Per total wavenumber ``n`` (area-weighted mean square, field units squared,
averaged over initial times):

* ``spread``: the unbiased ensemble variance, ``sum_m P_n(x_m - x_mean) / (M - 1)``;
* ``error``: ``P_n(x_mean - truth)``.

Summed over ``n`` they are the variance and squared error of
:func:`druids.calibration.scores.components` (for the band-limited part). For
an ensemble exchangeable with the truth, ``error = (M + 1) / M * spread`` at
every ``n`` in expectation, so :func:`spread_error_ratio` is the spread-skill
ratio scale by scale. Winds are analysed as scalar fields, which is a
diagnostic of their variance by scale, not a vector-harmonic analysis.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from druids.sphere import power_by_total_wavenumber


def power_spectrum(da: xr.DataArray, truncation: int) -> xr.DataArray:
    """:func:`~druids.sphere.power_by_total_wavenumber` of ``da`` over (latitude, longitude): new dim ``total_wavenumber``."""
    return xr.apply_ufunc(
        lambda x: power_by_total_wavenumber(x, da.latitude.values, truncation),
        da, input_core_dims=[["latitude", "longitude"]], output_core_dims=[["total_wavenumber"]],
    ).assign_coords(total_wavenumber=np.arange(truncation + 1))  # fmt: skip


def spread_error_spectra(ensemble: xr.DataArray, truth: xr.DataArray, truncation: int) -> xr.Dataset:
    """``spread`` and ``error`` per total wavenumber (module docstring), averaged over ``init_time``.

    ``ensemble`` dims ``(init_time, member, ..., latitude, longitude)`` on a
    Gaussian grid, ``truth`` the same without ``member`` (``truth=None``: only
    ``spread``). Attribute ``n_members``.
    """
    m = ensemble.sizes["member"]
    mean = ensemble.mean("member")
    parts = {"spread": power_spectrum(ensemble - mean, truncation).sum("member") / (m - 1)}
    if truth is not None:
        parts["error"] = power_spectrum(mean - truth, truncation)
    return xr.Dataset(parts).mean("init_time").assign_attrs(n_members=m)


def spread_error_ratio(spectra: xr.Dataset) -> xr.DataArray:
    """``sqrt((M + 1) / M * spread / error)`` per total wavenumber: 1 for an ensemble exchangeable with the truth."""
    m = spectra.attrs["n_members"]
    return np.sqrt((m + 1) / m * spectra.spread / spectra.error)

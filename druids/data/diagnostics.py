"""Climate and predictability diagnostics of gridded states (Held–Suarez world or ERA5).

All global means are area-weighted by cos(latitude) (``druids.sphere.area_weights``).
Inputs are xarray objects with dims ``latitude`` (degrees, ascending) and
``longitude`` (degrees) and, where named, ``time``, ``member``, ``lead_time``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from druids.sphere import area_weights

SPATIAL = ("latitude", "longitude")
HEMISPHERES = ("north", "south")


def field_stack(ds: xr.Dataset, fields) -> xr.DataArray:
    """The ``fields`` (variable, level or None) of ``ds`` stacked along a ``field`` dim named ``variable@level``."""
    parts = [ds[name] if level is None else ds[name].sel(level=level, drop=True) for name, level in fields]
    names = [name if level is None else f"{name}@{level:g}" for name, level in fields]
    parts = [part.drop_vars([c for c in part.coords if c not in part.dims]) for part in parts]
    return xr.concat(parts, dim="field", join="exact").assign_coords(field=names)


def global_mean(da: xr.DataArray) -> xr.DataArray:
    """Area-weighted mean over latitude and longitude."""
    return da.weighted(area_weights(da.latitude)).mean(SPATIAL)


def jet_peak(zonal_mean_u: xr.DataArray, hemisphere: str) -> tuple[float, float]:
    """Speed (m/s) and latitude (degrees) of the westerly maximum in one hemisphere.

    ``zonal_mean_u`` has the single dim ``latitude``. The peak is refined by a
    parabola through the grid maximum and its two neighbours (the 64 x 32 grid
    spacing is ~5.6 degrees).
    """
    if hemisphere not in ("north", "south"):
        raise ValueError(f"hemisphere must be 'north' or 'south', not {hemisphere!r}")
    side = zonal_mean_u.latitude > 0 if hemisphere == "north" else zonal_mean_u.latitude < 0
    u = zonal_mean_u.where(side, drop=True).sortby("latitude")
    lat, val = u.latitude.values, u.values
    i = int(np.clip(np.argmax(val), 1, len(val) - 2))
    a, b, c = np.polyfit(lat[i - 1 : i + 2], val[i - 1 : i + 2], 2)
    if a >= 0:  # no interior maximum: fall back to the grid value
        j = int(np.argmax(val))
        return float(val[j]), float(lat[j])
    lat_peak = -b / (2 * a)
    return float(np.polyval([a, b, c], lat_peak)), float(lat_peak)


def jet_peaks(zonal_mean_u: xr.DataArray) -> dict[str, tuple[float, float]]:
    """:func:`jet_peak` of both hemispheres: ``{"north": (speed, latitude), "south": ...}`` (m/s, degrees)."""
    return {hemisphere: jet_peak(zonal_mean_u, hemisphere) for hemisphere in HEMISPHERES}


def compare_jets(model_u: xr.DataArray, world_u: xr.DataArray) -> pd.DataFrame:
    """The westerly jets of a model's and the world's zonal-mean u (dim ``latitude``, m/s), per hemisphere.

    Returns a table indexed by hemisphere with columns ``model_speed``,
    ``model_latitude``, ``world_speed``, ``world_latitude`` (m/s, degrees) and
    ``relative_speed_difference`` = |model speed - world speed| / world speed;
    its mean over the hemispheres summarises how far the model's jets are off.
    """
    model, world = jet_peaks(model_u), jet_peaks(world_u)
    rows = {
        h: {
            "model_speed": model[h][0],
            "model_latitude": model[h][1],
            "world_speed": world[h][0],
            "world_latitude": world[h][1],
            "relative_speed_difference": abs(model[h][0] - world[h][0]) / world[h][0],
        }
        for h in HEMISPHERES
    }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("hemisphere")


def held_suarez_equilibrium_temperature(latitude, sigma, p0_hpa: float = 1000.0) -> xr.DataArray:
    """Radiative-equilibrium temperature T_eq (K) of Held & Suarez (1994), eq. (3), at p = sigma * p0.

    Returns dims (level, latitude) with ``level`` = sigma * 1000 (nominal hPa).
    """
    lat = np.deg2rad(np.asarray(latitude))[None, :]
    sig = np.asarray(sigma)[:, None]
    p_ratio = sig * p0_hpa / 1000.0
    kappa = 2.0 / 7.0
    teq = (315.0 - 60.0 * np.sin(lat) ** 2 - 10.0 * np.log(p_ratio) * np.cos(lat) ** 2) * p_ratio**kappa
    teq = np.maximum(200.0, teq)
    return xr.DataArray(
        teq,
        dims=("level", "latitude"),
        coords={"level": np.asarray(sigma) * 1000.0, "latitude": np.asarray(latitude)},
        attrs={"units": "K", "long_name": "Held–Suarez radiative-equilibrium temperature"},
    )


def kinetic_energy_spectrum(u: xr.DataArray, v: xr.DataArray) -> xr.DataArray:
    """Kinetic energy (m2 s-2) per zonal wavenumber, area-weighted mean over latitude.

    E(k) = 0.5 * (|u_k|^2 + |v_k|^2) from a real FFT along longitude (one-sided,
    so that the sum over k equals the zonal mean of (u^2 + v^2) / 2). Other dims
    are kept; average over time outside if wanted.
    """
    n = u.sizes["longitude"]

    def power(x):
        coeffs = np.fft.rfft(x.values, axis=x.get_axis_num("longitude")) / n
        p = np.abs(coeffs) ** 2
        p[..., 1:] *= 2.0
        if n % 2 == 0:
            p[..., -1] /= 2.0
        return p

    dims = [d if d != "longitude" else "zonal_wavenumber" for d in u.dims]
    energy = 0.5 * (power(u) + power(v))
    coords = {k: c for k, c in u.coords.items() if "longitude" not in c.dims}
    coords["zonal_wavenumber"] = np.arange(energy.shape[u.get_axis_num("longitude")])
    spectrum = xr.DataArray(energy, dims=dims, coords=coords)
    return spectrum.weighted(area_weights(u.latitude)).mean("latitude").assign_attrs(units="m2 s-2")


def level_kinetic_energy_spectrum(ds: xr.Dataset, level: float, max_wavenumber: int | None = None) -> xr.DataArray:
    """:func:`kinetic_energy_spectrum` of ``ds``'s winds at ``level`` (hPa), zonal wavenumbers 0 .. ``max_wavenumber``.

    A spectral model truncated at total wavenumber T has no energy beyond zonal
    wavenumber T, so ``max_wavenumber`` = T drops the empty tail (None keeps all).
    """
    spectrum = kinetic_energy_spectrum(ds.u_component_of_wind.sel(level=level), ds.v_component_of_wind.sel(level=level))
    return spectrum.sel(zonal_wavenumber=slice(0, max_wavenumber))


def energy_from_wavenumber(spectrum: xr.DataArray, min_wavenumber: int) -> xr.DataArray:
    """Energy summed over zonal wavenumbers >= ``min_wavenumber`` (the spectrum's units), other dims kept.

    With ``min_wavenumber`` about 8 on the globe this is the energy of synoptic
    and smaller scales, which a sampler that blurs loses and one that adds noise gains.
    """
    return spectrum.sel(zonal_wavenumber=slice(min_wavenumber, None)).sum("zonal_wavenumber")


def ensemble_spread(ensemble: xr.DataArray) -> xr.DataArray:
    """Root of the area-mean ensemble variance (ddof=1) over ``member``, per remaining dim."""
    return np.sqrt(global_mean(ensemble.var("member", ddof=1)))


def rms_difference(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """Area-weighted root-mean-square difference of two fields."""
    return np.sqrt(global_mean((a - b) ** 2))


def rms_change(series: xr.DataArray, steps: int = 1) -> xr.DataArray:
    """Area- and time-mean RMS of the ``steps``-output change x_{t+k} - x_t along ``time``."""
    change = series.isel(time=slice(steps, None)) - series.isel(time=slice(None, -steps)).values
    return np.sqrt(global_mean(change**2).mean("time"))

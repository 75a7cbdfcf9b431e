"""Climate and predictability diagnostics of gridded states (Held–Suarez world or ERA5).

All global means are area-weighted by cos(latitude) (``druids.sphere.area_weights``).
Inputs are xarray objects with dims ``latitude`` (degrees, ascending) and
``longitude`` (degrees) and, where named, ``time``, ``member``, ``lead_time``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from scipy.ndimage import maximum_filter, minimum_filter

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


# --------------------------------------------------------------- meteorological features of one state
# Scalars that a forecaster reads off a state: the jets, the eddies, the baroclinicity that feeds them,
# the cyclones and anticyclones in a region, and the coming 6-h change. The explainability chapter
# probes a network's activations for them (``druids.explain.probes``). A ``Region`` is
# ``((south, north), (west, east))`` in degrees; a region with west > east wraps through 0 E.

EARTH_RADIUS_KM = 6371.0
Region = tuple[tuple[float, float], tuple[float, float]]


def region_mask(latitude, longitude, region: Region) -> xr.DataArray:
    """True inside ``region`` (boundaries included): dims ``(latitude, longitude)``."""
    (south, north), (west, east) = region
    lat = xr.DataArray(np.asarray(latitude), dims="latitude", coords={"latitude": np.asarray(latitude)})
    lon = xr.DataArray(np.asarray(longitude), dims="longitude", coords={"longitude": np.asarray(longitude)})
    in_lon = (lon >= west) & (lon <= east) if west <= east else (lon >= west) | (lon <= east)
    return (lat >= south) & (lat <= north) & in_lon


def box_mean(da: xr.DataArray, region: Region) -> xr.DataArray:
    """Area-weighted (cos latitude) mean of ``da`` over ``region``; other dims kept."""
    inside = region_mask(da.latitude, da.longitude, region)
    return da.where(inside).weighted(area_weights(da.latitude) * inside).mean(SPATIAL)


def eddy_kinetic_energy(u: xr.DataArray, v: xr.DataArray, latitudes: tuple[float, float] = (-90.0, 90.0)) -> xr.DataArray:
    """Eddy kinetic energy (m2 s-2): ``(u'^2 + v'^2) / 2`` with ``'`` the departure from the zonal mean,
    area-weighted over the latitude band ``latitudes`` (degrees, south to north); other dims kept."""
    eddies = 0.5 * ((u - u.mean("longitude")) ** 2 + (v - v.mean("longitude")) ** 2)
    return box_mean(eddies, (latitudes, (0.0, 360.0)))


def baroclinicity(temperature: xr.DataArray, hemisphere: str, latitudes: tuple[float, float] = (30.0, 60.0)) -> xr.DataArray:
    """Poleward decrease of the zonal-mean temperature (K per 1000 km), area-weighted over ``|latitude|`` in ``latitudes``.

    ``-d[T]/dy`` in the north and ``+d[T]/dy`` in the south (``y`` northward
    distance on the sphere, centred differences on the grid), so that both
    hemispheres are positive where the pole is colder: the meridional gradient
    that, by thermal wind, shears the jet and feeds baroclinic eddies.
    """
    if hemisphere not in HEMISPHERES:
        raise ValueError(f"hemisphere must be 'north' or 'south', not {hemisphere!r}")
    zonal = temperature.mean("longitude")
    y_km = np.deg2rad(zonal.latitude) * EARTH_RADIUS_KM
    gradient = zonal.differentiate("latitude") / (y_km.differentiate("latitude") / 1000.0)
    sign = -1.0 if hemisphere == "north" else 1.0
    band = (latitudes if hemisphere == "north" else (-latitudes[1], -latitudes[0]))
    inside = (zonal.latitude >= band[0]) & (zonal.latitude <= band[1])
    return (sign * gradient).where(inside).weighted(area_weights(zonal.latitude) * inside).mean("latitude")


def pressure_extrema(surface_pressure: xr.DataArray, region: Region, threshold_hpa: float) -> pd.DataFrame:
    """Cyclones and anticyclones of one surface-pressure field (Pa, dims latitude, longitude) in ``region``.

    The anomaly from the zonal mean at each latitude (hPa); a cyclone is a grid
    point whose anomaly is the minimum of its 3 x 3 neighbourhood (periodic in
    longitude) and below ``-threshold_hpa``, an anticyclone a maximum above
    ``+threshold_hpa``. Rows: ``kind``, ``latitude``, ``longitude`` (degrees)
    and ``amplitude_hpa`` (|anomaly|), strongest first.
    """
    field = surface_pressure.transpose("latitude", "longitude")
    anomaly = (field - field.mean("longitude")).values / 100.0
    inside = region_mask(field.latitude, field.longitude, region).values
    modes = ("nearest", "wrap")
    found = {
        "cyclone": (anomaly == minimum_filter(anomaly, size=3, mode=modes)) & (anomaly < -threshold_hpa),
        "anticyclone": (anomaly == maximum_filter(anomaly, size=3, mode=modes)) & (anomaly > threshold_hpa),
    }
    rows = [
        {"kind": kind, "latitude": float(field.latitude[i]), "longitude": float(field.longitude[j]), "amplitude_hpa": abs(float(anomaly[i, j]))}
        for kind, where in found.items()
        for i, j in np.argwhere(where & inside)
    ]
    columns = ["kind", "latitude", "longitude", "amplitude_hpa"]
    return pd.DataFrame(rows, columns=columns).sort_values("amplitude_hpa", ascending=False, ignore_index=True)


def strongest_extremum(extrema: pd.DataFrame, kind: str) -> dict[str, float]:
    """``present`` (0 or 1), ``latitude``, ``longitude`` and ``amplitude_hpa`` of the strongest ``kind`` in a
    :func:`pressure_extrema` table (NaN position and amplitude 0 when there is none)."""
    rows = extrema[extrema.kind == kind]
    if rows.empty:
        return {"present": 0.0, "latitude": np.nan, "longitude": np.nan, "amplitude_hpa": 0.0}
    top = rows.iloc[0]
    return {"present": 1.0, "latitude": top.latitude, "longitude": top.longitude, "amplitude_hpa": top.amplitude_hpa}


def state_features(
    states: xr.Dataset, next_states: xr.Dataset, upper: float, middle: float, region: Region, threshold_hpa: float,
    pressure: str = "surface_pressure",
) -> pd.DataFrame:
    """The meteorological features of each state (dim ``time``), one row per time.

    ``states`` and ``next_states`` (the states 6 h later, same times order)
    hold ``u_component_of_wind``, ``v_component_of_wind``, ``temperature`` on
    ``level`` and the surface field ``pressure`` (Pa; ``mean_sea_level_pressure``
    on ERA5). Columns: ``jet_speed_{north,south}``
    (m/s) and ``jet_latitude_{north,south}`` (degrees) of the zonal-mean u at
    ``upper`` (:func:`jet_peak`); ``eddy_kinetic_energy`` (m2 s-2, at ``upper``,
    20-70 degrees in both hemispheres); ``baroclinicity_{north,south}`` (K per
    1000 km at ``middle``); ``cyclone`` and ``anticyclone`` (0/1: one deeper
    than ``threshold_hpa`` in ``region``) with ``cyclone_depth_hpa``,
    ``cyclone_latitude``, ``cyclone_longitude``; ``pressure_change_hpa``: the
    coming 6-h change of the region-mean surface pressure (hPa).
    """
    u, v = (states[name].sel(level=upper) for name in ("u_component_of_wind", "v_component_of_wind"))
    t_mid = states["temperature"].sel(level=middle)
    table = pd.DataFrame(index=pd.Index(states.time.values, name="time"))
    zonal_u = u.mean("longitude").load()
    for hemisphere in HEMISPHERES:
        peaks = [jet_peak(zonal_u.isel(time=k), hemisphere) for k in range(states.time.size)]
        table[f"jet_speed_{hemisphere}"], table[f"jet_latitude_{hemisphere}"] = np.asarray(peaks).T
        table[f"baroclinicity_{hemisphere}"] = baroclinicity(t_mid, hemisphere).values
    both = [eddy_kinetic_energy(u, v, band) for band in ((20.0, 70.0), (-70.0, -20.0))]
    table["eddy_kinetic_energy"] = (0.5 * (both[0] + both[1])).values
    extrema = [pressure_extrema(states[pressure].isel(time=k), region, threshold_hpa) for k in range(states.time.size)]
    lows = pd.DataFrame([strongest_extremum(e, "cyclone") for e in extrema], index=table.index)
    table["cyclone"], table["cyclone_depth_hpa"] = lows["present"], lows["amplitude_hpa"]
    table["cyclone_latitude"], table["cyclone_longitude"] = lows["latitude"], lows["longitude"]
    table["anticyclone"] = [strongest_extremum(e, "anticyclone")["present"] for e in extrema]
    change = next_states[pressure].values - states[pressure].values
    table["pressure_change_hpa"] = box_mean(states[pressure].copy(data=change), region).values / 100.0
    return table

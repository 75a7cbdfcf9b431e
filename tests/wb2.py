"""Small synthetic stores with the WeatherBench2 schema, for tests (after weatherbench2's schema mocks).

:func:`wb2_dataset` returns an ``xarray.Dataset`` laid out as a WeatherBench2
store: dims ``time, level, latitude, longitude`` (surface variables without
``level``), WeatherBench2 variable names with ``units`` and ``long_name``
attributes, coordinates in degrees and hPa. The values come from a random
process per grid point (``"ar1"``, ``"random_walk"``, ``"white"``: ``mean +
scale * process``) or from an analytic function of the coordinates, so tests
can know the answer. Everything is fixed by the arguments and ``seed``: the
variables draw, in the order given, from one ``numpy.random.default_rng(seed)``.

Conventions are those of ``druids`` by default (latitude ascending, longitude
in [0, 360), 6-hourly from 2000-01-01); ``descending=True`` gives WeatherBench2's
ERA5 latitude order.

:func:`era5_from_world` writes the Held–Suarez world in ERA5's conventions
(pressure levels, ERA5 names, hourly times, descending latitudes, static fields),
the store on which the chapters run end to end in the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

# name: (units, long name, has a level dimension, typical mean, typical scale) -- rough mid-troposphere values
WB2_VARIABLES = {
    "u_component_of_wind": ("m s-1", "U component of wind", True, 5.0, 10.0),
    "v_component_of_wind": ("m s-1", "V component of wind", True, 0.0, 5.0),
    "temperature": ("K", "Temperature", True, 250.0, 15.0),
    "geopotential": ("m2 s-2", "Geopotential", True, 5.0e4, 2.0e3),
    "specific_humidity": ("kg kg-1", "Specific humidity", True, 1.0e-3, 5.0e-4),
    "surface_pressure": ("Pa", "Surface pressure", False, 1.0e5, 1.0e3),
    "mean_sea_level_pressure": ("Pa", "Mean sea level pressure", False, 1.01e5, 1.0e3),
    "2m_temperature": ("K", "2 metre temperature", False, 280.0, 10.0),
    "10m_u_component_of_wind": ("m s-1", "10 metre U wind component", False, 0.0, 5.0),
    "10m_v_component_of_wind": ("m s-1", "10 metre V wind component", False, 0.0, 5.0),
}

# time-invariant fields: name -> (units, long name)
WB2_STATIC = {
    "land_sea_mask": ("1", "Land-sea mask"),
    "geopotential_at_surface": ("m2 s-2", "Geopotential at surface"),
}

PROCESSES = ("ar1", "random_walk", "white")
SIX_HOURS = np.timedelta64(6, "h")


@dataclass(frozen=True)
class Random:
    """``mean + scale * x`` with ``x`` a random ``process`` in time, independent per grid point and level.

    ``"ar1"``: stationary, unit variance, ``x[t] = phi x[t-1] + sqrt(1 - phi^2) e[t]``;
    ``"random_walk"``: ``x[t] = x[t-1] + e[t]``; ``"white"``: ``x[t] = e[t]``; all
    with ``x[0] = e[0]`` and ``e`` standard normal. ``mean`` and ``scale``
    default to the variable's typical values (:data:`WB2_VARIABLES`).
    """

    process: str = "ar1"
    mean: float | None = None
    scale: float | None = None
    phi: float = 0.9

    def __post_init__(self):
        if self.process not in PROCESSES:
            raise ValueError(f"process {self.process!r} is not one of {PROCESSES}")

    def values(self, rng: np.random.Generator, shape: tuple[int, ...], default_mean: float, default_scale: float):
        """Float64 values of ``shape`` = (time, ...), drawn from ``rng`` in time order."""
        e = rng.standard_normal(shape)
        if self.process == "white":
            x = e
        elif self.process == "random_walk":
            x = np.cumsum(e, axis=0)
        else:
            x = np.empty(shape)
            x[0] = e[0]
            for t in range(1, shape[0]):
                x[t] = self.phi * x[t - 1] + np.sqrt(1 - self.phi**2) * e[t]
        mean = default_mean if self.mean is None else self.mean
        scale = default_scale if self.scale is None else self.scale
        return mean + scale * x


#: An analytic field: a function of the coordinates (``xarray.DataArray``s, ``coords["latitude"]`` ...)
#: returning anything that broadcasts against them (a scalar, or a DataArray over some of their dims).
FieldFunction = Callable[[Mapping[str, xr.DataArray]], object]


def gaussian_latitudes(n_lat: int) -> np.ndarray:
    """Latitudes (degrees, ascending) of the Gaussian grid: arcsin of the Gauss–Legendre nodes."""
    return np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(n_lat)[0]))


def equiangular_latitudes(n_lat: int) -> np.ndarray:
    """Cell-centre latitudes (degrees, ascending) of an equiangular grid without poles."""
    spacing = 180.0 / n_lat
    return -90.0 + spacing / 2 + spacing * np.arange(n_lat)


def wb2_dataset(
    variables: Sequence[str] | Mapping[str, str | Random | FieldFunction] = tuple(WB2_VARIABLES)[:5],
    *,
    grid: str = "gaussian",
    n_lat: int = 32,
    n_lon: int = 64,
    descending: bool = False,
    levels: Sequence[float] | np.ndarray | None = (300.0, 562.5),
    n_times: int = 8,
    start: str = "2000-01-01T00",
    step: np.timedelta64 = SIX_HOURS,
    process: str | Random = "ar1",
    seed: int = 0,
    chunks: Mapping[str, int] | None = None,
    attrs: Mapping[str, str] | None = None,
) -> xr.Dataset:
    """A WeatherBench2-layout dataset of ``variables`` on a ``grid`` of ``n_lat x n_lon`` points.

    ``variables``: WeatherBench2 names (each made by ``process``) or a mapping
    from name to its own field: a process name, a :class:`Random` or a
    :data:`FieldFunction`. ``grid``: ``"gaussian"`` or ``"equiangular"``
    (cell centres, no poles); longitudes ``360 / n_lon * k`` from 0.
    ``levels`` (hPa, dtype kept): the ``level`` coordinate of upper-air
    variables; None leaves every variable without a level (fields at one
    level). Times: ``n_times`` from ``start`` every ``step`` (datetime64[ns]).
    Data float32; ``chunks``: dask chunks (e.g. ``{"time": 40}``), None for numpy.
    """
    fields = dict(variables) if isinstance(variables, Mapping) else dict.fromkeys(variables, process)
    coords = _coordinates(grid, n_lat, n_lon, descending, levels, n_times, start, step)
    data = {}
    rng = np.random.default_rng(seed)
    for name, field in fields.items():
        units, long_name, upper_air, mean, scale = WB2_VARIABLES[name]
        dims = ("time", "level", "latitude", "longitude") if upper_air and levels is not None else ("time", "latitude", "longitude")
        if callable(field):
            template = xr.DataArray(np.zeros([coords[d].size for d in dims]), coords={d: coords[d] for d in dims}, dims=dims)
            values = (field(template.coords) + template).transpose(*dims).values
        else:
            random = Random(field) if isinstance(field, str) else field
            values = random.values(rng, tuple(coords[d].size for d in dims), mean, scale)
        data[name] = (dims, values.astype(np.float32), {"units": units, "long_name": long_name})
    ds = xr.Dataset(data, coords=coords, attrs=dict(attrs or {}))
    return ds if chunks is None else ds.chunk(dict(chunks))


def _coordinates(grid, n_lat, n_lon, descending, levels, n_times, start, step) -> dict[str, xr.DataArray]:
    """The time, [level,] latitude and longitude coordinates of :func:`wb2_dataset`, with CF attributes."""
    latitudes = {"gaussian": gaussian_latitudes, "equiangular": equiangular_latitudes}
    if grid not in latitudes:
        raise ValueError(f"grid {grid!r} is not one of {tuple(latitudes)}")
    latitude = latitudes[grid](n_lat)
    times = (np.datetime64(start) + np.arange(n_times) * step).astype("datetime64[ns]")
    coords = {
        "time": xr.DataArray(times, dims="time"),
        "latitude": xr.DataArray(latitude[::-1] if descending else latitude, dims="latitude", attrs={"units": "degrees_north"}),
        "longitude": xr.DataArray(np.arange(n_lon) * (360.0 / n_lon), dims="longitude", attrs={"units": "degrees_east"}),
    }
    if levels is not None:
        coords["level"] = xr.DataArray(np.asarray(levels), dims="level", attrs={"units": "hPa"})
    return coords


# ------------------------------------------------------------ the world in ERA5's conventions

GAS_CONSTANT = 287.04  # J kg-1 K-1, dry air
GRAVITY = 9.80665  # m s-2
LAPSE_RATE = 0.0065  # K m-1, standard atmosphere
ERA5_TEST_LEVELS = (250, 500, 700, 850)  # hPa, inside the world's sigma range (62.5 to 937.5 hPa at 1000 hPa)


def sigma_to_pressure(field: xr.DataArray, pressure_hpa: xr.DataArray, levels, extrapolate: bool) -> xr.DataArray:
    """``field`` on sigma levels interpolated linearly in log pressure to pressure ``levels`` (hPa, int).

    ``pressure_hpa``: the pressure of each sigma level (sigma * surface pressure), dims as ``field``.
    Outside a column's pressure range the field is held at the end value, or, with ``extrapolate``,
    continued linearly in log pressure (geopotential: hydrostatic, d(phi)/d(ln p) = -R T).
    """
    log_p = np.log(pressure_hpa.transpose(*field.dims).values.astype(np.float64))
    values = field.values.astype(np.float64)
    axis = field.get_axis_num("level")
    out = []
    for level in levels:
        upper = np.clip((log_p < np.log(level)).sum(axis=axis, keepdims=True), 1, log_p.shape[axis] - 1)
        pick = lambda a, i: np.take_along_axis(a, i, axis=axis)  # noqa: E731
        lo_p, hi_p, lo_v, hi_v = pick(log_p, upper - 1), pick(log_p, upper), pick(values, upper - 1), pick(values, upper)
        weight = (np.log(level) - lo_p) / (hi_p - lo_p)
        out.append(lo_v + (weight if extrapolate else np.clip(weight, 0.0, 1.0)) * (hi_v - lo_v))
    data = np.concatenate(out, axis=axis).astype(np.float32)
    coords = {name: c for name, c in field.coords.items() if "level" not in c.dims}
    return xr.DataArray(data, dims=field.dims, coords={**coords, "level": np.asarray(levels, dtype=np.int64)})


def specific_humidity(temperature: xr.DataArray, pressure_pa) -> xr.DataArray:
    """A synthetic humidity: 50 % relative humidity at ``temperature`` (K) and pressure (Pa), kg kg-1,
    with Bolton's (1980) saturation vapour pressure. The dry world has none; this has ERA5's size and shape."""
    saturation = 611.2 * np.exp(17.67 * (temperature - 273.15) / (temperature - 29.65))
    return (0.5 * 0.622 * saturation / pressure_pa).astype(np.float32)


def era5_from_world(world: xr.Dataset, levels=ERA5_TEST_LEVELS, hourly: bool = True) -> xr.Dataset:
    """The Held–Suarez world ``world`` (``druids.data.heldsuarez.open_world``) written in ERA5's conventions.

    Upper air (geopotential, temperature, winds) interpolated from sigma to the pressure
    ``levels`` (hPa, int64) with p = sigma * surface pressure (:func:`sigma_to_pressure`);
    ``specific_humidity`` synthetic (:func:`specific_humidity`). Surface fields derived from the
    lowest sigma level: ``2m_temperature`` by the standard lapse rate to sigma = 1
    (T * sigma**(-R Gamma / g)), 10-m winds 0.7 times the lowest level's, and
    ``mean_sea_level_pressure`` = surface pressure (the world is flat). Extra variables:
    ``surface_pressure`` and the static ``land_sea_mask`` (a synthetic continent, 0/1: the world is
    an aquaplanet) and ``geopotential_at_surface`` (zero). ``hourly``: times every hour, linearly
    interpolated between the world's 6-hourly states (exact at them). Latitude descending,
    longitude in [0, 360), float32, CF attributes.
    """
    world = world.load()
    ps = world["surface_pressure"].astype(np.float64)
    pressure_hpa = world["sigma"].astype(np.float64) * ps / 100.0
    lowest = world.isel(level=-1)
    lowest_sigma = float(world["sigma"].values[-1])
    upper = {
        name: sigma_to_pressure(world[name], pressure_hpa, levels, extrapolate=name == "geopotential")
        for name in ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind")
    }
    level_pa = xr.DataArray(np.asarray(levels, dtype=np.float64) * 100.0, dims="level", coords={"level": upper["temperature"].level})
    fields = {
        **upper,
        "specific_humidity": specific_humidity(upper["temperature"], level_pa),
        "2m_temperature": lowest["temperature"] * lowest_sigma ** (-GAS_CONSTANT * LAPSE_RATE / GRAVITY),
        "10m_u_component_of_wind": 0.7 * lowest["u_component_of_wind"],
        "10m_v_component_of_wind": 0.7 * lowest["v_component_of_wind"],
        "mean_sea_level_pressure": world["surface_pressure"],
        "surface_pressure": world["surface_pressure"],
    }
    ds = xr.Dataset({name: da.reset_coords(drop=True).astype(np.float32) for name, da in fields.items()})
    if hourly:
        hours = np.arange(ds.time.values[0], ds.time.values[-1] + np.timedelta64(1, "h"), np.timedelta64(1, "h"))
        ds = ds.interp(time=hours.astype("datetime64[ns]")).astype(np.float32)
    lat, lon = np.deg2rad(ds.latitude), np.deg2rad(ds.longitude)
    continent = ((np.abs(ds.latitude - 20) < 35) & (np.abs(ds.longitude - 100) < 50)) | (np.sin(3 * lon) * np.cos(lat) > 0.9)
    ds["land_sea_mask"] = continent.astype(np.float32).transpose("latitude", "longitude")
    ds["geopotential_at_surface"] = xr.zeros_like(ds["land_sea_mask"])
    for name, da in ds.data_vars.items():
        units, long_name = WB2_STATIC[name] if name in WB2_STATIC else WB2_VARIABLES[name][:2]
        da.attrs = {"units": units, "long_name": long_name}
    ds["level"].attrs = {"units": "hPa", "long_name": "pressure level"}
    ds = ds.isel(latitude=slice(None, None, -1))
    ds.attrs = {"title": "Held–Suarez world in ERA5 conventions (DRUIDS tests)", "world_config_hash": world.attrs.get("config_hash", "")}
    return ds


def write_era5_store(world: xr.Dataset, path, **kwargs) -> str:
    """:func:`era5_from_world` written as a zarr store at ``path`` (once; an existing store is kept); returns the path."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        ds = era5_from_world(world, **kwargs)
        tmp = path.with_suffix(".partial.zarr")
        ds.chunk({"time": 24}).to_zarr(tmp, mode="w", zarr_format=2)
        tmp.rename(path)
    return str(path)


def world_era5_store(world_config) -> str:
    """The store of :func:`era5_from_world` for the Held–Suarez world of ``world_config`` (generated if
    needed), written once per data directory (``DRUIDS_DATA``) as ``era5-schema-<world hash>.zarr``."""
    from druids import paths
    from druids.config import config_hash
    from druids.data import heldsuarez

    path = paths.data_dir() / f"era5-schema-{config_hash(world_config)}.zarr"
    if path.exists():
        return str(path)
    return write_era5_store(heldsuarez.open_world(world_config, progress=False), path)

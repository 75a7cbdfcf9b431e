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

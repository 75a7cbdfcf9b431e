"""Channels: a gridded state store as one stack of model channels, and back.

Input schema (Held–Suarez world store and ERA5 reader alike): an
``xarray.Dataset`` with dims ``time`` (regular, 6-hourly), ``level`` (nominal hPa),
``latitude`` (ascending, degrees north), ``longitude`` ([0, 360), degrees east);
3-D variables (``time, level, latitude, longitude``) and surface variables
(``time, latitude, longitude``), float32, each with a ``units`` attribute.

Model space is a stack of *channels*: one per (3-D variable, level), named
``"temperature@562.5"``, and one per surface variable, named
``"surface_pressure"``. The channel axis carries three coordinates:
``variable``, ``level`` (NaN for surface variables) and ``units``, so that a
channel stack converts back to the input schema (:func:`from_channels`).
Static channels (:func:`static_features`) join the model's condition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

SPATIAL_DIMS = ("latitude", "longitude")
STATIC_CHANNELS = ("sin_lat", "cos_lat", "sin_lon", "cos_lon")


def static_features(latitude, longitude) -> xr.DataArray:
    """Static condition channels sin/cos of latitude and of longitude.

    Dims ``(channel, latitude, longitude)``, float32, channels :data:`STATIC_CHANNELS`.
    Longitude features let a model use geography (land/sea on ERA5); on the
    zonally symmetric Held–Suarez world they carry no information.
    """
    lat = np.deg2rad(np.asarray(latitude, dtype="float64"))[:, None]
    lon = np.deg2rad(np.asarray(longitude, dtype="float64"))[None, :]
    shape = (lat.size, lon.size)
    fields = [np.sin(lat), np.cos(lat), np.sin(lon), np.cos(lon)]
    data = np.stack([np.broadcast_to(f, shape) for f in fields]).astype(np.float32)
    return xr.DataArray(
        data,
        dims=("channel", *SPATIAL_DIMS),
        coords={"channel": list(STATIC_CHANNELS), "latitude": np.asarray(latitude), "longitude": np.asarray(longitude)},
    )


# ------------------------------------------------------------------------- channels


def _variable(ds: xr.Dataset, name: str) -> xr.DataArray:
    """``ds[name]`` with a clear error if it is missing or has unexpected dims."""
    if name not in ds.data_vars:
        raise ValueError(
            f"Variable {name!r} is not in the dataset; available variables: {', '.join(map(str, ds.data_vars))}. "
            "Fix DatasetConfig.variables."
        )
    da = ds[name]
    if not set(SPATIAL_DIMS) <= set(da.dims):
        raise ValueError(f"Variable {name!r} has dims {da.dims}; expected dims to include {SPATIAL_DIMS}")
    return da


def channel_names(ds: xr.Dataset, variables: Sequence[str]) -> list[str]:
    """Channel names in model order: ``"var@level"`` per level of a 3-D variable, ``"var"`` for surface ones."""
    names = []
    for name in variables:
        da = _variable(ds, name)
        if "level" in da.dims:
            names += [f"{name}@{float(level):g}" for level in da["level"].values]
        else:
            names.append(name)
    return names


def to_channels(ds: xr.Dataset, variables: Sequence[str]) -> xr.DataArray:
    """Stack ``variables`` into one DataArray with dims ``(..., channel, latitude, longitude)``.

    Leading dims (``time``, ``member``, ...) are kept; stays lazy for dask input.
    Channel coordinates: ``variable``, ``level`` (NaN for surface), ``units``.
    Non-index coordinates of the input (e.g. ``sigma``) are dropped.
    """
    names = channel_names(ds, variables)
    parts = []
    for name in variables:
        da = _variable(ds, name).reset_coords(drop=True)
        if "level" in da.dims:
            levels = da["level"].values.astype("float64")
            da = da.transpose(..., "level", *SPATIAL_DIMS).rename(level="channel")
        else:
            levels = np.array([np.nan])
            da = da.expand_dims(channel=1).transpose(..., "channel", *SPATIAL_DIMS)
        parts.append(
            da.drop_vars("channel", errors="ignore").assign_coords(
                level=("channel", levels),
                variable=("channel", [name] * levels.size),
                units=("channel", [str(da.attrs.get("units", ""))] * levels.size),
            )
        )
    out = xr.concat(parts, dim="channel", coords="different", compat="equals", join="exact")
    return out.assign_coords(channel=names).rename("state")


def from_channels(channels: xr.DataArray) -> xr.Dataset:
    """Inverse of :func:`to_channels`: a Dataset in the input schema (with ``units`` attrs)."""
    variables = channels["variable"].values
    out = {}
    for name in dict.fromkeys(variables):
        part = channels.isel(channel=np.flatnonzero(variables == name))
        units = str(part["units"].values[0])
        if np.isnan(part["level"].values).all():
            da = part.isel(channel=0, drop=True)
        else:
            da = part.drop_vars(["channel", "variable", "units"]).swap_dims(channel="level")
            da = da.transpose(..., "level", *SPATIAL_DIMS)
        out[str(name)] = da.rename(str(name)).assign_attrs(units=units)
    return xr.Dataset(out)

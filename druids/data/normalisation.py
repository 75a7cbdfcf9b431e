"""Normalisation statistics of a store and the maps between physical and normalised states.

Normalisation follows GenCast: the state is normalised by per-channel mean and
std; the target is the one-step residual ``x_{t+1} - x_t`` normalised by the
residual's own per-channel mean and std. All statistics are area-weighted
(cos latitude, :func:`druids.sphere.area_weights`), population (ddof=0)
moments over time, latitude and longitude of the *training split only*.
Channels as in :mod:`druids.data.channels`. Statistics of data larger than
memory are computed in one streaming pass (:mod:`druids.data.streaming`).
Static fields of a store (land-sea mask, orography) travel with the statistics,
normalised, as extra condition channels (:func:`static_condition`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import torch
import xarray as xr

from druids.cache import compute_or_load
from druids.config import DatasetConfig
from druids.data.channels import SPATIAL_DIMS, STATIC_CHANNELS, from_channels, static_features, to_channels
from druids.data.splits import split_positions, time_step
from druids.data.streaming import fits_in_memory, streaming_moments
from druids.sphere import area_weights


@dataclass(frozen=True, eq=False)
class NormStats:
    """Per-channel normalisation statistics, each a DataArray over ``channel``.

    ``mean``, ``std``: of the state; ``residual_mean``, ``residual_std``: of the
    one-step residual ``x_{t+step} - x_t``; physical units of each channel.
    ``latitude``, ``longitude``: the grid they were computed on (degrees);
    ``step``: the time step of the residual. Construction raises, naming the
    channel, if a std is not finite or is "zero" (<= 1e-6 |mean|, i.e. below
    float32 resolution of the field).

    ``climatology`` (channel, latitude, longitude): the training split's time
    mean per grid point, physical units (None in statistics saved before it
    existed). ``static_fields`` (static_channel, latitude, longitude): the
    store's static fields, each normalised to area-weighted mean 0 and std 1
    (a constant field becomes zeros), float32; None without any.
    """

    mean: xr.DataArray
    std: xr.DataArray
    residual_mean: xr.DataArray
    residual_std: xr.DataArray
    latitude: np.ndarray
    longitude: np.ndarray
    step: np.timedelta64
    climatology: xr.DataArray | None = None
    static_fields: xr.DataArray | None = None

    def __post_init__(self):
        for moment, std, mean in (("state", self.std, self.mean), ("residual", self.residual_std, self.residual_mean)):
            for name, s, m in zip(self.channel_names, std.values, mean.values):
                if not (np.isfinite(s) and np.isfinite(m)):
                    raise ValueError(f"Channel {name!r}: {moment} statistics are not finite (NaN or inf in the data?)")
                if not s > 1e-6 * abs(m):
                    raise ValueError(
                        f"Channel {name!r}: the {moment} has zero standard deviation over the training split "
                        "(a constant field cannot be normalised). Remove its variable from DatasetConfig.variables."
                    )

    @property
    def channel_names(self) -> list[str]:
        return [str(c) for c in self.mean["channel"].values]

    @property
    def static_channel_names(self) -> list[str]:
        """The condition's static channels: sin/cos of latitude and longitude, then the static fields."""
        extra = [] if self.static_fields is None else [str(c) for c in self.static_fields["static_channel"].values]
        return [*STATIC_CHANNELS, *extra]

    @property
    def variables(self) -> tuple[str, ...]:
        """The source variables, in channel order."""
        return tuple(str(v) for v in dict.fromkeys(self.mean["variable"].values))

    def climatology_state(self) -> xr.Dataset:
        """:attr:`climatology` in the input schema (variables with ``level``, ``units``): the training split's time mean."""
        if self.climatology is None:
            raise ValueError("These statistics were saved without a climatology; delete them from the cache to recompute.")
        return from_channels(self.climatology)

    def to_dataset(self) -> xr.Dataset:
        """All statistics in one Dataset (for netCDF)."""
        optional = {name: getattr(self, name) for name in ("climatology", "static_fields") if getattr(self, name) is not None}
        ds = xr.Dataset(
            {"mean": self.mean, "std": self.std, "residual_mean": self.residual_mean, "residual_std": self.residual_std}
            | {name: da.drop_vars(SPATIAL_DIMS, errors="ignore") for name, da in optional.items()}
        )
        ds = ds.assign_coords(latitude=("latitude", self.latitude), longitude=("longitude", self.longitude))
        return ds.assign_attrs(step_seconds=float(self.step / np.timedelta64(1, "s")))

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> NormStats:
        """Inverse of :meth:`to_dataset`."""
        chan = ds.drop_vars(["latitude", "longitude"])
        return cls(
            mean=chan["mean"],
            std=chan["std"],
            residual_mean=chan["residual_mean"],
            residual_std=chan["residual_std"],
            latitude=ds["latitude"].values,
            longitude=ds["longitude"].values,
            step=np.timedelta64(round(float(ds.attrs["step_seconds"]) * 1e9), "ns"),
            **{name: ds[name] for name in ("climatology", "static_fields") if name in ds},
        )

    def save(self, path: Path) -> None:
        self.to_dataset().to_netcdf(path)

    @classmethod
    def load(cls, path: Path) -> NormStats:
        with xr.open_dataset(path) as ds:
            return cls.from_dataset(ds.load())


def compute_norm_stats(
    ds: xr.Dataset,
    variables: Sequence[str],
    static_variables: Sequence[str] = (),
    where: str = "dataset",
    in_memory: bool | None = None,
    store=None,
) -> NormStats:
    """Area-weighted statistics of state and one-step residual over all of ``ds``, and its static fields.

    Pass only the training split. The world's data, if it fits in memory
    (:func:`~druids.data.streaming.fits_in_memory`), is reduced by dask in
    float64; a store's or larger data in one streaming pass over time blocks
    (:func:`~druids.data.streaming.streaming_moments`, same moments to float64
    rounding; faster than dask on stores with one time per chunk). ``in_memory``
    forces the choice. NaNs propagate into the statistics and raise.
    ``static_variables``: fields of ``ds`` without time (or at their first time)
    to normalise (:func:`normalised_static`). ``where`` names the data in errors;
    ``store``: the zarr store ``ds`` was read from, for the streaming pass to read directly.
    """
    step = time_step(ds["time"].values)
    x = to_channels(ds, variables)
    if (fits_in_memory(x) and store is None) if in_memory is None else in_memory:
        moments = _dask_moments(x)
    else:
        coords = {name: x[name] for name in ("channel", "variable", "level", "units")}
        computed = streaming_moments(x, where, store=store)
        moments = [xr.DataArray(computed[name], dims="channel", coords=coords) for name in ("mean", "std", "residual_mean", "residual_std")]
        moments.append(xr.DataArray(computed["climatology"], dims=x.dims[1:], coords={**coords, **{d: x[d] for d in SPATIAL_DIMS}}))
    static = normalised_static(ds, static_variables)
    climatology = moments[4].rename("climatology")
    return NormStats(*moments[:4], ds["latitude"].values, ds["longitude"].values, step, climatology, static)


def _dask_moments(channels: xr.DataArray) -> list[xr.DataArray]:
    """Mean, std, residual mean, residual std (channel) and time mean (channel, lat, lon) in one dask compute."""
    x = channels.astype("float64")
    residual = x.isel(time=slice(1, None)) - x.isel(time=slice(None, -1)).assign_coords(time=x["time"].values[1:])
    weights = area_weights(x["latitude"])
    dims = ("time", *SPATIAL_DIMS)
    moments = [
        x.weighted(weights).mean(dims, skipna=False),
        x.weighted(weights).std(dims, skipna=False),
        residual.weighted(weights).mean(dims, skipna=False),
        residual.weighted(weights).std(dims, skipna=False),
        x.mean("time", skipna=False),
    ]
    return list(dask.compute(*moments))


def normalised_static(ds: xr.Dataset, names: Sequence[str]) -> xr.DataArray | None:
    """The static fields ``names`` of ``ds``, each minus its area-weighted mean over its area-weighted std
    (a constant field, e.g. flat orography, becomes zeros); dims (static_channel, latitude, longitude), float32."""
    if not names:
        return None
    weights = area_weights(ds["latitude"])
    fields = []
    for name in names:
        field = ds[name].isel(time=0, drop=True) if "time" in ds[name].dims else ds[name]
        field = field.reset_coords(drop=True).astype("float64").load()
        std = float(field.weighted(weights).std(SPATIAL_DIMS))
        anomaly = field - field.weighted(weights).mean(SPATIAL_DIMS)
        fields.append(anomaly / std if std > 0 else anomaly * 0.0)
    out = xr.concat(fields, dim="static_channel").assign_coords(static_channel=list(names))
    return out.transpose("static_channel", *SPATIAL_DIMS).astype(np.float32)


def static_condition(stats: NormStats) -> np.ndarray:
    """The condition's static channels (:attr:`NormStats.static_channel_names`), float32 (S, latitude, longitude)."""
    static = static_features(stats.latitude, stats.longitude).values
    if stats.static_fields is None:
        return static
    return np.concatenate([static, stats.static_fields.values.astype(np.float32)])


@dataclass(frozen=True)
class StatsKey:
    """Cache key of normalisation statistics: the data identity and what selects the training data."""

    data_id: str
    variables: tuple[str, ...]
    split_fractions: tuple[float, float, float]
    gap_days: float
    split_years: tuple[tuple[int, int], ...] | None = None
    static_variables: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: DatasetConfig, data_id: str, static_variables=()) -> StatsKey:
        return cls(
            data_id, tuple(config.variables), tuple(config.split_fractions), config.gap_days, config.split_years, tuple(static_variables)
        )


def data_fingerprint(ds: xr.Dataset) -> str:
    """A short hash of a dataset's identity, without reading its values.

    Covers variable names/dims/dtypes, coordinate values and global attributes
    (the world store's provenance: config hash, seed, revision). Two stores that
    differ only in data values with identical metadata get the same fingerprint;
    pass a stronger ``data_id`` to :func:`cached_norm_stats` when that matters.
    """
    digest = hashlib.sha256()
    schema = {name: [list(map(str, da.dims)), str(da.dtype)] for name, da in ds.data_vars.items()}
    digest.update(json.dumps([schema, ds.attrs], sort_keys=True, default=str).encode())
    for name in sorted(map(str, ds.coords)):
        digest.update(name.encode() + np.ascontiguousarray(ds[name].values).tobytes())
    return digest.hexdigest()[:16]


def cached_norm_stats(ds: xr.Dataset, config: DatasetConfig, data_id: str, root: Path | None = None) -> NormStats:
    """Statistics of the training split of ``ds``, from cache or computed and cached (netCDF).

    Keyed by :class:`StatsKey` (``data_id`` + variables + split settings +
    static fields); ``data_id`` identifies the store, e.g. :func:`data_fingerprint`.
    The static fields are those of ``config.static_variables`` that ``ds`` has.
    """
    train = split_positions(ds["time"].values, config)["train"]
    static = [name for name in config.static_variables if name in ds.data_vars]
    held_suarez = config.source == "heldsuarez"
    where, store = ("Held–Suarez world", None) if held_suarez else (f"store {config.source}", config.source)
    return compute_or_load(
        "normstats",
        StatsKey.from_config(config, data_id, static),
        compute=lambda: compute_norm_stats(ds.isel(time=train), config.variables, static, where, store=store),
        save=NormStats.save,
        load=NormStats.load,
        suffix="nc",
        root=root,
    )


# ------------------------------------------------------------------ (de)normalising


def per_channel(da: xr.DataArray) -> np.ndarray:
    """A channel statistic as an array shaped ``(channel, 1, 1)`` for broadcasting."""
    return da.values[:, None, None]


def normalise_state(channels: xr.DataArray, stats: NormStats) -> xr.DataArray:
    """``(x - mean) / std`` for a channel stack from :func:`to_channels` (any leading dims)."""
    check_channels(list(map(str, channels["channel"].values)), stats)
    normalised = (channels - per_channel(stats.mean)) / per_channel(stats.std)
    return normalised.astype(_float_dtype(channels))


def check_channels(names: list[str], stats: NormStats) -> None:
    if names != stats.channel_names:
        raise ValueError(
            f"Channels {names} do not match the normalisation statistics' channels {stats.channel_names}; "
            "recompute the statistics for these variables."
        )


def check_grid(latitude, longitude, stats: NormStats) -> None:
    """Error unless the grid (degrees) is the one the statistics were computed on."""
    for name, ours, theirs in (("latitude", latitude, stats.latitude), ("longitude", longitude, stats.longitude)):
        ours = np.asarray(ours)
        if ours.shape != theirs.shape or not np.allclose(ours, theirs, atol=1e-6):
            raise ValueError(
                f"The data's {name} grid ({ours.size} points) differs from the normalisation statistics' grid "
                f"({theirs.size} points); recompute the statistics on this grid."
            )


def _numpy(x) -> np.ndarray:
    """A tensor (any device, any float dtype) or array as a float numpy array."""
    if torch.is_tensor(x):
        x = x.detach().cpu()
        return (x if x.dtype == torch.float64 else x.float()).numpy()
    return np.asarray(x)


def _wrap(data: np.ndarray, stats: NormStats, dims: Sequence[str] | None, coords: Mapping | None) -> xr.DataArray:
    """``data`` (..., channel, latitude, longitude) as a DataArray with the statistics' channel coordinates.

    ``dims`` names the leading dims (default: none for 3-D data, ``("time",)`` for 4-D).
    """
    n_lead = data.ndim - 3
    if dims is None:
        dims = ("time",) if n_lead == 1 else ()
    if n_lead < 0 or len(dims) != n_lead:
        raise ValueError(
            f"Array of shape {data.shape} has {n_lead} leading dims before (channel, latitude, longitude); "
            f"name them with dims=(...), got {tuple(dims)}"
        )
    expected = (len(stats.channel_names), stats.latitude.size, stats.longitude.size)
    if data.shape[-3:] != expected:
        raise ValueError(f"Trailing shape {data.shape[-3:]} does not match (channel, latitude, longitude) = {expected}")
    channel_coords = {name: ("channel", stats.mean[name].values) for name in ("variable", "level", "units")}
    return xr.DataArray(
        data,
        dims=(*dims, "channel", *SPATIAL_DIMS),
        coords={
            **(coords or {}),
            **channel_coords,
            "channel": stats.channel_names,
            "latitude": stats.latitude,
            "longitude": stats.longitude,
        },
    )


def _float_dtype(*arrays) -> np.dtype:
    return np.result_type(*(a.dtype for a in arrays), np.float32)


def denormalise_state(
    x, stats: NormStats, dims: Sequence[str] | None = None, coords: Mapping | None = None
) -> xr.Dataset:
    """A normalised state ``(..., channel, latitude, longitude)`` (tensor or array) in physical units.

    Returns a Dataset in the input schema. ``dims`` names leading dims (default
    ``("time",)`` for 4-D input), ``coords`` optionally gives their values.
    """
    x = _numpy(x)
    phys = (x * per_channel(stats.std) + per_channel(stats.mean)).astype(_float_dtype(x))
    return from_channels(_wrap(phys, stats, dims, coords))


def residual_to_state(
    prev, residual, stats: NormStats, dims: Sequence[str] | None = None, coords: Mapping | None = None
) -> xr.Dataset:
    """The next state ``x_t + residual * residual_std + residual_mean`` in physical units.

    ``prev`` is either the physical state at t as a Dataset in the input schema
    (any leading dims) or the *normalised* state as tensor/array
    ``(..., channel, latitude, longitude)``. ``residual`` is the normalised
    residual (model output), tensor or array; leading dims broadcast against
    ``prev``'s (e.g. ``dims=("member", "time")`` for an ensemble from one
    ``time`` of states). ``dims`` names the residual's leading dims (default:
    those of a Dataset ``prev``, else as in :func:`denormalise_state`), ``coords``
    optionally gives their values. A ``time`` coordinate in the result is advanced
    by one step: it is the valid time of the new state.
    """
    residual = _numpy(residual)
    increment = residual * per_channel(stats.residual_std) + per_channel(stats.residual_mean)
    if isinstance(prev, xr.Dataset):
        prev_channels = to_channels(prev, stats.variables)
        check_channels(list(map(str, prev_channels["channel"].values)), stats)
        check_grid(prev["latitude"].values, prev["longitude"].values, stats)
        if dims is None:
            dims = prev_channels.dims[:-3]
        increment = _wrap(increment.astype(_float_dtype(residual)), stats, dims, coords)
        increment = increment.drop_vars(["variable", "level", "units", *SPATIAL_DIMS])  # prev's coords win
        new = increment + prev_channels  # increment's dims first
        new = new.transpose(..., "channel", *SPATIAL_DIMS).astype(_float_dtype(residual, prev_channels))
    else:
        prev = _numpy(prev)
        phys = prev * per_channel(stats.std) + per_channel(stats.mean) + increment
        new = _wrap(phys.astype(_float_dtype(prev, residual)), stats, dims, coords)
    if "time" in new.coords:
        new = new.assign_coords(time=new["time"] + stats.step)
    return from_channels(new)

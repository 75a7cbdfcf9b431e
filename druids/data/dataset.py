"""From a gridded state store to the model's (condition, target) pairs, and back.

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

Normalisation follows GenCast: the state is normalised by per-channel mean and
std; the target is the one-step residual ``x_{t+1} - x_t`` normalised by the
residual's own per-channel mean and std. All statistics are area-weighted
(cos latitude), population (ddof=0) moments over time, latitude and longitude
of the *training split only*.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import torch
import xarray as xr

from druids.cache import compute_or_load
from druids.config import DatasetConfig

SPATIAL_DIMS = ("latitude", "longitude")
SPLITS = ("train", "val", "test")
STATIC_CHANNELS = ("sin_lat", "cos_lat", "sin_lon", "cos_lon")


# ----------------------------------------------------------------------------- grid


def area_weights(latitude) -> xr.DataArray:
    """Area weights cos(latitude), normalised to mean 1 over ``latitude``.

    ``latitude`` in degrees (array-like or DataArray); returns dims ``(latitude,)``.
    On a Gaussian grid this approximates the Gaussian quadrature weights
    (relative error < 1 % at 32 latitudes), which is the WeatherBench convention.
    """
    if not isinstance(latitude, xr.DataArray):
        latitude = np.asarray(latitude)
        latitude = xr.DataArray(latitude, dims="latitude", coords={"latitude": latitude})
    lat = latitude.rename("latitude")
    weights = np.cos(np.deg2rad(lat.astype("float64")))
    return (weights / weights.mean()).rename("area_weight")


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


# ------------------------------------------------------------------------------ time


def time_step(times) -> np.timedelta64:
    """The constant spacing of ``times`` (datetime64); error if irregular or not increasing."""
    times = np.asarray(times, dtype="datetime64[ns]")
    if times.size < 2:
        raise ValueError(f"Need at least 2 times to define a time step, got {times.size}")
    steps = np.diff(times)
    if not (steps == steps[0]).all() or steps[0] <= np.timedelta64(0, "ns"):
        raise ValueError(
            "Times must be strictly increasing and regularly spaced; found steps (hours) "
            f"{np.unique(steps / np.timedelta64(1, 'h')).tolist()}. Select a regular time range."
        )
    return steps[0]


def time_splits(times, fractions: Sequence[float], gap_days: float, min_times: int = 2) -> dict[str, slice]:
    """Contiguous train/val/test blocks of positions in ``times``, in that order.

    ``fractions`` (three, summing to 1) share the times left after dropping two
    gaps of ``ceil(gap_days / step)`` times, one between train and val and one
    between val and test. Each block must hold at least ``min_times`` times.
    Returns ``{"train": slice, "val": slice, "test": slice}`` for ``isel(time=...)``.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) <= 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"split_fractions must be three positive numbers summing to 1, got {fractions}")
    step = time_step(times)
    n_gap = math.ceil(np.timedelta64(round(gap_days * 86400e9), "ns") / step)
    n_use = len(times) - 2 * n_gap
    n_train = round(fractions[0] * n_use)
    n_val = round(fractions[1] * n_use)
    sizes = (n_train, n_val, n_use - n_train - n_val)
    if min(sizes) < min_times:
        raise ValueError(
            f"Data too short to split: {len(times)} times minus 2 gaps of {n_gap} give blocks of {sizes} times "
            f"for {SPLITS}; each needs at least {min_times}. Use a longer dataset, a smaller gap_days or other fractions."
        )
    starts = (0, n_train + n_gap, n_train + n_val + 2 * n_gap)
    return {name: slice(start, start + size) for name, start, size in zip(SPLITS, starts, sizes)}


# ---------------------------------------------------------------------- statistics


@dataclass(frozen=True, eq=False)
class NormStats:
    """Per-channel normalisation statistics, each a DataArray over ``channel``.

    ``mean``, ``std``: of the state; ``residual_mean``, ``residual_std``: of the
    one-step residual ``x_{t+step} - x_t``; physical units of each channel.
    ``latitude``, ``longitude``: the grid they were computed on (degrees);
    ``step``: the time step of the residual. Construction raises, naming the
    channel, if a std is not finite or is "zero" (<= 1e-6 |mean|, i.e. below
    float32 resolution of the field).
    """

    mean: xr.DataArray
    std: xr.DataArray
    residual_mean: xr.DataArray
    residual_std: xr.DataArray
    latitude: np.ndarray
    longitude: np.ndarray
    step: np.timedelta64

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
    def variables(self) -> tuple[str, ...]:
        """The source variables, in channel order."""
        return tuple(str(v) for v in dict.fromkeys(self.mean["variable"].values))

    def to_dataset(self) -> xr.Dataset:
        """All statistics in one Dataset (for netCDF)."""
        ds = xr.Dataset(
            {"mean": self.mean, "std": self.std, "residual_mean": self.residual_mean, "residual_std": self.residual_std}
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
        )

    def save(self, path: Path) -> None:
        self.to_dataset().to_netcdf(path)

    @classmethod
    def load(cls, path: Path) -> NormStats:
        with xr.open_dataset(path) as ds:
            return cls.from_dataset(ds.load())


def compute_norm_stats(ds: xr.Dataset, variables: Sequence[str]) -> NormStats:
    """Area-weighted statistics of state and one-step residual over all of ``ds``.

    Pass only the training split. Computed lazily in float64 (one dask compute);
    NaNs propagate into the statistics and raise.
    """
    step = time_step(ds["time"].values)
    x = to_channels(ds, variables).astype("float64")
    residual = x.isel(time=slice(1, None)) - x.isel(time=slice(None, -1)).assign_coords(time=x["time"].values[1:])
    weights = area_weights(ds["latitude"])
    dims = ("time", *SPATIAL_DIMS)
    moments = [
        x.weighted(weights).mean(dims, skipna=False),
        x.weighted(weights).std(dims, skipna=False),
        residual.weighted(weights).mean(dims, skipna=False),
        residual.weighted(weights).std(dims, skipna=False),
    ]
    mean, std, residual_mean, residual_std = dask.compute(*moments)
    return NormStats(
        mean, std, residual_mean, residual_std, ds["latitude"].values, ds["longitude"].values, step
    )


@dataclass(frozen=True)
class StatsKey:
    """Cache key of normalisation statistics: the data identity and what selects the training data."""

    data_id: str
    variables: tuple[str, ...]
    split_fractions: tuple[float, float, float]
    gap_days: float

    @classmethod
    def from_config(cls, config: DatasetConfig, data_id: str) -> StatsKey:
        return cls(data_id, tuple(config.variables), tuple(config.split_fractions), config.gap_days)


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

    Keyed by :class:`StatsKey` (``data_id`` + variables + split settings);
    ``data_id`` identifies the store, e.g. :func:`data_fingerprint`.
    """
    train = time_splits(ds["time"].values, config.split_fractions, config.gap_days)["train"]
    return compute_or_load(
        "normstats",
        StatsKey.from_config(config, data_id),
        compute=lambda: compute_norm_stats(ds.isel(time=train), config.variables),
        save=NormStats.save,
        load=NormStats.load,
        suffix="nc",
        root=root,
    )


# ------------------------------------------------------------------ (de)normalising


def _per_channel(da: xr.DataArray) -> np.ndarray:
    """A channel statistic as an array shaped ``(channel, 1, 1)`` for broadcasting."""
    return da.values[:, None, None]


def normalise_state(channels: xr.DataArray, stats: NormStats) -> xr.DataArray:
    """``(x - mean) / std`` for a channel stack from :func:`to_channels` (any leading dims)."""
    _check_channels(list(map(str, channels["channel"].values)), stats)
    normalised = (channels - _per_channel(stats.mean)) / _per_channel(stats.std)
    return normalised.astype(_float_dtype(channels))


def _check_channels(names: list[str], stats: NormStats) -> None:
    if names != stats.channel_names:
        raise ValueError(
            f"Channels {names} do not match the normalisation statistics' channels {stats.channel_names}; "
            "recompute the statistics for these variables."
        )


def _check_grid(latitude, longitude, stats: NormStats) -> None:
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
    phys = (x * _per_channel(stats.std) + _per_channel(stats.mean)).astype(_float_dtype(x))
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
    increment = residual * _per_channel(stats.residual_std) + _per_channel(stats.residual_mean)
    if isinstance(prev, xr.Dataset):
        prev_channels = to_channels(prev, stats.variables)
        _check_channels(list(map(str, prev_channels["channel"].values)), stats)
        _check_grid(prev["latitude"].values, prev["longitude"].values, stats)
        if dims is None:
            dims = prev_channels.dims[:-3]
        increment = _wrap(increment.astype(_float_dtype(residual)), stats, dims, coords)
        increment = increment.drop_vars(["variable", "level", "units", *SPATIAL_DIMS])  # prev's coords win
        new = increment + prev_channels  # increment's dims first
        new = new.transpose(..., "channel", *SPATIAL_DIMS).astype(_float_dtype(residual, prev_channels))
    else:
        prev = _numpy(prev)
        phys = prev * _per_channel(stats.std) + _per_channel(stats.mean) + increment
        new = _wrap(phys.astype(_float_dtype(prev, residual)), stats, dims, coords)
    if "time" in new.coords:
        new = new.assign_coords(time=new["time"] + stats.step)
    return from_channels(new)


# ------------------------------------------------------------------------- dataset


class ForecastDataset(torch.utils.data.Dataset):
    """(condition, target) float32 tensors for one time split.

    ``condition``: normalised states at t, t-step, ... (``config.history`` of
    them, most recent first) stacked on the channel axis, then the static
    channels of :func:`static_features`; shape ``(history * C + 4, lat, lon)``.
    ``target``: normalised residual ``(x_{t+step} - x_t - residual_mean) /
    residual_std``, shape ``(C, lat, lon)``. Samples exist for every t whose
    history and t+step lie inside the split. The split is loaded into memory
    (float32 numpy, physical units) when the dataset is built. ``times``: the
    sample times t; ``latitude``: the grid's latitudes (degrees).
    """

    def __init__(self, ds: xr.Dataset, stats: NormStats, split: str, config: DatasetConfig):
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; valid splits are {SPLITS}")
        self.history = config.history
        if self.history < 1:
            raise ValueError(f"DatasetConfig.history must be >= 1, got {self.history}")
        block = time_splits(ds["time"].values, config.split_fractions, config.gap_days, min_times=self.history + 1)
        part = ds.isel(time=block[split])
        self.channel_names = channel_names(part, config.variables)
        _check_channels(self.channel_names, stats)
        _check_grid(part["latitude"].values, part["longitude"].values, stats)
        if np.timedelta64(time_step(part["time"].values), "ns") != stats.step:
            raise ValueError(f"Data time step differs from the statistics' step {stats.step}")
        channels = to_channels(part, config.variables)
        self._x = channels.values.astype(np.float32)
        self._check_finite(channels["time"].values)
        self.times = part["time"].values[self.history - 1 : -1]
        self.latitude = part["latitude"].values
        hours = int(stats.step / np.timedelta64(1, "h"))
        self.condition_channel_names = [
            f"{name}:t-{lag * hours}h" for lag in range(self.history) for name in self.channel_names
        ] + list(STATIC_CHANNELS)
        self._static = static_features(part["latitude"].values, part["longitude"].values).values
        f32 = np.float32
        self._mean, self._std = _per_channel(stats.mean).astype(f32), _per_channel(stats.std).astype(f32)
        self._res_mean = _per_channel(stats.residual_mean).astype(f32)
        self._res_std = _per_channel(stats.residual_std).astype(f32)

    def _check_finite(self, times: np.ndarray) -> None:
        finite = np.isfinite(self._x).all(axis=(2, 3))
        if not finite.all():
            t, c = np.argwhere(~finite)[0]
            raise ValueError(f"NaN or inf in channel {self.channel_names[c]!r} at time {times[t]}")

    def __len__(self) -> int:
        return len(self.times)

    @property
    def residual_to_state(self) -> np.ndarray:
        """Residual std over state std per channel, (C,): a residual-unit change in normalised state units."""
        return (self._res_std / self._std).reshape(-1)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"Sample {i} out of range for {len(self)} samples")
        t = i % len(self) + self.history - 1
        states = [(self._x[t - lag] - self._mean) / self._std for lag in range(self.history)]
        condition = np.concatenate([*states, self._static])
        target = (self._x[t + 1] - self._x[t] - self._res_mean) / self._res_std
        return torch.from_numpy(condition), torch.from_numpy(target)

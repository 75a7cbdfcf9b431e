"""Reading a store at real size: in memory or not, time blocks for one streaming pass, windows for samples.

64 x 32 ERA5 over 40 years with ~70 channels is tens of GB, more than memory.
A lazy (dask-backed) channel stack (:func:`druids.data.channels.to_channels`)
is then read in pieces straight from its zarr chunks: whole time blocks for the
one pass that computes the normalisation statistics (:func:`streaming_moments`),
and a few consecutive times per training sample (:func:`window_reader`).
Data smaller than :data:`IN_MEMORY_BYTES` is loaded at once instead, which is
faster for the small Held–Suarez world. A chunk that cannot be read raises
:class:`druids.data.era5.StoreError` naming the store and the variable.

When the channels are the store's own values (selected, reordered, but not
regridded), :class:`StoreWindows` reads them through xarray's lazy indexing
straight from the zarr arrays: about 1 ms per variable and window, against
about 10 ms through a dask graph (``bench/data_streaming.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import dask
import numpy as np
import xarray as xr

from druids.data.era5 import StoreError, read, standard_names
from druids.sphere import area_weights

#: ``reader(start, stop)`` -> float32 (stop - start, channel, latitude, longitude): time positions of a channel stack.
Reader = Callable[[int, int], np.ndarray]

#: Float32 bytes up to which a split is loaded into memory rather than streamed.
IN_MEMORY_BYTES = 1 << 30
#: Float32 bytes of one time block of the streaming statistics pass.
BLOCK_BYTES = 1 << 27


def float32_bytes(channels: xr.DataArray) -> int:
    """Bytes of ``channels`` as float32 (without reading it)."""
    return int(np.prod(channels.shape)) * 4


def fits_in_memory(channels: xr.DataArray, limit: int | None = None) -> bool:
    """Whether ``channels`` is at most ``limit`` (default :data:`IN_MEMORY_BYTES`) float32 bytes."""
    return float32_bytes(channels) <= (IN_MEMORY_BYTES if limit is None else limit)


def read_times(channels: xr.DataArray, times: slice, where: str) -> np.ndarray:
    """``channels`` (time, channel, latitude, longitude) at positions ``times`` as float32 numpy, read now.

    Read in this thread (dask's synchronous scheduler: the callers run their own
    threads). If the read fails, each variable is read alone so that the error
    (:class:`~druids.data.era5.StoreError`) names the one with the bad chunk.
    """
    part = channels.isel(time=times)
    try:
        with dask.config.set(scheduler="synchronous"):
            return np.asarray(part.values, dtype=np.float32)
    except Exception:
        variables = part["variable"].values
        for name in dict.fromkeys(variables):
            with dask.config.set(scheduler="synchronous"):
                read(part.isel(channel=np.flatnonzero(variables == name)).data, where, str(name))
        raise


def time_blocks(channels: xr.DataArray, block_bytes: int | None = None) -> list[slice]:
    """Consecutive time blocks of about ``block_bytes`` (default :data:`BLOCK_BYTES`) float32 bytes each,
    aligned to the time chunks."""
    block_bytes = BLOCK_BYTES if block_bytes is None else block_bytes
    n_times = channels.sizes["time"]
    per_time = max(1, float32_bytes(channels) // max(1, n_times))
    chunk = channels.chunksizes["time"][0] if channels.chunks else 1
    size = max(chunk, block_bytes // per_time // chunk * chunk)
    return [slice(start, min(start + size, n_times)) for start in range(0, n_times, size)]


class _Moments:
    """Area-weighted mean and (population) variance per channel, accumulated block by block.

    Sums are of ``x - shift`` with the first block's mean as ``shift`` (float64),
    so that variance does not cancel catastrophically when mean >> std. Each
    block is reduced over time and longitude first, then weighted over latitude
    (a matrix product), without weighted copies of the block.
    """

    def __init__(self, weights: np.ndarray):
        self.weights = weights  # (H,), mean 1 over latitude
        self.shift = None
        self.total = self.first = self.second = 0.0

    def add(self, x: np.ndarray) -> None:
        """Add states ``x`` (time, channel, H, W), float64 (overwritten)."""
        w, per_time = self.weights, self.weights.sum() * x.shape[3]
        if self.shift is None:
            self.shift = (x.sum(axis=(0, 3)) @ w) / (x.shape[0] * per_time)
        x -= self.shift[:, None, None]
        self.total += x.shape[0] * per_time
        self.first = self.first + x.sum(axis=(0, 3)) @ w
        x *= x
        self.second = self.second + x.sum(axis=(0, 3)) @ w

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.first / self.total
        return self.shift + mean, np.sqrt(np.maximum(self.second / self.total - mean**2, 0.0))


def _blocks(channels: xr.DataArray, reader: Reader, block_bytes: int | None) -> Iterator[np.ndarray]:
    for block in time_blocks(channels, block_bytes):
        yield reader(block.start, block.stop).astype(np.float64)


def streaming_moments(
    channels: xr.DataArray, where: str, block_bytes: int | None = None, store: str | None = None
) -> dict[str, np.ndarray]:
    """Normalisation moments of ``channels`` (time, channel, latitude, longitude) in one pass over its time blocks.

    Returns float64 arrays: ``mean``, ``std`` (C,) of the state, ``residual_mean``,
    ``residual_std`` (C,) of the one-step residual ``x[t+1] - x[t]`` (also across
    block boundaries), area-weighted (:func:`druids.sphere.area_weights`)
    population moments over time and grid as :func:`~druids.data.normalisation.compute_norm_stats`;
    ``climatology`` (C, H, W): the time mean per grid point. Memory: a few blocks
    of ``block_bytes``. ``store``: the zarr store ``channels`` comes from, read
    directly if it can be (:func:`window_reader`).
    """
    weights = area_weights(channels["latitude"].values).values
    state, residual = _Moments(weights), _Moments(weights)
    time_sum, n_times, last = 0.0, 0, None
    for x in _blocks(channels, window_reader(channels, where, store), block_bytes):
        if last is not None:
            residual.add(x[:1] - last)  # the step across the block boundary
        if x.shape[0] > 1:
            residual.add(x[1:] - x[:-1])
        time_sum, n_times, last = time_sum + x.sum(axis=0), n_times + x.shape[0], x[-1:].copy()
        state.add(x)
    if n_times < 2:
        raise StoreError(f"The {where} has {n_times} time(s) to compute statistics from; at least 2 are needed.")
    mean, std = state.mean_std()
    residual_mean, residual_std = residual.mean_std()
    return {"mean": mean, "std": std, "residual_mean": residual_mean, "residual_std": residual_std, "climatology": time_sum / n_times}


def check_finite(channels: xr.DataArray, where: str, store=None, block_bytes: int | None = None) -> None:
    """Read ``channels`` block by block (:func:`window_reader`): a NaN or inf raises
    :class:`~druids.data.era5.StoreError` naming the channel and how many values, an unreadable chunk its variable."""
    reader, bad = window_reader(channels, where, store), 0
    for block in time_blocks(channels, block_bytes):
        bad = bad + (~np.isfinite(reader(block.start, block.stop))).sum(axis=(0, 2, 3))
    if np.any(bad):
        detail = "; ".join(f"{name}: {n}" for name, n in zip(channels["channel"].values, bad) if n)
        raise StoreError(f"NaNs or infs in the {where} (channel: values) {detail}; select other times/levels or fill them first")


class WindowReader:
    """Consecutive times of a lazy channel stack, read through its dask graph (any source, regridded too).

    ``reader(start, stop)`` -> float32 (stop - start, channel, latitude, longitude).
    The dask graph is built once; each call reads only the chunks it touches.
    """

    def __init__(self, channels: xr.DataArray, where: str):
        self.channels, self.where = channels, where
        self._data = channels.data

    def __call__(self, start: int, stop: int) -> np.ndarray:
        try:
            with dask.config.set(scheduler="synchronous"):
                return np.asarray(self._data[start:stop].compute(), dtype=np.float32)
        except Exception:
            return read_times(self.channels, slice(start, stop), self.where)


class StoreWindows:
    """Consecutive times of a channel stack read straight from its zarr store, without a dask graph.

    For channels whose times, levels, latitudes and longitudes are all values of
    the store's own coordinates (any order, any subset: time ranges, sub-sampled
    hours, descending latitudes, longitudes from -180): each variable's window is
    one lazily indexed read (CF-decoded by xarray), then put in the channels'
    order in memory. :meth:`of` returns None when the channels are not the
    store's values (regridded, or changed after opening: its first and last
    windows are compared with the dask graph's). Same values as the dask graph,
    bit for bit, for data as :func:`druids.data.source.open_dataset` opens it.
    """

    def __init__(self, raw: xr.Dataset, channels: xr.DataArray, where: str):
        self.where = where
        self.time = _positions(raw["time"].values, channels["time"].values)
        grid = {
            "latitude": _positions(raw["latitude"].values, channels["latitude"].values),
            "longitude": _positions(raw["longitude"].values % 360.0, channels["longitude"].values),
        }
        self.parts = []
        for name in dict.fromkeys(map(str, channels["variable"].values)):
            da = raw[name].transpose("time", *(["level"] if "level" in raw[name].dims else []), "latitude", "longitude")
            take = [grid["latitude"], grid["longitude"]]
            if "level" in da.dims:
                take.insert(0, _positions(raw["level"].values, channels["level"].values[channels["variable"].values == name]))
            self.parts.append((name, da.variable, tuple(_as_slice(index, reverse=True) for index in take)))

    @classmethod
    def of(cls, channels: xr.DataArray, store, where: str) -> StoreWindows | None:
        """The direct reader of ``channels`` from ``store``, or None if they are not the store's values."""
        try:
            raw = standard_names(xr.open_dataset(store, engine="zarr", chunks=None, cache=False), where)
            direct = cls(raw, channels, where)
        except (KeyError, ValueError, OSError):
            return None
        through_dask = WindowReader(channels, where)
        n = channels.sizes["time"]
        for start in (0, max(0, n - 2)):
            if not np.array_equal(direct(start, start + 2), through_dask(start, start + 2), equal_nan=True):
                return None
        return direct

    def __call__(self, start: int, stop: int) -> np.ndarray:
        times = _as_slice(self.time[start:stop])
        out = []
        for name, variable, take in self.parts:
            try:
                values = np.asarray(variable[times].values)
            except Exception as err:
                raise StoreError(
                    f"Cannot read variable {name!r} of the {self.where}: {type(err).__name__}: {err}. "
                    "A chunk of it is corrupted or unreadable; repair or re-download the store."
                ) from err
            for axis, index in enumerate(take, start=1):
                values = values[(slice(None),) * axis + (index,)]  # a view where the positions are a slice
            out.append(values.reshape(values.shape[0], -1, *values.shape[-2:]))
        return np.concatenate(out, axis=1).astype(np.float32, copy=False)


def _positions(values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions in ``values`` of each of ``wanted`` (exact matches); ValueError if one is missing."""
    order = np.argsort(values, kind="stable")
    found = np.clip(np.searchsorted(values[order], wanted), 0, values.size - 1)
    positions = order[found]
    if not np.array_equal(values[positions], wanted):
        raise ValueError("not the store's coordinate values")
    return positions


def _as_slice(positions: np.ndarray, reverse: bool = False):
    """``positions`` as a slice if they are evenly spaced and increasing (or, with ``reverse``, decreasing):
    a faster zarr read, a view in memory; else as they are."""
    if positions.size < 2:
        return slice(int(positions[0]), int(positions[0]) + 1) if positions.size else positions
    steps = np.diff(positions)
    if (steps == steps[0]).all() and (steps[0] > 0 or (reverse and steps[0] < 0)):
        stop = int(positions[-1]) + (1 if steps[0] > 0 else -1)
        return slice(int(positions[0]), None if stop < 0 else stop, int(steps[0]))
    return positions


def window_reader(channels: xr.DataArray, where: str, store=None) -> Reader:
    """The fastest reader of ``channels``: :class:`StoreWindows` from ``store`` if it can, else :class:`WindowReader`."""
    direct = None if store is None else StoreWindows.of(channels, store, where)
    return WindowReader(channels, where) if direct is None else direct

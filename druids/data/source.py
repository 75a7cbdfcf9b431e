"""The one door to the data: ``open_dataset(cfg) -> (dataset, stats)`` for the world or a WeatherBench2 store.

``DatasetConfig.source`` says where the states come from: ``"heldsuarez"``
(the default world of ``cfg.world``, generated on first use) or the path or
fsspec URL of a WeatherBench2-layout zarr store (read lazily by
:func:`druids.data.era5.open_wb2`: ``variables``, ``levels`` and
``time_range`` selected, sub-sampled to ``step_hours``, regridded to ``grid``,
with the ``static_variables`` it has). Chapters, training and sampling get
their data only from here, so every stage runs on either source; what only the
world has (oracle ensembles, its own climate runs) is asked through
:func:`is_held_suarez` and skipped, visibly, for a store (:func:`skip_unless_held_suarez`).
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from druids import runtime
from druids.config import Config, DatasetConfig
from druids.data import era5, heldsuarez, streaming
from druids.data.channels import to_channels
from druids.data.normalisation import NormStats, cached_norm_stats, data_fingerprint
from druids.data.splits import time_step

HELD_SUAREZ = "heldsuarez"


def is_held_suarez(cfg: Config) -> bool:
    """Whether ``cfg``'s data is the Held–Suarez world (which has oracles), not a WeatherBench2 store."""
    return cfg.dataset.source == HELD_SUAREZ


def skip_unless_held_suarez(cfg: Config, what: str) -> bool:
    """True for the Held–Suarez world; for a store, print that ``what`` is skipped (and why) and return False.

    For chapters: ``if source.skip_unless_held_suarez(cfg, "the oracle ensembles"): ...`` leaves a
    visible line in the executed notebook instead of silently doing nothing.
    """
    if is_held_suarez(cfg):
        return True
    print(f"Skipped on {cfg.dataset.source}: {what} (only the Held–Suarez world, a simulator that can be re-run, has them).")
    return False


def open_store(cfg: Config, progress: bool = True) -> xr.Dataset:
    """The states of ``cfg.dataset.source``, lazily (dask), in the layout of :mod:`druids.data.channels`."""
    truncation = cfg.dataset.spectral_truncation
    if is_held_suarez(cfg):
        if truncation is not None and truncation != cfg.world.truncation:
            raise ValueError(
                f"DatasetConfig.spectral_truncation={truncation} differs from the world's truncation "
                f"T{cfg.world.truncation}; set it to {cfg.world.truncation} (or None to leave noise and samples unprojected)."
            )
        return heldsuarez.open_world(cfg.world, progress=progress)
    if truncation is not None:
        raise ValueError(
            f"DatasetConfig.spectral_truncation={truncation} needs the Held–Suarez world's Gaussian grid; "
            f"set it to None for the WeatherBench2 store {cfg.dataset.source!r}."
        )
    return open_wb2_store(cfg.dataset)


def open_wb2_store(config: DatasetConfig) -> xr.Dataset:
    """The WeatherBench2-layout store ``config.source`` as ``config`` selects it, lazily.

    Variables, levels and ``time_range`` are selected; a finer time step is
    sub-sampled to ``step_hours`` (:func:`subsample_times`); the static fields
    of ``static_variables`` that the store has join as time-less variables
    (a missing one is reported with a warning); everything is regridded
    conservatively to the ``grid`` equiangular grid if the store's grid differs.
    A selection that fits in memory is read once now to check for NaNs and
    unreadable chunks; a larger one is checked as it streams.
    """
    times = None if config.time_range is None else slice(*config.time_range)
    ds = era5.open_wb2(config.source, config.variables, levels=config.levels, times=times, check_nans=False)
    ds = subsample_times(ds, config.step_hours)
    available = era5.store_variables(config.source)
    missing = [name for name in config.static_variables if name not in available]
    if missing:
        warnings.warn(f"Static field(s) {missing} are not in the store {config.source}; the condition goes without them.", stacklevel=2)
    static = [name for name in config.static_variables if name in available]
    if static:
        fields = era5.open_wb2(config.source, static, check_nans=False)
        ds = ds.merge(fields.isel(time=0, drop=True) if "time" in fields.dims else fields.drop_vars("time", errors="ignore"))
    if config.grid is not None:
        target = era5.Grid.equiangular(*config.grid)
        if not _same_grid(era5.Grid.from_dataset(ds), target):
            ds = era5.regrid(ds, target)
    if ds.nbytes <= streaming.IN_MEMORY_BYTES:
        where = f"store {config.source}"
        streaming.check_finite(to_channels(ds, config.variables), where, config.source)
        era5.check_values(ds[static], where)
    return ds


def subsample_times(ds: xr.Dataset, step_hours: int) -> xr.Dataset:
    """``ds`` every ``step_hours`` hours at 00, ``step_hours``, ... UTC (ERA5 hourly -> 6-hourly); unchanged
    if already at that step. Errors if ``step_hours`` does not divide 24, or the store's step is irregular,
    coarser, or does not divide it."""
    if 24 % step_hours:
        raise ValueError(f"DatasetConfig.step_hours={step_hours} must divide 24 (the steps start at 00 UTC every day).")
    step = time_step(ds["time"].values)
    target = np.timedelta64(step_hours, "h")
    if step == target:
        return ds
    if step > target or target % step:
        raise era5.StoreError(
            f"The store's time step ({step / np.timedelta64(1, 'h'):g} h) cannot be sub-sampled to "
            f"DatasetConfig.step_hours={step_hours}; choose a multiple of the store's step."
        )
    times = ds["time"].values
    on_step = (times - times.astype("datetime64[D]")) % target == np.timedelta64(0, "ns")
    return ds.isel(time=np.flatnonzero(on_step))


def _same_grid(a: era5.Grid, b: era5.Grid) -> bool:
    return a.shape == b.shape and np.allclose(a.latitude, b.latitude) and np.allclose(a.longitude, b.longitude)


def zonal_climate(cfg: Config, ds: xr.Dataset, stats: NormStats, variables: list[str]) -> xr.Dataset:
    """The zonal- and time-mean climate of ``variables``, dims ``([level,] latitude)``, loaded.

    The world: the mean over all of its saved times. A store: the zonal mean of
    the training split's time mean per grid point (``stats.climatology``, from
    the statistics' one pass), not a second pass over tens of GB.
    """
    if is_held_suarez(cfg):
        return ds[variables].mean(["time", "longitude"]).load()
    return stats.climatology_state()[variables].mean("longitude")


def open_dataset(cfg: Config, rank: int = 0, progress: bool = True) -> tuple[xr.Dataset, NormStats]:
    """The states of ``cfg`` and their normalisation statistics (generated or computed, and cached, if missing).

    Under ``torchrun`` rank 0 prepares them while the other processes wait.
    """
    with runtime.rank_zero_first(rank):
        ds = open_store(cfg, progress=progress and rank == 0)
        stats = cached_norm_stats(ds, cfg.dataset, data_fingerprint(ds))
    return ds, stats

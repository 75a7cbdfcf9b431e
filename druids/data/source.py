"""The one door to the data: ``open_dataset(cfg) -> (dataset, stats)`` for the world or a WeatherBench2 store.

``DatasetConfig.source`` says where the states come from: ``"heldsuarez"``
(the default world of ``cfg.world``, generated on first use) or the path or
fsspec URL of a WeatherBench2-layout zarr store (read by
:func:`druids.data.era5.open_wb2`, ``DatasetConfig.variables`` and
``levels`` selected). Chapters, training and sampling get their data only from
here, so every stage runs on either source.
"""

from __future__ import annotations

import xarray as xr

from druids import runtime
from druids.config import Config
from druids.data import era5, heldsuarez
from druids.data.normalisation import NormStats, cached_norm_stats, data_fingerprint

HELD_SUAREZ = "heldsuarez"


def is_held_suarez(cfg: Config) -> bool:
    """Whether ``cfg``'s data is the Held–Suarez world (which has oracles), not a WeatherBench2 store."""
    return cfg.dataset.source == HELD_SUAREZ


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
    return era5.open_wb2(cfg.dataset.source, cfg.dataset.variables, levels=cfg.dataset.levels)


def open_dataset(cfg: Config, rank: int = 0, progress: bool = True) -> tuple[xr.Dataset, NormStats]:
    """The states of ``cfg`` and their normalisation statistics (generated or computed, and cached, if missing).

    Under ``torchrun`` rank 0 prepares them while the other processes wait.
    """
    with runtime.rank_zero_first(rank):
        ds = open_store(cfg, progress=progress and rank == 0)
        stats = cached_norm_stats(ds, cfg.dataset, data_fingerprint(ds))
    return ds, stats

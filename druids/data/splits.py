"""The time axis: the regular step of a store and its train/validation/test blocks.

Splits are contiguous time blocks in the order train, val, test, separated by
gaps, so that samples of different splits are not correlated
(``DatasetConfig.split_fractions``, ``gap_days``), or given by calendar years
(``DatasetConfig.split_years``, as WeatherBench2 splits ERA5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from druids.config import DatasetConfig

SPLITS = ("train", "val", "test")


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


def year_splits(times, years: Sequence[tuple[int, int]], min_times: int = 2) -> dict[str, slice]:
    """Train/val/test blocks of positions in ``times`` by calendar year: ``years`` holds three inclusive
    (first, last) year ranges, in that order and not overlapping. Each block must hold at least ``min_times``."""
    time_step(times)
    year = pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]")).year.to_numpy()
    blocks, previous_last = {}, -np.inf
    for name, (first, last) in zip(SPLITS, years, strict=True):
        if not previous_last < first <= last:
            raise ValueError(f"split_years must be three (first, last) year ranges in order without overlap, got {years}")
        inside = np.flatnonzero((year >= first) & (year <= last))
        if inside.size < min_times:
            raise ValueError(
                f"The {name} years {first}-{last} hold {inside.size} times (need {min_times}); the data covers "
                f"{year.min()}-{year.max()}. Fix DatasetConfig.split_years or time_range."
            )
        blocks[name], previous_last = slice(int(inside[0]), int(inside[-1]) + 1), last
    return blocks


def split_positions(times, config: DatasetConfig, min_times: int = 2) -> dict[str, slice]:
    """The split blocks of ``config``: by years (``split_years``) if given, else by fractions (:func:`time_splits`)."""
    if config.split_years is not None:
        return year_splits(times, config.split_years, min_times)
    return time_splits(times, config.split_fractions, config.gap_days, min_times)


def split(ds: xr.Dataset, config: DatasetConfig, name: str) -> xr.Dataset:
    """The times of ``ds`` in split ``name`` (``"train"``, ``"val"`` or ``"test"``) of ``config``, lazily."""
    if name not in SPLITS:
        raise ValueError(f"Unknown split {name!r}; valid splits are {SPLITS}")
    return ds.isel(time=split_positions(ds["time"].values, config)[name])


def forecast_window(ds: xr.Dataset, init_times, n_steps: int) -> xr.Dataset:
    """The states of ``ds`` at ``init_times`` and each of the ``n_steps`` steps after them, loaded.

    What verifies forecasts from ``init_times`` (``n_steps`` leads), read without
    loading the rest of a long split.
    """
    step = time_step(ds["time"].values)
    starts = np.asarray(init_times, dtype="datetime64[ns]")
    times = np.unique(starts[:, None] + np.arange(n_steps + 1) * step)
    return ds.sel(time=times).load()

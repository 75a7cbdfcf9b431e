"""The torch ``Dataset`` of (condition, target) pairs for one time split, and batching.

``condition``: normalised states at t, t-step, ... and the static channels;
``target``: the normalised one-step residual (GenCast style). Statistics from
:mod:`druids.data.normalisation`, channels from :mod:`druids.data.channels`.
A split that fits in memory is loaded once; a larger one (ERA5 at real size)
is read lazily, a window of consecutive times per sample, straight from the
store's chunks (:mod:`druids.data.streaming`); from a remote store (an fsspec
URL) :func:`collate` reads the samples of a batch in parallel threads, which
hide the network's latency (on local disk they only contend for the
interpreter: ``bench/data_streaming.py``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import xarray as xr

from druids.config import DatasetConfig
from druids.data.channels import channel_names, to_channels
from druids.data.normalisation import NormStats, check_channels, check_grid, per_channel, static_condition
from druids.data.splits import SPLITS, split_positions, time_step
from druids.data.streaming import fits_in_memory, window_reader

#: Threads that read the samples of a batch of a dataset streamed from a remote store.
READ_THREADS = 4


class ForecastDataset(torch.utils.data.Dataset):
    """(condition, target) float32 tensors for one time split.

    ``condition``: normalised states at t, t-step, ... (``config.history`` of
    them, most recent first) stacked on the channel axis, then the static
    channels (:func:`~druids.data.normalisation.static_condition`: sin/cos of
    latitude and longitude, and a store's static fields); shape
    ``(history * C + S, lat, lon)``. ``target``: normalised residual
    ``(x_{t+step} - x_t - residual_mean) / residual_std``, shape ``(C, lat, lon)``.
    Samples exist for every t whose history and t+step lie inside the split.
    ``in_memory``: load the split (float32 numpy, physical units) when the
    dataset is built (True), or read each sample's window from the store
    (False); None chooses by size (:func:`~druids.data.streaming.fits_in_memory`).
    Both give the same samples. ``times``: the sample times t; ``latitude``:
    the grid's latitudes (degrees).
    """

    def __init__(self, ds: xr.Dataset, stats: NormStats, split: str, config: DatasetConfig, in_memory: bool | None = None):
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; valid splits are {SPLITS}")
        self.history = config.history
        if self.history < 1:
            raise ValueError(f"DatasetConfig.history must be >= 1, got {self.history}")
        block = split_positions(ds["time"].values, config, min_times=self.history + 1)
        part = ds.isel(time=block[split])
        self.channel_names = channel_names(part, config.variables)
        check_channels(self.channel_names, stats)
        check_grid(part["latitude"].values, part["longitude"].values, stats)
        if np.timedelta64(time_step(part["time"].values), "ns") != stats.step:
            raise ValueError(f"Data time step differs from the statistics' step {stats.step}")
        channels = to_channels(part, config.variables)
        self.in_memory = fits_in_memory(channels) if in_memory is None else in_memory
        self._part_times = channels["time"].values
        if self.in_memory:
            self._x = channels.values.astype(np.float32)
            self._check_finite(self._x, 0)
        else:
            held_suarez = config.source == "heldsuarez"
            where, store = ("Held–Suarez world", None) if held_suarez else (f"store {config.source}", config.source)
            self._read = window_reader(channels, where, store)
            self.read_threads = READ_THREADS if "://" in str(store) else 1
        self.times = part["time"].values[self.history - 1 : -1]
        self.latitude = part["latitude"].values
        hours = int(stats.step / np.timedelta64(1, "h"))
        self.condition_channel_names = [
            f"{name}:t-{lag * hours}h" for lag in range(self.history) for name in self.channel_names
        ] + stats.static_channel_names
        self.n_static = len(stats.static_channel_names)
        self._static = static_condition(stats)
        f32 = np.float32
        self._mean, self._std = per_channel(stats.mean).astype(f32), per_channel(stats.std).astype(f32)
        self._res_mean = per_channel(stats.residual_mean).astype(f32)
        self._res_std = per_channel(stats.residual_std).astype(f32)

    def _check_finite(self, x: np.ndarray, start: int) -> None:
        """Error naming the channel and time of the first NaN/inf in ``x``, the states from position ``start``."""
        finite = np.isfinite(x).all(axis=(2, 3))
        if not finite.all():
            t, c = np.argwhere(~finite)[0]
            raise ValueError(f"NaN or inf in channel {self.channel_names[c]!r} at time {self._part_times[start + t]}")

    def _window(self, t: int) -> np.ndarray:
        """States at t - history + 1 .. t + 1 (positions in the split), (history + 1, C, lat, lon) float32."""
        start = t - self.history + 1
        if self.in_memory:
            return self._x[start : t + 2]
        window = self._read(start, t + 2)
        self._check_finite(window, start)
        return window

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
        x = self._window(t)  # x[h] is the state at t - history + 1 + h
        now = self.history - 1
        states = [(x[now - lag] - self._mean) / self._std for lag in range(self.history)]
        condition = np.concatenate([*states, self._static])
        target = (x[now + 1] - x[now] - self._res_mean) / self._res_std
        return torch.from_numpy(condition), torch.from_numpy(target)


def collate(dataset: ForecastDataset, indices, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples ``indices`` stacked: condition (B, Cc, H, W), target (B, C, H, W) on ``device``.

    A dataset streamed from a remote store reads its samples in :data:`READ_THREADS` threads; the result is the same.
    """
    indices = [int(i) for i in indices]
    threads = 1 if getattr(dataset, "in_memory", True) else min(dataset.read_threads, len(indices))
    if threads < 2:
        samples = [dataset[i] for i in indices]
    else:
        with ThreadPoolExecutor(threads) as pool:
            samples = list(pool.map(dataset.__getitem__, indices))
    conditions, targets = zip(*samples)
    return torch.stack(conditions).to(device), torch.stack(targets).to(device)

"""The torch ``Dataset`` of (condition, target) pairs for one time split, and batching.

``condition``: normalised states at t, t-step, ... and the static channels;
``target``: the normalised one-step residual (GenCast style). Statistics from
:mod:`druids.data.normalisation`, channels from :mod:`druids.data.channels`.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from druids.config import DatasetConfig
from druids.data.channels import STATIC_CHANNELS, channel_names, static_features, to_channels
from druids.data.normalisation import NormStats, check_channels, check_grid, per_channel
from druids.data.splits import SPLITS, time_splits, time_step


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
        check_channels(self.channel_names, stats)
        check_grid(part["latitude"].values, part["longitude"].values, stats)
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
        self._mean, self._std = per_channel(stats.mean).astype(f32), per_channel(stats.std).astype(f32)
        self._res_mean = per_channel(stats.residual_mean).astype(f32)
        self._res_std = per_channel(stats.residual_std).astype(f32)

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


def collate(dataset: ForecastDataset, indices, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples ``indices`` stacked: condition (B, Cc, H, W), target (B, C, H, W) on ``device``."""
    conditions, targets = zip(*(dataset[int(i)] for i in indices))
    return torch.stack(conditions).to(device), torch.stack(targets).to(device)

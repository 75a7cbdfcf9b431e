"""Denoisers with a known answer, as modules that ``druids.sampling.forecast`` and ``druids.training`` can run."""

from __future__ import annotations

import torch


class Analytic(torch.nn.Module):
    """A known elementwise (so batch-invariant) model ``denoise(y, c, sigma) = fn(y, c, sigma)``; records each ``c``.

    ``sigma`` reaches ``fn`` shaped (batch, 1, 1, 1). ``velocity`` (optional):
    ``velocity(x_t, c, t)`` for the flow samplers, ``t`` shaped (batch,).
    """

    def __init__(self, fn, velocity=None):
        super().__init__()
        self.fn = fn
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives forecast a device and dtype
        self.sigma_max = 88.0  # where the denoiser's estimate is its conditional mean
        self.conditions = []
        if velocity is not None:
            self.velocity = velocity

    def denoise(self, y, c, sigma):
        self.conditions.append(c.clone())
        return self.fn(y, c, sigma[:, None, None, None])

    def noise_like(self, x, generator=None):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype)


def around_state(y, c, sigma, s=0.5):
    """Exact denoiser for a residual ~ N(normalised state, s^2), the state being the condition's first
    three channels: depends on the condition and the noise level."""
    return c[:, :3] + s**2 / (s**2 + sigma**2) * (y - c[:, :3])


def small_store(n_times: int = 40, seed: int = 0):
    """Random-walk u (2 levels) and surface pressure on an 8 x 16 Gaussian grid, 6-hourly, WB2 schema."""
    import numpy as np

    from wb2 import Random, wb2_dataset

    fields = {"u_component_of_wind": Random("random_walk", mean=10.0, scale=1.2),
              "surface_pressure": Random("random_walk", mean=1e5, scale=100.0)}  # fmt: skip
    return wb2_dataset(fields, n_lat=8, n_lon=16, levels=np.array([300.0, 700.0], np.float32), n_times=n_times, seed=seed)

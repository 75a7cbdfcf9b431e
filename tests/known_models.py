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

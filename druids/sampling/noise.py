"""Member noise streams: each ensemble member draws from its own generator, whatever the batch.

Member k of initial time t draws from a CPU generator seeded by
``SeedSequence(seed, spawn_key=(stream, init_key(t), k))``, so its noise, and
hence its sample, is the same whatever the number of members, the batch it
is drawn in and the other initial times (bit for bit where the network's
kernels are batch-invariant, to rounding otherwise: on the CPU, oneDNN
convolutions and BLAS matrix-vector products treat a batch of one differently
from larger batches). The draws themselves come from :func:`druids.sphere.noise`,
the function the denoiser's training noise comes from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from druids import sphere

NOISE_STREAMS = {"model": 0, "ic": 1}


def member_generator(seed: int, stream: str, key: int, member: int) -> torch.Generator:
    """A CPU generator seeded from ``SeedSequence(seed, spawn_key=(stream, key, member))``.

    ``stream``: ``"model"`` (sampler noise) or ``"ic"`` (initial-condition
    perturbations); ``key``: a non-negative integer naming the initial time
    (:func:`init_key`). Member k's generator depends on nothing else.
    """
    sequence = np.random.SeedSequence(seed, spawn_key=(NOISE_STREAMS[stream], key, member))
    return torch.Generator().manual_seed(int(sequence.generate_state(1, np.uint64)[0]))


def init_key(time: np.datetime64) -> int:
    """The seed key of an initial time: seconds since 1970 (modulo 2^64, for earlier times)."""
    return int(np.datetime64(time, "s").astype(np.int64)) % 2**64


class MemberNoise:
    """Standard normal draws ``(B, *shape)``: row b from ``generators[b]`` on CPU, then moved to ``device``.

    ``band``: the denoiser's ``noise_band`` (:func:`druids.sphere.noise`):
    None for noise white on the grid, ``(latitudes, truncation)`` for noise
    white on the sphere up to that wavenumber, as the denoiser was trained.
    """

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        shape: Sequence[int],
        dtype=torch.float32,
        device="cpu",
        band: sphere.NoiseBand = None,
    ):
        self.generators = list(generators)
        self.shape = tuple(shape)
        self.dtype = dtype
        self.device = torch.device(device)
        self.band = band

    def __call__(self) -> torch.Tensor:
        draws = [sphere.noise(self.shape, g, self.band, self.dtype) for g in self.generators]
        return torch.stack(draws).to(self.device)

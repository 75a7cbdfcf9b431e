"""What each optimisation step sees: random streams, sample order, micro-batches, condition noise, schedules.

Randomness is a pure function of ``(seed, step)``, so a checkpoint needs no
random-generator state and a resumed run repeats an uninterrupted one bit for
bit (on the same hardware and thread count). From the root seed
``numpy.random.SeedSequence`` derives independent streams (:data:`STREAMS`):
the initial weights; the order of training samples in epoch ``e`` (a
permutation seeded by ``e``; the batch of step ``s`` is positions ``s*B ..
s*B+B-1`` of the concatenated epochs); the noise of micro-batch ``j`` at step
``s`` (one ``torch.Generator`` seeded by ``(s, j)``); and the validation noise
(the same at every validation, so curves are comparable across steps).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from druids.config import TrainingConfig
from druids.data.channels import STATIC_CHANNELS
from druids.sphere import truncate

# Independent random streams derived from the root seed.
INIT, ORDER, NOISE, VALIDATION = range(4)


def stream_seed(seed: int, *key: int) -> int:
    """A 64-bit seed for the random stream ``key`` (e.g. ``(NOISE, step, j)``) of root ``seed``."""
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint64)[0])


@functools.lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the ``n`` training samples in ``epoch``: a permutation, (n,) int (read-only, cached)."""
    order = np.random.default_rng(stream_seed(seed, ORDER, epoch)).permutation(n)
    order.flags.writeable = False
    return order


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> np.ndarray:
    """Training-sample indices of the global batch of ``step`` (0-based): (batch_size,) int.

    Epochs follow each other without gaps, so a batch may span two epochs.
    """
    positions = step * batch_size + np.arange(batch_size)
    return np.array([epoch_order(seed, p // n, n)[p % n] for p in positions])


def micro_batches(cfg: TrainingConfig, world_size: int, rank: int) -> list[tuple[int, int, int]]:
    """This process's micro-batches of the global batch as ``(index, start, stop)`` positions in it.

    The global batch of ``cfg.batch_size`` is cut into micro-batches of
    ``cfg.micro_batch`` samples (default ``batch_size / world_size``), dealt to
    the processes in contiguous blocks.
    """
    size = cfg.micro_batch or cfg.batch_size // world_size
    if size < 1 or cfg.batch_size % size or (cfg.batch_size // size) % world_size:
        raise ValueError(
            f"TrainingConfig.batch_size={cfg.batch_size} cannot be cut into micro-batches of "
            f"{cfg.micro_batch or 'batch_size / world_size'} shared by {world_size} processes; "
            "make batch_size a multiple of micro_batch * world_size."
        )
    per_rank = cfg.batch_size // size // world_size
    return [(j, j * size, (j + 1) * size) for j in range(rank * per_rank, (rank + 1) * per_rank)]


def perturb_condition(
    condition: torch.Tensor,
    target: torch.Tensor,
    residual_to_state: torch.Tensor,
    noise: float,
    generator: torch.Generator,
    latitude=None,
    truncation: int | None = None,
    n_static: int = len(STATIC_CHANNELS),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-time noise on the condition's states, and the target residual from the noisy state.

    ``condition`` ``(B, history * C + S, H, W)`` (normalised states, most recent
    first, then ``S = n_static`` static channels), ``target`` ``(B, C, H, W)`` (normalised
    residual), ``residual_to_state`` ``(C,)`` (:attr:`ForecastDataset.residual_to_state`).
    Every state of the history gets independent noise ``noise * eps`` in
    residual units (``noise * residual_to_state * eps`` in normalised state
    units); the target becomes ``x_{t+6h} - (x_t + error)``, i.e. ``target -
    noise * eps_t``, so the model learns to remove the error from the state it
    is given (Sanchez-Gonzalez et al. 2020, ICML). ``eps`` is white on the grid,
    or, with ``truncation`` and the grid's ``latitude`` (degrees), white noise
    projected onto the spherical harmonics up to ``truncation``
    (:func:`druids.sphere.truncate`). Returns new tensors.
    """
    n_channels = target.shape[1]
    n_states = (condition.shape[1] - n_static) // n_channels
    shape = (condition.shape[0], n_states, n_channels, *condition.shape[2:])
    eps = torch.randn(shape, generator=generator, device=condition.device, dtype=condition.dtype)
    if truncation is not None:
        eps = truncate(eps, latitude, truncation)
    state_noise = (noise * residual_to_state.to(condition.dtype)[:, None, None] * eps).flatten(1, 2)
    states = condition[:, : n_states * n_channels] + state_noise
    return torch.cat([states, condition[:, n_states * n_channels :]], dim=1), target - noise * eps[:, 0]


# ------------------------------------------------------------- schedule and EMA


def lr_factor(step: int, cfg: TrainingConfig) -> float:
    """Learning-rate multiplier of optimiser step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` up to 1, then a cosine decay
    that reaches ``final_lr_fraction`` at the last step ``n_steps - 1``.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.n_steps - 1 - cfg.warmup_steps))
    floor = cfg.final_lr_fraction
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def ema_decay(step: int, decay: float) -> float:
    """EMA decay used after optimiser step ``step`` (1-based): ``min(decay, (1 + step) / (10 + step))``.

    The warm-up keeps short runs from averaging in their random initial weights.
    """
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for every parameter, in place."""
    for averaged, current in zip(ema.parameters(), model.parameters(), strict=True):
        averaged.lerp_(current, 1 - decay)

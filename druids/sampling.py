"""Samplers for the conditional denoiser and autoregressive ensemble forecasts.

Samplers see only ``denoise(y, c, sigma) -> x0_hat`` in the convention
``y = x0 + sigma * eps`` (preconditioning, network and sampler are separate
pieces, as in Karras et al. 2022 and PhysicsNeMo), or, for the flow samplers,
``velocity(x_t, c, t)`` of the linear interpolant ``x_t = (1 - t) x0 + t eps``.
Shapes: target ``(B, C, H, W)``, condition ``c`` ``(B, Cc, H, W)``.

* :func:`sample_edm`: Karras et al. 2022 (NeurIPS, "Elucidating the design
  space of diffusion-based generative models"), Algorithm 2: Heun steps with
  stochastic churn.
* :func:`sample_dpmpp_2s`: DPM-Solver++(2S) (Lu et al. 2022, "DPM-Solver++:
  fast solver for guided sampling of diffusion probabilistic models") with the
  stochastic churn of GenCast (Price et al. 2025, Nature, "Probabilistic
  weather forecasting with machine learning").
* :func:`sample_flow_euler`, :func:`sample_flow_heun`: the probability-flow
  ODE ``dx/dt = v`` in interpolant time (Liu et al. 2023; Lipman et al. 2023).
* :func:`sample_flow_sde`: an SDE with the same marginals (Albergo et al.
  2023, "Stochastic interpolants"; Ma et al. 2024, SiT), Euler–Maruyama.

Every sampler returns ``(x, nfe)``, the samples and the number of (batched)
model evaluations. Randomness comes from :class:`MemberNoise`: each batch row
(ensemble member) draws from its own CPU generator, so member k's noise is
the same whatever the batch it is drawn in, and so is its sample, bit for bit
where the network's kernels are batch-invariant and to rounding otherwise (on
CPU, oneDNN convolutions and BLAS matrix-vector products treat a batch of one
differently from larger batches).

Noise is the denoiser's training noise (``Denoiser.noise_sphere``): white on
the grid (i.i.d. per grid point), or isotropic on the sphere and band-limited
to the data's spectral truncation (:func:`druids.data.spectral.sphere_noise`),
as GenCast's noise is isotropic on the sphere.

:func:`forecast` rolls the model out autoregressively into an ensemble in the
WeatherBench2 layout, in memory or streamed to zarr, and shards members over
ranks under ``torchrun``. After every step the new state is projected onto the
spherical harmonics of the spectral model that made the data
(``DatasetConfig.spectral_truncation``, :mod:`druids.data.spectral`), and
:func:`hold_global_mean` keeps the global-mean surface pressure (the
atmosphere's mass) at its initial value (``SamplingConfig.conserve_mass``).
:func:`rollout_climate` runs long free rollouts, member by member until each
leaves the world's range, and keeps only their climate (zonal means,
global-mean series); :func:`sampler_cost`
measures NFE and wall time per member-step of a sampler setting. Forecasts can
subtract a model's systematic one-step error (``residual_bias``, measured by
:func:`druids.training.tendency_bias`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import xarray as xr
import zarr
from tqdm.auto import tqdm

from druids.cache import atomic_write
from druids.config import DatasetConfig, SamplingConfig, to_dict
from druids.data.dataset import (
    SPATIAL_DIMS,
    NormStats,
    area_weights,
    denormalise_state,
    from_channels,
    normalise_state,
    residual_to_state,
    time_step,
    static_features,
    to_channels,
)
from druids.data.spectral import sphere_noise, truncate_state

DIFFUSION_SAMPLERS = ("edm", "dpmpp_2s")
FLOW_SAMPLERS = ("flow_euler", "flow_heun", "flow_sde")
SAMPLERS = DIFFUSION_SAMPLERS + FLOW_SAMPLERS
NOISE_STREAMS = {"model": 0, "ic": 1}
MASS_VARIABLE = "surface_pressure"  # its global mean is held by SamplingConfig.conserve_mass

Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Velocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------ noise, seeds


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

    White on the grid, or with ``sphere = (latitudes, truncation)`` white on the
    sphere up to that wavenumber (:func:`druids.data.spectral.sphere_noise`),
    as the denoiser's ``noise_sphere`` says it was trained.
    """

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        shape: Sequence[int],
        dtype=torch.float32,
        device="cpu",
        sphere: tuple[np.ndarray, int] | None = None,
    ):
        self.generators = list(generators)
        self.shape = tuple(shape)
        self.dtype = dtype
        self.device = torch.device(device)
        self.sphere = sphere

    def __call__(self) -> torch.Tensor:
        if self.sphere is None:
            draws = [torch.randn(self.shape, generator=g, dtype=self.dtype) for g in self.generators]
        else:
            draws = [sphere_noise(self.shape, g, *self.sphere, dtype=self.dtype) for g in self.generators]
        return torch.stack(draws).to(self.device)


# --------------------------------------------------------------------- schedules


def noise_levels(n: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """Karras et al. (2022, Eq. 5) levels ``(smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho``, then 0.

    Returns ``(n + 1,)`` float64, decreasing from ``sigma_max`` to ``sigma_min``, last entry 0.
    """
    if n < 1 or not 0 < sigma_min <= sigma_max:
        raise ValueError(f"Need n >= 1 and 0 < sigma_min <= sigma_max, got n={n}, [{sigma_min}, {sigma_max}]")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])


def flow_times(n: int, t_max: float = 1.0) -> torch.Tensor:
    """Uniform interpolant times from ``t_max`` (noise) to 0 (data): ``(n + 1,)`` float64."""
    if n < 1:
        raise ValueError(f"Need n >= 1 steps, got {n}")
    return torch.linspace(t_max, 0.0, n + 1, dtype=torch.float64)


def _level(value: float, x: torch.Tensor) -> torch.Tensor:
    """A noise level or time as a ``(B,)`` tensor like ``x``."""
    return torch.full((x.shape[0],), value, dtype=x.dtype, device=x.device)


# ------------------------------------------------------------ diffusion samplers


def _churn(x, sigma, gamma, s_noise, noise):
    """Raise the noise level from ``sigma`` to ``sigma (1 + gamma)`` (Karras et al. 2022, Alg. 2, lines 5-6)."""
    if gamma == 0:
        return x, sigma
    sigma_hat = sigma * (1 + gamma)
    return x + s_noise * math.sqrt(sigma_hat**2 - sigma**2) * noise(), sigma_hat


def _gamma(sigma, n, s_churn, s_min, s_max):
    """Per-step churn ``min(S_churn / n, sqrt(2) - 1)`` inside ``[S_min, S_max]``, else 0."""
    return min(s_churn / n, math.sqrt(2) - 1) if s_min <= sigma <= s_max else 0.0


def sample_edm(
    denoise: Denoise,
    c: torch.Tensor,
    noise: MemberNoise,
    sigmas: torch.Tensor,
    s_churn: float = 0.0,
    s_min: float = 0.0,
    s_max: float = float("inf"),
    s_noise: float = 1.0,
) -> tuple[torch.Tensor, int]:
    """EDM stochastic sampler (Karras et al. 2022, Algorithm 2): Heun steps with churn.

    ``sigmas`` ``(n + 1,)`` from :func:`noise_levels` (last 0); the last step is
    an Euler step, so NFE = ``2n - 1``. ``s_churn = 0``: the deterministic Heun
    sampler (Algorithm 1). Returns ``x`` ``(B, C, H, W)`` and the NFE.
    """
    levels = [float(s) for s in sigmas]
    n = len(levels) - 1
    x = levels[0] * noise()
    nfe = 0
    for sigma, sigma_next in zip(levels[:-1], levels[1:]):
        x, sigma_hat = _churn(x, sigma, _gamma(sigma, n, s_churn, s_min, s_max), s_noise, noise)
        d = (x - denoise(x, c, _level(sigma_hat, x))) / sigma_hat
        x_next = x + (sigma_next - sigma_hat) * d
        nfe += 1
        if sigma_next > 0:
            d_next = (x_next - denoise(x_next, c, _level(sigma_next, x))) / sigma_next
            x_next = x + (sigma_next - sigma_hat) * (d + d_next) / 2
            nfe += 1
        x = x_next
    return x, nfe


def sample_dpmpp_2s(
    denoise: Denoise,
    c: torch.Tensor,
    noise: MemberNoise,
    sigmas: torch.Tensor,
    s_churn: float = 0.0,
    s_min: float = 0.0,
    s_max: float = float("inf"),
    s_noise: float = 1.0,
) -> tuple[torch.Tensor, int]:
    """DPM-Solver++(2S) with stochastic churn, as in GenCast (Price et al. 2025).

    Each step first churns as :func:`sample_edm`, then takes the second-order
    singlestep update of Lu et al. (2022, Alg. 1 with ``r = 1/2``) in
    ``lambda = -log(sigma)``: the midpoint level is ``sqrt(sigma sigma_next)``, and

        x_mid  = (s_mid / s) x + (1 - s_mid / s) D(x; s)
        x_next = (s_next / s) x + (1 - s_next / s) D(x_mid; s_mid).

    The last step (to 0) returns ``D(x; s)``, so NFE = ``2n - 1`` for ``n`` levels.
    """
    levels = [float(s) for s in sigmas]
    n = len(levels) - 1
    x = levels[0] * noise()
    nfe = 0
    for sigma, sigma_next in zip(levels[:-1], levels[1:]):
        x, sigma = _churn(x, sigma, _gamma(sigma, n, s_churn, s_min, s_max), s_noise, noise)
        x0 = denoise(x, c, _level(sigma, x))
        nfe += 1
        if sigma_next == 0:
            x = x0
            continue
        sigma_mid = math.sqrt(sigma * sigma_next)
        x_mid = (sigma_mid / sigma) * x + (1 - sigma_mid / sigma) * x0
        x0_mid = denoise(x_mid, c, _level(sigma_mid, x))
        nfe += 1
        x = (sigma_next / sigma) * x + (1 - sigma_next / sigma) * x0_mid
    return x, nfe


# ----------------------------------------------------------------- flow samplers


def velocity_from_denoise(denoise: Denoise) -> Velocity:
    """The interpolant velocity ``v = (x_t - D(x_t / (1 - t); t / (1 - t))) / t`` of an x0-predictor, for 0 < t < 1."""

    def velocity(x_t: torch.Tensor, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t[:, None, None, None]
        return (x_t - denoise(x_t / (1 - tt), c, t / (1 - t))) / tt

    return velocity


def sample_flow_euler(
    velocity: Velocity, c: torch.Tensor, noise: MemberNoise, times: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Euler integration of ``dx/dt = v(x, t)`` from ``times[0]`` to 0; ``x(times[0]) = times[0] * eps``. NFE = n."""
    times = [float(t) for t in times]
    x = times[0] * noise()
    for t, t_next in zip(times[:-1], times[1:]):
        x = x + (t_next - t) * velocity(x, c, _level(t, x))
    return x, len(times) - 1


def sample_flow_heun(
    velocity: Velocity, c: torch.Tensor, noise: MemberNoise, times: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Heun integration of ``dx/dt = v(x, t)``; the last step (to t = 0) is Euler, as in EDM. NFE = 2n - 1."""
    times = [float(t) for t in times]
    x = times[0] * noise()
    nfe = 0
    for t, t_next in zip(times[:-1], times[1:]):
        v = velocity(x, c, _level(t, x))
        x_next = x + (t_next - t) * v
        nfe += 1
        if t_next > 0:
            v_next = velocity(x_next, c, _level(t_next, x))
            x_next = x + (t_next - t) * (v + v_next) / 2
            nfe += 1
        x = x_next
    return x, nfe


def sample_flow_sde(
    velocity: Velocity, c: torch.Tensor, noise: MemberNoise, times: torch.Tensor, diffusion: float = 1.0
) -> tuple[torch.Tensor, int]:
    """Euler–Maruyama for the reverse-time SDE with the interpolant's marginals (Albergo et al. 2023).

    With diffusion ``g(t)^2 = 2 diffusion t`` and score ``-eps_hat / t``,
    ``eps_hat = x + (1 - t) v``, a step from ``t`` to ``t - h`` is

        x <- x - h (v + diffusion eps_hat) + sqrt(2 diffusion t h) z.

    ``diffusion = 0`` is :func:`sample_flow_euler`. The last step (to 0) is the
    noise-free Euler step ``x - t v`` (the denoised estimate). NFE = n.
    """
    times = [float(t) for t in times]
    x = times[0] * noise()
    for t, t_next in zip(times[:-1], times[1:]):
        v = velocity(x, c, _level(t, x))
        if t_next == 0:
            x = x - t * v
            continue
        h = t - t_next
        eps_hat = x + (1 - t) * v
        x = x - h * (v + diffusion * eps_hat) + math.sqrt(2 * diffusion * t * h) * noise()
    return x, len(times) - 1


# --------------------------------------------------------------------- dispatch


def check_sampler(cfg: SamplingConfig) -> None:
    """Raise a clear ``ValueError`` for an unknown ``cfg.sampler``."""
    if cfg.sampler not in SAMPLERS:
        raise ValueError(f"SamplingConfig.sampler={cfg.sampler!r}; choose one of {', '.join(SAMPLERS)}")


def sample(denoiser, c: torch.Tensor, noise: MemberNoise, cfg: SamplingConfig) -> tuple[torch.Tensor, int]:
    """One sample per batch row with ``cfg.sampler``: ``c`` (B, Cc, H, W) -> ``(x (B, C, H, W), nfe)``.

    ``denoiser`` has ``denoise(y, c, sigma)`` and, for flow models,
    ``velocity(x_t, c, t)``. Diffusion samplers use the noise levels of
    :func:`noise_levels` (``cfg.n_levels`` of them) and churn settings of ``cfg``.
    Flow samplers take ``cfg.n_levels`` uniform steps in interpolant time from
    t = 1 with the model's velocity (churn settings do not apply); a model
    without one (EDM) is integrated through :func:`velocity_from_denoise` from
    ``t = sigma_max / (1 + sigma_max)``.
    """
    check_sampler(cfg)
    if cfg.sampler in DIFFUSION_SAMPLERS:
        sigmas = noise_levels(cfg.n_levels, cfg.sigma_min, cfg.sigma_max, cfg.rho)
        solver = sample_edm if cfg.sampler == "edm" else sample_dpmpp_2s
        return solver(denoiser.denoise, c, noise, sigmas, cfg.s_churn, cfg.s_min, cfg.s_max, cfg.s_noise)
    if hasattr(denoiser, "velocity"):
        velocity, t_max = denoiser.velocity, 1.0
    else:
        velocity, t_max = velocity_from_denoise(denoiser.denoise), cfg.sigma_max / (1 + cfg.sigma_max)
    times = flow_times(cfg.n_levels, t_max)
    if cfg.sampler == "flow_euler":
        return sample_flow_euler(velocity, c, noise, times)
    if cfg.sampler == "flow_heun":
        return sample_flow_heun(velocity, c, noise, times)
    return sample_flow_sde(velocity, c, noise, times, cfg.flow_diffusion)


# ---------------------------------------------------------------------- forecast


def _distributed() -> tuple[int, int]:
    """``(rank, world_size)``; under ``torchrun`` initialises the default process group if needed."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _gather_members(local: np.ndarray, sizes: Sequence[int], device: torch.device) -> np.ndarray:
    """The ranks' member blocks ``(sizes[rank], ...)``, concatenated in rank order on every rank."""
    if len(sizes) == 1:
        return local
    block = torch.zeros((max(sizes), *local.shape[1:]), dtype=torch.float32)
    block[: local.shape[0]] = torch.from_numpy(local)
    block = block.to(device if dist.get_backend() == "nccl" else "cpu")
    parts = [torch.empty_like(block) for _ in sizes]
    dist.all_gather(parts, block)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]).cpu().numpy()


def _init_times(times: np.ndarray, step: np.timedelta64, history: int) -> np.ndarray:
    """Times of ``times`` whose ``history - 1`` previous states (every ``step``) are also in ``times``."""
    times = np.asarray(times, dtype="datetime64[ns]")
    ok = np.ones(times.size, dtype=bool)
    for lag in range(1, history):
        ok &= np.isin(times - lag * step, times)
    if not ok.any():
        raise ValueError(
            f"initial_conditions has no time with its {history - 1} previous state(s) every {step}; "
            f"with DatasetConfig.history={history}, pass those earlier times too."
        )
    return times[ok]


def _condition(history: list[xr.Dataset], static: torch.Tensor, stats: NormStats, variables) -> torch.Tensor:
    """The model condition as in :class:`~druids.data.dataset.ForecastDataset`, for a batch of states.

    ``history``: states at t, t - step, ... (physical, dims ``member, time, ...``);
    ``static`` ``(4, H, W)``. Returns ``(member * time, history * C + 4, H, W)``,
    rows ordered member-major.
    """
    states = []
    for state in history:
        x = normalise_state(to_channels(state, variables), stats).transpose("member", "time", ...)
        states.append(torch.from_numpy(np.ascontiguousarray(x.values)).flatten(0, 1))
    return torch.cat([*states, static.expand(states[0].shape[0], -1, -1, -1)], dim=1)


def _initial_history(
    initial_conditions: xr.Dataset,
    init_times: np.ndarray,
    members: Sequence[int],
    stats: NormStats,
    dataset_cfg: DatasetConfig,
    seed: int,
    ic_perturbation: float | None,
) -> list[xr.Dataset]:
    """States at t, t - step, ... for the initial times, dims ``(member, time, ...)``, perturbed if asked.

    A perturbation adds ``ic_perturbation * z`` in normalised units, ``z``
    standard normal from the member's ``"ic"`` generator, the same ``z`` to every
    state of the history (so the initial tendency is unperturbed).
    """
    history = []
    for lag in range(dataset_cfg.history):
        state = initial_conditions.sel(time=init_times - lag * stats.step).assign_coords(time=init_times)
        history.append(state.expand_dims(member=list(members)))
    if not ic_perturbation:
        return history
    shape = (len(stats.channel_names), stats.latitude.size, stats.longitude.size)
    generators = [member_generator(seed, "ic", init_key(t), m) for m in members for t in init_times]
    z = MemberNoise(generators, shape)().reshape(len(members), len(init_times), *shape).numpy()
    perturbed = []
    for state in history:
        x = normalise_state(to_channels(state, dataset_cfg.variables), stats).transpose("member", "time", ...)
        coords = {"member": list(members), "time": init_times}
        perturbed.append(denormalise_state(x.values + ic_perturbation * z, stats, ("member", "time"), coords))
    return perturbed


class _MemberBatch:
    """Members that go through the model together, from all of their initial times.

    ``history``: their states at t, t - step, ... (physical, dims ``member, time,
    ...``), most recent first; ``noise``: one generator per row ``(member, time)``,
    member-major, as the condition's rows (:func:`_condition`).
    """

    def __init__(self, members: Sequence[int], history: list[xr.Dataset], noise: MemberNoise):
        self.members, self.history, self.noise = list(members), history, noise

    def keep(self, rows: np.ndarray) -> None:
        """Keep only the members at positions ``rows`` (a bool mask or indices over ``members``)."""
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, dtype=int)
        n_times = self.history[0].sizes["time"]
        self.members = [self.members[i] for i in rows]
        self.history = [state.isel(member=rows) for state in self.history]
        self.noise.generators = [self.noise.generators[i * n_times + j] for i in rows for j in range(n_times)]


def _member_batches(
    denoiser, stats: NormStats, initial_conditions: xr.Dataset, init_times: np.ndarray, members: Sequence[int],
    sampling_cfg: SamplingConfig, dataset_cfg: DatasetConfig, seed: int, ic_perturbation: float | None,
) -> list[_MemberBatch]:
    """``members`` in batches of ``sampling_cfg.member_batch``, each with its initial history and noise generators."""
    param = next(denoiser.parameters())
    shape = (len(stats.channel_names), stats.latitude.size, stats.longitude.size)
    batches = []
    for start in range(0, len(members), sampling_cfg.member_batch):
        batch = members[start : start + sampling_cfg.member_batch]
        generators = [member_generator(seed, "model", init_key(t), m) for m in batch for t in init_times]
        history = _initial_history(initial_conditions, init_times, batch, stats, dataset_cfg, seed, ic_perturbation)
        noise = MemberNoise(generators, shape, param.dtype, param.device, getattr(denoiser, "noise_sphere", None))
        batches.append(_MemberBatch(batch, history, noise))
    return batches


def _sample_residual(
    denoiser, batch: _MemberBatch, static: torch.Tensor, stats: NormStats, sampling_cfg: SamplingConfig,
    residual_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, int]:
    """The batch's next normalised residuals ``(member, time, C, H, W)`` on the CPU, and the NFE it took.

    ``residual_bias`` (see :func:`druids.training.tendency_bias`) is subtracted from every sample.
    """
    param = next(denoiser.parameters())
    c = _condition(batch.history, static, stats, stats.variables).to(param.device, param.dtype)
    with torch.no_grad():
        residual, nfe = sample(denoiser, c, batch.noise, sampling_cfg)
    if residual_bias is not None:
        residual = residual - residual_bias.to(residual.device, residual.dtype)
    n_times = batch.history[0].sizes["time"]
    return residual.reshape(len(batch.members), n_times, *residual.shape[1:]).cpu(), nfe


def _advance(
    batch: _MemberBatch, residual: torch.Tensor, stats: NormStats, sampling_cfg: SamplingConfig, truncation: int | None
) -> None:
    """Add ``residual`` (from :func:`_sample_residual`) to the batch's latest states and push the new state
    onto its history. With ``truncation`` (``DatasetConfig.spectral_truncation``) the new state is projected
    onto the world's spherical harmonics; with ``sampling_cfg.conserve_mass`` its global-mean surface
    pressure is then held."""
    latest = batch.history[0]
    new = residual_to_state(latest, residual, stats, ("member", "time"), {"member": batch.members})
    if truncation is not None:
        new = truncate_state(new, truncation)
    if sampling_cfg.conserve_mass and MASS_VARIABLE in stats.variables:
        new = hold_global_mean(new, latest, MASS_VARIABLE)
    batch.history = [new, *batch.history[:-1]]


def _rollout(
    denoiser,
    stats: NormStats,
    initial_conditions: xr.Dataset,
    init_times: np.ndarray,
    members: Sequence[int],
    n_steps: int,
    sampling_cfg: SamplingConfig,
    dataset_cfg: DatasetConfig,
    seed: int,
    ic_perturbation: float | None,
    residual_bias: torch.Tensor | None = None,
) -> Iterator[tuple[xr.DataArray, int]]:
    """This rank's ``members``, lead by lead: yields (physical state, NFE per step).

    The state is a channel stack ``(member, time, channel, latitude, longitude)``;
    lead 0 is the (perturbed) initial state. Members go through the model in
    batches of ``sampling_cfg.member_batch`` members x all initial times.
    ``residual_bias`` (see :func:`druids.training.tendency_bias`) is subtracted from every sampled residual.
    """
    variables = tuple(dataset_cfg.variables)
    static = torch.from_numpy(static_features(initial_conditions["latitude"], initial_conditions["longitude"]).values)
    batches = _member_batches(
        denoiser, stats, initial_conditions, init_times, members, sampling_cfg, dataset_cfg, seed, ic_perturbation
    )
    nfe = 0
    yield xr.concat([to_channels(b.history[0], variables) for b in batches], dim="member"), nfe
    for step in range(1, n_steps + 1):
        for b in batches:
            residual, nfe = _sample_residual(denoiser, b, static, stats, sampling_cfg, residual_bias)
            if not torch.isfinite(residual).all():
                raise ValueError(
                    f"The sampled residual at lead step {step} is not finite (NaN or inf): the model or sampler "
                    "is unstable; check the checkpoint, the noise levels and the sampler settings."
                )
            _advance(b, residual, stats, sampling_cfg, dataset_cfg.spectral_truncation)
        yield xr.concat([to_channels(b.history[0], variables) for b in batches], dim="member"), nfe


def hold_global_mean(state: xr.Dataset, reference: xr.Dataset, name: str) -> xr.Dataset:
    """``state`` with ``state[name]`` shifted by one constant per field so its global mean is ``reference``'s.

    Global mean: area-weighted (:func:`~druids.data.dataset.area_weights`) over
    latitude and longitude. ``reference[name]``'s other dims must match
    ``state[name]``'s in order and broadcast against them (positional, because a
    forecast step advances the ``time`` coordinate). Only the global mean
    changes; every spatial anomaly is kept.
    """
    weights = area_weights(state["latitude"])
    field = state[name]
    current = field.weighted(weights).mean(["latitude", "longitude"])
    target = reference[name].weighted(weights).mean(["latitude", "longitude"]).data
    shift = xr.DataArray(np.broadcast_to(target, current.shape) - current.data, dims=current.dims)
    return state.assign({name: (field + shift.astype(field.dtype)).transpose(*field.dims)})


def _lead_dataset(
    channels: np.ndarray, template: xr.DataArray, init_times: np.ndarray, lead: np.timedelta64
) -> xr.Dataset:
    """One lead of the ensemble, ``channels`` ``(member, init, channel, lat, lon)``, in the output layout."""
    coords = {name: template[name] for name in ("channel", "variable", "level", "units", "latitude", "longitude")}
    da = xr.DataArray(
        channels,
        dims=("member", "init_time", "channel", "latitude", "longitude"),
        coords={**coords, "member": np.arange(channels.shape[0]), "init_time": init_times},
    )
    ds = from_channels(da).expand_dims(lead_time=[np.timedelta64(lead, "ns")])
    return ds.transpose("init_time", "member", "lead_time", ...)


def _write_lead(path: Path, ds: xr.Dataset, k: int, leads: np.ndarray) -> None:
    """Write lead ``k`` into the zarr store at ``path``; lead 0 first creates the full-length store."""
    if k == 0:
        template = ds.chunk().isel(lead_time=np.zeros(len(leads), dtype=int)).assign_coords(lead_time=leads)
        encoding = {name: {"chunks": ds[name].shape} for name in ds.data_vars}
        template.to_zarr(path, mode="w", compute=False, encoding=encoding, consolidated=False, zarr_format=2)
    region = ds.drop_vars([name for name in ds.coords if "lead_time" not in ds[name].dims])
    region.to_zarr(path, region={"lead_time": slice(k, k + 1)}, consolidated=False)


def initial_states(data: xr.Dataset, init_times, history: int) -> xr.Dataset:
    """The states a forecast from ``init_times`` needs: each time and its ``history - 1`` predecessors, loaded."""
    step = time_step(data["time"].values)
    times = np.unique([t - lag * step for t in np.asarray(init_times, dtype="datetime64[ns]") for lag in range(history)])
    return data.sel(time=times).load()


def forecast(
    denoiser,
    stats: NormStats,
    initial_conditions: xr.Dataset,
    n_members: int,
    n_steps: int,
    sampling_cfg: SamplingConfig,
    dataset_cfg: DatasetConfig,
    seed: int,
    store: Path | str | None = None,
    ic_perturbation: float | None = None,
    progress: bool = True,
    residual_bias: torch.Tensor | None = None,
    shard: bool = True,
) -> xr.Dataset:
    """Autoregressive ensemble forecast of ``n_steps`` steps from each initial time.

    ``initial_conditions``: states in the input schema of ``druids.data.dataset``
    (dim ``time``); every time whose ``dataset_cfg.history - 1`` previous states
    are also present is an initial time. Each step samples the next normalised
    residual given the condition built from the previous *sampled* states (as
    :class:`~druids.data.dataset.ForecastDataset` builds it) and adds it to the
    state. Model noise: member k of initial time t draws from its own generator
    (:func:`member_generator`, stream ``"model"``, key ``init_key(t)``), so it
    is the same whatever ``n_members``, ``member_batch`` and other initial times.

    ``ic_perturbation``: std (normalised units) of Gaussian noise added to the
    initial states, from separate per-member generators (stream ``"ic"``), so
    that initial-condition and model spread can be studied apart. It is white
    on the grid; with ``dataset_cfg.spectral_truncation`` the first step's
    projection keeps only its part in the world's state space.
    ``residual_bias``: optional tendency bias correction (:func:`druids.training.tendency_bias`),
    subtracted from every sampled residual.

    Returns physical units, dims ``(init_time, member, lead_time, [level,]
    latitude, longitude)``, ``lead_time`` timedelta64 from 0 (the initial,
    possibly perturbed, state). With ``store``, each lead is written to zarr as it
    is computed (memory holds one lead), published atomically when complete,
    and returned lazily. Under ``torchrun`` members are sharded over ranks,
    gathered each lead, and rank 0 writes; every rank returns the result.
    ``shard=False``: this process makes every member alone, whatever the other
    ranks do (a check that one rank runs while the others wait, such as a
    training validator).
    """
    check_sampler(sampling_cfg)
    if n_members < 1 or n_steps < 0 or sampling_cfg.member_batch < 1:
        raise ValueError(
            f"Need n_members >= 1, n_steps >= 0 and SamplingConfig.member_batch >= 1; "
            f"got {n_members}, {n_steps}, {sampling_cfg.member_batch}"
        )
    rank, world = _distributed() if shard else (0, 1)
    if n_members < world:
        raise ValueError(f"{n_members} members cannot be shared by {world} processes; run fewer processes")
    shards = np.array_split(np.arange(n_members), world)
    members, sizes = shards[rank].tolist(), [len(shard) for shard in shards]
    init_times = _init_times(initial_conditions["time"].values, stats.step, dataset_cfg.history)
    leads = (np.arange(n_steps + 1) * stats.step).astype("timedelta64[ns]")
    rollout = _rollout(
        denoiser, stats, initial_conditions, init_times, members, n_steps, sampling_cfg, dataset_cfg, seed,
        ic_perturbation, residual_bias,
    )
    device = next(denoiser.parameters()).device
    bar = tqdm(total=n_steps + 1, desc="forecast", unit="lead", disable=not progress or rank > 0)
    attrs = {
        "kind": "model ensemble",
        "sampling_config": json.dumps(to_dict(sampling_cfg), sort_keys=True),
        "seed": seed,
        "ic_perturbation": float(ic_perturbation or 0.0),
    }

    def lead_datasets() -> Iterator[xr.Dataset]:
        for k, (local, nfe) in enumerate(rollout):
            channels = _gather_members(local.transpose("member", "time", ...).values, sizes, device)
            attrs["nfe_per_step"] = nfe
            bar.update()
            yield _lead_dataset(channels, local, init_times, leads[k])

    if store is None:
        ds = xr.concat(list(lead_datasets()), dim="lead_time")
        bar.close()
        return ds.assign_attrs(attrs)

    def write(tmp: Path) -> None:
        for k, lead in enumerate(lead_datasets()):
            _write_lead(tmp, lead, k, leads)
        zarr.open_group(tmp, mode="r+").attrs.update(attrs)
        zarr.consolidate_metadata(tmp)

    if rank == 0:
        atomic_write(Path(store), write)
    else:
        for _ in lead_datasets():  # take part in the gathers
            pass
    bar.close()
    if world > 1:
        dist.barrier()
    return xr.open_zarr(store)


# ----------------------------------------------------------- climate and cost


def rollout_climate(
    denoiser,
    stats: NormStats,
    initial_conditions: xr.Dataset,
    n_steps: int,
    sampling_cfg: SamplingConfig,
    dataset_cfg: DatasetConfig,
    seed: int,
    n_members: int = 1,
    progress: bool = True,
    max_anomaly: float = 3.0,
    residual_bias: torch.Tensor | None = None,
) -> xr.Dataset:
    """Long free-running rollouts, reduced to their climate as they run (memory holds one state per member).

    Rolls ``n_members`` members out for ``n_steps`` steps from every initial time
    of ``initial_conditions`` (as :func:`forecast`, same noise streams; one
    initial time after the other, its members in batches of
    ``sampling_cfg.member_batch``). Each (initial time, member) pair is a
    trajectory that stops on its own when it goes unstable: a non-finite sampled
    residual, or a channel whose area-weighted RMS anomaly from the data mean
    exceeds ``max_anomaly`` data standard deviations (the data's own is about 1,
    so 3 flags a state far outside the world's variability). That is not an
    error here; the other trajectories go on. Returns, in physical units:

    * every variable's zonal mean over all stable states of all trajectories
      (leads 1 .. ``stable_steps``, the initial state excluded), named as in the
      data, dims ``([level,] latitude)`` (all NaN if no step was stable);
    * ``global_mean``, ``global_rms``: area-weighted (``dataset.area_weights``)
      mean and root-mean-square of each channel, ``(init_time, member,
      lead_time, channel)``; lead 0 is the initial state, NaN after a
      trajectory stopped;
    * ``stable_steps``: ``(init_time, member)``, the number of steps each
      trajectory stayed stable (``n_steps`` if it never left).

    ``attrs``: ``n_steps``, ``nfe_per_step`` and ``seconds`` (wall time of all
    rollouts). ``residual_bias`` as in :func:`forecast`.
    """
    check_sampler(sampling_cfg)
    init_times = _init_times(initial_conditions["time"].values, stats.step, dataset_cfg.history)
    static = torch.from_numpy(static_features(initial_conditions["latitude"], initial_conditions["longitude"]).values)
    weights = area_weights(stats.latitude)
    shape = (len(init_times), n_members, n_steps + 1, len(stats.channel_names))
    global_mean, global_rms = np.full(shape, np.nan), np.full(shape, np.nan)
    stable_steps = np.zeros(shape[:2], dtype=int)
    zonal_sum, n_zonal, nfe = 0.0, 0, 0
    start = time.perf_counter()
    bar = tqdm(total=len(init_times) * n_steps, desc="climate rollouts", unit="step", disable=not progress)
    for i, init_time in enumerate(init_times):
        batches = _member_batches(
            denoiser, stats, initial_conditions, init_times[i : i + 1], list(range(n_members)), sampling_cfg,
            dataset_cfg, seed, None,
        )
        for step in range(n_steps + 1):
            for b in batches:
                if step > 0 and b.members:
                    residual, nfe = _sample_residual(denoiser, b, static, stats, sampling_cfg, residual_bias)
                    finite = torch.isfinite(residual).flatten(1).all(dim=1)
                    b.keep(finite.numpy())
                    _advance(b, residual[finite], stats, sampling_cfg, dataset_cfg.spectral_truncation)
                if not b.members:
                    continue
                state = to_channels(b.history[0], stats.variables).isel(time=0, drop=True)  # (member, channel, lat, lon)
                anomaly = np.sqrt((((state - stats.mean) / stats.std) ** 2).weighted(weights).mean(SPATIAL_DIMS))
                b.keep((anomaly.max("channel") <= max_anomaly).values)
                if not b.members:
                    continue
                state = state.sel(member=b.members)
                global_mean[i, b.members, step] = state.weighted(weights).mean(SPATIAL_DIMS).values
                global_rms[i, b.members, step] = np.sqrt((state**2).weighted(weights).mean(SPATIAL_DIMS)).values
                stable_steps[i, b.members] = step
                if step > 0:
                    zonal_sum = zonal_sum + state.sum("member").mean("longitude")
                    n_zonal += len(b.members)
            bar.set_postfix(stable=sum(len(b.members) for b in batches), init=str(init_time)[:13])
            if step > 0:
                bar.update()
            if not any(b.members for b in batches):
                bar.update(n_steps - step)
                break
    bar.close()
    seconds = time.perf_counter() - start
    if n_zonal:
        zonal = zonal_sum / n_zonal
    else:
        zonal = xr.full_like(to_channels(initial_conditions.isel(time=0), stats.variables).mean("longitude"), np.nan)
    out = from_channels(zonal.expand_dims(longitude=[0.0], axis=-1)).isel(longitude=0, drop=True)
    coords = {
        "init_time": init_times,
        "member": np.arange(n_members),
        "lead_time": (np.arange(n_steps + 1) * stats.step).astype("timedelta64[ns]"),
        "channel": stats.channel_names,
    }
    dims = tuple(coords)
    out["global_mean"] = xr.DataArray(global_mean, dims=dims, coords=coords)
    out["global_rms"] = xr.DataArray(global_rms, dims=dims, coords=coords)
    out["stable_steps"] = xr.DataArray(stable_steps, dims=dims[:2], coords={k: coords[k] for k in dims[:2]})
    return out.assign_attrs(n_steps=n_steps, nfe_per_step=nfe, seconds=seconds)


def sampler_cost(
    denoiser,
    stats: NormStats,
    initial_conditions: xr.Dataset,
    sampling_cfg: SamplingConfig,
    dataset_cfg: DatasetConfig,
    n_members: int,
    n_steps: int = 1,
    seed: int = 0,
    repeats: int = 1,
) -> dict:
    """Measured cost of :func:`forecast` with ``sampling_cfg`` on this machine.

    Times ``n_steps`` steps of ``n_members`` members (in batches of
    ``sampling_cfg.member_batch``) from the initial times of
    ``initial_conditions``, after one untimed warm-up step; best of ``repeats``.
    The wall time includes everything a forecast does besides the network
    (noise draws, conditions, un-normalising, xarray). Returns ``nfe_per_step``
    (batched model calls per step), ``seconds_per_member_step`` (per member
    and initial time), ``member_steps_per_s`` and ``evaluations_per_s`` (one
    evaluation = one sample through the network: NFE x member-steps / s).
    """
    args = (denoiser, stats, initial_conditions, n_members)
    forecast(*args, 1, sampling_cfg, dataset_cfg, seed, progress=False)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fc = forecast(*args, n_steps, sampling_cfg, dataset_cfg, seed, progress=False)
        best = min(best, time.perf_counter() - start)
    member_steps = n_members * fc.sizes["init_time"] * n_steps
    nfe = int(fc.attrs["nfe_per_step"])
    return {
        "sampler": sampling_cfg.sampler,
        "n_levels": sampling_cfg.n_levels,
        "member_batch": sampling_cfg.member_batch,
        "nfe_per_step": nfe,
        "seconds_per_member_step": best / member_steps,
        "member_steps_per_s": member_steps / best,
        "evaluations_per_s": nfe * member_steps / best,
    }

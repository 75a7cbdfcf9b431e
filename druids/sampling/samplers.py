"""Samplers for the conditional denoiser: pure maths on tensors.

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
model evaluations. Randomness comes from a :class:`~druids.sampling.noise.MemberNoise`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from druids.config import SamplingConfig
from druids.models import flow_sigma, flow_time
from druids.sampling.noise import MemberNoise

DIFFUSION_SAMPLERS = ("edm", "dpmpp_2s")
FLOW_SAMPLERS = ("flow_euler", "flow_heun", "flow_sde")
SAMPLERS = DIFFUSION_SAMPLERS + FLOW_SAMPLERS

@dataclass(frozen=True)
class Churn:
    """Stochastic churn of the diffusion samplers (Karras et al. 2022, Alg. 2; ``SamplingConfig.s_*``).

    Each step inside ``[s_min, s_max]`` first raises the noise level by the
    factor ``1 + min(s_churn / n, sqrt(2) - 1)`` with fresh noise scaled by
    ``s_noise``; ``s_churn = 0`` is the deterministic sampler.
    """

    s_churn: float = 0.0
    s_min: float = 0.0
    s_max: float = float("inf")
    s_noise: float = 1.0


NO_CHURN = Churn()

Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Velocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


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


def _churn_schedule(sigmas: torch.Tensor, churn: Churn) -> list[tuple[float, float, float]]:
    """``(sigma, gamma, sigma_next)`` per step: churn ``min(S_churn / n, sqrt(2) - 1)`` inside ``[S_min, S_max]``, else 0."""
    levels = [float(s) for s in sigmas]
    n = len(levels) - 1
    gammas = [
        min(churn.s_churn / n, math.sqrt(2) - 1) if churn.s_min <= sigma <= churn.s_max else 0.0 for sigma in levels[:-1]
    ]
    return list(zip(levels[:-1], gammas, levels[1:]))


def sample_edm(
    denoise: Denoise, c: torch.Tensor, noise: MemberNoise, sigmas: torch.Tensor, churn: Churn = NO_CHURN
) -> tuple[torch.Tensor, int]:
    """EDM stochastic sampler (Karras et al. 2022, Algorithm 2): Heun steps with churn.

    ``sigmas`` ``(n + 1,)`` from :func:`noise_levels` (last 0); the last step is
    an Euler step, so NFE = ``2n - 1``. Without churn: the deterministic Heun
    sampler (Algorithm 1). Returns ``x`` ``(B, C, H, W)`` and the NFE.
    """
    x, nfe = float(sigmas[0]) * noise(), 0
    for sigma, gamma, sigma_next in _churn_schedule(sigmas, churn):
        x, sigma_hat = _churn(x, sigma, gamma, churn.s_noise, noise)
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
    denoise: Denoise, c: torch.Tensor, noise: MemberNoise, sigmas: torch.Tensor, churn: Churn = NO_CHURN
) -> tuple[torch.Tensor, int]:
    """DPM-Solver++(2S) with stochastic churn, as in GenCast (Price et al. 2025).

    Each step first churns as :func:`sample_edm`, then takes the second-order
    singlestep update of Lu et al. (2022, Alg. 1 with ``r = 1/2``) in
    ``lambda = -log(sigma)``: the midpoint level is ``sqrt(sigma sigma_next)``, and

        x_mid  = (s_mid / s) x + (1 - s_mid / s) D(x; s)
        x_next = (s_next / s) x + (1 - s_next / s) D(x_mid; s_mid).

    The last step (to 0) returns ``D(x; s)``, so NFE = ``2n - 1`` for ``n`` levels.
    """
    x, nfe = float(sigmas[0]) * noise(), 0
    for sigma, gamma, sigma_next in _churn_schedule(sigmas, churn):
        x, sigma = _churn(x, sigma, gamma, churn.s_noise, noise)
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
    """The interpolant velocity ``v = (x_t - D(x_t / (1 - t); sigma)) / t``, ``sigma = flow_sigma(t)``, of an
    x0-predictor, for 0 < t < 1."""

    def velocity(x_t: torch.Tensor, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t[:, None, None, None]
        return (x_t - denoise(x_t / (1 - tt), c, flow_sigma(t))) / tt

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
    ``t = flow_time(sigma_max)``.
    """
    check_sampler(cfg)
    if cfg.sampler in DIFFUSION_SAMPLERS:
        sigmas = noise_levels(cfg.n_levels, cfg.sigma_min, cfg.sigma_max, cfg.rho)
        solver = sample_edm if cfg.sampler == "edm" else sample_dpmpp_2s
        return solver(denoiser.denoise, c, noise, sigmas, Churn(cfg.s_churn, cfg.s_min, cfg.s_max, cfg.s_noise))
    if hasattr(denoiser, "velocity"):
        velocity, t_max = denoiser.velocity, 1.0
    else:
        velocity, t_max = velocity_from_denoise(denoiser.denoise), flow_time(cfg.sigma_max)
    times = flow_times(cfg.n_levels, t_max)
    if cfg.sampler == "flow_euler":
        return sample_flow_euler(velocity, c, noise, times)
    if cfg.sampler == "flow_heun":
        return sample_flow_heun(velocity, c, noise, times)
    return sample_flow_sde(velocity, c, noise, times, cfg.flow_diffusion)

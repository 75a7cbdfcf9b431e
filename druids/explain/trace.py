"""Trace estimators and the identities that tie a denoiser's Jacobian to its errors.

Noise ``y = x + sigma n``, ``n ~ N(0, S)``, inner product ``G`` and noise
space ``R`` as in :mod:`druids.explain.geometry` (``S = c T G^-1``; ``c`` =
``geometry.variance_per_direction``). All norms below are ``G``-norms summed
over channel, latitude and longitude.

* Hutchinson's estimator (Hutchinson 1989) with the denoiser's own noise as
  probes: ``E_n <n, J n> = tr(G J S)``, so the trace of ``J`` on ``R``
  (``T J T`` in ``G``-orthonormal coordinates) is ``tr(G J S) / c``, and the
  sum of its squared singular values is ``E_n ||T J n||^2 / c``: the two
  *effective dimensions* of Mohan et al. (2020, ICLR), :func:`trace_estimates`.
* Stein's identity (Stein 1981) for noise of covariance ``S``, true for any
  weakly differentiable ``D``, gives SURE:
  ``E||D(y) - x||^2 = E||D(y) - y||^2 + 2 sigma^2 E tr(G J S) - sigma^2 tr(G S)``
  (:func:`stein_check`, with ``tr(G J S)`` from one independent probe per sample).
* Tweedie's formula and its second moment (Efron 2011, JASA, "Tweedie's
  formula and selection bias"): for the minimum-MSE denoiser
  ``sigma^2 J S = Cov[x | y]``, so ``sigma^2 E tr(G J S) = E||D(y) - x||^2``;
  their ratio (:attr:`SteinCheck.tweedie_ratio`) is 1 for a Bayes-optimal
  denoiser, below 1 where the Jacobian implies a narrower posterior than the
  model's actual errors (over-confident), above 1 where it implies a wider one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.func import jvp

from druids.explain.geometry import NoiseGeometry


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate: ``mean``, its ``stderr`` and the number of samples ``n``."""

    mean: float
    stderr: float
    n: int

    @classmethod
    def of(cls, samples) -> Estimate:
        """The sample mean of ``samples`` (1-D) and its standard error ``std / sqrt(n)`` (ddof 1)."""
        samples = np.asarray(samples, dtype=np.float64).ravel()
        stderr = samples.std(ddof=1) / np.sqrt(samples.size) if samples.size > 1 else float("nan")
        return cls(float(samples.mean()), float(stderr), int(samples.size))

    def scaled(self, factor: float) -> Estimate:
        return Estimate(self.mean * factor, self.stderr * abs(factor), self.n)


def hutchinson(samples) -> Estimate:
    """Hutchinson's trace estimate from probe values ``z^T A z`` (one per probe), with its standard error."""
    return Estimate.of(samples)


@dataclass(frozen=True)
class TraceEstimates:
    """Effective dimensions of ``J`` on the noise space (Mohan et al. 2020).

    ``trace``: ``tr(T J T)``, the sum of the eigenvalues; ``squared_singular``:
    ``||T J T||_F^2`` in ``G``, the sum of the squared singular values;
    ``trace_gjs``: ``tr(G J S)`` (= ``c * trace``); ``noise_dims``: ``dim R``.
    """

    trace: Estimate
    squared_singular: Estimate
    trace_gjs: Estimate
    noise_dims: int


def trace_estimates(linearisation, geometry: NoiseGeometry, n_probes: int, generator: torch.Generator) -> TraceEstimates:
    """Hutchinson estimates of ``tr(G J S)``, ``tr J`` and ``sum s_i^2`` on the noise space from ``n_probes`` JVPs.

    Probes are draws of the denoiser's own noise ``n ~ N(0, S)``; ``G^(1/2) n / sqrt(c)``
    is standard normal on ``R``, which makes both estimates unbiased.
    """
    shape = linearisation.shape
    probes = geometry.noise((n_probes, *shape), generator)
    response = geometry.project(linearisation.jvp(probes)).cpu().double()
    c = geometry.variance_per_direction
    quadratic = geometry.inner(probes, response).numpy()
    squared = geometry.inner(response, response).numpy()
    gjs = hutchinson(quadratic)
    return TraceEstimates(gjs.scaled(1 / c), Estimate.of(squared / c), gjs, geometry.noise_dims(shape[0]))


def share_outside_unit_interval(eigenvalues, tolerance: float = 1e-9) -> float:
    """Share of ``eigenvalues`` below 0 or above 1.

    An optimal denoiser's eigenvalues on the noise space are >= 0 (``sigma^2 J S``
    is a covariance) and, for a Gaussian or log-concave prior, <= 1 (the
    posterior is then narrower than the noise; Brascamp–Lieb).
    """
    values = np.asarray(eigenvalues)
    return float(np.mean((values < -tolerance) | (values > 1 + tolerance)))


@dataclass(frozen=True)
class SteinCheck:
    """Stein's identity and Tweedie's second moment at one noise level, per grid value (divided by ``d``).

    ``mse``: ``E||D(y) - x||^2 / d``; ``sure``: the SURE estimate of it;
    ``difference``: the paired ``mse - sure`` (0 in expectation for any ``D``);
    ``posterior_variance``: ``sigma^2 E tr(G J S) / d`` (equals ``mse`` for a
    Bayes-optimal ``D``); ``tweedie_ratio`` = posterior_variance / mse, with its
    standard error (delta method). ``trace`` and ``squared_singular``: the two
    effective dimensions of :class:`TraceEstimates` (not divided by ``d``), from
    the same probes; ``noise_dims``: ``dim R``.
    """

    sigma: float
    mse: Estimate
    sure: Estimate
    difference: Estimate
    posterior_variance: Estimate
    tweedie_ratio: Estimate
    trace: Estimate
    squared_singular: Estimate
    noise_dims: int

    def row(self) -> dict[str, float]:
        """The check as a flat dict of means and standard errors (for a table)."""
        names = ("mse", "sure", "difference", "posterior_variance", "tweedie_ratio", "trace", "squared_singular")
        out = {"sigma": self.sigma, "noise_dims": self.noise_dims}
        for name in names:
            estimate = getattr(self, name)
            out |= {name: estimate.mean, f"{name}_stderr": estimate.stderr}
        return out


def stein_check(denoiser, x: torch.Tensor, c: torch.Tensor, sigma: float, geometry: NoiseGeometry, generator: torch.Generator) -> SteinCheck:
    """SURE against the true error, and Tweedie's ratio, on clean targets ``x`` (B, C, H, W) with conditions ``c``.

    Each sample gets diffusion noise and an independent probe ``z ~ N(0, S)``
    for ``z^T G J z``; one batched forward and one batched JVP in all. Works
    in the dtype of ``x``.
    """
    noise = geometry.noise(x.shape, generator, x.dtype).to(x.device)
    probe = geometry.noise(x.shape, generator, x.dtype).to(x.device)
    y = x + sigma * noise
    with torch.no_grad():
        denoised, response = jvp(lambda v: denoiser.denoise(v, c, sigma), (y,), (probe,))
    d = float(np.prod(x.shape[1:]))
    mse = geometry.inner(denoised - x, denoised - x).double().cpu().numpy()
    residual = geometry.inner(denoised - y, denoised - y).double().cpu().numpy()
    divergence = geometry.inner(probe, response).double().cpu().numpy()
    projected = geometry.project(response)
    squared = geometry.inner(projected, projected).double().cpu().numpy()
    c_noise = geometry.variance_per_direction
    sure = residual + 2 * sigma**2 * divergence - sigma**2 * geometry.trace_gs(x.shape[1])
    posterior = sigma**2 * divergence
    return SteinCheck(
        float(sigma),
        Estimate.of(mse / d),
        Estimate.of(sure / d),
        Estimate.of((mse - sure) / d),
        Estimate.of(posterior / d),
        ratio_estimate(posterior, mse),
        Estimate.of(divergence / c_noise),
        Estimate.of(squared / c_noise),
        geometry.noise_dims(x.shape[1]),
    )


def stein_table(denoiser, x: torch.Tensor, c: torch.Tensor, sigmas, geometry: NoiseGeometry, generator: torch.Generator) -> pd.DataFrame:
    """:func:`stein_check` at each of ``sigmas`` on the same samples: one row per ``sigma`` (:meth:`SteinCheck.row`)."""
    return pd.DataFrame([stein_check(denoiser, x, c, s, geometry, generator).row() for s in sigmas]).set_index("sigma")


def ratio_estimate(numerator, denominator) -> Estimate:
    """``mean(numerator) / mean(denominator)`` of paired samples, with its delta-method standard error."""
    a, b = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    ratio = a.mean() / b.mean()
    covariance = np.cov(np.stack([a, b])) / a.size
    gradient = np.array([1 / b.mean(), -a.mean() / b.mean() ** 2])
    return Estimate(float(ratio), float(np.sqrt(max(gradient @ covariance @ gradient, 0.0))), int(a.size))

"""The chapter's spectral survey: leading eigenpairs and traces of the Jacobian for several states and noise levels.

For each named state ``(x, c)`` (clean target residual and condition) and
each ``sigma``, the noisy input is ``y = x + sigma n`` with one draw ``n`` of
the denoiser's own noise per state (the same ``n`` at every ``sigma``, so
that levels differ only in ``sigma``). At each point: the leading eigenpairs
(:func:`druids.explain.spectra.top_eigenpairs`) and Hutchinson traces
(:func:`druids.explain.trace.trace_estimates`), which share one traced
linearisation. The points are independent: :func:`survey` shares them out over
local processes (:func:`druids.runtime.process_map`), each point with its own seeds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from druids import runtime
from druids.config import ExplainConfig
from druids.explain.geometry import NoiseGeometry
from druids.explain.operators import Linearisation
from druids.explain.spectra import EigenPairs, top_eigenpairs
from druids.explain.trace import TraceEstimates, trace_estimates


@dataclass(frozen=True)
class PointSpectrum:
    """The Jacobian at one point: ``state`` name, ``sigma``, noisy input ``y`` (C, H, W), ``pairs``, ``traces`` and
    the operator ``applications`` it took."""

    state: str
    sigma: float
    y: torch.Tensor
    pairs: EigenPairs
    traces: TraceEstimates
    applications: dict


def noisy_input(x: torch.Tensor, sigma: float, geometry: NoiseGeometry, seed: int) -> torch.Tensor:
    """``x + sigma n`` with ``n`` the denoiser's noise drawn from ``seed`` (the same ``n`` for every ``sigma``)."""
    generator = torch.Generator().manual_seed(seed)
    return x + sigma * geometry.noise((1, *x.shape), generator, x.dtype)[0].to(x.device)


def point_spectrum(
    denoiser, geometry: NoiseGeometry, cfg: ExplainConfig, seed: int, point: tuple[str, torch.Tensor, torch.Tensor, float, int, int]
) -> PointSpectrum:
    """The :class:`PointSpectrum` of one survey ``point``: ``(state name, x (C, H, W), c (Cc, H, W), sigma, noise
    seed, trace seed)``; the eigensolver's start vector comes from ``seed``. Module-level so that it runs in
    a spawned process."""
    name, x, c, sigma, noise_seed, trace_seed = point
    y = noisy_input(x, sigma, geometry, noise_seed)
    lin = Linearisation(denoiser, y, c, sigma)
    pairs = top_eigenpairs(lin, geometry, cfg.n_eigen, tol=cfg.eigen_tol, seed=seed)
    traces = trace_estimates(lin, geometry, cfg.n_probes, torch.Generator().manual_seed(trace_seed))
    return PointSpectrum(name, float(sigma), y.cpu(), pairs, traces, dict(lin.applications))


def survey(
    denoiser, states: dict[str, tuple[torch.Tensor, torch.Tensor]], geometry: NoiseGeometry, cfg: ExplainConfig, seed: int,
    progress: bool = True, processes: int | None = None,
) -> list[PointSpectrum]:
    """:class:`PointSpectrum` for every state and every ``cfg.sigmas``, in that order.

    The ``k``-th point (from 0, in that order) of state number ``i`` draws its noise
    from ``seed + i`` and its Hutchinson probes from ``seed + 1000 + k``,
    whichever process computes it.
    ``processes``: local processes (:func:`druids.runtime.process_map`; None:
    one per CPU core, 1 on CUDA; 1: one after another in this process).
    """
    points = [
        (name, x, c, float(sigma), seed + i, seed + 1000 + len(cfg.sigmas) * i + j)
        for i, (name, (x, c)) in enumerate(states.items())
        for j, sigma in enumerate(cfg.sigmas)
    ]
    task = functools.partial(point_spectrum, denoiser, geometry, cfg, seed)
    return runtime.process_map(task, points, processes, desc="Jacobian spectra", progress=progress)


def shrinkage_table(points: list[PointSpectrum]) -> pd.DataFrame:
    """Eigenvalues against their index: columns ``state, sigma, index, eigenvalue`` (index from 1)."""
    rows = [
        {"state": p.state, "sigma": p.sigma, "index": i + 1, "eigenvalue": value}
        for p in points
        for i, value in enumerate(p.pairs.values)
    ]
    return pd.DataFrame(rows)


def trace_table(points: list[PointSpectrum]) -> pd.DataFrame:
    """Effective dimensions per point: ``tr J``, ``sum s^2`` (Hutchinson, with standard errors) and ``dim R``."""
    rows = []
    for p in points:
        t = p.traces
        rows.append(
            {"state": p.state, "sigma": p.sigma, "trace": t.trace.mean, "trace_stderr": t.trace.stderr,
             "squared_singular": t.squared_singular.mean, "squared_singular_stderr": t.squared_singular.stderr,
             "noise_dims": t.noise_dims, "applications": sum(p.applications.values())}
        )  # fmt: skip
    return pd.DataFrame(rows)


def find(points: list[PointSpectrum], state: str, sigma: float) -> PointSpectrum:
    """The point of ``state`` at ``sigma``."""
    return next(p for p in points if p.state == state and np.isclose(p.sigma, sigma))

"""Model ensembles with controlled randomness: where the spread comes from, and how the sampler's noise sets it.

:func:`controlled_forecast` is :func:`druids.sampling.forecast` (same member
batches, conditions, projections and mass fixer, from
:mod:`druids.sampling.rollout`) with three controls (:class:`Controls`):

* ``shared_model_noise``: every member draws the sampler noise of member 0,
  so the members differ only through their initial states (the model as a
  fixed, if random, map: spread from initial-state perturbations alone);
* ``noise_scale``: every noise draw of the sampler is multiplied by it, the
  sampling temperature (``1`` = the trained sampler). For a Gaussian target
  and the probability-flow ODE the samples' spread scales by exactly this
  factor; with churn or an SDE approximately;
* ``initial_noise_scale``: only the sampler's first draw of each step, its
  starting point ``x_T = sigma_max * z``, is multiplied by it.

``perturbations``: per-member physical departures added to the initial
states (e.g. from a perturbed-initial-condition oracle ensemble, so that model
and oracle start from the same perturbed states). Without controls and
perturbations the members equal those of :func:`druids.sampling.forecast`
(tested: this module repeats :func:`druids.sampling.rollout.rollout`'s loop,
which has no place for the controls).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from druids.config import DatasetConfig, SamplingConfig
from druids.data.channels import from_channels, to_channels
from druids.data.normalisation import NormStats, static_condition
from druids.sampling import init_key, member_generator
from druids.sampling.rollout import advance, for_sampling, init_times_of, member_batches, sample_residual


@dataclass(frozen=True)
class Controls:
    """The controls of :func:`controlled_forecast` (module docstring); the defaults change nothing."""

    shared_model_noise: bool = False
    noise_scale: float = 1.0
    initial_noise_scale: float = 1.0


class ScaledNoise:
    """A member-noise source whose draws are multiplied by ``noise_scale``, and the first draw after
    :meth:`restart` (a sampler's starting point) also by ``initial_scale``."""

    def __init__(self, noise, noise_scale: float = 1.0, initial_scale: float = 1.0):
        self.noise, self.noise_scale, self.initial_scale = noise, noise_scale, initial_scale
        self.first = True

    @property
    def generators(self):
        return self.noise.generators

    def restart(self) -> None:
        self.first = True

    def __call__(self) -> torch.Tensor:
        scale = self.noise_scale * (self.initial_scale if self.first else 1.0)
        self.first = False
        return scale * self.noise()


def _perturb(history: list[xr.Dataset], perturbations: xr.Dataset, members: list[int]) -> list[xr.Dataset]:
    """Each state of ``history`` (dims ``member, time, ...``) plus the members' ``perturbations`` (dims ``member, init_time, ...``)."""
    delta = perturbations.sel(member=members).rename(init_time="time")
    out = []
    for state in history:
        shifted = state + delta[list(state.data_vars)].sel(time=state.time).astype(np.float32)
        out.append(xr.Dataset({name: shifted[name].transpose(*state[name].dims).assign_attrs(state[name].attrs) for name in state.data_vars}))
    return out


def _lead(batches, variables, init_times, lead) -> xr.Dataset:
    """The members' latest states as one lead of the forecast layout."""
    channels = xr.concat([to_channels(b.history[0], variables) for b in batches], dim="member")
    ds = from_channels(channels.assign_coords(time=init_times)).rename(time="init_time")
    return ds.expand_dims(lead_time=[lead]).transpose("init_time", "member", "lead_time", ...)


def controlled_forecast(
    denoiser,
    stats: NormStats,
    initial_conditions: xr.Dataset,
    n_members: int,
    n_steps: int,
    sampling_cfg: SamplingConfig,
    dataset_cfg: DatasetConfig,
    seed: int,
    controls: Controls = Controls(),
    perturbations: xr.Dataset | None = None,
) -> xr.Dataset:
    """An ensemble forecast as :func:`druids.sampling.forecast` (in memory, one process), with ``controls``.

    ``perturbations``: physical departures, dims ``(member, init_time, [level,]
    latitude, longitude)`` per variable, added to every state of each member's
    initial history. Returns dims ``(init_time, member, lead_time, [level,]
    latitude, longitude)``, attributes ``nfe_per_step`` and the controls.
    """
    variables = tuple(dataset_cfg.variables)
    init_times = init_times_of(initial_conditions["time"].values, stats.step, dataset_cfg.history)
    members = list(range(n_members))
    denoiser = for_sampling(denoiser, sampling_cfg)
    batches = member_batches(denoiser, stats, initial_conditions, init_times, members, sampling_cfg, dataset_cfg, seed, None)
    for b in batches:
        if perturbations is not None:
            b.history = _perturb(b.history, perturbations, b.members)
        if controls.shared_model_noise:
            b.noise.generators = [member_generator(seed, "model", init_key(t), 0) for _ in b.members for t in init_times]
        b.noise = ScaledNoise(b.noise, controls.noise_scale, controls.initial_noise_scale)
    static = torch.from_numpy(static_condition(stats))
    leads = [_lead(batches, variables, init_times, np.timedelta64(0, "ns"))]
    nfe = 0
    for step in range(1, n_steps + 1):
        for b in batches:
            b.noise.restart()
            residual, nfe = sample_residual(denoiser, b, static, stats, sampling_cfg, None)
            if not torch.isfinite(residual).all():
                raise ValueError(f"The sampled residual at lead step {step} is not finite; check the controls {controls}.")
            advance(b, residual, stats, sampling_cfg, dataset_cfg.spectral_truncation)
        leads.append(_lead(batches, variables, init_times, (step * stats.step).astype("timedelta64[ns]")))
    attrs = {"nfe_per_step": nfe, "noise_scale": controls.noise_scale, "initial_noise_scale": controls.initial_noise_scale,
             "shared_model_noise": int(controls.shared_model_noise), "seed": seed}  # fmt: skip
    return xr.concat(leads, dim="lead_time").assign_attrs(attrs)

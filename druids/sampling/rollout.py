"""Autoregressive rollouts of member batches: conditions from sampled states, residuals sampled, states advanced.

Each step samples the next normalised residual given the condition built from
the previous *sampled* states (as :class:`~druids.data.dataset.ForecastDataset`
builds it) and adds it to the state. After every step the new state is
projected onto the spherical harmonics of the spectral model that made the
data (``DatasetConfig.spectral_truncation``, :func:`druids.sphere.truncate_state`)
and :func:`hold_global_mean` keeps the global-mean surface pressure (the
atmosphere's mass) at its initial value (``SamplingConfig.conserve_mass``).
Used by :mod:`druids.sampling.ensembles` and :mod:`druids.sampling.climate`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import xarray as xr

from druids import runtime
from druids.config import DatasetConfig, SamplingConfig
from druids.data.channels import to_channels
from druids.data.normalisation import (
    NormStats,
    denormalise_state,
    normalise_state,
    residual_to_state,
    static_condition,
)
from druids.data.splits import time_step
from druids.sampling.noise import MemberNoise, init_key, member_generator
from druids.sampling.samplers import sample
from druids.sphere import area_weights, truncate_state

MASS_VARIABLE = "surface_pressure"  # its global mean is held by SamplingConfig.conserve_mass


def initial_states(data: xr.Dataset, init_times, history: int) -> xr.Dataset:
    """The states a forecast from ``init_times`` needs: each time and its ``history - 1`` predecessors, loaded."""
    step = time_step(data["time"].values)
    times = np.unique([t - lag * step for t in np.asarray(init_times, dtype="datetime64[ns]") for lag in range(history)])
    return data.sel(time=times).load()


def init_times_of(times: np.ndarray, step: np.timedelta64, history: int) -> np.ndarray:
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
    ``static`` ``(S, H, W)`` (:func:`~druids.data.normalisation.static_condition`).
    Returns ``(member * time, history * C + S, H, W)``,
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


class MemberBatch:
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


def member_batches(
    denoiser, stats: NormStats, initial_conditions: xr.Dataset, init_times: np.ndarray, members: Sequence[int],
    sampling_cfg: SamplingConfig, dataset_cfg: DatasetConfig, seed: int, ic_perturbation: float | None,
) -> list[MemberBatch]:
    """``members`` in batches of ``sampling_cfg.member_batch``, each with its initial history and noise generators."""
    param = next(denoiser.parameters())
    shape = (len(stats.channel_names), stats.latitude.size, stats.longitude.size)
    batches = []
    for start in range(0, len(members), sampling_cfg.member_batch):
        batch = members[start : start + sampling_cfg.member_batch]
        generators = [member_generator(seed, "model", init_key(t), m) for m in batch for t in init_times]
        history = _initial_history(initial_conditions, init_times, batch, stats, dataset_cfg, seed, ic_perturbation)
        noise = MemberNoise(generators, shape, param.dtype, param.device, getattr(denoiser, "noise_band", None))
        batches.append(MemberBatch(batch, history, noise))
    return batches


def for_sampling(denoiser, sampling_cfg: SamplingConfig):
    """The denoiser as sampling runs it: itself, or a copy (same weights and arithmetic, so that the
    caller's model keeps its layout) in the channels-last layout (``SamplingConfig.channels_last``)
    and compiled with ``torch.compile`` (``SamplingConfig.compile``)."""
    if not (sampling_cfg.channels_last or sampling_cfg.compile):
        return denoiser
    fast = copy.deepcopy(denoiser)
    fast.net.use_channels_last(sampling_cfg.channels_last)
    if sampling_cfg.compile:
        fast.net.compile(dynamic=False)  # one static graph per batch shape (dynamic shapes broke inductor)
    return fast


def sample_residual(
    denoiser, batch: MemberBatch, static: torch.Tensor, stats: NormStats, sampling_cfg: SamplingConfig,
    residual_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, int]:
    """The batch's next normalised residuals ``(member, time, C, H, W)`` on the CPU, and the NFE it took.

    ``residual_bias`` (see :func:`druids.training.tendency_bias`) is subtracted from every sample.
    With ``SamplingConfig.bf16`` the network runs under bfloat16 autocast where
    the device supports it (the samplers' arithmetic stays in the model's precision).
    """
    param = next(denoiser.parameters())
    c = _condition(batch.history, static, stats, stats.variables).to(param.device, param.dtype)
    bf16 = sampling_cfg.bf16 and runtime.bf16_supported(param.device)
    with torch.inference_mode(), torch.autocast(param.device.type, torch.bfloat16, enabled=bf16):
        residual, nfe = sample(denoiser, c, batch.noise, sampling_cfg)
    residual = residual.to(param.dtype)
    if residual_bias is not None:
        residual = residual - residual_bias.to(residual.device, residual.dtype)
    n_times = batch.history[0].sizes["time"]
    return residual.reshape(len(batch.members), n_times, *residual.shape[1:]).cpu(), nfe


def advance(
    batch: MemberBatch, residual: torch.Tensor, stats: NormStats, sampling_cfg: SamplingConfig, truncation: int | None
) -> None:
    """Add ``residual`` (from :func:`sample_residual`) to the batch's latest states and push the new state
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


def rollout(
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
    static = torch.from_numpy(static_condition(stats))
    denoiser = for_sampling(denoiser, sampling_cfg)
    batches = member_batches(
        denoiser, stats, initial_conditions, init_times, members, sampling_cfg, dataset_cfg, seed, ic_perturbation
    )
    nfe = 0
    yield xr.concat([to_channels(b.history[0], variables) for b in batches], dim="member"), nfe
    for step in range(1, n_steps + 1):
        for b in batches:
            residual, nfe = sample_residual(denoiser, b, static, stats, sampling_cfg, residual_bias)
            if not torch.isfinite(residual).all():
                raise ValueError(
                    f"The sampled residual at lead step {step} is not finite (NaN or inf): the model or sampler "
                    "is unstable; check the checkpoint, the noise levels and the sampler settings."
                )
            advance(b, residual, stats, sampling_cfg, dataset_cfg.spectral_truncation)
        yield xr.concat([to_channels(b.history[0], variables) for b in batches], dim="member"), nfe


def hold_global_mean(state: xr.Dataset, reference: xr.Dataset, name: str) -> xr.Dataset:
    """``state`` with ``state[name]`` shifted by one constant per field so its global mean is ``reference``'s.

    Global mean: area-weighted (:func:`druids.sphere.area_weights`) over
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

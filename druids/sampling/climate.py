"""Long free-running rollouts reduced to their climate as they run, member by member until each leaves the world.

:func:`rollout_climate` keeps only zonal means and global-mean series, so
memory holds one state per member however long the run. A trajectory stops on
its own when it leaves the world's range (:func:`departed`); the others go on.
:func:`climate_runs` runs the sampling study's free runs, once per churn, and
:func:`stable_days_table` tabulates how long each member lasted.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np
import pandas as pd
import torch
import xarray as xr

from druids import runtime
from druids.config import DatasetConfig, SamplingConfig, SamplingStudyConfig
from druids.data.channels import (
    SPATIAL_DIMS,
    from_channels,
    to_channels,
)
from druids.data.normalisation import NormStats, static_condition
from druids.sampling.rollout import (
    MemberBatch,
    advance,
    for_sampling,
    init_times_of,
    member_batches,
    sample_residual,
)
from druids.sampling.samplers import check_sampler
from druids.sphere import area_weights


def departed(state: xr.DataArray, stats: NormStats, max_anomaly: float) -> np.ndarray:
    """Which members of ``state`` (channel stack with dim ``member``) left the world's range: (member,) bool.

    A member has left when a channel's area-weighted RMS anomaly from the data
    mean exceeds ``max_anomaly`` data standard deviations (the data's own is
    about 1, so 3 flags a state far outside the world's variability) or is not finite.
    """
    weights = area_weights(stats.latitude)
    anomaly = np.sqrt((((state - stats.mean) / stats.std) ** 2).weighted(weights).mean(SPATIAL_DIMS))
    return ~(anomaly.max("channel") <= max_anomaly).values  # a NaN anomaly counts as departed


class _ClimateRecord:
    """What :func:`rollout_climate` keeps: per-step global means and RMS, stable steps, the zonal-mean sum."""

    def __init__(self, n_init: int, n_members: int, n_steps: int, stats: NormStats):
        shape = (n_init, n_members, n_steps + 1, len(stats.channel_names))
        self.global_mean, self.global_rms = np.full(shape, np.nan), np.full(shape, np.nan)
        self.stable_steps = np.zeros(shape[:2], dtype=int)
        self.weights = area_weights(stats.latitude)
        self.zonal_sum, self.n_zonal = 0.0, 0

    def add(self, i: int, members: list[int], step: int, state: xr.DataArray) -> None:
        """Record the stable ``state`` (member, channel, lat, lon) of ``members`` of initial time ``i`` at ``step``."""
        self.global_mean[i, members, step] = state.weighted(self.weights).mean(SPATIAL_DIMS).values
        self.global_rms[i, members, step] = np.sqrt((state**2).weighted(self.weights).mean(SPATIAL_DIMS)).values
        self.stable_steps[i, members] = step
        if step > 0:
            self.zonal_sum = self.zonal_sum + state.sum("member").mean("longitude")
            self.n_zonal += len(members)

    def zonal_mean(self, template: xr.DataArray) -> xr.Dataset:
        """Every variable's zonal mean over all recorded stable states (all NaN without one), dims ([level,] latitude)."""
        zonal = self.zonal_sum / self.n_zonal if self.n_zonal else xr.full_like(template.mean("longitude"), np.nan)
        return from_channels(zonal.expand_dims(longitude=[0.0], axis=-1)).isel(longitude=0, drop=True)


def _step_batch(
    b: MemberBatch, step: int, denoiser, static, stats: NormStats, sampling_cfg, dataset_cfg, residual_bias, max_anomaly
) -> tuple[xr.DataArray | None, int]:
    """Advance one member batch by one step (none at step 0) and drop its unstable members.

    Returns the stable members' state (member, channel, lat, lon), None if none
    is left, and the NFE of the step (0 at step 0).
    """
    nfe = 0
    if step > 0 and b.members:
        residual, nfe = sample_residual(denoiser, b, static, stats, sampling_cfg, residual_bias)
        finite = torch.isfinite(residual).flatten(1).all(dim=1)
        b.keep(finite.numpy())
        advance(b, residual[finite], stats, sampling_cfg, dataset_cfg.spectral_truncation)
    if not b.members:
        return None, nfe
    state = to_channels(b.history[0], stats.variables).isel(time=0, drop=True)  # (member, channel, lat, lon)
    b.keep(~departed(state, stats, max_anomaly))
    return (state.sel(member=b.members) if b.members else None), nfe


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
    of ``initial_conditions`` (as :func:`~druids.sampling.ensembles.forecast`,
    same noise streams; one initial time after the other, its members in
    batches of ``sampling_cfg.member_batch``). Each (initial time, member) pair
    is a trajectory that stops on its own when it goes unstable: a non-finite
    sampled residual, or a state that :func:`departed`. That is not an error
    here; the other trajectories go on. Returns, in physical units:

    * every variable's zonal mean over all stable states of all trajectories
      (leads 1 .. ``stable_steps``, the initial state excluded), named as in the
      data, dims ``([level,] latitude)`` (all NaN if no step was stable);
    * ``global_mean``, ``global_rms``: area-weighted (:func:`druids.sphere.area_weights`)
      mean and root-mean-square of each channel, ``(init_time, member,
      lead_time, channel)``; lead 0 is the initial state, NaN after a
      trajectory stopped;
    * ``stable_steps``: ``(init_time, member)``, the number of steps each
      trajectory stayed stable (``n_steps`` if it never left).

    ``attrs``: ``n_steps``, ``nfe_per_step`` and ``seconds`` (wall time of all
    rollouts). ``residual_bias`` as in :func:`~druids.sampling.ensembles.forecast`.
    """
    check_sampler(sampling_cfg)
    init_times = init_times_of(initial_conditions["time"].values, stats.step, dataset_cfg.history)
    static = torch.from_numpy(static_condition(stats))
    denoiser = for_sampling(denoiser, sampling_cfg)
    record = _ClimateRecord(len(init_times), n_members, n_steps, stats)
    nfe, start = 0, time.perf_counter()
    bar = runtime.progress(total=len(init_times) * n_steps, desc="climate rollouts", unit="step", disable=not progress)
    for i, init_time in enumerate(init_times):
        batches = member_batches(
            denoiser, stats, initial_conditions, init_times[i : i + 1], list(range(n_members)), sampling_cfg,
            dataset_cfg, seed, None,
        )
        for step in range(n_steps + 1):
            for b in batches:
                state, step_nfe = _step_batch(b, step, denoiser, static, stats, sampling_cfg, dataset_cfg, residual_bias, max_anomaly)
                nfe = step_nfe or nfe
                if state is not None:
                    record.add(i, b.members, step, state)
            bar.set_postfix(stable=sum(len(b.members) for b in batches), init=str(init_time)[:13])
            bar.update(1 if step > 0 else 0)
            if not any(b.members for b in batches):
                bar.update(n_steps - step)
                break
    bar.close()
    template = to_channels(initial_conditions.isel(time=0), stats.variables)
    return _climate_dataset(record, template, init_times, n_members, n_steps, stats).assign_attrs(
        n_steps=n_steps, nfe_per_step=nfe, seconds=time.perf_counter() - start
    )


def _climate_dataset(record: _ClimateRecord, template, init_times, n_members: int, n_steps: int, stats) -> xr.Dataset:
    """:func:`rollout_climate`'s result from its record."""
    out = record.zonal_mean(template)
    coords = {
        "init_time": init_times,
        "member": np.arange(n_members),
        "lead_time": (np.arange(n_steps + 1) * stats.step).astype("timedelta64[ns]"),
        "channel": stats.channel_names,
    }
    dims = tuple(coords)
    out["global_mean"] = xr.DataArray(record.global_mean, dims=dims, coords=coords)
    out["global_rms"] = xr.DataArray(record.global_rms, dims=dims, coords=coords)
    out["stable_steps"] = xr.DataArray(record.stable_steps, dims=dims[:2], coords={k: coords[k] for k in dims[:2]})
    return out


def climate_churns(study: SamplingStudyConfig) -> list[float]:
    """The churns of the study's free runs: ``climate_churn``, then ``climate_compare_churn`` unless it is None."""
    return [c for c in (study.climate_churn, study.climate_compare_churn) if c is not None]


def climate_sampling(sampling_cfg: SamplingConfig, study: SamplingStudyConfig, churn: float) -> SamplingConfig:
    """``sampling_cfg`` with the study's free-run sampler, noise levels and ``churn``, all members in one batch."""
    return dataclasses.replace(
        sampling_cfg,
        sampler=study.climate_sampler,
        n_levels=study.climate_n_levels,
        s_churn=churn,
        member_batch=study.climate_members,
    )


def climate_steps(days: float, step: np.timedelta64) -> int:
    """The number of steps of length ``step`` in ``days`` days, rounded."""
    return int(round(days / (step / np.timedelta64(1, "D"))))


def climate_runs(
    denoiser,
    stats: NormStats,
    initial_conditions: xr.Dataset,
    sampling_cfg: SamplingConfig,
    study: SamplingStudyConfig,
    dataset_cfg: DatasetConfig,
    seed: int,
    residual_bias: torch.Tensor | None = None,
    progress: bool = True,
    processes: int | None = None,
) -> dict[float, xr.Dataset]:
    """The study's free runs, ``{churn: rollout_climate(...)}`` for each of :func:`climate_churns`.

    ``study.climate_members`` members run for ``study.climate_days`` days
    (:func:`climate_steps` of ``stats.step``) from ``initial_conditions`` with
    :func:`climate_sampling`; the same members and noise streams for every churn,
    so the runs differ only in the churn. ``residual_bias`` as in :func:`rollout_climate`.
    The runs go side by side in local processes (``runtime.process_map``: a batch of one or two
    members leaves the second core mostly idle), so each run's ``seconds`` is its wall time beside the other;
    ``processes``: as in ``runtime.process_map`` (1: one run after the other in this process).
    """
    run = functools.partial(
        _rollout_with, denoiser=denoiser, stats=stats, initial_conditions=initial_conditions,
        n_steps=climate_steps(study.climate_days, stats.step), dataset_cfg=dataset_cfg, seed=seed,
        n_members=study.climate_members, residual_bias=residual_bias,
    )  # fmt: skip
    churns = climate_churns(study)
    runs = runtime.process_map(run, [climate_sampling(sampling_cfg, study, churn) for churn in churns], processes, "free runs", progress)
    return dict(zip(churns, runs))


def _rollout_with(sampling_cfg: SamplingConfig, **kwargs) -> xr.Dataset:
    """:func:`rollout_climate` with ``sampling_cfg`` first (what :func:`climate_runs` maps over), no progress bar."""
    return rollout_climate(sampling_cfg=sampling_cfg, progress=False, **kwargs)


def stable_days(rollout: xr.Dataset) -> xr.DataArray:
    """Days each trajectory of a :func:`rollout_climate` result stayed stable, dims (init_time, member)."""
    last_stable_lead = rollout.lead_time.isel(lead_time=rollout.stable_steps).drop_vars("lead_time")
    return (last_stable_lead / np.timedelta64(1, "D")).rename("stable_days")


def stable_days_table(rollouts: dict[float, xr.Dataset]) -> pd.DataFrame:
    """Stable days (:func:`stable_days`) per trajectory, one column ``churn <c>`` per run of :func:`climate_runs`.

    Rows: (init_time, member); a last row ``minutes`` holds each run's wall time.
    """
    table = pd.DataFrame({f"churn {churn:g}": stable_days(run).to_series() for churn, run in rollouts.items()})
    table.loc[("minutes", ""), :] = [run.attrs["seconds"] / 60 for run in rollouts.values()]
    return table

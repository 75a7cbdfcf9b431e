"""The sampler study: how steps, churn, noise inflation and the starting noise set an ensemble's skill and spread.

Each :class:`SamplerSetting` is a :class:`~druids.config.SamplingConfig` and an
initial-noise scale (:class:`druids.calibration.ensembles.Controls`); every
setting forecasts the same members from the same states
(:func:`druids.calibration.ensembles.controlled_forecast`), and
:func:`sampler_sweep` tabulates fair CRPS, spread-skill ratio and, with the
oracle, spread ratio and energy distance against the denoiser evaluations per
step (NFE), by field and lead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd
import xarray as xr

from druids.calibration.ensembles import Controls, controlled_forecast
from druids.calibration.oracle import energy_distance, spread_ratio
from druids.calibration.scores import components, headline, spatial_mean
from druids.calibration.skill import verifying_truth
from druids.config import SamplingConfig
from druids.data.diagnostics import field_stack


@dataclass(frozen=True)
class SamplerSetting:
    """One point of the sweep: a sampler configuration and the scale of its starting noise."""

    sampling: SamplingConfig
    initial_noise_scale: float = 1.0

    @property
    def label(self) -> str:
        s = self.sampling
        if s.sampler.startswith("flow"):
            text = f"{s.sampler} n={s.n_levels}"
            return text + (f" g={s.flow_diffusion:g}" if s.sampler == "flow_sde" else "")
        return f"{s.sampler} n={s.n_levels} churn={s.s_churn:g} S_noise={s.s_noise:g} x_T*{self.initial_noise_scale:g}"


def diffusion_sweep(base: SamplingConfig, levels, churns, noises, initial_scales) -> list[SamplerSetting]:
    """EDM-model settings: every ``levels x churns`` pair at ``base``'s S_noise, then each other S_noise
    and each other initial-noise scale at ``base``'s levels and churn (one factor at a time)."""
    settings = [SamplerSetting(dataclasses.replace(base, n_levels=n, s_churn=c)) for n in levels for c in churns]
    settings += [SamplerSetting(dataclasses.replace(base, s_noise=s)) for s in noises if s != base.s_noise]
    settings += [SamplerSetting(base, scale) for scale in initial_scales if scale != 1.0]
    return list(dict.fromkeys(settings))


def flow_sweep(base: SamplingConfig, levels, diffusions) -> list[SamplerSetting]:
    """Flow-model settings: the probability-flow ODE (Euler, Heun) and the SDE at each ``diffusions``, for each ``levels``."""
    settings = []
    for n in levels:
        settings += [SamplerSetting(dataclasses.replace(base, sampler=name, n_levels=n)) for name in ("flow_euler", "flow_heun")]
        settings += [SamplerSetting(dataclasses.replace(base, sampler="flow_sde", n_levels=n, flow_diffusion=g)) for g in diffusions]
    return settings


def _rows(setting: SamplerSetting, model: xr.DataArray, truth: xr.DataArray, oracle: xr.DataArray | None, nfe: int) -> pd.DataFrame:
    scores = headline(components(model, truth))[["crps_fair", "ssr", "spread", "rmse"]]
    if oracle is not None:
        scores["spread_ratio"] = spread_ratio(model, oracle)
        scores["energy_distance"] = spatial_mean(energy_distance(model, oracle)).mean("init_time")
    table = scores.to_dataframe().reset_index()
    s = setting.sampling
    return table.assign(setting=setting.label, sampler=s.sampler, n_levels=s.n_levels, s_churn=s.s_churn, s_noise=s.s_noise,
                        initial_noise_scale=setting.initial_noise_scale, flow_diffusion=s.flow_diffusion, nfe_per_step=nfe)  # fmt: skip


def sampler_sweep(
    denoiser, stats, initial_conditions: xr.Dataset, truth: xr.Dataset, settings: list[SamplerSetting], fields,
    n_members: int, n_steps: int, dataset_cfg, seed: int, oracle: xr.Dataset | None = None,
) -> pd.DataFrame:
    """Scores of every setting's ensemble from ``initial_conditions``, one row per setting, field and lead (lead 0 left out).

    ``truth``: the data store's layout (dim ``time``); ``oracle``: optional
    oracle forecast from the same states with at least ``n_steps`` leads.
    ``fields``: (variable, level) pairs. Columns: the setting's parameters,
    ``nfe_per_step``, ``crps_fair``, ``ssr``, ``spread``, ``rmse`` and, with the
    oracle, ``spread_ratio`` and ``energy_distance``.
    """
    tables = []
    for setting in settings:
        controls = Controls(initial_noise_scale=setting.initial_noise_scale)
        ens = controlled_forecast(denoiser, stats, initial_conditions, n_members, n_steps, setting.sampling, dataset_cfg, seed, controls)
        ens = ens.isel(lead_time=slice(1, None))
        model = field_stack(ens, fields)
        observed = field_stack(verifying_truth(ens, truth), fields).load()
        reference = None if oracle is None else field_stack(oracle.sel(lead_time=ens.lead_time), fields)
        tables.append(_rows(setting, model, observed, reference, ens.attrs["nfe_per_step"]))
    return pd.concat(tables, ignore_index=True)

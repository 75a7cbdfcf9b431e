"""Skill against the best possible forecast: the model's errors over the Held–Suarez oracle's.

The world's oracle ensemble samples the exact forecast distribution, so its
ensemble mean is the best forecast any model can make from the same initial
state (in the mean-squared sense, up to its finite size). Two ratios say how
far a model is from it (both 1 for a perfect model, larger is worse):

* :func:`oracle_skill`: the model's ensemble-mean RMSE over the oracle's, from
  the same initial times, per field and lead. RMSE is area-weighted
  (:func:`druids.sphere.area_weights`) over latitude, longitude and initial
  times. An M-member mean carries sampling noise: its expected MSE is that of
  the infinite ensemble's mean plus (ensemble variance) / M. With equal
  member counts the two sides carry comparable noise and the ratio compares
  them as they are; otherwise both MSEs are first corrected to infinite
  ensembles by subtracting their unbiased (ddof = 1) area-mean variance / M.
* :func:`one_step_error_by_latitude`: the error of the model's one-step (6-h)
  conditional mean (the denoiser at its largest noise level: a sampler with
  one noise level and no churn) against the oracle's one-step spread, as RMS
  over longitude and initial times, per latitude: the oracle's spread is the
  RMSE of the best one-step forecast.

:func:`skill_against_oracle` makes the ensembles and computes both on a split
(:func:`druids.calibration.levers.trained_skill` for a configuration's model).

Inputs are field stacks (:func:`druids.data.diagnostics.field_stack`) or
datasets with dims ``(init_time, [member,] lead_time, [level,] latitude, longitude)``
and a truth with ``time`` (:func:`druids.calibration.skill.verifying_truth`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from druids.calibration.experiments import split_init_times
from druids.calibration.oracle import oracle_forecast
from druids.calibration.skill import verifying_truth
from druids.config import Config
from druids.data.diagnostics import field_stack
from druids.sampling import forecast, initial_states
from druids.sphere import area_weights

SPATIAL = ("latitude", "longitude")


def ensemble_mean_mse(ensemble: xr.DataArray, observed: xr.DataArray, infinite: bool) -> xr.DataArray:
    """Area-weighted MSE of the ensemble mean against ``observed``, over initial times and space.

    ``infinite``: corrected to an infinite ensemble by subtracting the
    area-mean unbiased ensemble variance divided by the number of members.
    """
    weights = area_weights(ensemble.latitude)
    over = ["init_time", *SPATIAL]
    mse = ((ensemble.mean("member") - observed) ** 2).weighted(weights).mean(over)
    if infinite:
        members = ensemble.sizes["member"]
        mse = mse - ensemble.var("member", ddof=1).weighted(weights).mean(over) / members
    return mse


def oracle_skill(model: xr.Dataset, oracle: xr.Dataset, truth: xr.Dataset, fields) -> xr.Dataset:
    """Ensemble-mean RMSE of ``model`` and ``oracle`` from the same initial times, and their ratio.

    ``fields``: (variable, level or None) pairs. Returns ``model_rmse``,
    ``oracle_rmse`` (field units) and ``ratio`` with dims ``(field, lead_time)``,
    and the ensembles' spreads ``model_spread``, ``oracle_spread`` (root of the
    area-weighted mean unbiased member variance) and ``spread_ratio`` (1: the
    model's ensemble as wide as the exact forecast distribution), and each
    ensemble's spread-skill ratio ``model_ssr``, ``oracle_ssr``
    (``sqrt((M + 1) / M) * spread / RMSE``, variances and squared errors averaged
    before the roots, the RMSE without the finite-ensemble correction; as
    :func:`druids.calibration.scores.headline`);
    lead 0 (both the initial state) is dropped. See the module docstring for
    the finite-ensemble convention.
    """
    if not np.array_equal(model.init_time.values, oracle.init_time.values):
        raise ValueError("model and oracle ensembles must start from the same initial times")
    leads = model.lead_time.values[model.lead_time.values > np.timedelta64(0, "ns")]
    model, oracle = model.sel(lead_time=leads), oracle.sel(lead_time=leads)
    infinite = model.sizes["member"] != oracle.sizes["member"]
    observed = field_stack(verifying_truth(model, truth), fields)
    stacks = {name: field_stack(ens, fields) for name, ens in (("model", model), ("oracle", oracle))}
    weights, over = area_weights(model.latitude), ["init_time", *SPATIAL]
    out = xr.Dataset({
        **{f"{name}_rmse": np.sqrt(ensemble_mean_mse(stack, observed, infinite)) for name, stack in stacks.items()},
        **{f"{name}_spread": np.sqrt(stack.var("member", ddof=1).weighted(weights).mean(over)) for name, stack in stacks.items()},
    })  # fmt: skip
    for name, stack in stacks.items():  # spread-skill ratio (GenCast's convention), uncorrected MSE
        factor = np.sqrt((stack.sizes["member"] + 1) / stack.sizes["member"])
        out[f"{name}_ssr"] = factor * out[f"{name}_spread"] / np.sqrt(ensemble_mean_mse(stack, observed, infinite=False))
    out = out.assign(spread_ratio=out.model_spread / out.oracle_spread)
    return out.assign(ratio=out.model_rmse / out.oracle_rmse).assign_attrs(
        model_members=model.sizes["member"], oracle_members=oracle.sizes["member"], infinite_ensemble_correction=int(infinite)
    )


def one_step_error_by_latitude(mean_forecast: xr.Dataset, oracle: xr.Dataset, truth: xr.Dataset, fields) -> xr.Dataset:
    """The model's one-step conditional-mean error against the oracle's one-step spread, per latitude.

    ``mean_forecast``: the model's conditional-mean forecast (one member, or
    the ``member`` dim absent) and ``oracle`` its oracle ensemble, from the same
    initial times, each with the one-step lead (the first lead after 0).
    Returns ``model_error`` (RMS over longitude and initial times of the error
    against the truth), ``oracle_spread`` (root of the mean unbiased member
    variance over the same) and ``ratio``, dims ``(field, latitude)``, field units.
    """
    lead = mean_forecast.lead_time.values[mean_forecast.lead_time.values > np.timedelta64(0, "ns")][0]
    forecast = mean_forecast.sel(lead_time=[lead])
    if "member" in forecast.dims:
        forecast = forecast.mean("member")
    observed = field_stack(verifying_truth(forecast, truth), fields).isel(lead_time=0)
    error = np.sqrt(((field_stack(forecast, fields).isel(lead_time=0) - observed) ** 2).mean(["init_time", "longitude"]))
    members = field_stack(oracle.sel(lead_time=lead), fields)
    spread = np.sqrt(members.var("member", ddof=1).mean(["init_time", "longitude"]))
    return xr.Dataset({"model_error": error, "oracle_spread": spread, "ratio": error / spread}).assign_attrs(
        lead_hours=float(lead / np.timedelta64(1, "h"))
    )


def skill_against_oracle(
    denoiser, stats, data: xr.Dataset, cfg: Config, split_name: str, n_init: int, n_members: int, n_steps: int,
    progress: bool = False,
) -> tuple[xr.Dataset, xr.Dataset]:
    """:func:`oracle_skill` and :func:`one_step_error_by_latitude` of a model on ``n_init`` times of a split.

    ``n_members``-member ensembles of the model (``cfg.sampling``) and of the
    oracle, ``n_steps`` steps from the same initial times, for the headline
    fields (``cfg.levels``); the one-step conditional mean is the model's
    sample with one noise level and no churn (its estimate at ``SamplingConfig.sigma_max``).
    """
    variables, fields = list(cfg.dataset.variables), cfg.levels.headline_fields
    init_times = split_init_times(data, cfg, split_name, n_init, n_steps)
    states, truth = initial_states(data[variables], init_times, cfg.dataset.history), data[variables]
    sampling_cfg = dataclasses.replace(cfg.sampling, member_batch=n_members)
    model = forecast(denoiser, stats, states, n_members, n_steps, sampling_cfg, cfg.dataset, cfg.seed, progress=progress)
    oracle = oracle_forecast(cfg.world, init_times, n_members, n_steps, cfg.seed, variables)
    mean = conditional_mean_step(denoiser, stats, states, cfg)
    return oracle_skill(model, oracle, truth, fields), one_step_error_by_latitude(mean, oracle, truth, fields)


def conditional_mean_step(denoiser, stats, states: xr.Dataset, cfg: Config) -> xr.Dataset:
    """The model's one-step (6-h) conditional-mean forecast from ``states``: a sampler with one noise
    level and no churn, i.e. the denoiser's estimate at ``SamplingConfig.sigma_max``; forecast layout, one member."""
    mean_cfg = dataclasses.replace(cfg.sampling, n_levels=1, s_churn=0.0, member_batch=1)
    return forecast(denoiser, stats, states, 1, 1, mean_cfg, cfg.dataset, cfg.seed, progress=False)

"""The quick skill check: errors of an ensemble mean against the truth and reference forecasts.

Conventions (WeatherBench2): RMSE = sqrt of the area-weighted (cos latitude,
``dataset.area_weights``) mean squared error over latitude, longitude and
initial times; an ensemble is scored through its mean. Scores come from the
``scores`` library (Leeuwenburg et al. 2024), not re-implemented here.

Forecast layout: dims (init_time, [member,] lead_time, [level,] latitude,
longitude); truth layout: the data store's (time, [level,] latitude, longitude).
:class:`SkillValidator` runs :func:`forecast_skill` during training. The full
probabilistic scores (fair CRPS, spread-skill ratio, ranks, ...) are in
:mod:`druids.calibration.scores`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import scores
import xarray as xr

from druids.data.diagnostics import field_stack
from druids.data.splits import forecast_window, split
from druids.sampling import forecast, initial_states
from druids.sphere import area_weights

SPATIAL = ("latitude", "longitude")


def verifying_truth(forecast: xr.Dataset | xr.DataArray, truth: xr.Dataset | xr.DataArray):
    """The truth at each forecast's valid time, dims (init_time, lead_time, ...)."""
    valid = forecast.init_time + forecast.lead_time
    missing = np.setdiff1d(valid.values.ravel(), truth.time.values)
    if missing.size:
        raise ValueError(f"the truth lacks {missing.size} valid times, e.g. {missing[0]}; shorten the lead or move the initial times")
    return truth.sel(time=valid).drop_vars("time")


def persistence(forecast: xr.Dataset | xr.DataArray, truth: xr.Dataset | xr.DataArray):
    """Persistence forecast: the state at initial time for every lead, dims (init_time, lead_time, ...)."""
    initial = truth.sel(time=forecast.init_time).drop_vars("time")
    return initial.expand_dims(lead_time=forecast.lead_time).transpose("init_time", "lead_time", ...)


def rmse(forecast: xr.DataArray, truth: xr.DataArray, over: tuple[str, ...] = ("init_time", *SPATIAL)) -> xr.DataArray:
    """Area-weighted RMSE over ``over`` (``scores.continuous.rmse``); an ensemble's mean is scored."""
    if "member" in forecast.dims:
        forecast = forecast.mean("member")
    weights = area_weights(forecast.latitude)
    return scores.continuous.rmse(forecast, truth, reduce_dims=list(over), weights=weights)


def skill_table(
    forecast: xr.Dataset,
    truth: xr.Dataset,
    climatology: xr.Dataset,
    fields: list[tuple[str, float | None]],
    leads_hours: list[int],
) -> pd.DataFrame:
    """RMSE of the ensemble mean, persistence and climatology per field and lead.

    ``fields``: (variable, level or None). ``climatology``: a time-mean state
    (level, latitude, longitude), e.g. the training-split mean. Rows: field and
    lead (hours); columns: ``model``, ``persistence``, ``climatology`` (field units).
    """
    leads = np.array(leads_hours, dtype="timedelta64[h]").astype("timedelta64[ns]")
    forecast = forecast.sel(lead_time=leads)
    observed = verifying_truth(forecast, truth)
    persisted = persistence(forecast, truth)
    rows = []
    for name, level in fields:
        def pick(ds):
            return ds[name] if level is None else ds[name].sel(level=level)

        scored = {
            "model": rmse(pick(forecast), pick(observed)),
            "persistence": rmse(pick(persisted), pick(observed)),
            "climatology": rmse(pick(climatology).broadcast_like(pick(observed)), pick(observed)),
        }
        label = name if level is None else f"{name}@{level:g}"
        for lead in leads_hours:
            rows.append({"field": label, "lead_hours": lead, **{k: float(v.sel(lead_time=np.timedelta64(lead, "h"))) for k, v in scored.items()}})
    return pd.DataFrame(rows).set_index(["field", "lead_hours"])


def step_hours(stats) -> int:
    """The data's time step in whole hours (``stats.step``: what one forecast step advances)."""
    hours = stats.step / np.timedelta64(1, "h")
    if hours != round(hours):
        raise ValueError(f"the data's time step {stats.step} is not a whole number of hours")
    return round(hours)


def forecast_skill(
    denoiser, stats, data: xr.Dataset, cfg, split_name: str = "test", leads_hours=None, progress: bool = True
) -> tuple[xr.Dataset, pd.DataFrame]:
    """Quick ensemble forecasts from one split and their skill table (chapter 02, training validation).

    ``cfg`` is a :class:`druids.config.Config`; ``cfg.skill`` sets the number of
    initial times (evenly spaced over split ``split_name``), members and sampler noise
    levels; ``leads_hours`` (multiples of the data's step, ``stats.step``) defaults to
    ``cfg.skill.leads_hours``. Climatology is the training split's time mean per grid
    point as the statistics hold it (``stats.climatology``), not a new pass over the
    split; only the verifying states are read (:func:`~druids.data.splits.forecast_window`).
    Returns the forecast and :func:`skill_table`. The forecast runs in this process
    alone, also under ``torchrun`` (training validates on rank 0 while the other ranks wait).
    """
    leads_hours = list(cfg.skill.leads_hours if leads_hours is None else leads_hours)
    step = step_hours(stats)
    if any(lead % step for lead in leads_hours):
        raise ValueError(f"leads {leads_hours} h are not all multiples of the data's {step}-h step")
    max_steps = max(leads_hours) // step
    part = split(data, cfg.dataset, split_name)
    history = cfg.dataset.history
    last = part.sizes["time"] - 1 - max_steps
    if last < history - 1:
        raise ValueError(f"the {split_name} split ({part.sizes['time']} times) is too short for {max_steps}-step forecasts")
    init_times = part.time.values[np.unique(np.linspace(history - 1, last, cfg.skill.n_init).round().astype(int))]
    sampling = dataclasses.replace(cfg.sampling, n_levels=cfg.skill.n_levels, member_batch=cfg.skill.n_members)
    fc = forecast(
        denoiser, stats, initial_states(part, init_times, history), cfg.skill.n_members, max_steps, sampling, cfg.dataset,
        seed=cfg.seed, progress=progress, shard=False,
    )
    fc = fc.sel(init_time=init_times)
    fields = cfg.levels.skill_fields
    truth = forecast_window(part[list(dict.fromkeys(name for name, _ in fields))], init_times, max_steps)
    return fc, skill_table(fc, truth, stats.climatology_state(), fields, leads_hours)


class SkillValidator:
    """A ``druids.training`` validator: one-step skill of a quick ensemble on the validation split.

    ``SkillValidator(cfg)(denoiser, stats, data) -> dict`` with, per field of
    ``cfg.levels.skill_fields``, the ensemble-mean, persistence and climatology RMSE
    one data step (``stats.step``, 6 h) ahead.
    A class rather than a closure so that it pickles into the processes of
    ``training.train(..., processes=N)``.
    """

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, denoiser, stats, data) -> dict:
        cfg = self.cfg
        table = forecast_skill(denoiser, stats, data, cfg, split_name="val", leads_hours=[step_hours(stats)], progress=False)[1]
        table = table.reset_index()
        return {"field": table["field"].tolist(), **{k: table[k].tolist() for k in ("model", "persistence", "climatology")}}


# ----------------------------------------------------------- spread and skill


def spread_skill(forecast: xr.Dataset, truth: xr.Dataset, fields: list[tuple[str, float | None]]) -> xr.Dataset:
    """Ensemble spread and ensemble-mean RMSE against the truth, per field and lead time.

    ``forecast``: dims (init_time, member, lead_time, [level,] latitude, longitude);
    ``truth``: the data store's layout (time, ...). With ``w`` the area weights
    (``dataset.area_weights``), averages over latitude, longitude and initial times:

    * ``spread`` = sqrt(mean of the unbiased (ddof = 1) ensemble variance), the
      WeatherBench2 convention, without the sqrt((M + 1) / M) finite-ensemble
      factor that a spread-skill ratio of M members applies;
    * ``rmse`` = :func:`rmse` of the ensemble mean.

    Returns a Dataset with dims (field, lead_time), field units.
    """
    ensemble = field_stack(forecast, fields)
    observed = field_stack(verifying_truth(forecast, truth), fields)
    weights = area_weights(ensemble.latitude)
    variance = ensemble.var("member", ddof=1).weighted(weights).mean(["init_time", *SPATIAL])
    return xr.Dataset({"spread": np.sqrt(variance), "rmse": rmse(ensemble, observed)}).assign_attrs(
        n_members=ensemble.sizes["member"]
    )

"""Lever studies: train (or load) the model of a configuration and measure it, cached by configuration.

The studies in ``notebooks/studies/`` change one thing of a profile at a time
(data length, steps, width, ...) and compare what it does:

* :func:`trained_skill`: validation loss, skill against the oracle and the
  ensembles' spread-skill ratios (:mod:`druids.calibration.oracle_skill`);
* :func:`last_validation`: the run's last validation losses and 6-h skill;
* :func:`trained_free_run`: how many days free-running members stay in the
  world's range (chapter 03's free runs, :func:`druids.sampling.climate_runs`).

A run that is not yet trained is trained first (``druids train`` would write the
same run directory); results go to ``.cache/<kind>/``, so a rerun of a study only
computes what changed.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pandas as pd

from druids.cache import compute_or_load
from druids.calibration.experiments import split_init_times
from druids.calibration.oracle_skill import skill_against_oracle
from druids.calibration.skill import SkillValidator
from druids.config import Config
from druids.data import dataset
from druids.data.source import open_dataset
from druids.sampling import climate_runs, initial_states, stable_days
from druids.sphere import area_weights
from druids.training import TrainedModel, auto_processes, load_trained, read_extra_validation, tendency_bias


def last_validation(cfg: Config, progress: bool = True) -> pd.Series:
    """The last validation of the run of ``cfg`` (trained first if missing, with the skill validator):
    MSE per noise level (normalised units) and the skill validator's 6-h RMSE per field (field units)."""
    run = load_trained(cfg, progress=progress, processes=auto_processes(cfg), validators=[SkillValidator(cfg)])
    val = run.metrics[run.metrics.kind == "val"]
    last = val[val.step == val.step.max()]
    extra = read_extra_validation(run.run_dir)
    extra = extra[extra.step == extra.step.max()]
    return pd.Series({**{f"val MSE, sigma {s:.3g}": v for s, v in zip(last.sigma, last.val_mse, strict=True)},
                      **{f"6-h RMSE {f}": v for f, v in zip(extra.field, extra.model, strict=True)}})  # fmt: skip


def _trained(cfg: Config, progress: bool) -> tuple[TrainedModel, float]:
    """The trained model of ``cfg`` and the minutes it took to train (0 if it was finished)."""
    start = time.perf_counter()
    run = load_trained(cfg, progress=progress, processes=auto_processes(cfg))
    return run, (time.perf_counter() - start) / 60


@dataclasses.dataclass(frozen=True)
class SkillKey:
    """Cache key of :func:`trained_skill`: the run and how it is scored."""

    config: Config
    split_name: str
    n_init: int
    n_members: int
    n_steps: int


def trained_skill(cfg: Config, split_name: str, n_init: int, n_members: int, n_steps: int, progress: bool = True) -> dict:
    """Train (or load) the model of ``cfg`` and score it against the oracle on a split; cached by ``cfg``.

    Returns a flat dict: ``training_minutes`` (0 if the run was cached),
    ``val_mse_sigma_max`` (the last validation's denoising MSE at the largest
    noise level, normalised units), ``ratio_<field>_<hours>h``, ``spread_ratio_<field>_<hours>h``,
    ``model_ssr_<field>_<hours>h`` and ``oracle_ssr_<field>_<hours>h`` for every lead of
    :func:`~druids.calibration.oracle_skill.oracle_skill`, and ``one_step_ratio_<field>``, the
    area-weighted mean over latitude of the one-step conditional-mean error over the oracle's spread.
    Rows cached before the SSR columns existed lack them.
    """

    def compute() -> dict:
        run, minutes = _trained(cfg, progress)
        data, _ = open_dataset(cfg, progress=progress)
        skill, one_step = skill_against_oracle(run.denoiser, run.stats, data, cfg, split_name, n_init, n_members, n_steps)
        val = run.metrics[run.metrics.kind == "val"]
        row = {"training_minutes": minutes, "val_mse_sigma_max": float(val[val.step == val.step.max()].val_mse.iloc[-1])}
        for field in skill.field.values:
            for lead in skill.lead_time.values:
                hours = f"{lead / np.timedelta64(1, 'h'):g}h"
                row[f"ratio_{field}_{hours}"] = float(skill.ratio.sel(field=field, lead_time=lead))
                for name in ("spread_ratio", "model_ssr", "oracle_ssr"):
                    row[f"{name}_{field}_{hours}"] = float(skill[name].sel(field=field, lead_time=lead))
            weights = area_weights(one_step.latitude)
            row[f"one_step_ratio_{field}"] = float(one_step.ratio.sel(field=field).weighted(weights).mean())
        return row

    key = SkillKey(cfg, split_name, n_init, n_members, n_steps)
    return compute_or_load("trained_skill", key, compute, save=_save_json, load=_load_json, suffix="json")


@dataclasses.dataclass(frozen=True)
class FreeRunKey:
    """Cache key of :func:`trained_free_run`."""

    config: Config
    split_name: str
    days: float
    members: int


def trained_free_run(cfg: Config, split_name: str, days: float, members: int, progress: bool = True) -> dict:
    """How long free-running members of ``cfg``'s trained model stay in the world's range; cached by ``cfg``.

    As chapter 03 runs them (``SamplingStudyConfig``'s free-run sampler with
    ``climate_churn``, the tendency bias of the training split subtracted,
    mass held): ``members`` members for at most ``days`` days from the first
    time of split ``split_name``. Returns ``stable_days`` (per member, a
    member that never left the range has ``days``), ``all_stable`` (how many
    lasted the whole run) and ``minutes`` (wall time of the runs).
    """

    def compute() -> dict:
        run, _ = _trained(cfg, progress)
        data, _ = open_dataset(cfg, progress=progress)
        variables = list(cfg.dataset.variables)
        bias = tendency_bias(run.denoiser, dataset.ForecastDataset(data, run.stats, "train", cfg.dataset))
        first = split_init_times(data, cfg, split_name, 1, 0)
        study = dataclasses.replace(cfg.sampling_study, climate_days=days, climate_members=members, climate_compare_churn=None)
        start = time.perf_counter()
        rollouts = climate_runs(run.denoiser, run.stats, initial_states(data[variables], first, cfg.dataset.history),
                                cfg.sampling, study, cfg.dataset, cfg.seed, residual_bias=bias, progress=progress)  # fmt: skip
        rollout = rollouts[study.climate_churn]
        lasted = stable_days(rollout).isel(init_time=0).values
        return {"stable_days": [float(d) for d in lasted], "all_stable": int((rollout.stable_steps == rollout.attrs["n_steps"]).sum()),
                "minutes": (time.perf_counter() - start) / 60}  # fmt: skip

    key = FreeRunKey(cfg, split_name, days, members)
    return compute_or_load("trained_free_run", key, compute, save=_save_json, load=_load_json, suffix="json")


def _save_json(row: dict, path) -> None:
    path.write_text(json.dumps(row))


def _load_json(path) -> dict:
    return json.loads(path.read_text())

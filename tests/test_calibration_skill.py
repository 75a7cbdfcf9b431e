"""The quick skill check (chapter 02) and its training validator: the data's own time step, the statistics' climatology."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from druids import calibration
from druids.config import DatasetConfig, ReferenceLevels, SkillConfig, get_config
from druids.data import normalisation, splits
from known_models import Analytic
from wb2 import Random, wb2_dataset

VARIABLES = ("temperature", "u_component_of_wind", "v_component_of_wind")
TWELVE_HOURS = np.timedelta64(12, "h")

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def twelve_hourly():
    """A 12-hourly store (the world's step is 6 h), its configuration and training statistics."""
    fields = {name: Random("ar1", phi=0.7) for name in VARIABLES}
    store = wb2_dataset(fields, grid="equiangular", n_lat=8, n_lon=16, levels=(300.0, 562.5), n_times=48, step=TWELVE_HOURS, seed=3)
    dataset = DatasetConfig(variables=VARIABLES, gap_days=1.0, spectral_truncation=None, step_hours=12)
    skill = SkillConfig(n_init=3, n_members=2, n_levels=3, leads_hours=(12, 24))
    cfg = dataclasses.replace(get_config("smoke"), dataset=dataset, skill=skill, levels=ReferenceLevels(upper=300.0, middle=562.5))
    stats = normalisation.compute_norm_stats(splits.split(store, dataset, "train"), VARIABLES)
    return store, cfg, stats


def zero_residual():
    """A denoiser whose every estimate is 0: each step adds the residual's mean (``stats.residual_mean``)."""
    return Analytic(lambda y, c, sigma: torch.zeros_like(y))


def test_forecast_skill_steps_by_the_data_and_scores_against_the_statistics_climatology(twelve_hourly):
    store, cfg, stats = twelve_hourly
    train = splits.split(store, cfg.dataset, "train")
    spoiled = store.copy(deep=True)
    for name in VARIABLES:  # the training split is not read again: its climatology comes with the statistics
        spoiled[name][: train.sizes["time"]] = np.nan
    fc, table = calibration.forecast_skill(zero_residual(), stats, spoiled, cfg, progress=False)
    assert (fc.lead_time.values == np.array([0, 1, 2]) * TWELVE_HOURS).all() and fc.sizes["init_time"] == 3
    climatology = train.mean("time")
    for name, level in cfg.levels.skill_fields:
        truth = store[name].sel(level=level)
        label = f"{name}@{level:g}"
        increment = float(stats.residual_mean.sel(channel=label))
        for lead in (12, 24):
            valid = truth.sel(time=fc.init_time.values + np.timedelta64(lead, "h")).values
            start = truth.sel(time=fc.init_time.values).values
            expected = {"persistence": start, "model": start + lead // 12 * increment,
                        "climatology": climatology[name].sel(level=level).values[None]}  # fmt: skip
            for column, forecast in expected.items():
                assert table.loc[(label, lead), column] == pytest.approx(area_weighted_rmse(forecast, valid, store.latitude), rel=1e-5)


def area_weighted_rmse(forecast, truth, latitude) -> float:
    weights = np.cos(np.deg2rad(latitude.values))[None, :, None] * np.ones_like(truth)
    return float(np.sqrt(((forecast - truth) ** 2 * weights).sum() / weights.sum()))


def test_skill_validator_scores_one_data_step_on_the_validation_split(twelve_hourly):
    store, cfg, stats = twelve_hourly
    scores = calibration.SkillValidator(cfg)(zero_residual(), stats, store)
    table = calibration.forecast_skill(zero_residual(), stats, store, cfg, split_name="val", leads_hours=[12], progress=False)[1]
    assert scores["field"] == [f"{name}@{level:g}" for name, level in cfg.levels.skill_fields]
    for column in ("model", "persistence", "climatology"):
        np.testing.assert_array_equal(scores[column], table[column].to_numpy())
    with pytest.raises(ValueError, match=r"leads \[18\] h are not all multiples of the data's 12-h step"):
        calibration.forecast_skill(zero_residual(), stats, store, cfg, leads_hours=[18], progress=False)

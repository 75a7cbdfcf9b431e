"""The sampling study's free runs (druids.sampling.climate): one rollout per churn, and their stable days.

Small synthetic store (WB2 schema, 8 x 16 Gaussian grid) and a known elementwise
model, as in test_sampling.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr

from druids.config import DatasetConfig, SamplingConfig, SamplingStudyConfig
from druids.data import normalisation
from druids.sampling import (
    climate_churns,
    climate_runs,
    climate_sampling,
    climate_steps,
    rollout_climate,
    stable_days,
    stable_days_table,
)
from known_models import Analytic, around_state, small_store

VARIABLES = ("u_component_of_wind", "surface_pressure")
DATASET = DatasetConfig(variables=VARIABLES, split_fractions=(0.7, 0.15, 0.15), gap_days=0.5, spectral_truncation=None)
SAMPLING = SamplingConfig(n_levels=4, member_batch=1)
# 0.75 days = 3 six-hour steps, 2 members, the EDM sampler on 3 levels, churn 0 and 2.5
STUDY = SamplingStudyConfig(climate_days=0.75, climate_members=2, climate_sampler="edm", climate_n_levels=3, climate_churn=0.0, climate_compare_churn=2.5)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def store() -> xr.Dataset:
    return small_store()


@pytest.fixture(scope="module")
def stats(store) -> normalisation.NormStats:
    return normalisation.compute_norm_stats(store, VARIABLES)


def test_climate_sampling_and_steps():
    cfg = climate_sampling(SAMPLING, STUDY, 2.5)
    assert (cfg.sampler, cfg.n_levels, cfg.s_churn, cfg.member_batch) == ("edm", 3, 2.5, 2)
    assert dataclasses.replace(cfg, sampler=SAMPLING.sampler, n_levels=4, s_churn=SAMPLING.s_churn, member_batch=1) == SAMPLING
    assert climate_churns(STUDY) == [0.0, 2.5]
    assert climate_churns(dataclasses.replace(STUDY, climate_compare_churn=None)) == [0.0]
    six_hours = np.timedelta64(6, "h").astype("timedelta64[ns]")
    assert climate_steps(0.75, six_hours) == 3 and climate_steps(365.0, six_hours) == 1460 and climate_steps(2.0, six_hours) == 8


def test_climate_runs_are_rollouts_per_churn(store, stats):
    """One rollout per churn, each equal to rollout_climate with the study's sampler, levels, churn and members."""
    model, init = Analytic(around_state), store.isel(time=[3])
    runs = climate_runs(model, stats, init, SAMPLING, STUDY, DATASET, seed=1, progress=False)
    assert list(runs) == [0.0, 2.5]
    for churn, run in runs.items():
        direct = rollout_climate(model, stats, init, 3, climate_sampling(SAMPLING, STUDY, churn), DATASET, 1, 2, progress=False)
        xr.testing.assert_allclose(run.drop_attrs(), direct.drop_attrs())
        assert run.attrs["n_steps"] == 3 and run.sizes["member"] == 2 and run.attrs["nfe_per_step"] == 5
        assert (run["stable_steps"] == 3).all()
        np.testing.assert_allclose(stable_days(run), 0.75)
    assert not np.allclose(runs[0.0]["u_component_of_wind"], runs[2.5]["u_component_of_wind"])  # churn changes the runs


def test_stable_days_of_a_run_that_stops(store, stats):
    """A model that returns NaN from its 3rd step: 2 stable six-hour steps, half a day; a table row per member."""
    calls = []
    model = Analytic(lambda y, c, sigma: (calls.append(1), around_state(y, c, sigma) * (1 if len(calls) <= 14 else np.nan))[1])
    stopped = rollout_climate(model, stats, store.isel(time=[3]), 5, SAMPLING, DATASET, seed=0, progress=False)
    days = stable_days(stopped)
    assert days.dims == ("init_time", "member") and float(days.squeeze()) == 0.5
    never = Analytic(lambda y, c, sigma: torch.full_like(y, float("nan")))
    unstable = rollout_climate(never, stats, store.isel(time=[3]), 5, SAMPLING, DATASET, seed=0, progress=False)
    assert float(stable_days(unstable).squeeze()) == 0.0
    table = stable_days_table({0.0: stopped, 2.5: unstable})
    assert list(table.columns) == ["churn 0", "churn 2.5"] and len(table) == 2
    assert table.iloc[0].tolist() == [0.5, 0.0]
    assert table.loc[("minutes", "")].tolist() == pytest.approx([stopped.attrs["seconds"] / 60, unstable.attrs["seconds"] / 60])

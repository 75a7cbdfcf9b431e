"""Tests of the recalibrations (druids.calibration.recalibration) and the sampler study (druids.calibration.sampler_study)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xarray as xr

from druids.calibration import recalibration, sampler_study, scores
from druids.config import DatasetConfig, SamplingConfig
from druids.data import normalisation
from known_models import Analytic
from test_scores import exchangeable
from wb2 import Random, wb2_dataset

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_spread_scaling_fitted_on_one_split_calibrates_another():
    val, val_truth = exchangeable(m=8, dispersion=0.5, seed=10)
    test, test_truth = exchangeable(m=8, dispersion=0.5, seed=11)
    factor = recalibration.fit_spread_scale(val, val_truth)
    assert (abs(factor - 2.0) < 0.2).all()
    before = scores.scorecard(test, test_truth).ssr.sel(bound="estimate")
    after = scores.scorecard(recalibration.scale_spread(test, factor), test_truth).ssr.sel(bound="estimate")
    assert (before < 0.6).all() and (abs(after - 1) < 0.06).all()


def test_emos_corrects_bias_and_dispersion_on_held_out_cases():
    val, val_truth = exchangeable(m=8, dispersion=0.5, bias=0.7, seed=12)
    test, test_truth = exchangeable(m=8, dispersion=0.5, bias=0.7, seed=13)
    coefficients = recalibration.fit_emos(val, val_truth)
    assert coefficients.dims == ("lead_time", "parameter")
    mean, sigma = recalibration.emos_distribution(test, coefficients)
    assert abs(float((mean - test_truth).mean())) < 0.05  # the bias is gone
    post = recalibration.emos_ensemble(test, coefficients, seed=0)
    raw, fixed = scores.scorecard(test, test_truth), scores.scorecard(post, test_truth)
    assert (fixed.crps_fair.sel(bound="estimate") < 0.9 * raw.crps_fair.sel(bound="estimate")).all()
    ssr = fixed.ssr.sel(bound="estimate")
    assert (abs(ssr - 1) < 2 * fixed.ssr.sel(bound="std_error") + 0.02).all(), ssr.values
    # ECC: the members keep the raw members' order at every point
    ranks = lambda ens: np.argsort(np.argsort(ens.transpose(..., "member").values, axis=-1), axis=-1)  # noqa: E731
    np.testing.assert_array_equal(ranks(post), ranks(test))


def test_best_noise_scale_has_the_lowest_relative_crps():
    card = lambda values: xr.Dataset({"crps_fair": ("field", np.array(values))})  # noqa: E731
    cards = {0.5: card([1.0, 30.0]), 0.7: card([0.8, 31.0]), 1.0: card([1.2, 33.0])}
    assert recalibration.best_noise_scale(cards) == 0.7


# ------------------------------------------------------------------ sampler study


def test_diffusion_and_flow_sweeps():
    base = SamplingConfig(n_levels=10, s_churn=2.5, s_noise=1.05)
    settings = sampler_study.diffusion_sweep(base, levels=(5, 10), churns=(0.0, 2.5), noises=(1.0, 1.05), initial_scales=(0.5, 1.0))
    assert len(settings) == 4 + 1 + 1  # 2 x 2 grid, S_noise 1.0, x_T scale 0.5
    assert len({s.label for s in settings}) == len(settings)
    assert sampler_study.SamplerSetting(base, 0.5) in settings
    flow = sampler_study.flow_sweep(base, levels=(5,), diffusions=(0.5, 1.0))
    assert [s.sampling.sampler for s in flow] == ["flow_euler", "flow_heun", "flow_sde", "flow_sde"]


def test_sampler_sweep_scores_every_setting():
    fields = {"u_component_of_wind": Random("random_walk", mean=10.0, scale=1.2),
              "surface_pressure": Random("random_walk", mean=1e5, scale=100.0)}  # fmt: skip
    store = wb2_dataset(fields, n_lat=8, n_lon=16, levels=np.array([300.0, 700.0], np.float32), n_times=20, seed=0)
    variables = tuple(fields)
    stats = normalisation.compute_norm_stats(store, variables)
    dataset_cfg = DatasetConfig(variables=variables, gap_days=0.5, spectral_truncation=None)
    model = Analytic(lambda y, c, sigma: c[:, :3] + 0.25 / (0.25 + sigma**2) * (y - c[:, :3]))
    base = SamplingConfig(n_levels=3, member_batch=4)
    settings = [sampler_study.SamplerSetting(base), sampler_study.SamplerSetting(dataclasses.replace(base, s_churn=0.0), 0.5)]
    table = sampler_study.sampler_sweep(
        model, stats, store.isel(time=[2, 6]), store, settings, [("surface_pressure", None)], 4, 2, dataset_cfg, seed=0
    )
    assert len(table) == 2 * 1 * 2 and set(table["nfe_per_step"]) == {5}
    spread = table.groupby("initial_noise_scale")["spread"].mean()
    assert spread[0.5] < spread[1.0]  # a smaller starting noise narrows the ODE's samples
    assert {"crps_fair", "ssr", "rmse", "setting", "s_churn"} <= set(table.columns)

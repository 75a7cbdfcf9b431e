"""Tests of the oracle comparison (druids.calibration.oracle) and of ensembles with controlled randomness
(druids.calibration.ensembles): the oracle is calibrated, distances and coverages have their known values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.stats
import torch
import xarray as xr

from druids import sampling
from druids.calibration import oracle, oracle_forecast, reliability, scores, verifying_truth
from druids.calibration.ensembles import Controls, controlled_forecast
from druids.config import DatasetConfig, ModelConfig, SamplingConfig
from druids.data import normalisation
from druids.data.diagnostics import field_stack
from druids.models import build_denoiser
from known_models import Analytic
from test_scores import exchangeable
from wb2 import Random, wb2_dataset

VARIABLES = ("u_component_of_wind", "surface_pressure")
DATASET = DatasetConfig(variables=VARIABLES, gap_days=0.5, spectral_truncation=None)
SAMPLING = SamplingConfig(n_levels=4, member_batch=2)
ORACLE_FIELDS = [("temperature", 562.5), ("u_component_of_wind", 312.5), ("surface_pressure", None)]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ------------------------------------------------------------------ the oracle is calibrated


@pytest.fixture(scope="module")
def oracle_and_truth(smoke_store, smoke_config):
    truth = xr.open_zarr(smoke_store).load()
    inits = truth.time.values[2:32:5]
    ens = oracle_forecast(smoke_config.world, inits, 5, 4, seed=5, variables=[name for name, _ in ORACLE_FIELDS])
    ens = ens.isel(lead_time=slice(1, None))
    return field_stack(ens, ORACLE_FIELDS), field_stack(verifying_truth(ens, truth), ORACLE_FIELDS)


def pooled_ssr(ensemble, truth):
    """SSR per field from variances and squared errors averaged over leads and initial times, with its bootstrap SE."""
    parts = scores.components(ensemble, truth)
    pooled = parts.mean("lead_time").assign_attrs(parts.attrs)
    return scores.bootstrap(pooled, lambda p: scores.headline(p)[["ssr"]], n_boot=200).ssr


def test_oracle_ensemble_is_calibrated(oracle_and_truth):
    """The oracle samples the world's own forecast distribution, and the truth is one more draw of it:
    SSR within a few % of 1 and flat ranks. The same ensemble drawn 40 % too close to its mean fails both checks."""
    ens, truth = oracle_and_truth
    ssr = pooled_ssr(ens, truth)
    error = abs(ssr.sel(bound="estimate") - 1)
    assert (error < 0.08).all() and (error < 3 * ssr.sel(bound="std_error")).all(), ssr.values
    flatness = reliability.flatness_test(reliability.rank_histogram(ens, truth, keep=("field",)), 1.0)
    assert (abs(flatness.slope) < 0.15).all() and (abs(flatness.convexity) < 0.15).all(), flatness
    narrow = ens.mean("member") + 0.6 * (ens - ens.mean("member"))
    assert (pooled_ssr(narrow, truth).sel(bound="estimate") < 0.75).all()
    flatness = reliability.flatness_test(reliability.rank_histogram(narrow, truth, keep=("field",)), 1.0)
    assert (flatness.convexity > 0.3).all(), flatness


# ------------------------------------------------------------------ distances and coverage


def test_energy_distance_matches_scipy_and_is_unbiased():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 7)), rng.normal(1.0, 2.0, size=(3, 5))
    da = lambda v: xr.DataArray(v, dims=("case", "member"))  # noqa: E731
    v_statistic = oracle.energy_distance(da(x), da(y), unbiased=False).values
    expected = [scipy.stats.energy_distance(a, b) ** 2 for a, b in zip(x, y)]
    np.testing.assert_allclose(v_statistic, expected, rtol=1e-10)
    centre = rng.normal(size=(4000, 1)) * 3
    sample = lambda m, scale: xr.DataArray(centre + scale * rng.normal(size=(4000, m)), dims=("case", "member"))  # noqa: E731
    x, y, wide = sample(4, 1.0), sample(6, 1.0), sample(6, 2.0)
    same = oracle.energy_distance(x, y)
    assert abs(float(same.mean())) < 3 * float(same.std()) / np.sqrt(4000)  # unbiased: zero mean for one distribution
    assert float(oracle.energy_distance(x, y, unbiased=False).mean()) > 0.1  # the V-statistic is biased upwards
    assert float(oracle.energy_distance(x, wide).mean()) > 10 * float(same.std()) / np.sqrt(4000)


def test_field_energy_distance_of_one_point_is_the_point_distance():
    a, _ = exchangeable(n_init=2, m=4, seed=3)
    b, _ = exchangeable(n_init=2, m=5, seed=4)
    one = dict(latitude=[2], longitude=[3])
    field = oracle.field_energy_distance(a.isel(one), b.isel(one))
    point = oracle.energy_distance(a.isel(one), b.isel(one)).squeeze(["latitude", "longitude"], drop=True)
    np.testing.assert_allclose(field.values, point.values, rtol=1e-9)


def test_interval_coverage_is_nominal_for_exchangeable_draws():
    model, truth = exchangeable(n_init=60, m=9, n_lead=1, seed=6)
    coverage = oracle.interval_coverage(model, truth)
    np.testing.assert_allclose(coverage.nominal, [8 / 10, 6 / 10, 4 / 10, 2 / 10])
    np.testing.assert_allclose(coverage.squeeze().values, coverage.nominal.values, atol=0.02)
    wide, _ = exchangeable(n_init=60, m=9, n_lead=1, dispersion=1.5, seed=6)
    assert (oracle.interval_coverage(wide, truth).squeeze() > coverage.nominal + 0.05).all()


def test_oracle_comparison_of_a_too_wide_model(oracle_and_truth):
    """Independent draws around the same centres, twice as wide as the reference or not, and the oracle's layout."""
    ens, _ = oracle_and_truth
    table = oracle.oracle_comparison(ens.isel(member=slice(0, 3)), ens.isel(member=slice(3, None)))
    assert set(table.spread_ratio_by_latitude.dims) == {"lead_time", "field", "latitude"}
    assert set(table.field_energy_distance.dims) == {"lead_time", "field"}
    rng = np.random.default_rng(7)
    centre = 3 * rng.normal(size=(30, 1, 8, 16))
    coords = {"latitude": np.linspace(-80, 80, 8), "longitude": np.arange(16) * 22.5}
    draw = lambda m, scale: xr.DataArray(  # noqa: E731
        centre + scale * rng.normal(size=(30, m, 8, 16)), dims=("init_time", "member", "latitude", "longitude"), coords=coords
    )
    reference = draw(6, 1.0)
    right, wrong = oracle.oracle_comparison(draw(4, 1.0), reference), oracle.oracle_comparison(draw(4, 2.0), reference)
    assert abs(float(right.spread_ratio) - 1) < 0.05 and abs(float(wrong.spread_ratio) - 2) < 0.1
    for name in ("energy_distance", "field_energy_distance"):
        assert float(wrong[name]) > 20 * abs(float(right[name])), name


# ------------------------------------------------------------------ ensembles with controlled randomness


@pytest.fixture(scope="module")
def store():
    fields = {"u_component_of_wind": Random("random_walk", mean=10.0, scale=1.2),
              "surface_pressure": Random("random_walk", mean=1e5, scale=100.0)}  # fmt: skip
    return wb2_dataset(fields, n_lat=8, n_lon=16, levels=np.array([300.0, 700.0], np.float32), n_times=30, seed=0)


@pytest.fixture(scope="module")
def stats(store):
    return normalisation.compute_norm_stats(store, VARIABLES)


def around_state(y, c, sigma, s=0.5):
    """Exact denoiser of a residual ~ N(normalised state, s^2)."""
    return c[:, :3] + s**2 / (s**2 + sigma**2) * (y - c[:, :3])


def test_controlled_forecast_without_controls_is_the_forecast(store, stats):
    torch.manual_seed(0)
    model = build_denoiser(ModelConfig(base_channels=4, channel_mults=(1,), blocks_per_level=1), 3, 7)
    init = store.isel(time=[3, 10])
    expected = sampling.forecast(model, stats, init, 3, 2, SAMPLING, DATASET, seed=1, progress=False)
    got = controlled_forecast(model, stats, init, 3, 2, SAMPLING, DATASET, seed=1)
    xr.testing.assert_identical(got.drop_attrs(), expected.drop_attrs())
    assert got.attrs["nfe_per_step"] == expected.attrs["nfe_per_step"]


def test_controlled_forecast_conditions_on_a_stores_static_fields(store):
    """Statistics with a store's static fields (land-sea mask, orography): the condition has 4 + 2 static channels,
    those of ``static_condition``, and the members equal ``sampling.forecast``'s."""
    lat, lon = np.deg2rad(store.latitude), np.deg2rad(store.longitude)
    with_static = store.assign(land_sea_mask=(np.cos(lat) * np.sin(2 * lon) > 0.3).astype(np.float32),
                               geopotential_at_surface=2e3 * np.sin(lat) ** 2 * np.cos(lon))  # fmt: skip
    stats = normalisation.compute_norm_stats(with_static, VARIABLES, ["land_sea_mask", "geopotential_at_surface"])
    init = with_static[list(VARIABLES)].isel(time=[3, 10])
    torch.manual_seed(0)
    model = build_denoiser(ModelConfig(base_channels=4, channel_mults=(1,), blocks_per_level=1), 3, 3 + 6)
    expected = sampling.forecast(model, stats, init, 2, 2, SAMPLING, DATASET, seed=1, progress=False)
    got = controlled_forecast(model, stats, init, 2, 2, SAMPLING, DATASET, seed=1)
    xr.testing.assert_identical(got.drop_attrs(), expected.drop_attrs())
    recorder = Analytic(around_state)
    controlled_forecast(recorder, stats, init, 2, 1, SAMPLING, DATASET, seed=1, controls=Controls(noise_scale=0.5))
    static = torch.from_numpy(normalisation.static_condition(stats))
    assert static.shape[0] == 6 and recorder.conditions
    for condition in recorder.conditions:
        assert condition.shape[1] == 3 + 6 and torch.equal(condition[:, 3:], static.expand(condition.shape[0], -1, -1, -1))


def test_sampling_temperature_scales_the_spread_exactly_for_a_gaussian(store, stats):
    """Probability-flow ODE (no churn) on an exact Gaussian denoiser: the samples' spread is proportional to the noise scale."""
    ode = dataclasses.replace(SAMPLING, s_churn=0.0)
    init = store.isel(time=[5])
    spread = {}
    for scale in (1.0, 0.5):
        ens = controlled_forecast(Analytic(around_state), stats, init, 6, 1, ode, DATASET, seed=2, controls=Controls(noise_scale=scale))
        spread[scale] = ens.surface_pressure.isel(lead_time=1).std("member")
    np.testing.assert_allclose(spread[0.5].values, 0.5 * spread[1.0].values, atol=0.02)  # Pa: float32 at 1e5 Pa
    start = controlled_forecast(Analytic(around_state), stats, init, 6, 1, ode, DATASET, seed=2, controls=Controls(initial_noise_scale=0.5))
    np.testing.assert_allclose(start.surface_pressure.isel(lead_time=1).std("member"), spread[0.5], atol=0.02)


def test_shared_model_noise_leaves_only_the_initial_perturbations(store, stats):
    init = store.isel(time=[4, 9])
    model = Analytic(around_state)
    shared = controlled_forecast(model, stats, init, 3, 2, SAMPLING, DATASET, seed=3, controls=Controls(shared_model_noise=True))
    assert float(shared.surface_pressure.std("member").max()) < 0.02  # Pa: equal to float32 rounding at 1e5 Pa
    rng = np.random.default_rng(0)
    shape = (3, 2, 8, 16)
    delta = xr.Dataset(
        {"u_component_of_wind": (("member", "init_time", "level", "latitude", "longitude"), rng.normal(size=(3, 2, 2, 8, 16))),
         "surface_pressure": (("member", "init_time", "latitude", "longitude"), 10 * rng.normal(size=shape))},
        coords={"member": np.arange(3), "init_time": init.time.values, "level": init.level.values},
    )  # fmt: skip
    perturbed = controlled_forecast(model, stats, init, 3, 2, SAMPLING, DATASET, 3, Controls(shared_model_noise=True), delta)
    lead0 = perturbed.isel(lead_time=0) - shared.isel(lead_time=0)
    np.testing.assert_allclose(lead0.surface_pressure.transpose(*delta.surface_pressure.dims), delta.surface_pressure, atol=0.02)
    assert float(perturbed.surface_pressure.isel(lead_time=2).std("member").min()) > 0

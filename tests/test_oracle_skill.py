"""Skill against the oracle: ratios of 1 for a model that samples the oracle's distribution, the closed
form for a biased one, and the finite-ensemble correction when the member counts differ."""

import numpy as np
import pytest
import xarray as xr

from druids.calibration.oracle_skill import one_step_error_by_latitude, oracle_skill

N_INIT, N_LAT, N_LON = 40, 16, 32
FIELDS = [("temperature", None)]
LEADS = (np.arange(3) * np.timedelta64(6, "h")).astype("timedelta64[ns]")


def world(seed: int = 0):
    """Initial times, the exact forecast means ``mu`` and a truth drawn around them with std 1."""
    rng = np.random.default_rng(seed)
    times = np.datetime64("2000-01-01T00", "ns") + np.arange(N_INIT + 2) * np.timedelta64(6, "h")
    lat = np.linspace(-80, 80, N_LAT)
    lon = np.arange(N_LON) * 360.0 / N_LON
    mu = rng.normal(size=(len(times), N_LAT, N_LON))
    truth = xr.Dataset({"temperature": (("time", "latitude", "longitude"), mu + rng.normal(size=mu.shape))},
                       coords={"time": times, "latitude": lat, "longitude": lon})  # fmt: skip
    return times[:N_INIT], mu, truth, rng


def ensemble(times, mu, rng, members: int, bias: float = 0.0, scale: float = 1.0) -> xr.Dataset:
    """Members ``mu(valid time) + bias + scale N(0, 1)``: samples of the truth's distribution when ``bias`` is 0 and ``scale`` 1."""
    steps = np.arange(len(LEADS))
    means = np.stack([mu[steps + i] for i in range(len(times))])  # (init, lead, lat, lon)
    data = means[:, None] + bias + scale * rng.normal(size=(len(times), members, len(LEADS), N_LAT, N_LON))
    dims = ("init_time", "member", "lead_time", "latitude", "longitude")
    return xr.Dataset({"temperature": (dims, data)}, coords={"init_time": times, "member": np.arange(members), "lead_time": LEADS,
                                                             "latitude": np.linspace(-80, 80, N_LAT), "longitude": np.arange(N_LON) * 360.0 / N_LON})  # fmt: skip


def test_a_model_sampling_the_oracle_distribution_has_ratio_one():
    times, mu, truth, rng = world()
    skill = oracle_skill(ensemble(times, mu, rng, 8), ensemble(times, mu, rng, 8), truth, FIELDS)
    assert skill.ratio.dims == ("field", "lead_time") and skill.sizes["lead_time"] == 2  # lead 0 dropped
    np.testing.assert_allclose(skill.ratio, 1.0, atol=0.03)
    np.testing.assert_allclose(skill.oracle_rmse, np.sqrt(1 + 1 / 8), rtol=0.03)  # truth noise + mean's sampling noise
    np.testing.assert_allclose(skill.spread_ratio, 1.0, atol=0.03)
    np.testing.assert_allclose(skill.model_ssr, 1.0, atol=0.04)  # exchangeable with the truth
    np.testing.assert_allclose(skill.oracle_ssr, 1.0, atol=0.04)


def test_an_overdispersed_model_has_the_spread_ratio_of_its_scale():
    times, mu, truth, rng = world(4)
    skill = oracle_skill(ensemble(times, mu, rng, 8, scale=2.0), ensemble(times, mu, rng, 8), truth, FIELDS)
    np.testing.assert_allclose(skill.spread_ratio, 2.0, rtol=0.03)
    np.testing.assert_allclose(skill.model_spread, 2.0, rtol=0.03)
    # spread 2 against an ensemble-mean error sqrt(1 + 4 / 8): flagged as over-dispersed
    np.testing.assert_allclose(skill.model_ssr, np.sqrt(9 / 8) * 2.0 / np.sqrt(1.5), rtol=0.04)


def test_a_biased_model_has_the_closed_form_ratio():
    times, mu, truth, rng = world(1)
    skill = oracle_skill(ensemble(times, mu, rng, 8, bias=1.0), ensemble(times, mu, rng, 8), truth, FIELDS)
    expected = np.sqrt((1 + 1 / 8 + 1.0) / (1 + 1 / 8))
    np.testing.assert_allclose(skill.ratio, expected, rtol=0.03)


def test_unequal_member_counts_are_corrected_to_infinite_ensembles():
    """2 against 50 members of the same distribution: uncorrected the 2-member mean looks sqrt(1.5 / 1.02)
    worse; corrected, both estimate the infinite ensemble's RMSE (1) and the ratio is 1."""
    times, mu, truth, rng = world(2)
    skill = oracle_skill(ensemble(times, mu, rng, 2), ensemble(times, mu, rng, 50), truth, FIELDS)
    assert skill.attrs["infinite_ensemble_correction"] == 1
    np.testing.assert_allclose(skill.ratio, 1.0, atol=0.04)
    np.testing.assert_allclose(skill.model_rmse, 1.0, atol=0.04)


def test_mismatched_initial_times_are_refused():
    times, mu, truth, rng = world()
    with pytest.raises(ValueError, match="same initial times"):
        oracle_skill(ensemble(times, mu, rng, 4), ensemble(times[::-1], mu, rng, 4), truth, FIELDS)


def test_one_step_error_of_the_exact_mean_equals_the_oracle_spread():
    """The exact conditional mean's error is the truth's noise (std 1), which the oracle's spread measures;
    a mean off by 1 has error sqrt(2)."""
    times, mu, truth, rng = world(3)
    oracle = ensemble(times, mu, rng, 16)
    exact = oracle.isel(member=0, drop=True).copy(data={"temperature": np.stack([mu[np.arange(len(LEADS)) + i] for i in range(len(times))])})
    result = one_step_error_by_latitude(exact, oracle, truth, FIELDS)
    assert result.ratio.dims == ("field", "latitude") and result.attrs["lead_hours"] == 6
    np.testing.assert_allclose(result.ratio, 1.0, atol=0.15)
    shifted = one_step_error_by_latitude(exact + 1.0, oracle, truth, FIELDS)
    np.testing.assert_allclose(shifted.model_error.mean(), np.sqrt(2), rtol=0.05)

"""Tests of druids.calibration's metrics (scores, reliability, spectra) on synthetic ensembles with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import scoringrules
import scores as scores_lib
import xarray as xr

from druids import sphere
from druids.calibration import reliability, scores, spectra

LATITUDE = np.linspace(-80.0, 80.0, 8)
LONGITUDE = np.arange(16) * 22.5


def exchangeable(n_init=40, m=5, dispersion=1.0, bias=0.0, n_lead=2, seed=0, member_seed=None):
    """Members and truth at every (init, lead, lat, lon): a random centre, then ``m`` members and the truth
    drawn independently around it with std sigma(lat); members' departures scaled by ``dispersion``, shifted by ``bias``.
    Centres and truth come from ``seed``, the members from ``member_seed`` (default: ``seed`` too), so that
    two calls with one ``seed`` and two ``member_seed`` give independent ensembles of the same cases."""
    rng = np.random.default_rng(seed)
    shape = (n_init, n_lead, LATITUDE.size, LONGITUDE.size)
    sigma = (1.0 + 0.5 * np.cos(np.deg2rad(LATITUDE)))[:, None]
    centre = rng.normal(size=shape) * 3.0
    truth = centre + sigma * rng.normal(size=shape)
    rng = rng if member_seed is None else np.random.default_rng([seed, member_seed])
    members = centre[:, None] + bias + dispersion * sigma * rng.normal(size=(n_init, m, *shape[1:]))
    coords = {"init_time": np.arange(n_init), "lead_time": np.arange(n_lead), "latitude": LATITUDE, "longitude": LONGITUDE}
    dims = ("init_time", "lead_time", "latitude", "longitude")
    return (
        xr.DataArray(members, dims=(dims[0], "member", *dims[1:]), coords=coords),
        xr.DataArray(truth, dims=dims, coords=coords),
    )


# ------------------------------------------------------------------ CRPS


def test_crps_of_a_gaussian_two_libraries_and_the_closed_form_agree():
    """Fair CRPS of a large ensemble from N(mu, s^2): scoringrules (via scores.crps), the `scores` library and the closed form."""
    rng = np.random.default_rng(1)
    mu, s, y = 0.3, 1.7, np.array([-1.0, 0.2, 2.5])
    members = xr.DataArray(mu + s * rng.normal(size=(3, 4000)), dims=("case", "member"))
    truth = xr.DataArray(y, dims="case")
    z = (y - mu) / s
    closed = s * (z * (2 * scipy.stats.norm.cdf(z) - 1) + 2 * scipy.stats.norm.pdf(z) - 1 / np.sqrt(np.pi))
    ours = scores.crps(members, truth, fair=True).values
    library = scores_lib.probability.crps_for_ensemble(members, truth, "member", method="fair", preserve_dims="all").values
    np.testing.assert_allclose(ours, library, rtol=1e-10)
    np.testing.assert_allclose(ours, closed, rtol=0.03)
    np.testing.assert_allclose(scoringrules.crps_normal(y, mu, s), closed, rtol=1e-10)


def test_crps_estimators_are_the_ones_named():
    """The fast estimators used (pwm, qd) are the fair and the empirical-distribution (nrg) CRPS; `scores` agrees."""
    ens, truth = exchangeable(n_init=3, m=5)
    fair, ecdf = scores.crps(ens, truth, fair=True), scores.crps(ens, truth, fair=False)
    obs, fct = truth.values, np.moveaxis(ens.values, 1, -1)
    np.testing.assert_allclose(fair.values, scoringrules.crps_ensemble(obs, fct, estimator="fair"), rtol=1e-10)
    np.testing.assert_allclose(ecdf.values, scoringrules.crps_ensemble(obs, fct, estimator="nrg"), rtol=1e-10)
    library = scores_lib.probability.crps_for_ensemble(ens, truth, "member", method="ecdf", preserve_dims="all")
    np.testing.assert_allclose(ecdf.values, library.transpose(*ecdf.dims).values, rtol=1e-10)
    assert (ecdf >= fair - 1e-12).all()  # the empirical CRPS is never below the fair one


def test_components_are_area_weighted():
    ens, truth = exchangeable(n_init=2, m=3)
    parts = scores.components(ens, truth)
    w = np.cos(np.deg2rad(LATITUDE))[:, None]
    error = ((ens.mean("member") - truth) ** 2).values
    expected = (error * w).sum((-2, -1)) / (w.sum() * LONGITUDE.size)
    np.testing.assert_allclose(parts.squared_error.values, expected, rtol=1e-10)
    assert parts.attrs["n_members"] == 3 and parts.crps_fair.dims == ("init_time", "lead_time")


# ------------------------------------------------------------------ spread-skill ratio and ranks


@pytest.mark.parametrize("m", [2, 5, 50])
def test_exchangeable_ensembles_have_ssr_one_and_flat_ranks(m):
    ens, truth = exchangeable(m=m, seed=m)
    card = scores.scorecard(ens, truth, n_boot=200)
    ssr = card.ssr.sel(bound="estimate")
    assert (abs(ssr - 1) < 2 * card.ssr.sel(bound="std_error")).all(), ssr.values
    ranks = reliability.rank_histogram(ens, truth)
    assert ranks.sizes["rank"] == m + 1 and float(ranks.sum()) == pytest.approx(1.0)
    test = reliability.flatness_test(ranks, reliability.effective_cases(truth))
    assert float(test.p_value) > 0.01 and float(test.slope_p) > 0.01 and float(test.convexity_p) > 0.01


@pytest.mark.parametrize("dispersion, sign", [(1.6, -1), (0.6, 1)])
def test_over_and_under_dispersed_ensembles_are_flagged(dispersion, sign):
    """Too wide: SSR > 1 beyond its interval and a dome (convexity < 0); too narrow: SSR < 1 and a U (convexity > 0)."""
    ens, truth = exchangeable(m=10, dispersion=dispersion, seed=3)
    ssr = scores.scorecard(ens, truth, n_boot=200).ssr
    if sign < 0:
        assert (ssr.sel(bound="lower") > 1).all()
    else:
        assert (ssr.sel(bound="upper") < 1).all()
    test = reliability.flatness_test(reliability.rank_histogram(ens, truth), reliability.effective_cases(truth))
    assert np.sign(float(test.convexity)) == sign and float(test.convexity_p) < 1e-6 and float(test.p_value) < 1e-6


def test_a_biased_ensemble_has_a_sloped_rank_histogram():
    ens, truth = exchangeable(m=10, bias=-0.5, seed=4)  # members too low: the truth ranks high
    test = reliability.flatness_test(reliability.rank_histogram(ens, truth), reliability.effective_cases(truth))
    assert float(test.slope) > 0 and float(test.slope_p) < 1e-6


def test_flatness_chi2_matches_scipy_and_its_components_add_up():
    counts = np.array([30.0, 18, 15, 14, 17, 26])
    frequencies = xr.DataArray(counts / counts.sum(), dims="rank", coords={"rank": np.arange(1, 7)})
    test = reliability.flatness_test(frequencies, counts.sum())
    assert float(test.chi2) == pytest.approx(scipy.stats.chisquare(counts).statistic)
    parts = counts.sum() / 6 * (float(test.slope) ** 2 + float(test.convexity) ** 2)
    assert parts <= float(test.chi2) + 1e-9 and float(test.convexity) > 0  # U-shaped counts


def test_bootstrap_is_reproducible_and_leaves_numpy_alone():
    ens, truth = exchangeable(n_init=10, m=4)
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    first = scores.scorecard(ens, truth, n_boot=50, block=2, seed=7)
    assert np.random.random() == before
    xr.testing.assert_identical(first, scores.scorecard(ens, truth, n_boot=50, block=2, seed=7))
    est, lo, hi = (first.crps_fair.sel(bound=b) for b in ("estimate", "lower", "upper"))
    assert (lo <= est).all() and (est <= hi).all()


def test_pit_histograms_of_calibrated_forecasts_are_as_expected():
    """The empirical CDF's PIT of exchangeable members follows its discrete expectation (flat with M + 1 bins);
    the PIT of the true Gaussian is flat."""
    ens, truth = exchangeable(m=20, seed=5)
    pit = reliability.pit_histogram(ens, truth, bins=5)
    expected = reliability.expected_pit_histogram(20, 5)
    np.testing.assert_allclose(expected, [5 / 21, 4 / 21, 4 / 21, 4 / 21, 4 / 21])
    assert float(pit.sum()) == pytest.approx(1.0)
    np.testing.assert_allclose(pit.values, expected, atol=0.01)
    np.testing.assert_allclose(reliability.pit_histogram(ens, truth, bins=21).values, 1 / 21, atol=0.01)
    rng = np.random.default_rng(0)
    mean = truth * 0 + rng.normal(size=truth.shape)
    sigma = xr.ones_like(truth) * 2.0
    gaussian = reliability.gaussian_pit_histogram(mean, sigma, mean + 2.0 * rng.normal(size=truth.shape), bins=5)
    np.testing.assert_allclose(gaussian, 0.2, atol=0.01)


# ------------------------------------------------------------------ reliability of events


def test_corp_decomposition_adds_up_and_flags_miscalibration():
    rng = np.random.default_rng(6)
    shape = (30, LATITUDE.size, LONGITUDE.size)
    coords = {"latitude": LATITUDE}
    p = xr.DataArray(rng.uniform(size=shape), dims=("init_time", "latitude", "longitude"), coords=coords)
    outcome = (rng.uniform(size=shape) < p).astype(float)
    for forecast, calibrated in ((p, True), (p**3, False)):
        result = reliability.reliability(forecast, outcome)
        total = result["miscalibration"] - result["discrimination"] + result["uncertainty"]
        assert result["brier"] == pytest.approx(total)
        assert result["miscalibration"] >= 0 and result["discrimination"] >= 0
        weights = sphere.area_weights(LATITUDE)
        library = scores_lib.probability.brier_score(forecast, outcome, weights=weights)
        assert result["brier"] == pytest.approx(float(library))
        assert (result["miscalibration"] < 0.005) == calibrated
    assert np.all(np.diff(result["calibrated"]) >= 0)  # isotonic


def test_event_probability_is_the_fraction_of_members():
    ens = xr.DataArray([0.0, 1.0, 2.0, 3.0], dims="member")
    assert float(reliability.event_probability(ens, 1.5)) == 0.5


# ------------------------------------------------------------------ multivariate scores


def test_energy_score_of_one_point_is_the_fair_crps():
    ens, truth = exchangeable(n_init=3, m=6)
    one = dict(latitude=[0], longitude=[0])
    es = scores.energy_score(ens.isel(one), truth.isel(one))
    # area weight of a single latitude is 1 after normalisation, so the norm is |x|
    np.testing.assert_allclose(es.values, scores.crps(ens, truth).isel(one).squeeze(["latitude", "longitude"]).values, rtol=1e-10)


def test_energy_and_variogram_scores_prefer_the_right_ensemble():
    good, truth = exchangeable(n_init=6, m=8, seed=8)
    wide, _ = exchangeable(n_init=6, m=8, dispersion=2.0, seed=8)
    for score in (scores.energy_score, scores.variogram_score):
        assert float(score(good, truth).mean()) < float(score(wide, truth).mean())


def test_variogram_score_matches_its_definition():
    ens, truth = exchangeable(n_init=1, m=4, n_lead=1)
    x, y = ens.isel(init_time=0, lead_time=0).values, truth.isel(init_time=0, lead_time=0).values  # (member, lat, lon), (lat, lon)
    per_lat = []
    for j in range(LATITUDE.size):
        fx = np.abs(x[:, j, :, None] - x[:, j, None, :]) ** 0.5
        fy = np.abs(y[j, :, None] - y[j, None, :]) ** 0.5
        per_lat.append(((fy - fx.mean(0)) ** 2).sum())
    w = np.cos(np.deg2rad(LATITUDE))
    expected = np.sum(w * np.array(per_lat)) / w.sum()
    assert float(scores.variogram_score(ens, truth).isel(init_time=0, lead_time=0)) == pytest.approx(expected)


# ------------------------------------------------------------------ spectra


def _band_limited(shape, truncation, seed):
    latitude = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(16)[0]))
    import torch

    field = sphere.sphere_noise(shape + (16, 32), torch.Generator().manual_seed(seed), latitude, truncation, dtype=torch.float64)
    return field.numpy(), latitude


def test_spread_spectrum_sums_to_the_variance_and_is_calibrated_for_exchangeable_members():
    values, latitude = _band_limited((20, 9), truncation=10, seed=0)  # (init, member + truth, lat, lon)
    coords = {"latitude": latitude, "longitude": np.arange(32) * 11.25}
    ens = xr.DataArray(values[:, :8], dims=("init_time", "member", "latitude", "longitude"), coords=coords)
    truth = xr.DataArray(values[:, 8], dims=("init_time", "latitude", "longitude"), coords=coords)
    spectra_ = spectra.spread_error_spectra(ens, truth, truncation=10)
    assert spectra_.spread.dims == ("total_wavenumber",) and spectra_.sizes["total_wavenumber"] == 11
    _, w = sphere.harmonic_basis(latitude, 10)
    variance = (0.5 * (w[:, None] * ens.var("member", ddof=1).values).sum(-2).mean(-1)).mean()
    assert float(spectra_.spread.sum()) == pytest.approx(variance, rel=1e-6)
    ratio = spectra.spread_error_ratio(spectra_).sel(total_wavenumber=slice(1, None))
    assert abs(float(ratio.mean()) - 1) < 0.1

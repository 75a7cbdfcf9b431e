"""Exactness of the Jacobian tools on the one case with a closed-form answer: the Wiener filter of an
isotropic Gaussian random field on the sphere, with band-limited (T21, the model's) and grid-white noise."""

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles

from druids import sphere
from druids.explain import spectra, trace
from druids.explain.gaussian import GaussianField, WienerDenoiser, _projector_symbols, noise_symbols
from druids.explain.geometry import NoiseGeometry
from druids.explain.operators import Linearisation

H, W = 32, 64
LATITUDE = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(H)[0]))
BANDS = {"band-limited": (LATITUDE, 21), "white": None}
# top-k at a boundary between degenerate groups: 36 = 6^2 harmonics n <= 5 (band); cos/sin pairs (white)
TOP_K = {"band-limited": 36, "white": 34}
DENSE_SIGMA = 0.5


@pytest.fixture(scope="module", params=list(BANDS))
def case(request):
    band = BANDS[request.param]
    field = GaussianField.power_law(LATITUDE, W, 21, amplitude=2.0)
    return request.param, WienerDenoiser(field, band), NoiseGeometry.of(band, LATITUDE, W)


def _linearisation(wiener, sigma):
    return Linearisation(wiener, torch.zeros(1, H, W), torch.zeros(1, H, W), sigma)


@pytest.fixture(scope="module")
def dense(case):
    """The Wiener filter at sigma = 0.5 linearised, its dense J_hat from batched VJPs and all its eigenvalues (descending)."""
    _, wiener, geometry = case
    lin = _linearisation(wiener, DENSE_SIGMA)
    whitened = spectra.dense_whitened(spectra.dense_jacobian(lin, chunk=1024), geometry, (1, H, W))
    return lin, whitened, np.linalg.eigvalsh(0.5 * (whitened + whitened.T))[::-1]


def test_sphere_noise_covariance_is_c_times_the_projector():
    """S = c T G^-1 with c = H W / (M + 1)^2, exactly (symbols), and it is sphere_noise's covariance (Monte Carlo)."""
    geometry = NoiseGeometry.of((LATITUDE, 21), LATITUDE, W)
    symbols = noise_symbols((LATITUDE, 21), LATITUDE, W)
    expected = geometry.variance_per_direction * _projector_symbols((LATITUDE, 21), LATITUDE, W) / geometry.weights[None, None, :]
    np.testing.assert_allclose(symbols, expected, atol=1e-12)
    # E[<a, n> <b, n>] = a^T G S G b = c <a, T b> for n from sphere.noise itself
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn((2, 1, H, W), generator=generator, dtype=torch.float64)
    draws = sphere.noise((6000, 1, H, W), generator, (LATITUDE, 21), torch.float64)
    products = (geometry.inner(draws, a) * geometry.inner(draws, b)).numpy()
    exact = geometry.variance_per_direction * float(geometry.inner(a, geometry.project(b)))
    assert abs(products.mean() - exact) < 4 * products.std() / np.sqrt(products.size)
    assert geometry.trace_gs(1) == pytest.approx(float((geometry.weight(draws) * draws**2).sum((1, 2, 3)).mean()), rel=0.02)


@pytest.mark.parametrize("sigma", [0.3, 2.0])
def test_top_eigenpairs_match_the_wiener_filter(case, sigma):
    """Lanczos recovers the top-k eigenvalues (degenerate multiplets included) and their eigenspaces to 1e-4."""
    name, wiener, geometry = case
    k = TOP_K[name]
    exact_values, exact_vectors = wiener.eigenpairs(sigma, geometry.weights, k)
    if name == "band-limited":  # the closed form a_n / (a_n + sigma^2), multiplicity 2n + 1
        np.testing.assert_allclose(exact_values, wiener.eigenvalues(sigma)[:k], rtol=1e-12)
    pairs = spectra.top_eigenpairs(_linearisation(wiener, sigma), geometry, k)
    np.testing.assert_allclose(pairs.values, exact_values, rtol=1e-4)
    root = np.sqrt(geometry.weights)[:, None]
    found = (root * pairs.vectors[:, 0]).reshape(k, -1).T
    expected = (root * exact_vectors).reshape(k, -1).T
    assert np.sin(subspace_angles(found, expected)).max() < 1e-4


def test_trace_is_exact_and_hutchinson_is_within_three_standard_errors(case, dense):
    name, wiener, geometry = case
    sigma = DENSE_SIGMA
    lin, whitened, eigenvalues = dense
    assert np.trace(whitened) == pytest.approx(wiener.trace(sigma), rel=1e-10)
    if name == "band-limited":
        n = np.arange(22)
        a = wiener.field.spectrum
        assert wiener.trace(sigma) == pytest.approx(((2 * n + 1) * a / (a + sigma**2)).sum(), rel=1e-12)
    estimates = trace.trace_estimates(lin, geometry, 128, torch.Generator().manual_seed(1))
    assert abs(estimates.trace.mean - wiener.trace(sigma)) < 3 * estimates.trace.stderr
    assert estimates.trace.stderr < 0.05 * wiener.trace(sigma)  # the check has power
    assert abs(estimates.trace_gjs.mean - wiener.trace_gjs(sigma, geometry.weights)) < 3 * estimates.trace_gjs.stderr
    assert abs(estimates.squared_singular.mean - (whitened**2).sum()) < 3 * estimates.squared_singular.stderr
    assert trace.share_outside_unit_interval(eigenvalues) == 0.0


def test_spectral_density_matches_the_wiener_spectrum(case):
    """Stochastic Lanczos quadrature: its trace within 3 SE, nothing outside [0, 1], shares to the quadrature's resolution."""
    _, wiener, geometry = case
    density = spectra.spectral_density(_linearisation(wiener, 0.5), geometry, 16, 30, torch.Generator().manual_seed(5))
    dims = geometry.noise_dims(1)
    per_probe = dims * (density.weights * density.nodes).sum(axis=1)
    assert abs(per_probe.mean() - wiener.trace(0.5)) < 3 * per_probe.std(ddof=1) / np.sqrt(len(per_probe))
    assert density.share_outside_unit_interval()[0] < 1e-12  # Ritz values lie in the spectrum's hull
    share, _ = density.share(lambda x: x > 0.5)
    assert share == pytest.approx((wiener.eigenvalues(0.5) > 0.5).sum() / dims, abs=0.03)


def test_the_wiener_filter_is_symmetric(case):
    _, wiener, geometry = case
    ratio, _ = spectra.asymmetry(_linearisation(wiener, 1.0), geometry, 8, torch.Generator().manual_seed(2))
    assert ratio < 1e-12


def test_matrix_free_and_dense_top_eigenvalues_agree(case, dense):
    _, _, geometry = case
    lin, _, eigenvalues = dense
    np.testing.assert_allclose(spectra.top_eigenpairs(lin, geometry, 32).values, eigenvalues[:32], rtol=1e-3)


def test_top_singular_values_of_a_symmetric_filter_are_its_eigenvalues(case):
    _, wiener, geometry = case
    triplets = spectra.top_singular_triplets(_linearisation(wiener, 0.5), geometry, 9)
    np.testing.assert_allclose(triplets.values, wiener.eigenpairs(0.5, geometry.weights, 9)[0], rtol=1e-6)


def test_stein_and_tweedie_hold_for_the_wiener_filter(case):
    """SURE equals the true error, and sigma^2 E tr(G J S) equals the MSE (the posterior covariance), within 3 SE."""
    _, wiener, geometry = case
    generator = torch.Generator().manual_seed(3)
    x = wiener.field.sample((256, 1), generator)
    check = trace.stein_check(wiener, x, torch.zeros(256, 0, H, W, dtype=torch.float64), 0.8, geometry, generator)
    assert abs(check.difference.mean) < 3 * check.difference.stderr
    assert check.difference.stderr < 0.1 * check.mse.mean
    assert abs(check.tweedie_ratio.mean - 1) < 3 * check.tweedie_ratio.stderr
    assert check.tweedie_ratio.stderr < 0.05
    # exact posterior variance per grid value
    exact = 0.8**2 * wiener.trace_gjs(0.8, geometry.weights) / (H * W)
    assert abs(check.mse.mean - exact) < 3 * check.mse.stderr

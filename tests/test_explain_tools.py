"""The chapter's readings of the Jacobian on cases with known answers: distances, radii, EOFs and
principal angles, settling, Euler shares of a linear denoiser, and the noise geometry's coordinates."""

import numpy as np
import pandas as pd
import pytest
import torch

from druids import sphere
from druids.explain import anatomy, basis, locality, oracle_link
from druids.explain.gaussian import GaussianField, WienerDenoiser
from druids.explain.geometry import NoiseGeometry

H, W = 32, 64
LATITUDE = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(H)[0]))
LONGITUDE = np.arange(W) * 360.0 / W
BAND = NoiseGeometry.of((LATITUDE, 21), LATITUDE, W)


def test_coordinates_are_orthonormal_and_invert_the_projection():
    gram = BAND.field_basis.T @ (np.repeat(BAND.weights, W)[:, None] * BAND.field_basis)
    np.testing.assert_allclose(gram, np.eye(22**2), atol=1e-12)
    x = torch.randn((2, 3, H, W), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    coefficients = BAND.to_coefficients(x)
    assert coefficients.shape == (2, 3 * 22**2)
    torch.testing.assert_close(BAND.from_coefficients(coefficients, 3), BAND.project(x))
    torch.testing.assert_close(BAND.inner(BAND.project(x), BAND.project(x)), (coefficients**2).sum(-1))


def test_great_circle_distances_and_radii():
    distance = locality.great_circle_km(0.0, 0.0, np.array([0.0, 90.0]), np.array([0.0, 90.0, 180.0]))
    np.testing.assert_allclose(distance[0], [0.0, np.pi / 2 * 6371.0, np.pi * 6371.0])
    np.testing.assert_allclose(distance[1], np.pi / 2 * 6371.0)
    delta = np.zeros((2, H, W))
    delta[1, 16, 5] = 3.0
    assert locality.radius_km(delta, (16, 5), LATITUDE, LONGITUDE, BAND.weights) == 0.0
    floor = locality.band_limit_radius_km(BAND, (16, 5), LONGITUDE)
    assert 1000.0 < floor < 2500.0  # T21 spreads a point over about half a wavelength, 40,000 km / 21 / 2


def test_forecast_eofs_recover_a_planted_direction_and_angles_are_right():
    generator = torch.Generator().manual_seed(1)
    direction = BAND.project(torch.randn((1, 1, H, W), generator=generator, dtype=torch.float64))[0]
    direction = direction / BAND.inner(direction, direction).sqrt()
    amplitudes = 5.0 * torch.randn((200, 1, 1, 1), generator=generator, dtype=torch.float64)
    members = (amplitudes * direction + 0.03 * BAND.noise((200, 1, H, W), generator)).numpy()
    eofs = oracle_link.forecast_eofs(members, BAND, 2)
    assert eofs.variances[0] == pytest.approx(25.0, rel=0.25)
    assert oracle_link.principal_angles_deg(eofs.eofs[:1], direction[None].numpy(), BAND)[0] < 2.0
    assert oracle_link.principal_angles_deg(eofs.eofs[1:], direction[None].numpy(), BAND)[0] > 85.0
    total = (BAND.weight(torch.from_numpy(members)) * BAND.project(torch.from_numpy(members - members.mean(0))) ** 2).sum((1, 2, 3))
    assert eofs.total == pytest.approx(float(total.sum()) / 199, rel=1e-10)


def test_settled_sigma_is_where_the_error_stays_small():
    table = pd.DataFrame({0: [0.5, 0.05, 0.2, 0.01], 1: [0.5, 0.3, 0.05, 0.01]}, index=pd.Index([10.0, 3.0, 1.0, 0.1], name="sigma"))
    settled = anatomy.settled_sigma(table, threshold=0.1)
    assert settled[0] == 0.1  # below at 3, above again at 1: settles only at 0.1
    assert settled[1] == 1.0


def test_a_linear_denoiser_takes_all_of_its_output_from_the_noisy_input():
    wiener = WienerDenoiser(GaussianField.power_law(LATITUDE, W, 21), (LATITUDE, 21))
    y = wiener.field.sample((1,), torch.Generator().manual_seed(2)) + BAND.noise((1, H, W), torch.Generator().manual_seed(3))
    calls = [anatomy.Call(1.0, y, wiener.denoise(y[None], None, 1.0)[0])]
    shares = anatomy.euler_shares(wiener, calls, torch.zeros((2, H, W), dtype=torch.float64), {"condition": slice(0, 2)}, BAND)
    assert shares.loc[1.0, "noisy input"] == pytest.approx(1.0, abs=1e-12)
    assert shares.loc[1.0, "condition"] == pytest.approx(0.0, abs=1e-12)


def test_energy_maps_spectra_and_correlations():
    harmonic = sphere.truncate(np.random.default_rng(4).standard_normal((3, 2, H, W)), LATITUDE, 4)
    maps = basis.energy_maps(harmonic)
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), 1.0)
    power = basis.power_spectrum(harmonic, BAND)
    assert power.shape == (3, 22) and power[:, 5:].max() < 1e-20 * power.max()
    assert basis.low_harmonic_share(power[:, :]) == pytest.approx(power[:, :2].sum() / power.sum())
    assert basis.weighted_correlation(maps[0], 2 * maps[0] + 1, BAND.weights) == pytest.approx(1.0)
    white = NoiseGeometry.of(None, LATITUDE, W)
    assert basis.power_spectrum(harmonic, white).shape == (3, W // 2 + 1)

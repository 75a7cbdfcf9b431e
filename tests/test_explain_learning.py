"""A bias-free U-Net trained briefly on Gaussian random fields approaches their Wiener filter, and the
matrix-free spectrum of its (nonlinear) Jacobian matches a dense eigensolver for one field.

Tolerances. The network is trained for 200 steps at noise levels around sigma = 1, with
fresh samples every step (no memorisation). It reaches the Wiener filter's MSE (the
optimum) within a few per cent, but its Jacobian is neither constant nor exactly isotropic,
and the largest scales (total wavenumbers 0-2, the top eigenvalues) need a receptive field
as wide as the globe, which its two levels of 3 x 3 convolutions give only through the
normalisation's global scale. So the spectrum is compared in summaries: the trace within
15 %, the top-16 eigenvalues within 0.12 on average (the exact ones lie in [0.57, 0.80]),
and their error at least halved by training.
"""

import numpy as np
import pytest
import torch

from druids.config import ModelConfig
from druids.explain import spectra, trace
from druids.explain.gaussian import GaussianField, WienerDenoiser
from druids.explain.geometry import NoiseGeometry
from druids.explain.operators import Linearisation, in_float64
from druids.models.denoisers import EDMDenoiser
from druids.models.network import UNet

pytestmark = pytest.mark.slow  # about 40 s on an idle 2-core CPU: a network trained from scratch, then 2,048 VJPs

H, W = 32, 64
LATITUDE = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(H)[0]))
BAND = (LATITUDE, 21)
SIGMA = 1.0
STEPS, BATCH = 200, 8


def _untrained() -> EDMDenoiser:
    torch.manual_seed(0)
    net = UNet(1, 1, ModelConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1))
    return EDMDenoiser(net, sigma_data=1.0, noise_band=BAND)


def _train(denoiser: EDMDenoiser, field: GaussianField, geometry: NoiseGeometry) -> EDMDenoiser:
    """Area-weighted denoising MSE at sigma = exp(N(0, 0.5^2)), fresh field samples each step, Adam + cosine decay."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, STEPS)
    weights = torch.as_tensor(geometry.weights, dtype=torch.float32)[:, None]
    for _ in range(STEPS):
        x = field.sample((BATCH, 1), generator, torch.float32)
        sigma = SIGMA * torch.exp(0.5 * torch.randn(BATCH, generator=generator))
        y = x + sigma[:, None, None, None] * geometry.noise(x.shape, generator, torch.float32)
        error = denoiser.denoise(y, torch.zeros(BATCH, 0, H, W), sigma) - x
        loss = (weights * error**2).mean() / (sigma**2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return denoiser.eval()


@pytest.fixture(scope="module")
def learned():
    field = GaussianField.power_law(LATITUDE, W, 21, amplitude=4.0)
    geometry = NoiseGeometry.of(BAND, LATITUDE, W)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    untrained = in_float64(_untrained())
    trained = _train(_untrained(), field, geometry)
    torch.set_num_threads(threads)
    return field, geometry, untrained, in_float64(trained), trained


def _point(field, geometry, seed=5):
    generator = torch.Generator().manual_seed(seed)
    return field.sample((1,), generator) + SIGMA * geometry.noise((1, H, W), generator)


def test_trained_unet_reaches_the_wiener_error_and_tweedie(learned):
    field, geometry, _, trained, _ = learned
    wiener = WienerDenoiser(field, BAND)
    x = field.sample((96, 1), torch.Generator().manual_seed(4))
    empty = torch.zeros(96, 0, H, W, dtype=torch.float64)
    model = trace.stein_check(trained, x, empty, SIGMA, geometry, torch.Generator().manual_seed(6))
    optimal = trace.stein_check(wiener, x, empty, SIGMA, geometry, torch.Generator().manual_seed(6))  # same noise
    assert optimal.mse.mean < model.mse.mean < 1.05 * optimal.mse.mean
    assert abs(model.tweedie_ratio.mean - 1) < 0.1
    assert abs(model.difference.mean) < 3 * model.difference.stderr  # Stein holds for the network too


def test_trained_unet_spectrum_approaches_the_wiener_spectrum(learned):
    field, geometry, untrained, trained, _ = learned
    wiener = WienerDenoiser(field, BAND)
    exact = wiener.eigenvalues(SIGMA)[:16]
    y = _point(field, geometry)
    errors = {}
    for name, denoiser in (("untrained", untrained), ("trained", trained)):
        pairs = spectra.top_eigenpairs(Linearisation(denoiser, y, torch.zeros(0, H, W), SIGMA), geometry, 16, tol=1e-6)
        errors[name] = np.abs(pairs.values - exact).mean()
    assert errors["trained"] < 0.12
    assert errors["trained"] < 0.5 * errors["untrained"]
    estimate = trace.trace_estimates(Linearisation(trained, y, torch.zeros(0, H, W), SIGMA), geometry, 64, torch.Generator().manual_seed(7))
    assert estimate.trace.mean == pytest.approx(wiener.trace(SIGMA), rel=0.15)


def test_one_field_matrix_free_and_dense_spectra_agree(learned):
    """Top-32 eigenvalues of the trained network's Jacobian (2,048 dims): Lanczos against LAPACK, to 1e-3
    (in the network's float32, which halves the 2,048 VJPs' cost)."""
    field, geometry, _, _, trained = learned
    lin = Linearisation(trained, _point(field, geometry, seed=8), torch.zeros(0, H, W), SIGMA)
    dense = spectra.dense_top_eigenvalues(spectra.dense_whitened(spectra.dense_jacobian(lin), geometry, lin.shape), 32)
    pairs = spectra.top_eigenpairs(lin, geometry, 32, tol=1e-6)
    np.testing.assert_allclose(pairs.values, dense, rtol=1e-3)
    vectors = torch.from_numpy(pairs.vectors)
    gram = geometry.inner(vectors[:, None], vectors[None, :]).numpy()
    np.testing.assert_allclose(gram, np.eye(32), atol=1e-8)  # G-orthonormal
    np.testing.assert_allclose(geometry.project(vectors).numpy(), pairs.vectors, atol=1e-6)  # in the noise space (float32 operator)
    assert lin.applications["vjp"] == lin.applications["jvp"] + H * W > H * W  # Lanczos: one of each per vector

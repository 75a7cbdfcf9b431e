"""Tests of druids.sphere: the truncation is a projection, it leaves the Held–Suarez world's
states unchanged, and it removes what a T21 model cannot hold."""

import numpy as np
import pytest
import xarray as xr

from druids import sphere
from druids.data import heldsuarez

H, W = 32, 64
GAUSSIAN = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(H)[0]))


def test_truncation_is_an_orthogonal_projection():
    """Idempotent, and what it removes is orthogonal (area-weighted) to what it keeps."""
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((3, H, W))
    kept = sphere.truncate(noise, GAUSSIAN, 21)
    np.testing.assert_allclose(sphere.truncate(kept, GAUSSIAN, 21), kept, atol=1e-12)
    weights = np.polynomial.legendre.leggauss(H)[1][:, None]
    inner = (weights * kept * (noise - kept)).sum(axis=(1, 2))
    np.testing.assert_allclose(inner, 0, atol=1e-10)
    # white noise keeps about (number of T21 harmonics) / (number of grid points) of its variance
    share = (weights * kept**2).sum() / (weights * noise**2).sum()
    assert share == pytest.approx(22 * 23 / (H * W), rel=0.15)


def test_truncation_removes_zonal_wavenumbers_beyond_it():
    rng = np.random.default_rng(1)
    kept = sphere.truncate(rng.standard_normal((H, W)), GAUSSIAN, 10)
    spectrum = np.abs(np.fft.rfft(kept, axis=-1))
    assert spectrum[:, 11:].max() < 1e-12 and spectrum[:, :11].max() > 0.1


def test_truncation_keeps_a_spherical_harmonic():
    """Y_5^3 (real part) is unchanged at T5 and removed at T4."""
    mu = np.sin(np.deg2rad(GAUSSIAN))[:, None]
    lon = np.deg2rad(np.arange(W) * 360 / W)[None, :]
    y53 = (1 - mu**2) ** 1.5 * (9 * mu**2 - 1) * np.cos(3 * lon)  # proportional to P_5^3(mu) cos(3 lon)
    np.testing.assert_allclose(sphere.truncate(y53, GAUSSIAN, 5), y53, atol=1e-12)
    np.testing.assert_allclose(sphere.truncate(y53, GAUSSIAN, 4), 0, atol=1e-12)


def test_world_states_are_unchanged(smoke_store):
    """The Held–Suarez world's states already lie in the T21 space (winds via cos(lat) at T22, log surface pressure),
    up to the float32 accuracy of the world's own spectral transforms (~1e-5 of a field's magnitude)."""
    world = xr.open_zarr(smoke_store).isel(time=[0, 5, 17]).load()
    variables = ["u_component_of_wind", "v_component_of_wind", "temperature", "surface_pressure"]
    state = world[variables]
    projected = sphere.truncate_state(state, 21)
    for name in variables:
        change = projected[name] - state[name]
        assert float(abs(change).max()) < 1e-4 * float(abs(state[name]).max())
        assert float(np.sqrt((change**2).mean())) < 1e-3 * float(state[name].std())
        assert projected[name].dims == state[name].dims
    # grid-scale noise, which the world cannot have, is mostly removed
    noise = 0.1 * np.random.default_rng(2).standard_normal(state["temperature"].shape[-2:])
    cleaned = sphere.truncate_state(state.assign(temperature=state["temperature"] + noise), 21)
    assert float(np.sqrt(((cleaned["temperature"] - state["temperature"]) ** 2).mean())) < 0.6 * 0.1


def test_the_world_grid_is_gaussian():
    """The world's latitudes are Gaussian nodes, so its states can be truncated exactly."""
    from druids.config import get_config

    latitude = heldsuarez.get_world(get_config("smoke").world).latitude
    np.testing.assert_allclose(np.sort(latitude), GAUSSIAN, atol=1e-6)


def test_other_grids_are_refused():
    equiangular = np.linspace(-87.1875, 87.1875, H)
    with pytest.raises(ValueError, match="needs a Gaussian grid"):
        sphere.truncate(np.zeros((H, W)), equiangular, 21)
    with pytest.raises(ValueError, match="needs 0 <= truncation <= 31"):
        sphere.truncate(np.zeros((H, 128)), GAUSSIAN, 40)
    with pytest.raises(ValueError, match="64 longitudes cannot hold"):
        sphere.truncate(np.zeros((H, W)), GAUSSIAN, 32)


def test_sphere_noise_is_white_on_the_sphere():
    """Unit variance at every latitude (the addition theorem), band-limited, reproducible from its generator."""
    import torch

    noise = sphere.sphere_noise((4000, H, W), torch.Generator().manual_seed(0), GAUSSIAN, 21)
    variance = noise.double().var(dim=(0, 2))
    assert abs(float(variance.mean()) - 1) < 0.01 and float(abs(variance - 1).max()) < 0.05
    sample = noise[:3].double()
    torch.testing.assert_close(sphere.truncate(sample, GAUSSIAN, 21), sample, atol=1e-5, rtol=0)
    again = sphere.sphere_noise((4000, H, W), torch.Generator().manual_seed(0), GAUSSIAN, 21)
    torch.testing.assert_close(again, noise)
    # neighbouring points are correlated (no grid-scale noise), unlike white noise on the grid
    lag_one = float((noise[..., 1:] * noise[..., :-1]).mean())
    assert lag_one > 0.5


def test_denoisers_and_samplers_diffuse_with_the_same_sphere_noise():
    """A denoiser built with a noise truncation draws band-limited noise for its loss, and the samplers'
    member noise follows it; member k's draw does not depend on the other members."""
    import torch

    from druids.config import ModelConfig
    from druids.models import build_denoiser, build_loss, noise_band
    from druids.sampling import MemberNoise, member_generator

    cfg = ModelConfig(base_channels=4, channel_mults=(1,), blocks_per_level=1)
    denoiser = build_denoiser(cfg, 2, 6, noise_band(GAUSSIAN, 10))
    eps = denoiser.noise_like(torch.zeros(3, 2, H, W, dtype=torch.float64), torch.Generator().manual_seed(1))
    torch.testing.assert_close(sphere.truncate(eps, GAUSSIAN, 10), eps, atol=1e-6, rtol=0)
    loss = build_loss(cfg, GAUSSIAN, 2)
    assert loss(denoiser, torch.zeros(3, 2, H, W), torch.zeros(3, 6, H, W), torch.Generator().manual_seed(0)).isfinite()
    generators = lambda members: [member_generator(0, "model", 0, m) for m in members]  # noqa: E731
    both = MemberNoise(generators([0, 1]), (2, H, W), band=denoiser.noise_band)()
    alone = MemberNoise(generators([1]), (2, H, W), band=denoiser.noise_band)()
    torch.testing.assert_close(both[1:], alone)
    torch.testing.assert_close(sphere.truncate(both.double(), GAUSSIAN, 10), both.double(), atol=1e-5, rtol=0)

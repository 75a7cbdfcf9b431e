"""Tests of druids.models: shapes, the sphere padding, bias-free homogeneity and
Euler's identity, the EDM and flow-matching wrappers and their losses."""

import dataclasses

import numpy as np
import pytest
import torch
from torch.func import jacrev, jvp, vjp

from druids.config import ModelConfig
from druids.models import (
    EDMDenoiser,
    FlowMatchingDenoiser,
    UNet,
    build_denoiser,
    build_loss,
    check_model_config,
    homogeneity_error,
    flow_sigma,
    flow_time,
    pad_sphere,
    weighted_mse,
)
from druids.sphere import latitude_weights

# torch's own forward-mode decompositions still call torch.jit.script.

N_TARGET, N_COND, H, W = 3, 2, 16, 32
LATITUDES = np.linspace(-90 + 90 / H, 90 - 90 / H, H)
TINY = ModelConfig(base_channels=8, channel_mults=(1, 2, 2), blocks_per_level=1)


pytestmark = [
    pytest.mark.usefixtures("torch_one_thread"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]


def make(objective="edm", bias_free=True, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    activation = "relu" if bias_free else "silu"
    cfg = dataclasses.replace(TINY, objective=objective, bias_free=bias_free, activation=activation)
    denoiser = build_denoiser(cfg, N_TARGET, N_COND).to(dtype)
    # Random, non-trivial gains and norm weights (they start at 1).
    with torch.no_grad():
        for name, param in denoiser.named_parameters():
            if name.endswith("noise.weight") or (param.ndim == 1 and "norm" in name):
                param.copy_(0.3 * torch.randn_like(param) + (1.0 if param.ndim == 1 else 0.0))
    return denoiser


def inputs(batch=2, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(batch, N_TARGET, H, W, generator=g, dtype=dtype)
    c = torch.randn(batch, N_COND, H, W, generator=g, dtype=dtype)
    sigma = torch.linspace(0.3, 5.0, batch, dtype=dtype)
    return y, c, sigma


@pytest.mark.parametrize("objective", ["edm", "flow"])
@pytest.mark.parametrize("bias_free", [True, False])
def test_shapes_and_features(objective, bias_free):
    denoiser = make(objective, bias_free, dtype=torch.float32)
    y, c, sigma = inputs(dtype=torch.float32)
    assert denoiser.denoise(y, c, sigma).shape == y.shape
    assert denoiser.denoise(y, c, 1.0).shape == y.shape  # scalar sigma is broadcast
    out, features = denoiser.net(torch.cat([y, c], 1), sigma, return_features=True)
    assert out.shape == y.shape
    assert features["encoder.2.0"].shape == (2, 16, H // 4, W // 4)
    assert features["decoder.0.0"].shape == (2, 8, H, W)
    seen = {}
    denoiser.net.decoder[0][0].register_forward_hook(lambda m, a, o: seen.setdefault("h", o))
    denoiser.net(torch.cat([y, c], 1), sigma)
    torch.testing.assert_close(seen["h"], features["decoder.0.0"])


def test_default_size_on_the_model_grid():
    denoiser = build_denoiser(ModelConfig(), 10, 12)
    y, c = torch.randn(1, 10, 32, 64), torch.randn(1, 12, 32, 64)
    with torch.no_grad():
        assert denoiser.denoise(y, c, torch.tensor([2.0])).shape == y.shape


def test_bias_free_has_no_additive_parameters():
    names = [name for name, _ in make().named_parameters()]
    assert not [n for n in names if n.endswith("bias")]
    assert any(n.endswith("bias") for n, _ in make(bias_free=False).named_parameters())


def test_pad_sphere():
    x = torch.arange(2 * 4 * 6, dtype=torch.float64).reshape(1, 2, 4, 6)
    p = pad_sphere(x, 1)
    assert p.shape == (1, 2, 6, 8)
    torch.testing.assert_close(p[..., 1:-1, 1:-1], x)
    torch.testing.assert_close(p[..., 1:-1, 0], x[..., -1])  # circular in longitude
    torch.testing.assert_close(p[..., 0, 1:-1], torch.roll(x[..., 0, :], 3, dims=-1))  # across the pole
    torch.testing.assert_close(p[..., -1, 1:-1], torch.roll(x[..., -1, :], 3, dims=-1))


@pytest.mark.parametrize("bias_free", [True, False])
def test_zonal_shift_equivariance(bias_free):
    net = make(bias_free=bias_free).net
    y, c, sigma = inputs()
    z = torch.cat([y, c], 1)
    shift = 3 * net.downsampling
    out = net(z, sigma)
    torch.testing.assert_close(net(torch.roll(z, shift, dims=-1), sigma), torch.roll(out, shift, dims=-1))


@pytest.mark.parametrize("objective", ["edm", "flow"])
@pytest.mark.parametrize("a", [0.5, 3.0])
def test_bias_free_denoise_is_homogeneous(objective, a):
    denoiser = make(objective)
    y, c, sigma = inputs()
    expected = a * denoiser.denoise(y, c, sigma)
    torch.testing.assert_close(denoiser.denoise(a * y, a * c, sigma), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("objective", ["edm", "flow"])
def test_biased_denoise_is_not_homogeneous(objective):
    denoiser = make(objective, bias_free=False)
    y, c, sigma = inputs()
    diff = denoiser.denoise(3.0 * y, 3.0 * c, sigma) - 3.0 * denoiser.denoise(y, c, sigma)
    assert diff.abs().max() > 1e-3


@pytest.mark.parametrize("objective", ["edm", "flow"])
def test_euler_identity(objective):
    """D(y, c) = J_y y + J_c c, one forward-mode product along (y, c) itself."""
    denoiser = make(objective)
    y, c, sigma = inputs()
    value, tangent = jvp(lambda y_, c_: denoiser.denoise(y_, c_, sigma), (y, c), (y, c))
    torch.testing.assert_close(tangent, value, rtol=1e-10, atol=1e-12)


def test_jvp_vjp_jacrev_agree():
    """<v, J u> by forward mode equals <J^T v, u> by reverse mode; jacrev gives Euler at one point."""
    denoiser = make("flow")
    y, c, sigma = inputs()
    g = torch.Generator().manual_seed(3)
    u_y, u_c, v = (torch.randn(t.shape, generator=g, dtype=t.dtype) for t in (y, c, y))

    def f(y_, c_):
        return denoiser.denoise(y_, c_, sigma)

    _, ju = jvp(f, (y, c), (u_y, u_c))
    value, pullback = vjp(f, y, c)
    jtv_y, jtv_c = pullback(v)
    torch.testing.assert_close((v * ju).sum(), (jtv_y * u_y).sum() + (jtv_c * u_c).sum())
    j_y, j_c = jacrev(lambda y_, c_: f(y_, c_)[1, 0, 5, 7], argnums=(0, 1))(y, c)
    torch.testing.assert_close((j_y * y).sum() + (j_c * c).sum(), value[1, 0, 5, 7])


def test_euler_identity_fails_for_biased_net():
    denoiser = make(bias_free=False)
    y, c, sigma = inputs()
    value, tangent = jvp(lambda y_, c_: denoiser.denoise(y_, c_, sigma), (y, c), (y, c))
    assert (tangent - value).abs().max() > 1e-3


def test_edm_small_sigma_is_identity():
    denoiser = make("edm", dtype=torch.float32)
    y, c, _ = inputs(dtype=torch.float32)
    torch.testing.assert_close(denoiser.denoise(y, c, 1e-5), y, rtol=0, atol=1e-3)


def test_edm_training_sigma_distribution():
    sigma = build_loss(TINY, LATITUDES, N_TARGET).sample_sigma(20000, torch.Generator().manual_seed(0))
    assert sigma.min() >= 0.02 and sigma.max() <= 88.0
    # rho = 7 puts the median at ((88^(1/7) + 0.02^(1/7)) / 2)^7, about 2.2.
    median = ((88 ** (1 / 7) + 0.02 ** (1 / 7)) / 2) ** 7
    assert abs(sigma.median().item() - median) / median < 0.05


def test_flow_velocity_denoise_consistency():
    denoiser = make("flow")
    y, c, _ = inputs()
    g = torch.Generator().manual_seed(2)
    x0, eps = y, torch.randn(y.shape, generator=g, dtype=y.dtype)
    t = torch.tensor([0.2, 0.9], dtype=y.dtype)
    tt = t[:, None, None, None]
    x_t = (1 - tt) * x0 + tt * eps
    sigma = flow_sigma(t)
    torch.testing.assert_close(flow_time(sigma), t)
    x0_hat = denoiser.denoise(x_t / (1 - tt), c, sigma)
    torch.testing.assert_close(x0_hat, x_t - tt * denoiser.velocity(x_t, c, t))
    # With the exact velocity, x_t - t v recovers x0.
    torch.testing.assert_close(x_t - tt * (eps - x0), x0)


@pytest.mark.parametrize("objective", ["edm", "flow"])
def test_loss_decreases_on_fixed_batch(objective):
    denoiser = make(objective, dtype=torch.float32, seed=3)
    objective_loss = build_loss(dataclasses.replace(TINY, objective=objective), LATITUDES, N_TARGET)
    y, c, _ = inputs(batch=4, dtype=torch.float32, seed=4)
    optimiser = torch.optim.Adam(denoiser.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = objective_loss(denoiser, y, c, torch.Generator().manual_seed(5))  # same noise every step
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.85 * losses[0]


def test_latitude_weightings():
    """Mean 1; area weights follow cos(latitude), sqrt_area its root, uniform nothing; unknown names fail."""
    cos = np.cos(np.deg2rad(LATITUDES))
    for name, expected in (("area", cos), ("sqrt_area", np.sqrt(cos)), ("uniform", np.ones_like(cos))):
        weights = latitude_weights(LATITUDES, name)
        np.testing.assert_allclose(weights.numpy(), expected / expected.mean())
    with pytest.raises(ValueError, match="choose one of area, sqrt_area, uniform"):
        latitude_weights(LATITUDES, "cos")


def test_area_weighting():
    weights = latitude_weights(LATITUDES, "area")
    assert weights.shape == (H,)
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0, dtype=weights.dtype))
    target = torch.zeros(1, N_TARGET, H, W, dtype=weights.dtype)
    pole, equator = target.clone(), target.clone()
    pole[..., 0, :] = 1.0
    equator[..., H // 2, :] = 1.0
    ones = torch.ones(N_TARGET, dtype=weights.dtype)
    assert weighted_mse(pole, target, weights, ones) < 0.2 * weighted_mse(equator, target, weights, ones)
    channel = torch.tensor([2.0, 1.0, 0.0], dtype=weights.dtype)
    expected = weighted_mse(equator, target, weights, ones)
    torch.testing.assert_close(weighted_mse(equator, target, weights, channel), expected)
    with pytest.raises(ValueError, match="latitude weights"):
        weighted_mse(pole, target, weights[:-1], ones)


def test_build_denoiser_and_config_errors():
    assert isinstance(make("edm"), EDMDenoiser)
    assert isinstance(make("flow"), FlowMatchingDenoiser)
    with pytest.raises(ValueError, match="homogeneous activation"):
        UNet(4, 2, ModelConfig(activation="silu", bias_free=True))
    with pytest.raises(ValueError, match="objective"):
        build_denoiser(ModelConfig(objective="ddpm"), 2, 2)
    with pytest.raises(ValueError, match="latitude_weighting"):
        check_model_config(ModelConfig(latitude_weighting="cos"))
    with pytest.raises(ValueError, match="channel weights"):
        build_loss(TINY, LATITUDES, N_TARGET, channel_weights=[1.0])(make("edm"), *inputs()[:2])
    net = UNet(4, 2, ModelConfig(base_channels=4, channel_mults=(1, 1, 1, 1), blocks_per_level=1))
    with pytest.raises(ValueError, match="downsampling"):
        net(torch.zeros(1, 4, 12, 32), torch.zeros(1))


def test_homogeneity_error_helper_separates_bias_free_from_biased():
    torch.manual_seed(0)
    small = dict(base_channels=4, channel_mults=(1, 2), blocks_per_level=1)
    free = build_denoiser(ModelConfig(**small), 2, 3).double()
    biased = build_denoiser(ModelConfig(**small, bias_free=False, activation="silu"), 2, 3).double()
    y, c = torch.randn(1, 2, 32, 64, dtype=torch.float64), torch.randn(1, 3, 32, 64, dtype=torch.float64)
    sigma = torch.tensor([0.7], dtype=torch.float64)
    from druids.models import denoise_at_levels

    assert homogeneity_error(free, y, c, sigma, [0.5, 3.0]).max() < 1e-10
    assert homogeneity_error(biased, y, c, sigma, [0.5, 3.0]).max() > 1e-4
    noisy, denoised = denoise_at_levels(free, y[0], c[0], [0.1, 1.0], torch.Generator().manual_seed(0))
    assert noisy.shape == denoised.shape == (2, 2, 32, 64)


def test_zonal_mixing_is_global_homogeneous_and_starts_as_identity():
    """The bottleneck's zonal mixing starts as the identity (zero weights) and keeps the bias-free network
    homogeneous; the block itself adds to a field only zonal wavenumbers below its limit, which reach
    every longitude of the circle, and keeps latitude circles apart."""
    from druids.models.network import ZonalMixing

    torch.manual_seed(0)
    mixing = dataclasses.replace(TINY, zonal_mixing=3)
    plain, mixed = build_denoiser(TINY, N_TARGET, N_COND).double(), build_denoiser(mixing, N_TARGET, N_COND).double()
    mixed.load_state_dict({**plain.state_dict(), **{k: v for k, v in mixed.state_dict().items() if "mixing" in k}})
    y, c, sigma = inputs()
    with torch.no_grad():
        torch.testing.assert_close(mixed.denoise(y, c, sigma), plain.denoise(y, c, sigma))
        mixed.net.mixing.weight.normal_()
        assert homogeneity_error(mixed, y, c, sigma, [0.5, 3.0]).max() < 1e-12
        block = ZonalMixing(4, 3, bias_free=True).double()
        block.weight.normal_()
        bump = torch.zeros(1, 4, 8, 64, dtype=torch.float64)
        bump[:, :, 4, 0] = 1.0
        added = block(bump, torch.ones(1, dtype=torch.float64)) - bump
        spectrum = torch.fft.rfft(added, dim=-1).abs()
        assert spectrum[..., 3:].max() < 1e-12 < spectrum[..., :3].max()
        assert added[..., 4, 32].abs().max() > 1e-3  # half a circle away
        assert added[..., :4, :].abs().max() == 0  # other latitude circles untouched


def test_zonal_mixing_runs_in_the_channels_last_layout():
    """Channels-last (the fast sampling path) also lays out the mixing's 4-d weight as NHWC; the block must
    still read it as complex numbers and give the same output as in the default layout."""
    torch.manual_seed(0)
    denoiser = build_denoiser(dataclasses.replace(TINY, zonal_mixing=3), N_TARGET, N_COND).double()
    with torch.no_grad():
        denoiser.net.mixing.weight.normal_()
        y, c, sigma = inputs()
        expected = denoiser.denoise(y, c, sigma)
        denoiser.net.use_channels_last(True)
        torch.testing.assert_close(denoiser.denoise(y, c, sigma), expected)

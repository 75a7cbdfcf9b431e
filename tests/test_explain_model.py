"""The Jacobian tools on the trained (smoke) denoiser, in float64: Euler's identity, adjointness and
Stein's identity within three standard errors (the one-field dense check is in test_explain_learning)."""

import pytest
import torch

from druids import training
from druids.config import get_config
from druids.data import source
from druids.data.dataset import ForecastDataset, collate
from druids.explain import trace
from druids.explain.geometry import NoiseGeometry
from druids.explain.operators import Linearisation, euler_residual, in_float64

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def trained(smoke_store, tmp_path_factory):
    """The smoke EDM model (float64 copy of its EMA weights), its validation samples and noise geometry."""
    cfg = get_config("smoke")
    run = training.train(cfg, run_dir=tmp_path_factory.mktemp("explain") / "edm", progress=False)
    data, stats = source.open_dataset(cfg, progress=False)
    samples = ForecastDataset(data, stats, "val", cfg.dataset)
    geometry = NoiseGeometry.of_denoiser(run.ema, stats.latitude, stats.longitude.size)
    return in_float64(run.ema), samples, geometry


def _point(trained, sigma, index=0, seed=0):
    denoiser, samples, geometry = trained
    condition, target = samples[index]
    generator = torch.Generator().manual_seed(seed)
    y = target.double() + sigma * geometry.noise((1, *target.shape), generator)[0]
    return Linearisation(denoiser, y, condition, sigma)


@pytest.mark.parametrize("sigma", [0.05, 1.0, 20.0])
def test_euler_identity_holds_in_float64(trained, sigma):
    """D = J_y y + J_prev x_t + J_static s for the bias-free model, to 1e-5; without the static term it fails."""
    lin = _point(trained, sigma)
    n_state = lin.shape[0]
    groups = {"previous state": slice(0, n_state), "static fields": slice(n_state, lin.c.shape[0])}
    assert euler_residual(lin, groups) < 1e-5
    static = lin.euler_terms(groups)["static fields"]
    assert float(static.norm()) > 1e-4 * float(lin.output().norm())


def test_jvp_and_vjp_are_adjoint_and_match_finite_differences(trained):
    lin = _point(trained, 0.7)
    generator = torch.Generator().manual_seed(1)
    u, v = torch.randn((2, 1, *lin.shape), generator=generator, dtype=torch.float64)
    forward, backward = lin.jvp(v), lin.vjp(u)
    assert float((u * forward).sum()) == pytest.approx(float((backward * v).sum()), rel=1e-10)
    step = 1e-5
    with torch.no_grad():
        plus = lin.denoiser.denoise((lin.y + step * v[0])[None], lin.c[None], lin.sigma)[0]
        minus = lin.denoiser.denoise((lin.y - step * v[0])[None], lin.c[None], lin.sigma)[0]
    difference = (plus - minus) / (2 * step)
    assert float((difference - forward[0]).norm() / forward.norm()) < 1e-5
    assert lin.applications == {"jvp": 1, "vjp": 1}


@pytest.mark.parametrize("sigma", [0.3, 3.0])
def test_stein_identity_holds_on_the_trained_model(trained, sigma):
    """SURE (with tr(G J S) by Hutchinson) equals the true MSE within 3 standard errors, on real states."""
    denoiser, samples, geometry = trained
    condition, target = collate(samples, range(min(48, len(samples))), "cpu")
    check = trace.stein_check(denoiser, target.double(), condition.double(), sigma, geometry, torch.Generator().manual_seed(2))
    assert abs(check.difference.mean) < 3 * check.difference.stderr
    assert check.difference.stderr < 0.1 * check.mse.mean  # small enough to catch a wrong identity
    assert check.tweedie_ratio.mean > 0

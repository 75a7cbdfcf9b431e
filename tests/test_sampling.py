"""Tests of druids.sampling: schedules, NFE, per-member seeding, samplers on a Gaussian
with a known answer, the regression fixture, and ensemble forecasts to xarray/zarr."""

from __future__ import annotations

import dataclasses
import os
import socket

import numpy as np
import pytest
import torch
import xarray as xr

from druids.config import DatasetConfig, ModelConfig, SamplingConfig, from_dict
from druids.data import channels, dataset, normalisation
from druids import sphere
from druids.models import build_denoiser
from druids import sampling
from druids.sampling import (
    SAMPLERS,
    MemberNoise,
    flow_times,
    forecast,
    member_generator,
    noise_levels,
    rollout_climate,
    sample,
    sampler_cost,
)
from fixtures.make_sampling_fixture import EXPECTED_PATH, MODEL_PATH, load_denoiser, run_sampler
from known_models import Analytic, around_state, small_store

H, W = 8, 16
VARIABLES = ("u_component_of_wind", "surface_pressure")
DATASET = DatasetConfig(variables=VARIABLES, split_fractions=(0.7, 0.15, 0.15), gap_days=0.5, spectral_truncation=None)
SAMPLING = SamplingConfig(n_levels=4, member_batch=2)
NFE = {"edm": lambda n: 2 * n - 1, "dpmpp_2s": lambda n: 2 * n - 1, "flow_euler": lambda n: n,
       "flow_heun": lambda n: 2 * n - 1, "flow_sde": lambda n: n}  # fmt: skip


pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ------------------------------------------------------------------ helpers


class Gaussian:
    """Exact denoiser and velocity for data x0 ~ N(0, s^2 I).

    ``denoise(y, sigma) = s^2 / (s^2 + sigma^2) y``; for ``x_t = (1 - t) x0 + t eps``,
    ``v = E[eps - x0 | x_t] = (t - (1 - t) s^2) / ((1 - t)^2 s^2 + t^2) x_t``.
    ``calls`` counts evaluations.
    """

    def __init__(self, s: float, flow: bool = True):
        self.s, self.calls = s, 0
        if flow:
            self.velocity = self._velocity

    def denoise(self, y, c, sigma):
        self.calls += 1
        return self.s**2 / (self.s**2 + sigma[:, None, None, None] ** 2) * y

    def _velocity(self, x, c, t):
        self.calls += 1
        t, s2 = t[:, None, None, None], self.s**2
        return (t - (1 - t) * s2) / ((1 - t) ** 2 * s2 + t**2) * x


def noise(members, shape=(1, 64, 128), seed=0, dtype=torch.float64):
    return MemberNoise([member_generator(seed, "model", 0, m) for m in members], shape, dtype)



def tiny_model(history: int = 1, objective: str = "edm"):
    torch.manual_seed(0)
    cfg = ModelConfig(objective=objective, base_channels=4, channel_mults=(1,), blocks_per_level=1)
    return build_denoiser(cfg, 3, 3 * history + 4)



@pytest.fixture(scope="module")
def store() -> xr.Dataset:
    return small_store()


@pytest.fixture(scope="module")
def stats(store) -> normalisation.NormStats:
    return normalisation.compute_norm_stats(store, VARIABLES)


# ------------------------------------------------------------------ schedules, NFE, seeding


def test_noise_levels():
    sigmas = noise_levels(20, 0.03, 80.0, 7.0)
    assert sigmas.shape == (21,) and sigmas.dtype == torch.float64
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[-2].item() == pytest.approx(0.03) and sigmas[-1] == 0
    assert (sigmas[1:] < sigmas[:-1]).all()
    linear = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(noise_levels(4, 1.0, 4.0, 1.0), linear)  # rho = 1: evenly spaced
    torch.testing.assert_close(flow_times(4), linear / 4)
    with pytest.raises(ValueError, match="sigma_min"):
        noise_levels(4, 0.0, 80.0, 7.0)


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("s_churn", [0.0, 2.5])
def test_nfe(name, s_churn):
    model = Gaussian(1.0)
    _, nfe = sample(model, None, noise([0], (1, 4, 4)), SamplingConfig(sampler=name, n_levels=7, s_churn=s_churn))
    assert nfe == model.calls == NFE[name](7)


@pytest.mark.parametrize("name", SAMPLERS)
def test_member_independent_of_batch(name):
    """Member k's sample is bit-identical alone or in a batch, for a batch-invariant (elementwise) model."""
    cfg = SamplingConfig(sampler=name, n_levels=5)
    together, _ = sample(Gaussian(0.7), None, noise([0, 1, 2], (2, H, W)), cfg)
    for k in range(3):
        alone, _ = sample(Gaussian(0.7), None, noise([k], (2, H, W)), cfg)
        assert torch.equal(alone[0], together[k])
    assert not torch.equal(together[0], together[1])


@pytest.mark.parametrize("name", SAMPLERS)
def test_member_independent_of_batch_unet(name):
    """With the tiny U-Net, member k alone or in a batch agrees to rounding: BLAS computes a batch of one
    (matrix-vector) and of several (matrix-matrix) in different orders, so bit identity is not guaranteed."""
    saved = torch.load(MODEL_PATH, weights_only=True)
    condition = torch.load(EXPECTED_PATH, weights_only=True)["condition"][:1].expand(3, -1, -1, -1)
    cfg = SamplingConfig(sampler=name, n_levels=3)
    model = load_denoiser(saved, "flow" if name.startswith("flow") else "edm")
    with torch.no_grad():
        together, _ = sample(model, condition, noise([0, 1, 2], (2, H, W)), cfg)
        for k in range(3):
            alone, _ = sample(model, condition[k : k + 1], noise([k], (2, H, W)), cfg)
            torch.testing.assert_close(alone[0], together[k], rtol=1e-10, atol=1e-10)


def test_member_generators_are_distinct():
    draws = [torch.randn(4, generator=member_generator(0, stream, key, m)) for stream, key, m in
             [("model", 0, 0), ("model", 0, 1), ("model", 1, 0), ("ic", 0, 0)]]  # fmt: skip
    assert all(not torch.equal(a, b) for i, a in enumerate(draws) for b in draws[i + 1 :])
    assert torch.equal(draws[0], torch.randn(4, generator=member_generator(0, "model", 0, 0)))


# ------------------------------------------------------------------ Gaussian with a known answer


@pytest.mark.parametrize(
    "name, n_levels, churn",
    [
        ("edm", 50, False),
        ("edm", 50, True),
        ("dpmpp_2s", 50, False),
        ("dpmpp_2s", 50, True),
        ("dpmpp_2s", 20, False),  # GenCast's 20 levels
        ("flow_euler", 200, False),
        ("flow_heun", 50, False),
        ("flow_sde", 200, False),
    ],
)
@pytest.mark.parametrize("s", [0.5, 2.0])
def test_gaussian_variance(name, n_levels, churn, s):
    """Exact denoiser/velocity for N(0, s^2): sample variance within 4 % of s^2 (65k values, SE 0.6 %)."""
    churn_cfg = {"s_churn": 2.5, "s_min": 0.75, "s_noise": 1.0} if churn else {"s_churn": 0.0}
    cfg = SamplingConfig(sampler=name, n_levels=n_levels, **churn_cfg)
    x, _ = sample(Gaussian(s), None, noise(range(8)), cfg)
    assert x.var().item() / s**2 == pytest.approx(1.0, abs=0.04)
    assert abs(x.mean().item()) < 0.02 * s


def test_gaussian_flow_through_denoiser():
    """A model without ``velocity`` is integrated through its denoiser from t = sigma_max / (1 + sigma_max)."""
    x, _ = sample(Gaussian(2.0, flow=False), None, noise(range(8)), SamplingConfig(sampler="flow_heun", n_levels=50))
    assert x.var().item() / 4.0 == pytest.approx(1.0, abs=0.04)


def test_gaussian_noise_inflation():
    """GenCast's S_noise = 1.05 over-disperses an exact denoiser (by ~10 % in variance here)."""
    cfg = SamplingConfig(n_levels=50)
    ratio = sample(Gaussian(1.0), None, noise(range(8)), cfg)[0].var().item()
    assert 1.04 < ratio < 1.15


# ------------------------------------------------------------------ regression fixture


@pytest.mark.parametrize("name", SAMPLERS)
def test_regression_fixture(name):
    """Samples of the committed tiny model equal the committed ones. If this fails, a change altered
    sampler output: fix it, or regenerate (tests/fixtures/make_sampling_fixture.py) only if intended."""
    saved = torch.load(MODEL_PATH, weights_only=True)
    expected = torch.load(EXPECTED_PATH, weights_only=True)
    entry = expected["samplers"][name]
    x, nfe = run_sampler(saved, expected["condition"], from_dict(SamplingConfig, entry["config"]))
    assert nfe == entry["nfe"]
    torch.testing.assert_close(x, entry["sample"], rtol=1e-5, atol=1e-5)


def test_fixture_is_small():
    assert MODEL_PATH.stat().st_size + EXPECTED_PATH.stat().st_size < 200_000


# ------------------------------------------------------------------ forecast


def test_forecast_layout(store, stats):
    init = store.isel(time=[3, 10])
    ens = forecast(tiny_model(), stats, init, 3, 2, SAMPLING, DATASET, seed=1, progress=False)
    assert ens["u_component_of_wind"].dims == ("init_time", "member", "lead_time", "level", "latitude", "longitude")
    assert ens["surface_pressure"].dims == ("init_time", "member", "lead_time", "latitude", "longitude")
    np.testing.assert_array_equal(ens["init_time"].values, init["time"].values)
    np.testing.assert_array_equal(ens["member"].values, [0, 1, 2])
    np.testing.assert_array_equal(ens["lead_time"].values, np.array([0, 6, 12], "timedelta64[h]").astype("timedelta64[ns]"))
    np.testing.assert_array_equal(ens["level"].values, [300.0, 700.0])
    for name in VARIABLES:
        assert ens[name].attrs["units"] == store[name].attrs["units"] and ens[name].dtype == np.float32
        lead0 = ens[name].isel(lead_time=0).transpose("member", "init_time", ...).values
        np.testing.assert_array_equal(lead0, np.broadcast_to(init[name].values, lead0.shape))
        assert np.isfinite(ens[name].values).all()
    assert ens.attrs["nfe_per_step"] == 7 and ens.attrs["seed"] == 1
    spread = ens["surface_pressure"].isel(lead_time=2).std("member")
    assert (spread > 0).all()


def test_forecast_members_reproducible(store, stats):
    """Member k of init t is the same whatever the number of members, the member batch and the other init times."""
    model = Analytic(around_state)
    init = store.isel(time=[3, 10])
    full = forecast(model, stats, init, 3, 2, SAMPLING, DATASET, seed=1, progress=False)
    one_by_one = dataclasses.replace(SAMPLING, member_batch=1)
    part = forecast(model, stats, init.isel(time=[1]), 2, 2, one_by_one, DATASET, seed=1, progress=False)
    xr.testing.assert_identical(part.drop_attrs(), full.isel(init_time=[1], member=[0, 1]).drop_attrs())
    other = forecast(model, stats, init, 3, 2, SAMPLING, DATASET, seed=2, progress=False)
    assert not np.array_equal(other["surface_pressure"].values, full["surface_pressure"].values)
    unet = forecast(tiny_model(), stats, init.isel(time=[1]), 2, 2, one_by_one, DATASET, seed=1, progress=False)
    unet_full = forecast(tiny_model(), stats, init, 3, 2, SAMPLING, DATASET, seed=1, progress=False)
    xr.testing.assert_allclose(unet.drop_attrs(), unet_full.isel(init_time=[1], member=[0, 1]).drop_attrs(), rtol=1e-5)


def test_forecast_store(store, stats, tmp_path, monkeypatch):
    """The zarr store, written one lead at a time, equals the in-memory forecast; no temporary left."""
    import druids.sampling.ensembles as S

    written = []
    write_lead = S._write_lead
    monkeypatch.setattr(S, "_write_lead", lambda path, ds, k, leads: (written.append(k), write_lead(path, ds, k, leads)))
    model, init = tiny_model(), store.isel(time=[3, 10])
    memory = forecast(model, stats, init, 3, 3, SAMPLING, DATASET, seed=1, progress=False)
    path = tmp_path / "ensemble.zarr"
    lazy = forecast(model, stats, init, 3, 3, SAMPLING, DATASET, seed=1, store=path, progress=False)
    assert written == [0, 1, 2, 3]
    assert lazy["surface_pressure"].chunks[2] == (1, 1, 1, 1)  # one chunk per lead
    xr.testing.assert_identical(lazy.load(), memory)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ensemble.zarr"]


def test_forecast_failure_leaves_no_store(store, stats, tmp_path):
    model = Analytic(lambda y, c, sigma: torch.full_like(y, float("nan")))
    path = tmp_path / "ensemble.zarr"
    with pytest.raises(ValueError, match="not finite"):
        forecast(model, stats, store.isel(time=[3]), 2, 2, SAMPLING, DATASET, seed=0, store=path, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("history", [1, 2])
def test_forecast_condition_matches_dataset(store, stats, history):
    """The first step's condition is ForecastDataset's for the initial time, for every member.

    Up to float32 rounding: the dataset normalises in float32, ``normalise_state`` in float64
    (for surface pressure, float32 spacing at 1e5 Pa / std is ~1e-5)."""
    config = dataclasses.replace(DATASET, history=history)
    data = dataset.ForecastDataset(store, stats, "train", config)
    model = Analytic(lambda y, c, sigma: torch.zeros_like(y))
    t = 5
    forecast(model, stats, store.isel(time=slice(t - history + 1, t + 1)), 2, 1, SAMPLING, config, seed=0, progress=False)
    i = int(np.flatnonzero(data.times == store["time"].values[t])[0])
    expected = data[i][0]
    assert model.conditions[0].shape == (2, *expected.shape)
    for row in model.conditions[0]:
        torch.testing.assert_close(row, expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("conserve_mass", [False, True])
def test_forecast_rolls_out_sampled_states(store, stats, conserve_mass):
    """With a model whose residual is norm(x_t) - norm(x_{t-6h}) (history 2), each lead follows from the previous
    ones; with ``conserve_mass`` the surface pressure is then shifted back to the initial global mean."""
    config = dataclasses.replace(DATASET, history=2)
    model = Analytic(lambda y, c, sigma: c[:, :3] - c[:, 3:6])
    cfg = dataclasses.replace(SAMPLING, sampler="dpmpp_2s", conserve_mass=conserve_mass)  # last step returns D exactly
    ens = forecast(model, stats, store.isel(time=[4, 5]), 2, 3, cfg, config, seed=0, progress=False)
    assert ens.sizes["init_time"] == 1
    mean, std = (stats.mean.values[:, None, None], stats.std.values[:, None, None])
    rmean, rstd = (stats.residual_mean.values[:, None, None], stats.residual_std.values[:, None, None])
    weights = sphere.area_weights(store.latitude).values[:, None] * np.ones(W) / (H * W)
    x = channels.to_channels(store, VARIABLES).values[[5, 4]].astype(np.float64)  # x_t, x_{t-6h}
    initial_mass = (x[0, 2] * weights).sum()
    lead = channels.to_channels(ens, VARIABLES).isel(init_time=0, member=1)
    for k in range(1, 4):
        residual = (x[0] - mean) / std - (x[1] - mean) / std
        x = np.stack([x[0] + residual * rstd + rmean, x[0]])
        if conserve_mass:
            x[0, 2] += initial_mass - (x[0, 2] * weights).sum()
        np.testing.assert_allclose(lead.isel(lead_time=k).values, x[0], rtol=1e-5, atol=1e-3)
    drift = ens["surface_pressure"].weighted(sphere.area_weights(store.latitude)).mean(["latitude", "longitude"])
    assert (abs(drift - initial_mass) < 0.1).all().item() == conserve_mass


def test_forecast_projects_states_onto_the_spectral_truncation(store, stats):
    """With ``spectral_truncation``, every sampled state is the projection of the unprojected step
    (then mass-fixed): no zonal wavenumber beyond the truncation, same global-mean surface pressure."""

    dataset_cfg = dataclasses.replace(DATASET, spectral_truncation=3)
    init = store.isel(time=[3])
    plain = forecast(Analytic(around_state), stats, init, 2, 1, SAMPLING, DATASET, seed=0, progress=False)
    projected = forecast(Analytic(around_state), stats, init, 2, 1, SAMPLING, dataset_cfg, seed=0, progress=False)
    expected = sphere.truncate_state(plain.isel(lead_time=1)[["u_component_of_wind"]], 3)
    xr.testing.assert_allclose(projected["u_component_of_wind"].isel(lead_time=1), expected["u_component_of_wind"], rtol=1e-5, atol=1e-4)
    zonal = np.abs(np.fft.rfft(projected["surface_pressure"].isel(lead_time=1).values, axis=-1))
    assert zonal[..., 4:].max() < 1e-6 * zonal.max()
    weights = sphere.area_weights(store.latitude)
    mass = projected["surface_pressure"].weighted(weights).mean(["latitude", "longitude"])
    np.testing.assert_allclose(mass.isel(lead_time=1), mass.isel(lead_time=0), rtol=1e-6)


def test_ic_perturbation(store, stats):
    """IC noise has the requested std in normalised units, differs by member, and is separate from model noise."""
    init = store.isel(time=[3])
    model = Analytic(lambda y, c, sigma: 0.25 / (0.25 + sigma**2) * y)  # residual ~ N(0, 0.5^2), ignores c
    ens = forecast(model, stats, init, 8, 1, SAMPLING, DATASET, seed=0, ic_perturbation=0.1, progress=False)
    lead0 = normalisation.normalise_state(channels.to_channels(ens.isel(lead_time=0, init_time=0), VARIABLES), stats)
    truth = normalisation.normalise_state(channels.to_channels(init.isel(time=0), VARIABLES), stats)
    deviation = (lead0 - truth).values
    assert deviation.std() == pytest.approx(0.1, rel=0.05) and abs(deviation.mean()) < 0.01
    assert not np.allclose(deviation[0], deviation[1])
    plain = forecast(model, stats, init, 8, 1, SAMPLING, DATASET, seed=0, progress=False)
    np.testing.assert_array_equal(plain["surface_pressure"].isel(lead_time=0, init_time=0).values[0],
                                  init["surface_pressure"].values[0])  # fmt: skip
    step = [ds["surface_pressure"].diff("lead_time").values for ds in (ens, plain)]
    np.testing.assert_allclose(step[0], step[1], atol=0.05)  # same model noise: same increments (to float32 rounding, Pa)


def test_forecast_flow_model(store, stats):
    """The flow path of ``forecast``: the tiny flow-matching U-Net runs (NFE of Heun), and with the exact
    velocity of a residual ~ N(0, s^2) the forecast's normalised residuals have mean 0 and variance s^2,
    within the tolerances of ``test_gaussian_variance`` (128 members x 384 values: SE 0.6 % and 0.0045 s)."""
    cfg = dataclasses.replace(SAMPLING, sampler="flow_heun")
    ens = forecast(tiny_model(objective="flow"), stats, store.isel(time=[3]), 2, 1, cfg, DATASET, seed=0, progress=False)
    assert ens.attrs["nfe_per_step"] == 7 and np.isfinite(ens["u_component_of_wind"].values).all()

    s = 0.5
    exact = Analytic(lambda y, c, sigma: torch.full_like(y, float("nan")), velocity=Gaussian(s).velocity)  # never denoises
    cfg = dataclasses.replace(SAMPLING, sampler="flow_heun", n_levels=50, member_batch=128, conserve_mass=False)
    ens = forecast(exact, stats, store.isel(time=[3]), 128, 1, cfg, DATASET, seed=0, progress=False)
    assert ens.attrs["nfe_per_step"] == 99
    states = channels.to_channels(ens.isel(init_time=0), VARIABLES).values.astype(np.float64)  # member, lead, C, H, W
    step = states[:, 1] - states[:, 0]
    residual = (step - stats.residual_mean.values[:, None, None]) / stats.residual_std.values[:, None, None]
    assert residual.var() / s**2 == pytest.approx(1.0, abs=0.04)
    assert abs(residual.mean()) < 0.02 * s


def test_forecast_errors(store, stats):
    model = tiny_model(history=2)
    with pytest.raises(ValueError, match="SamplingConfig.sampler"):
        forecast(model, stats, store.isel(time=[3]), 2, 1, SamplingConfig(sampler="ddim"), DATASET, seed=0, progress=False)
    with pytest.raises(ValueError, match="previous state"):
        forecast(model, stats, store.isel(time=[3, 5]), 2, 1, SAMPLING, dataclasses.replace(DATASET, history=2), seed=0,
                 progress=False)  # fmt: skip


# ------------------------------------------------------------------ climate rollout, cost


def test_initial_states_adds_the_history(store):
    times = store.time.values[[5, 9]]
    two = sampling.initial_states(store, times, history=2)
    np.testing.assert_array_equal(two.time.values, store.time.values[[4, 5, 8, 9]])
    np.testing.assert_array_equal(sampling.initial_states(store, times, history=1).time.values, times)


def test_rollout_climate_matches_forecast(store, stats):
    """The on-the-fly reductions equal those of the stored forecast with the same members and noise."""
    model, init = Analytic(around_state), store.isel(time=[3, 10])
    clim = rollout_climate(model, stats, init, 3, SAMPLING, DATASET, seed=1, n_members=2, progress=False)
    ens = forecast(model, stats, init, 2, 3, SAMPLING, DATASET, seed=1, progress=False)
    expected = ens.isel(lead_time=slice(1, None)).mean(["init_time", "member", "lead_time", "longitude"])
    for name in VARIABLES:
        xr.testing.assert_allclose(clim[name], expected[name], rtol=1e-5)
    weights = sphere.area_weights(store.latitude)
    ps = ens["surface_pressure"].weighted(weights).mean(["latitude", "longitude"])
    np.testing.assert_allclose(clim["global_mean"].sel(channel="surface_pressure"), ps, rtol=1e-6)
    assert (clim["stable_steps"] == 3).all() and clim["stable_steps"].dims == ("init_time", "member")
    assert clim.attrs["nfe_per_step"] == 7 and clim.sizes["lead_time"] == 4
    assert (clim["global_rms"] >= abs(clim["global_mean"]) - 1e-3).all()


def test_rollout_climate_stops_when_unstable(store, stats):
    """A model that returns NaN from its 3rd step on: the rollout stops after 2 stable steps, no error."""
    calls = []
    model = Analytic(lambda y, c, sigma: (calls.append(1), around_state(y, c, sigma) * (1 if len(calls) <= 14 else np.nan))[1])
    clim = rollout_climate(model, stats, store.isel(time=[3]), 5, SAMPLING, DATASET, seed=0, progress=False)
    assert int(clim["stable_steps"].squeeze()) == 2 and clim.sizes["lead_time"] == 6
    assert clim["global_mean"].isel(lead_time=slice(0, 3)).notnull().all()
    assert clim["global_mean"].isel(lead_time=slice(3, None)).isnull().all()
    assert np.isfinite(clim["u_component_of_wind"]).all()
    never = Analytic(lambda y, c, sigma: torch.full_like(y, float("nan")))
    clim = rollout_climate(never, stats, store.isel(time=[3]), 5, SAMPLING, DATASET, seed=0, progress=False)
    assert int(clim["stable_steps"].squeeze()) == 0 and clim["u_component_of_wind"].isnull().all()


def test_rollout_climate_stops_when_the_state_runs_away(store, stats):
    """Finite but unphysical: residuals of 3 state std per step push the state out of bounds within a few steps."""
    kick = torch.tensor((3 * stats.std / stats.residual_std).values, dtype=torch.float32)[None, :, None, None]
    runaway = Analytic(lambda y, c, sigma: kick.to(y.dtype).expand_as(y))
    clim = rollout_climate(runaway, stats, store.isel(time=[3]), 8, SAMPLING, DATASET, seed=0, progress=False, max_anomaly=10.0)
    assert 0 < int(clim["stable_steps"].squeeze()) < 8


def test_rollout_climate_drops_only_the_unstable_member(store, stats):
    """Member 1 of a two-member batch goes NaN at the first step: it stops there, member 0 and the other
    initial time go on, and the climate is that of the stable trajectories alone."""

    def fails_second_row(y, c, sigma):
        out = around_state(y, c, sigma)
        if y.shape[0] == 2:  # both members of the batch still there
            out = out * torch.tensor([1.0, float("nan")], dtype=y.dtype)[:, None, None, None]
        return out

    init = store.isel(time=[3, 10])
    clim = rollout_climate(Analytic(fails_second_row), stats, init, 4, SAMPLING, DATASET, seed=1, n_members=2, progress=False)
    np.testing.assert_array_equal(clim["stable_steps"], [[4, 0], [4, 0]])
    assert clim["global_mean"].sel(member=1).isel(lead_time=slice(1, None)).isnull().all()
    alone = rollout_climate(Analytic(around_state), stats, init, 4, SAMPLING, DATASET, seed=1, n_members=1, progress=False)
    for name in VARIABLES:
        xr.testing.assert_allclose(clim[name], alone[name], rtol=1e-5)
    xr.testing.assert_allclose(clim["global_rms"].sel(member=[0]), alone["global_rms"], rtol=1e-6)


def test_sampler_cost(store, stats):
    cost = sampler_cost(tiny_model(), stats, store.isel(time=[3, 10]), SAMPLING, DATASET, n_members=2, n_steps=2)
    assert cost["nfe_per_step"] == 7 and cost["sampler"] == "dpmpp_2s" and cost["member_batch"] == 2
    assert cost["member_steps_per_s"] == pytest.approx(1 / cost["seconds_per_member_step"])
    assert cost["evaluations_per_s"] == pytest.approx(7 * cost["member_steps_per_s"])
    assert cost["warmup_seconds"] > 0


# ------------------------------------------------------------------ torchrun-style sharding


def _distributed_worker(rank: int, world: int, port: int, path: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    store = small_store()
    stats = normalisation.compute_norm_stats(store, VARIABLES)
    ens = forecast(tiny_model(), stats, store.isel(time=[3, 10]), 3, 2, SAMPLING, DATASET, seed=1, store=path,
                   progress=False)  # fmt: skip
    assert ens.sizes["member"] == 3
    torch.distributed.destroy_process_group()


def test_forecast_distributed(store, stats, tmp_path):
    """Two gloo processes shard the members; rank 0's store equals the single-process forecast
    (bit for bit: the ranks' model batches, members [0, 1] and [2], are those of one process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "ensemble.zarr"
    torch.multiprocessing.spawn(_distributed_worker, args=(2, port, str(path)), nprocs=2)
    single = forecast(tiny_model(), stats, store.isel(time=[3, 10]), 3, 2, SAMPLING, DATASET, seed=1, progress=False)
    xr.testing.assert_identical(xr.open_zarr(path).load(), single)


def test_forecast_subtracts_the_residual_bias(store, stats):
    """A model that always samples ``r0``, corrected by ``r0``, forecasts what a model sampling zero does."""
    r0 = torch.linspace(-1, 1, 3 * H * W).reshape(3, H, W).float()
    shifted, zero = Analytic(lambda y, c, sigma: r0.to(y.dtype) + 0 * y), Analytic(lambda y, c, sigma: 0 * y)
    init = store.isel(time=[3, 10])
    corrected = forecast(shifted, stats, init, 2, 3, SAMPLING, DATASET, seed=0, progress=False, residual_bias=r0)
    plain = forecast(zero, stats, init, 2, 3, SAMPLING, DATASET, seed=0, progress=False)
    uncorrected = forecast(shifted, stats, init, 2, 3, SAMPLING, DATASET, seed=0, progress=False)
    xr.testing.assert_allclose(corrected, plain, rtol=1e-5)
    assert not np.allclose(uncorrected["u_component_of_wind"], plain["u_component_of_wind"])
    climate = rollout_climate(shifted, stats, init, 3, SAMPLING, DATASET, seed=0, progress=False, residual_bias=r0)
    expected = plain.isel(lead_time=slice(1, None), member=[0]).mean(["init_time", "member", "lead_time", "longitude"])
    xr.testing.assert_allclose(climate["u_component_of_wind"], expected["u_component_of_wind"], rtol=1e-5)

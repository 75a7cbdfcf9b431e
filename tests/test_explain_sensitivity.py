"""Model sensitivities against a known adjoint: a linear toy model x -> A x, whose gradient at lead L is
(A^T)^L w exactly, through the torch rollout and through jax; the comparison metrics; the world's linear
perturbation map; the conditional-mean step's projection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import xarray as xr

from druids import sphere
from druids.config import get_config
from druids.data.heldsuarez.simulator import UNITS
from druids.data.normalisation import compute_norm_stats
from druids.explain import sensitivity
from druids.explain.adjoint import WorldAdjoint, adjoint_gradients
from druids.explain.geometry import NoiseGeometry

SHAPE = (2, 4, 8)  # channels, latitudes, longitudes
LEADS = [1, 2, 3]


@pytest.fixture(scope="module")
def toy():
    """A linear model: its matrix A (d x d, spectral radius about 1) and a box-mean target of channel 0."""
    rng = np.random.default_rng(0)
    d = int(np.prod(SHAPE))
    matrix = rng.standard_normal((d, d)) / np.sqrt(d)
    weights = np.zeros(SHAPE[1:])
    weights[1:3, 2:5] = 1.0 / 6
    return matrix, weights


def exact_gradients(matrix, weights):
    target = np.zeros(SHAPE)
    target[0] = weights
    vector = target.ravel()
    out = []
    for lead in LEADS:
        out.append((np.linalg.matrix_power(matrix.T, lead) @ vector).reshape(SHAPE))
    return np.stack(out)


def torch_step(matrix):
    a = torch.as_tensor(matrix)
    return lambda x: (x.flatten(1) @ a.T).reshape(x.shape)


def test_autograd_through_the_rollout_gives_the_exact_adjoint(toy):
    matrix, weights = toy
    x0 = torch.as_tensor(np.random.default_rng(1).standard_normal(SHAPE))
    gradients, values = sensitivity.rollout_gradients(torch_step(matrix), x0, LEADS, sensitivity.BoxTarget(0, weights))
    np.testing.assert_allclose(gradients, exact_gradients(matrix, weights), rtol=1e-10, atol=1e-12)
    expected = [float((weights * (np.linalg.matrix_power(matrix, lead) @ x0.numpy().ravel()).reshape(SHAPE)[0]).sum()) for lead in LEADS]
    np.testing.assert_allclose(values, expected, rtol=1e-10)


def test_jax_adjoint_matches_the_exact_one_and_the_comparison_scores_it_perfect(toy):
    matrix, weights = toy
    x0 = jnp.asarray(np.random.default_rng(1).standard_normal(SHAPE), jnp.float32)
    a = jnp.asarray(matrix, jnp.float32)

    def targets(delta):
        x, values = x0 + delta, []
        for _ in range(max(LEADS)):
            x = (a @ x.ravel()).reshape(SHAPE)
            values.append((x[0] * weights).sum())
        return jnp.stack(values)[np.asarray(LEADS) - 1]

    truth, _ = adjoint_gradients(targets, SHAPE)
    exact = exact_gradients(matrix, weights)
    np.testing.assert_allclose(np.asarray(truth), exact, rtol=1e-4, atol=1e-5)
    unit = np.ones(SHAPE[1])
    table = sensitivity.compare_maps(exact, np.asarray(truth, dtype=np.float64), LEADS, {"all": [0, 1]}, unit)
    np.testing.assert_allclose(table.correlation, 1.0, atol=1e-5)
    np.testing.assert_allclose(table.amplitude_ratio, 1.0, atol=1e-4)
    too_strong = exact_gradients(1.5 * matrix, weights)  # a model whose dynamics are 1.5 times too strong
    table = sensitivity.compare_maps(too_strong, exact, LEADS, {"one": [0], "other": [1]}, unit)
    np.testing.assert_allclose(table.amplitude_ratio, np.repeat([1.5**lead for lead in LEADS], 2), rtol=1e-10)
    np.testing.assert_allclose(table.correlation, 1.0, rtol=1e-10)


def test_integrated_gradients_of_a_linear_model_is_gradient_times_displacement(toy):
    matrix, weights = toy
    rng = np.random.default_rng(2)
    x0, baseline = (torch.as_tensor(rng.standard_normal(SHAPE)) for _ in range(2))
    target = sensitivity.BoxTarget(0, weights)
    attribution, delta = sensitivity.integrated_gradients(torch_step(matrix), x0, baseline, 2, target, n_points=4, batch=2)
    np.testing.assert_allclose(attribution, exact_gradients(matrix, weights)[1] * (x0 - baseline).numpy(), rtol=1e-8, atol=1e-10)
    assert delta < 1e-8


def test_finite_difference_error_and_the_map_metrics():
    cubic = lambda d: float((1.0 + d[0]) ** 3)  # noqa: E731
    assert sensitivity.finite_difference_error(cubic, np.array([3.0]), np.array([0.1])) == pytest.approx(0.001 / 0.3)
    linear = lambda d: float(2.0 * d.sum())  # noqa: E731
    assert sensitivity.finite_difference_error(linear, np.full(3, 2.0), np.ones(3)) == pytest.approx(0.0, abs=1e-12)
    a = np.random.default_rng(0).standard_normal((2, 4, 8))
    weights = np.linspace(0.5, 1.5, 4)
    assert sensitivity.pattern_correlation(a, -3 * a, weights) == pytest.approx(-1.0)
    assert sensitivity.amplitude_ratio(2 * a, a, weights) == pytest.approx(2.0)
    direction = sensitivity.steepest_direction(a, np.array([1.0, 10.0]), 0.01)
    assert np.sqrt(np.mean((direction / np.array([1.0, 10.0])[:, None, None]) ** 2)) == pytest.approx(0.01)


def test_box_weights_and_density():
    latitude = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(8)[0]))
    longitude = np.arange(16) * 22.5
    weights = sensitivity.box_weights(latitude, longitude, ((0.0, 60.0), (0.0, 90.0)))
    assert weights.sum() == pytest.approx(1.0)
    assert (weights[latitude < 0] == 0).all() and (weights[:, longitude > 90] == 0).all()
    with pytest.raises(ValueError, match="no grid point"):
        sensitivity.box_weights(latitude, longitude, ((89.5, 89.9), (0.0, 10.0)))
    geometry = NoiseGeometry.of((latitude, 3), latitude, 16)
    field = sphere.truncate(np.random.default_rng(0).standard_normal((8, 16)), latitude, 3)
    np.testing.assert_allclose(sensitivity.density(field * geometry.weights[:, None], geometry), field, atol=1e-10)


def tiny_stats():
    """Normalisation statistics of a random 3-time store on an 8 x 16 Gaussian grid (winds, temperature, pressure)."""
    rng = np.random.default_rng(0)
    latitude = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(8)[0]))
    coords = {"time": np.arange(3) * np.timedelta64(6, "h") + np.datetime64("2000-01-01"), "level": [500.0], "latitude": latitude, "longitude": np.arange(16) * 22.5}
    shape = (3, 1, 8, 16)
    ds = xr.Dataset(
        {"u_component_of_wind": (("time", "level", "latitude", "longitude"), 10 + rng.standard_normal(shape), {"units": "m s-1"}),
         "temperature": (("time", "level", "latitude", "longitude"), 250 + rng.standard_normal(shape), {"units": "K"}),
         "surface_pressure": (("time", "latitude", "longitude"), 1e5 + 100 * rng.standard_normal(shape[:1] + shape[2:]), {"units": "Pa"})},
        coords=coords,
    )  # fmt: skip
    return ds, compute_norm_stats(ds, ["u_component_of_wind", "temperature", "surface_pressure"])


class ZeroDenoiser(torch.nn.Module):
    """Predicts a zero residual: the conditional-mean step then adds the mean residual and projects."""

    sigma_max = 88.0

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def denoise(self, y, c, sigma):
        return torch.zeros_like(y)


def test_conditional_mean_step_adds_the_residual_and_projects_like_the_rollouts():
    ds, stats = tiny_stats()
    step = sensitivity.ConditionalMeanStep(ZeroDenoiser(), stats, truncation=3)
    x = torch.as_tensor(np.stack([ds[v].isel(time=0).values.reshape(-1, 8, 16)[0] for v in ds.data_vars]))[None]
    moved = x + torch.as_tensor(stats.residual_mean.values)[:, None, None]
    expected = sphere.truncate_state(xr.Dataset({v: (("latitude", "longitude"), moved[0, k].numpy()) for k, v in enumerate(ds.data_vars)},
                                                coords={"latitude": stats.latitude}), 3)  # fmt: skip
    out = step(x)
    for k, name in enumerate(ds.data_vars):
        np.testing.assert_allclose(out[0, k].numpy(), expected[name].values, rtol=1e-10, atol=1e-8)
    assert torch.equal(sensitivity.project_state(x, ["temperature"] * 3, stats.latitude, None), x)


def test_world_perturbation_map_is_linear_and_exact_for_temperature_and_pressure():
    cfg = get_config("smoke").world
    channels = [("u_component_of_wind", 312.5), ("temperature", 562.5), ("surface_pressure", None)]
    weights = np.full((32, 64), 1.0 / 2048)
    adjoint = WorldAdjoint(cfg, channels, weights, 562.5)
    state = adjoint.world.initial_state(0)
    latitude = adjoint.world.latitude
    rng = np.random.default_rng(0)
    delta = np.stack([sphere.truncate(rng.standard_normal((32, 64)), latitude, 15) for _ in range(3)]) * np.array([1.0, 0.5, 50.0])[:, None, None]
    delta = jnp.asarray(delta, jnp.float32)
    once, twice = (adjoint.modal_increment(state, a * delta) for a in (1.0, 2.0))
    for name, change in once.items():
        np.testing.assert_allclose(np.asarray(twice[name]), 2 * np.asarray(change), rtol=1e-5, atol=1e-6 * np.abs(np.asarray(change)).max())
    grid = adjoint.world.grid
    temperature = np.asarray(grid.to_nodal(once["temperature_variation"]))
    np.testing.assert_allclose(temperature[adjoint.level].T, np.asarray(delta[1]), atol=1e-5)
    assert np.abs(np.delete(temperature, adjoint.level, axis=0)).max() == 0
    pressure = np.exp(np.asarray(grid.to_nodal(state.log_surface_pressure))[0].T)
    surface_pa = adjoint.world.specs.dimensionalize(pressure, UNITS.pascal).magnitude
    relative = np.asarray(grid.to_nodal(once["log_surface_pressure"]))[0].T
    expected = np.asarray(delta[2]) / surface_pa  # truncated: 1/p_s is not band-limited, but nearly constant
    np.testing.assert_allclose(relative, expected, atol=5e-3 * np.abs(expected).max())
    moved = adjoint.modal_perturbation(state, delta)
    np.testing.assert_allclose(np.asarray(moved.vorticity), np.asarray(state.vorticity + once["vorticity"]))
    assert np.abs(np.asarray(once["vorticity"])).max() > 0
    with pytest.raises(ValueError, match="knows the variables"):
        WorldAdjoint(cfg, [("geopotential", 562.5)], weights, 562.5)
    assert jax.devices()[0].platform == "cpu"


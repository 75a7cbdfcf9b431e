"""Tests of druids.training.diagnostics: the one-step tendency bias of a denoiser, in normalised and physical units."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from druids import training
from druids.config import DatasetConfig
from druids.data import dataset, normalisation
from known_models import Analytic
from wb2 import wb2_dataset

H, W = 8, 16
VARIABLES = ("u_component_of_wind", "surface_pressure")
DATASET = DatasetConfig(variables=VARIABLES, split_fractions=(0.7, 0.15, 0.15), gap_days=0.5, spectral_truncation=None)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def store() -> xr.Dataset:
    """Random-walk u (2 levels) and surface pressure on an 8 x 16 Gaussian grid, 6-hourly."""
    return wb2_dataset(VARIABLES, n_lat=H, n_lon=W, levels=(300.0, 700.0), n_times=40, process="random_walk")


@pytest.fixture(scope="module")
def stats(store) -> normalisation.NormStats:
    return normalisation.compute_norm_stats(store, VARIABLES)


def test_tendency_bias_is_the_mean_error_of_the_conditional_mean(store, stats):
    """A model whose estimate is the normalised state: its bias is the zonal and sample mean of state - target."""
    train = dataset.ForecastDataset(store, stats, "train", DATASET)
    model = Analytic(lambda y, c, sigma: c[:, :3] + 0 * y)
    bias = training.tendency_bias(model, train, batch_size=5)
    conditions, targets = (torch.stack(part) for part in zip(*(train[i] for i in range(len(train)))))
    expected = (conditions[:, :3] - targets).double().mean(dim=(0, 3))[..., None]
    assert bias.shape == (3, H, 1)
    torch.testing.assert_close(bias.double(), expected, rtol=1e-5, atol=1e-6)


def test_tendency_bias_per_day_is_in_physical_units(stats):
    """A bias of one residual std everywhere is residual_std * 4 per day (6-h steps) in both columns."""
    table = training.tendency_bias_per_day(torch.ones(3, H, 1), stats, 6)
    expected = stats.residual_std.values * 4
    np.testing.assert_allclose(table["global mean [units/day]"], expected, rtol=1e-5)
    np.testing.assert_allclose(table["largest zonal mean [units/day]"], expected, rtol=1e-5)
    assert list(table.index) == list(stats.channel_names)

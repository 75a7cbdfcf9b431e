"""Tests of druids.data.dataset on a small synthetic store with the WeatherBench2 schema."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr

from druids.config import DatasetConfig
from druids.data import channels, dataset, normalisation, splits
from druids import sphere
from wb2 import wb2_dataset

LEVELS = np.array([300.0, 562.5], dtype=np.float32)
VARIABLES = ("u_component_of_wind", "v_component_of_wind", "temperature", "geopotential", "surface_pressure")
CONFIG = DatasetConfig(variables=VARIABLES, history=1, split_fractions=(0.6, 0.2, 0.2), gap_days=1.0)


def synthetic_store(n_times: int = 120, seed: int = 0) -> xr.Dataset:
    """AR(1) fields (phi 0.9, typical means and scales) on a 32 x 64 Gaussian grid, 6-hourly, dask-backed, float32."""
    return wb2_dataset(VARIABLES, levels=LEVELS, n_times=n_times, process="ar1", seed=seed, chunks={"time": 40})


@pytest.fixture(scope="module")
def store() -> xr.Dataset:
    return synthetic_store()


@pytest.fixture(scope="module")
def stats(store) -> normalisation.NormStats:
    train = splits.time_splits(store["time"].values, CONFIG.split_fractions, CONFIG.gap_days)["train"]
    return normalisation.compute_norm_stats(store.isel(time=train), VARIABLES)


def test_channel_layout(store):
    names = channels.channel_names(store, VARIABLES)
    assert names[:2] == ["u_component_of_wind@300", "u_component_of_wind@562.5"]
    assert names[-1] == "surface_pressure" and len(names) == 4 * 2 + 1
    stack = channels.to_channels(store, VARIABLES)
    assert stack.dims == ("time", "channel", "latitude", "longitude")
    assert stack.chunks is not None  # still lazy
    assert list(stack["channel"].values) == names
    np.testing.assert_array_equal(
        stack.sel(channel="temperature@562.5").values, store["temperature"].sel(level=562.5).values
    )
    np.testing.assert_array_equal(stack.sel(channel="surface_pressure").values, store["surface_pressure"].values)
    assert np.isnan(stack["level"].values[-1]) and stack["units"].values[4] == "K"


def test_missing_variable_error(store):
    with pytest.raises(ValueError, match="'humidity' is not in the dataset; available variables: u_component"):
        channels.to_channels(store, ("temperature", "humidity"))


def test_area_weights():
    lat = np.array([-60.0, 0.0, 60.0])
    w = sphere.area_weights(lat)
    np.testing.assert_allclose(w.values, [0.75, 1.5, 0.75])
    assert w.dims == ("latitude",) and float(w.mean()) == pytest.approx(1.0)


def test_stats_match_numpy(store, stats):
    train = splits.time_splits(store["time"].values, CONFIG.split_fractions, CONFIG.gap_days)["train"]
    w = np.cos(np.deg2rad(store["latitude"].values))[None, :, None]
    for name in ("temperature@562.5", "surface_pressure"):
        var, _, level = name.partition("@")
        da = store[var].sel(level=float(level)) if level else store[var]
        x = da.values[train].astype(np.float64)
        for values, mean, std in ((x, stats.mean, stats.std), (np.diff(x, axis=0), stats.residual_mean, stats.residual_std)):
            weights = np.broadcast_to(w, values.shape)
            m = np.sum(weights * values) / weights.sum()
            s = np.sqrt(np.sum(weights * (values - m) ** 2) / weights.sum())
            assert float(mean.sel(channel=name)) == pytest.approx(m, rel=1e-10)
            assert float(std.sel(channel=name)) == pytest.approx(s, rel=1e-10)
    assert stats.step == np.timedelta64(6, "h")
    assert stats.variables == VARIABLES


def test_stats_cache_roundtrip(store, stats, tmp_path):
    cached = normalisation.cached_norm_stats(store, CONFIG, normalisation.data_fingerprint(store), root=tmp_path)
    assert len(list((tmp_path / "normstats").glob("*.nc"))) == 1
    again = normalisation.cached_norm_stats(store, CONFIG, normalisation.data_fingerprint(store), root=tmp_path)  # loaded from file
    for a, b in ((cached, stats), (again, stats)):
        xr.testing.assert_allclose(a.to_dataset(), b.to_dataset())
        assert a.channel_names == b.channel_names and a.step == b.step
    normalisation.cached_norm_stats(store, CONFIG, "another-store", root=tmp_path)
    assert len(list((tmp_path / "normstats").glob("*.nc"))) == 2


def test_zero_std_errors(store):
    frozen = store.isel(time=slice(0, 40)).copy()
    frozen["surface_pressure"] = frozen["surface_pressure"].isel(time=0).broadcast_like(frozen["surface_pressure"])
    with pytest.raises(ValueError, match="'surface_pressure': the residual has zero standard deviation"):
        normalisation.compute_norm_stats(frozen, VARIABLES)
    constant = xr.full_like(frozen["temperature"], 250.0)
    with pytest.raises(ValueError, match="'temperature@300': the state has zero standard deviation"):
        normalisation.compute_norm_stats(frozen.assign(temperature=constant), VARIABLES)


def test_nan_error(store):
    bad = store.isel(time=slice(0, 40)).load()
    bad["temperature"][3, 1, 5, 5] = np.nan
    with pytest.raises(ValueError, match="'temperature@562.5': state statistics are not finite"):
        normalisation.compute_norm_stats(bad, VARIABLES)


def test_time_splits(store):
    times = store["time"].values
    blocks = splits.time_splits(times, (0.6, 0.2, 0.2), gap_days=1.0)
    train, val, test = (blocks[k] for k in ("train", "val", "test"))
    n_gap = 4  # 1 day of 6-hourly times
    assert train.start == 0 and val.start == train.stop + n_gap and test.start == val.stop + n_gap
    assert test.stop == len(times)
    assert (train.stop - train.start, val.stop - val.start) == (67, 22)
    assert times[val.start] - times[train.stop - 1] > np.timedelta64(1, "D")


def test_time_split_errors(store):
    times = store["time"].values
    with pytest.raises(ValueError, match="too short"):
        splits.time_splits(times[:12], (0.8, 0.1, 0.1), gap_days=1.0)
    with pytest.raises(ValueError, match="summing to 1"):
        splits.time_splits(times, (0.5, 0.2, 0.2), gap_days=1.0)
    with pytest.raises(ValueError, match="regularly spaced"):
        splits.time_splits(np.delete(times, 50), (0.6, 0.2, 0.2), gap_days=1.0)


def test_forecast_dataset(store, stats):
    data = dataset.ForecastDataset(store, stats, "val", CONFIG)
    val = splits.time_splits(store["time"].values, CONFIG.split_fractions, CONFIG.gap_days)["val"]
    n_chan = len(stats.channel_names)
    assert len(data) == val.stop - val.start - 1
    np.testing.assert_array_equal(data.times, store["time"].values[val.start : val.stop - 1])
    condition, target = data[5]
    assert condition.dtype == target.dtype == torch.float32
    assert condition.shape == (n_chan + 4, 32, 64) and target.shape == (n_chan, 32, 64)
    assert len(data.condition_channel_names) == n_chan + 4

    t = val.start + 5
    x = channels.to_channels(store, VARIABLES).values.astype(np.float64)
    res = (x[t + 1] - x[t] - stats.residual_mean.values[:, None, None]) / stats.residual_std.values[:, None, None]
    np.testing.assert_allclose(target.numpy(), res, rtol=1e-4, atol=1e-4)
    state = (x[t] - stats.mean.values[:, None, None]) / stats.std.values[:, None, None]
    np.testing.assert_allclose(condition[:n_chan].numpy(), state, rtol=1e-5, atol=1e-5)
    lat = np.deg2rad(store["latitude"].values)
    np.testing.assert_allclose(condition[n_chan + 1, :, 0].numpy(), np.cos(lat), rtol=1e-6)

    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert batch[0].shape == (4, n_chan + 4, 32, 64)


def test_history_two(store, stats):
    one = dataset.ForecastDataset(store, stats, "train", CONFIG)
    two = dataset.ForecastDataset(store, stats, "train", dataclasses.replace(CONFIG, history=2))
    n_chan = len(stats.channel_names)
    assert len(two) == len(one) - 1 and two.times[0] == one.times[1]
    cond2, target2 = two[3]
    assert cond2.shape == (2 * n_chan + 4, 32, 64)
    assert two.condition_channel_names[n_chan] == "u_component_of_wind@300:t-6h"
    torch.testing.assert_close(cond2[:n_chan], one[4][0][:n_chan])  # x_t
    torch.testing.assert_close(cond2[n_chan : 2 * n_chan], one[3][0][:n_chan])  # x_{t-6h}
    torch.testing.assert_close(target2, one[4][1])


def test_dataset_rejects_other_stats(store, stats):
    config = DatasetConfig(variables=("temperature",), split_fractions=CONFIG.split_fractions, gap_days=1.0)
    with pytest.raises(ValueError, match="do not match the normalisation statistics"):
        dataset.ForecastDataset(store, stats, "train", config)
    shifted = store.assign_coords(longitude=store["longitude"] + 1.0)
    with pytest.raises(ValueError, match="longitude grid"):
        dataset.ForecastDataset(shifted, stats, "train", CONFIG)


def test_state_round_trip(store, stats):
    part = store.isel(time=slice(10, 14))
    norm = normalisation.normalise_state(channels.to_channels(part, VARIABLES), stats)
    back = normalisation.denormalise_state(torch.from_numpy(norm.values), stats, coords={"time": part["time"].values})
    xr.testing.assert_allclose(back, part.compute(), rtol=1e-6, atol=1e-5)
    assert back["temperature"].dims == ("time", "level", "latitude", "longitude")
    assert back["surface_pressure"].attrs["units"] == "Pa" and back["temperature"].dtype == np.float32
    single = normalisation.denormalise_state(norm.values[0], stats)
    assert single["temperature"].dims == ("level", "latitude", "longitude")


def test_residual_to_state(store, stats):
    data = dataset.ForecastDataset(store, stats, "test", CONFIG)
    i = 3
    condition, target = data[i]
    t = np.flatnonzero(store["time"].values == data.times[i])[0]
    truth = store.isel(time=slice(t + 1, t + 2)).compute()
    n_chan = len(stats.channel_names)

    from_norm = normalisation.residual_to_state(condition[None, :n_chan], target[None], stats, coords={"time": data.times[i : i + 1]})
    xr.testing.assert_allclose(from_norm, truth, rtol=1e-5, atol=1e-2)
    from_phys = normalisation.residual_to_state(store.isel(time=slice(t, t + 1)), target[None].numpy(), stats)
    xr.testing.assert_allclose(from_phys, truth, rtol=1e-5, atol=1e-2)

    members = torch.stack([target, target])[:, None]  # (member, time, channel, lat, lon)
    ensemble = normalisation.residual_to_state(store.isel(time=slice(t, t + 1)), members, stats, dims=("member", "time"))
    assert ensemble["temperature"].dims == ("member", "time", "level", "latitude", "longitude")

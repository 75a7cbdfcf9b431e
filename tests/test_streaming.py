"""Reading at real size: statistics in one streaming pass, lazily read training windows, errors named while streaming."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr

from druids.config import DatasetConfig
from druids.data import channels, dataset, era5, normalisation, splits, streaming
from wb2 import wb2_dataset

VARIABLES = ("u_component_of_wind", "temperature", "mean_sea_level_pressure")
N_TIMES = 96


def config(path, **changes) -> DatasetConfig:
    base = DatasetConfig(variables=VARIABLES, split_fractions=(0.6, 0.2, 0.2), gap_days=1.0, spectral_truncation=None, source=str(path))
    return dataclasses.replace(base, **changes)


@pytest.fixture
def store_path(tmp_path):
    """AR(1) fields on a 64 x 32 grid, 96 6-hourly times in chunks of 8, as a zarr store."""
    path = tmp_path / "store.zarr"
    ds = wb2_dataset(VARIABLES, levels=[300.0, 500.0, 850.0], n_times=N_TIMES, seed=5)
    ds["temperature"] += 30.0 * np.cos(np.deg2rad(ds.latitude))  # a mean that varies over the grid
    ds.chunk({"time": 8}).to_zarr(path, zarr_format=2)
    return path


@pytest.fixture
def store(store_path):
    return era5.open_wb2(store_path, VARIABLES, check_nans=False)


@pytest.fixture
def stats(store, store_path):
    train = splits.split_positions(store.time.values, config(store_path))["train"]
    return normalisation.compute_norm_stats(store.isel(time=train), VARIABLES, in_memory=True)


def test_streaming_statistics_equal_the_in_memory_ones(store):
    x = channels.to_channels(store, VARIABLES)
    per_time = 7 * 32 * 64 * 4  # float32 bytes of one time
    blocks = streaming.time_blocks(x, block_bytes=20 * per_time)  # 20 times, cut to whole chunks of 8: blocks of 16
    assert [b.start for b in blocks] == [0, 16, 32, 48, 64, 80] and blocks[-1].stop == N_TIMES
    streamed = streaming.streaming_moments(x, "test store", block_bytes=20 * per_time)
    in_memory = normalisation.compute_norm_stats(store, VARIABLES, in_memory=True)
    for name in ("mean", "std", "residual_mean", "residual_std"):
        np.testing.assert_allclose(streamed[name], getattr(in_memory, name).values, rtol=1e-10, atol=1e-12 * float(in_memory.std.max()))
    np.testing.assert_allclose(streamed["climatology"], in_memory.climatology.values, rtol=1e-12)
    by_stream = normalisation.compute_norm_stats(store, VARIABLES, in_memory=False)
    xr.testing.assert_allclose(by_stream.mean, in_memory.mean, rtol=1e-10)
    assert by_stream.channel_names == in_memory.channel_names and by_stream.step == in_memory.step


def test_statistics_choose_streaming_by_size(store, monkeypatch):
    calls = []
    monkeypatch.setattr(normalisation, "streaming_moments", lambda x, where, store: calls.append(where) or streaming.streaming_moments(x, where))
    normalisation.compute_norm_stats(store, VARIABLES, where="store X")
    assert calls == []
    monkeypatch.setattr(streaming, "IN_MEMORY_BYTES", 1 << 20)  # the store is 5.5 MB
    normalisation.compute_norm_stats(store, VARIABLES, where="store X")
    assert calls == ["store X"]


def test_norm_stats_round_trip_with_climatology_and_static_fields(store, tmp_path):
    with_static = store.assign(land_sea_mask=(store["temperature"].isel(time=0, level=0) > 250).astype(np.float32))
    stats = normalisation.compute_norm_stats(with_static, VARIABLES, ["land_sea_mask"])
    stats.save(tmp_path / "stats.nc")
    loaded = normalisation.NormStats.load(tmp_path / "stats.nc")
    xr.testing.assert_equal(loaded.climatology, stats.climatology)
    xr.testing.assert_equal(loaded.static_fields, stats.static_fields)
    assert loaded.static_channel_names == [*channels.STATIC_CHANNELS, "land_sea_mask"]
    climate = loaded.climatology_state()
    np.testing.assert_allclose(climate["temperature"].sel(level=500).values, store["temperature"].sel(level=500).mean("time").values, rtol=1e-6)


@pytest.mark.parametrize("history", [1, 2])
def test_streamed_samples_equal_the_in_memory_ones(store, stats, store_path, history):
    cfg = config(store_path, history=history)
    loaded = dataset.ForecastDataset(store, stats, "train", cfg, in_memory=True)
    streamed = dataset.ForecastDataset(store, stats, "train", cfg, in_memory=False)
    assert streamed.in_memory is False and not hasattr(streamed, "_x") and len(streamed) == len(loaded)
    for i in (0, 7, 8, len(loaded) - 1):  # across chunk boundaries
        for a, b in zip(loaded[i], streamed[i]):
            assert torch.equal(a, b)
    indices = [3, 0, 9, 5, 1]
    assert streamed.read_threads == 1  # a local store
    streamed.read_threads = 3  # as for a remote one
    for a, b in zip(dataset.collate(loaded, indices, "cpu"), dataset.collate(streamed, indices, "cpu")):
        assert torch.equal(a, b)


def test_dataset_streams_when_the_split_is_large(store, stats, store_path, monkeypatch):
    assert dataset.ForecastDataset(store, stats, "train", config(store_path)).in_memory
    monkeypatch.setattr(streaming, "IN_MEMORY_BYTES", 1 << 20)
    assert not dataset.ForecastDataset(store, stats, "train", config(store_path)).in_memory


def test_corrupted_chunk_while_streaming_names_store_and_variable(store, stats, store_path):
    train = dataset.ForecastDataset(store, stats, "train", config(store_path), in_memory=False)
    (store_path / "temperature" / "2.0.0.0").write_bytes(b"garbage" * 20)  # times 16-23
    train[0]  # untouched chunks still read
    with pytest.raises(era5.StoreError) as info:
        dataset.collate(train, [0, 17], "cpu")
    assert str(store_path) in str(info.value) and "'temperature'" in str(info.value)


def test_nan_while_streaming_names_channel_and_time(store_path, stats):
    ds = xr.open_zarr(store_path).load()
    ds["mean_sea_level_pressure"][12, 3, 5] = np.nan
    ds.chunk({"time": 8}).to_zarr(store_path, mode="w", zarr_format=2)
    opened = era5.open_wb2(store_path, VARIABLES, check_nans=False)
    train = dataset.ForecastDataset(opened, stats, "train", config(store_path), in_memory=False)
    assert isinstance(train._read, streaming.StoreWindows)
    train[5]
    with pytest.raises(ValueError, match=r"NaN or inf in channel 'mean_sea_level_pressure' at time 2000-01-04T00"):
        train[11]


def test_store_values_are_read_directly_and_regridded_ones_through_dask(store, store_path):
    x = channels.to_channels(store, VARIABLES)
    assert isinstance(streaming.window_reader(x, "s", store_path), streaming.StoreWindows)
    assert isinstance(streaming.window_reader(x, "s", None), streaming.WindowReader)
    coarse = era5.regrid(store, era5.Grid.equiangular(32, 16))
    coarse_x = channels.to_channels(coarse, VARIABLES)
    assert streaming.StoreWindows.of(coarse_x, store_path, "s") is None  # not the store's grid
    assert streaming.StoreWindows.of(x + 1.0, store_path, "s") is None  # not the store's values
    stats = normalisation.compute_norm_stats(coarse.isel(time=slice(0, 48)), VARIABLES, in_memory=True)
    loaded = dataset.ForecastDataset(coarse, stats, "train", config(store_path), in_memory=True)
    streamed = dataset.ForecastDataset(coarse, stats, "train", config(store_path), in_memory=False)
    assert isinstance(streamed._read, streaming.WindowReader)
    for a, b in zip(loaded[10], streamed[10]):
        assert torch.equal(a, b)


def test_direct_reads_follow_the_store_order(tmp_path):
    """Longitudes from -180, latitudes descending, hourly times sub-sampled: the direct reader gives the dask values."""
    ds = wb2_dataset(VARIABLES, levels=[850.0, 300.0], n_times=30, step=np.timedelta64(1, "h"), descending=True, seed=2)
    ds = ds.assign_coords(longitude=((ds.longitude + 180) % 360) - 180)
    ds.chunk({"time": 4}).to_zarr(tmp_path / "odd.zarr", zarr_format=2)
    opened = era5.open_wb2(tmp_path / "odd.zarr", VARIABLES, levels=[300.0], check_nans=False).isel(time=slice(2, None, 6))
    x = channels.to_channels(opened, VARIABLES)
    direct = streaming.StoreWindows.of(x, tmp_path / "odd.zarr", "s")
    assert direct is not None
    np.testing.assert_array_equal(direct(1, 4), x.isel(time=slice(1, 4)).values)

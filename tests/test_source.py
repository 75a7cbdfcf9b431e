"""Data by configuration: the era5 profile, ``with_data``, WeatherBench2 stores (time range, sub-sampling, splits by
years, static fields, regridding) and the Held–Suarez world in ERA5's conventions (tests/wb2.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import typer
import xarray as xr

import wb2
from druids import cli
from druids.config import ERA5_STORE, ERA5_VARIABLES, DatasetConfig, ReferenceLevels, get_config, with_data
from druids.data import era5, source, splits
from druids.data.normalisation import compute_norm_stats, static_condition
from druids.training import build_model

STORE_VARIABLES = ("temperature", "geopotential", "2m_temperature", "mean_sea_level_pressure")


# ----------------------------------------------------------------- configuration


def test_era5_profile():
    cfg = get_config("era5")
    assert cfg.dataset.source == ERA5_STORE and cfg.dataset.variables == ERA5_VARIABLES
    assert cfg.dataset.levels == (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)
    assert cfg.dataset.spectral_truncation is None and cfg.dataset.grid == (64, 32) and cfg.dataset.step_hours == 6
    assert cfg.levels == ReferenceLevels(upper=250, middle=500, lower=850)
    train, val, test = cfg.dataset.split_years
    assert train[1] < val[0] and val[1] < test[0]
    assert not source.is_held_suarez(cfg) and source.is_held_suarez(get_config("default"))
    assert cfg.model == get_config("default").model and cfg.training == get_config("default").training


def test_with_data():
    smoke = get_config("smoke")
    assert with_data(smoke, None) is smoke and with_data(smoke, "heldsuarez") is smoke
    on_store = with_data(smoke, "/data/era5.zarr")
    assert on_store.dataset.source == "/data/era5.zarr" and on_store.dataset.variables == ERA5_VARIABLES
    assert on_store.dataset.levels is None and on_store.dataset.spectral_truncation is None
    assert on_store.dataset.gap_days == smoke.dataset.gap_days and on_store.training == smoke.training
    assert on_store.levels.headline_fields == [("temperature", 500), ("u_component_of_wind", 250)]
    era5_cfg = with_data(get_config("era5"), "gs://elsewhere.zarr")
    assert era5_cfg.dataset == dataclasses.replace(get_config("era5").dataset, source="gs://elsewhere.zarr")
    with pytest.raises(ValueError, match="made for a WeatherBench2 store"):
        with_data(get_config("era5"), "heldsuarez")
    with pytest.raises(typer.BadParameter, match="made for a WeatherBench2 store"):
        cli._configure("era5", 0, "heldsuarez")


def test_store_outputs_leave_the_paper_alone(monkeypatch):
    monkeypatch.delenv("DRUIDS_FIGURES", raising=False)
    monkeypatch.delenv("DRUIDS_VALUES", raising=False)
    assert cli._store_outputs(get_config("smoke")) is None
    notebooks = cli._store_outputs(with_data(get_config("smoke"), "/somewhere/era5-test.zarr/"))
    assert notebooks.parent.name == "smoke-era5-test" and notebooks.name == "notebooks"
    import os

    assert os.environ["DRUIDS_FIGURES"].endswith("smoke-era5-test/figures")


def test_every_chapter_takes_a_data_source_and_a_chapter_without_one_is_refused(tmp_path, monkeypatch):
    """``druids run --data`` injects ``data_source``; a chapter without that parameter would run on the
    profile's data instead, silently, so execute_chapter refuses it before any cell runs."""
    import jupytext
    import papermill

    for stem in cli.chapter_stems():
        notebook = tmp_path / f"{stem}.ipynb"
        jupytext.write(jupytext.read(cli.paths.NOTEBOOKS / f"{stem}.py"), notebook)
        assert "data_source" in papermill.inspect_notebook(str(notebook)), stem
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "99_plain.py").write_text('# %% tags=["parameters"]\nprofile = "smoke"\nseed = 0\n')
    monkeypatch.setattr(cli.paths, "NOTEBOOKS", tmp_path / "notebooks")
    with pytest.raises(typer.BadParameter, match="no data_source parameter"):
        cli.execute_chapter("99_plain", "smoke", 0, output_dir=tmp_path / "out", data="/somewhere/era5.zarr")


# ----------------------------------------------------------------- splits by years


def test_year_splits():
    times = pd.date_range("2015-12-31T18", "2019-01-01T06", freq="6h").values
    blocks = splits.year_splits(times, ((2016, 2017), (2018, 2018), (2019, 2019)))
    years = pd.DatetimeIndex(times).year
    assert set(years[blocks["train"]]) == {2016, 2017} and set(years[blocks["val"]]) == {2018}
    assert years[blocks["test"]].tolist() == [2019, 2019]
    assert blocks["train"].start == 1 and blocks["val"].start == blocks["train"].stop
    config = DatasetConfig(split_years=((2016, 2017), (2018, 2018), (2019, 2019)))
    assert splits.split_positions(times, config) == blocks
    with pytest.raises(ValueError, match="in order without overlap"):
        splits.year_splits(times, ((2016, 2018), (2018, 2018), (2019, 2019)))
    with pytest.raises(ValueError, match="test years 2020-2021 hold 0 times .* covers 2015-2019"):
        splits.year_splits(times, ((2016, 2017), (2018, 2019), (2020, 2021)))


# ----------------------------------------------------------------- a WeatherBench2 store by configuration


@pytest.fixture(scope="module")
def hourly_store(tmp_path_factory):
    """Hourly AR(1) fields on a 64 x 32 Gaussian grid, latitude descending, with static fields, Jan-Mar 2001."""
    ds = wb2.wb2_dataset(STORE_VARIABLES, levels=[250, 500, 850], n_times=24 * 90, step=np.timedelta64(1, "h"),
                         start="2001-01-01T00", descending=True, seed=1)  # fmt: skip
    lat, lon = np.deg2rad(ds.latitude), np.deg2rad(ds.longitude)
    ds["land_sea_mask"] = (np.cos(lat) * np.sin(2 * lon) > 0.3).astype(np.float32).transpose("latitude", "longitude")
    path = tmp_path_factory.mktemp("hourly") / "hourly.zarr"
    ds.chunk({"time": 48}).to_zarr(path, zarr_format=2)
    return path


def store_config(path, **changes) -> DatasetConfig:
    config = DatasetConfig(variables=STORE_VARIABLES, source=str(path), spectral_truncation=None, gap_days=1.0,
                           static_variables=("land_sea_mask", "geopotential_at_surface"))  # fmt: skip
    return dataclasses.replace(config, **changes)


def test_store_selection_subsampling_and_static_fields(hourly_store):
    config = store_config(hourly_store, levels=(500, 850), time_range=("2001-01-10", "2001-02-28T23"))
    with pytest.warns(UserWarning, match=r"\['geopotential_at_surface'\] are not in the store"):
        ds = source.open_wb2_store(config)
    hours = pd.DatetimeIndex(ds.time.values)
    assert (hours.hour % 6 == 0).all() and splits.time_step(ds.time.values) == np.timedelta64(6, "h")
    assert hours[0] == pd.Timestamp("2001-01-10T00") and hours[-1] == pd.Timestamp("2001-02-28T18")
    assert ds["temperature"].level.values.tolist() == [500, 850] and np.all(np.diff(ds.latitude) > 0)
    assert ds["land_sea_mask"].dims == ("latitude", "longitude") and "regridding" not in ds.attrs
    source_ds = xr.open_zarr(hourly_store)
    np.testing.assert_array_equal(ds["temperature"].sel(level=500).isel(time=3).values,
                                  source_ds["temperature"].sel(level=500, time=hours[3]).values[::-1])  # fmt: skip
    with pytest.raises(ValueError, match="step_hours=5 must divide 24"):
        source.subsample_times(ds, 5)
    with pytest.raises(era5.StoreError, match=r"time step \(6 h\) cannot be sub-sampled to DatasetConfig.step_hours=3"):
        source.subsample_times(ds, 3)


def test_store_regridded_to_the_model_grid(hourly_store):
    with pytest.warns(UserWarning):
        ds = source.open_wb2_store(store_config(hourly_store, grid=(32, 16), time_range=("2001-01-01", "2001-01-02")))
    assert ds.sizes["latitude"] == 16 and ds.sizes["longitude"] == 32 and "32x16" in ds.attrs["regridding"]
    np.testing.assert_allclose(ds.latitude, era5.Grid.equiangular(32, 16).latitude)
    mask = ds["land_sea_mask"].values
    assert 0 < mask.min() + 1e-6 and mask.max() <= 1 and ((mask > 0) & (mask < 1)).any()  # fractions at coasts


def test_static_fields_join_the_condition(hourly_store):
    config = store_config(hourly_store, time_range=("2001-01-01", "2001-01-20"))
    with pytest.warns(UserWarning):
        ds = source.open_wb2_store(config)
    stats = compute_norm_stats(ds, config.variables, ["land_sea_mask"])
    assert stats.static_channel_names == ["sin_lat", "cos_lat", "sin_lon", "cos_lon", "land_sea_mask"]
    mask = stats.static_fields.sel(static_channel="land_sea_mask")
    weights = np.cos(np.deg2rad(ds.latitude))
    assert abs(float(mask.weighted(weights).mean())) < 1e-6 and float(mask.weighted(weights).std()) == pytest.approx(1.0, rel=1e-5)
    cfg = dataclasses.replace(get_config("smoke"), dataset=config)
    model = build_model(cfg, stats)  # conditioned on the states and the 4 + 1 static channels
    y = torch.zeros(1, len(stats.channel_names), 32, 64)
    condition = torch.from_numpy(static_condition(stats))[None]
    assert condition.shape[1] == 5 and model.denoise(y, torch.cat([y, condition], dim=1), torch.tensor([1.0])).shape == y.shape


# ----------------------------------------------------------------- the world in ERA5's conventions


@pytest.fixture(scope="module")
def era5_store(smoke_store, smoke_config):
    return wb2.world_era5_store(smoke_config.world)


def test_world_in_era5_conventions(era5_store, smoke_config):
    raw = xr.open_zarr(era5_store)
    assert set(ERA5_VARIABLES) < set(raw.data_vars) and {"surface_pressure", "land_sea_mask", "geopotential_at_surface"} < set(raw.data_vars)
    assert raw.level.dtype == np.int64 and raw.level.values.tolist() == list(wb2.ERA5_TEST_LEVELS)
    assert np.all(np.diff(raw.latitude) < 0) and raw.longitude.min() >= 0 and raw.longitude.max() < 360
    assert splits.time_step(raw.time.values) == np.timedelta64(1, "h")
    world = source.open_store(smoke_config).load()
    at_world_times = raw.sel(time=world.time.values)
    np.testing.assert_array_equal(at_world_times["mean_sea_level_pressure"].values[:, ::-1], world["surface_pressure"].values)
    # geopotential rises by R T d(ln p) between levels: 500 hPa lies about 5.5 km up
    z500 = float(at_world_times["geopotential"].sel(level=500).mean()) / 9.80665
    assert 5000 < z500 < 6000
    assert float(raw["specific_humidity"].min()) > 0 and float(raw["2m_temperature"].mean()) > float(raw["temperature"].sel(level=850).mean())


def test_sigma_to_pressure_is_exact_for_fields_linear_in_log_pressure():
    sigma = np.array([0.2, 0.5, 0.8, 0.95])
    ps = xr.DataArray([[1.0e5, 0.95e5]], dims=("latitude", "longitude"))
    p_hpa = xr.DataArray(sigma, dims="level") * ps / 100.0
    field = 3.0 - 2.0 * np.log(p_hpa)  # a column linear in ln p
    out = wb2.sigma_to_pressure(field.transpose("level", ...), p_hpa, [300, 500, 850, 1000], extrapolate=True)
    expected = 3.0 - 2.0 * np.log(np.array([300, 500, 850, 1000], dtype=float))
    np.testing.assert_allclose(out.values[:, 0, 0], expected, rtol=1e-6)
    held = wb2.sigma_to_pressure(field.transpose("level", ...), p_hpa, [1000], extrapolate=False)
    np.testing.assert_allclose(held.values[0, 0, 0], field.values[-1, 0, 0], rtol=1e-6)  # below the lowest level: held


def test_open_dataset_on_the_era5_schema_store(era5_store, smoke_config):
    cfg = with_data(smoke_config, era5_store)
    ds, stats = source.open_dataset(cfg, progress=False)
    assert stats.channel_names[:2] == ["geopotential@250", "geopotential@500"] and stats.channel_names[-1] == "mean_sea_level_pressure"
    assert len(stats.channel_names) == 5 * len(wb2.ERA5_TEST_LEVELS) + 4
    assert stats.static_channel_names[-2:] == ["land_sea_mask", "geopotential_at_surface"]
    assert not np.any(stats.static_fields.sel(static_channel="geopotential_at_surface").values)  # flat world: zeros
    np.testing.assert_allclose(ds.latitude, era5.Grid.equiangular(64, 32).latitude)
    assert ds.sizes["time"] == smoke_config.world.n_times
    assert stats.climatology.dims == ("channel", "latitude", "longitude")

"""WeatherBench2 reader: layout, conservative coarsening, error messages, the real ERA5 sample."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import wb2
from druids.data.era5 import (
    ERA5_ATTRIBUTION,
    Grid,
    SelectionError,
    StoreError,
    open_era5_sample,
    open_wb2,
    regrid,
)

# Source grid: 192 x 96 at 1.875 deg, latitude descending, no poles. Its cell
# bounds nest inside those of the 64 x 32 (5.625 deg) target, so averages of
# analytic fields over target cells are exact.
N_LON, N_LAT = 192, 96
DX = 360 / N_LON
TIMES = pd.date_range("2020-01-01", periods=4, freq="6h")
LEVELS = [500, 850]
TARGET = Grid.equiangular(64, 32)


def cos_lon_cell_mean(lon_centre, width):
    """Exact mean of cos(longitude) over a cell of ``width`` degrees."""
    h = np.deg2rad(width / 2)
    return np.cos(np.deg2rad(lon_centre)) * np.sin(h) / h


def sin_lat_area_mean(lat_centre, width):
    """Exact area-weighted mean of sin(latitude) over a cell: (sin a + sin b) / 2."""
    a, b = np.deg2rad(lat_centre - width / 2), np.deg2rad(lat_centre + width / 2)
    return (np.sin(a) + np.sin(b)) / 2


def area_mean(da):
    """Global area mean on an equiangular grid without poles (area ~ cos(latitude))."""
    return float(da.weighted(np.cos(np.deg2rad(da.latitude))).mean(("latitude", "longitude")))


def wb2_dataset():
    """Analytic fields whose coarse-cell means are known (constant temperature, u ~ cos(longitude), geopotential
    ~ sin(latitude), as cell means) and white-noise 2m temperature, on the source grid in ERA5's order."""
    fields = {
        "temperature": lambda coords: 250.0,
        "u_component_of_wind": lambda coords: cos_lon_cell_mean(coords["longitude"], DX),
        "geopotential": lambda coords: sin_lat_area_mean(coords["latitude"], DX),
        "2m_temperature": wb2.Random("white", mean=280.0, scale=10.0),
    }
    return wb2.wb2_dataset(fields, grid="equiangular", n_lat=N_LAT, n_lon=N_LON, descending=True, levels=LEVELS,
                           n_times=len(TIMES), start="2020-01-01T00", attrs={"title": "synthetic WB2 store"})  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("wb2") / "era5.zarr"
    wb2_dataset().chunk({"time": 1}).to_zarr(path, zarr_format=2)
    return path


def test_layout_after_coarsening(store):
    ds = open_wb2(store, ["temperature", "2m_temperature"], levels=[850], grid=TARGET)
    assert ds["temperature"].dims == ("time", "level", "latitude", "longitude")
    assert ds["2m_temperature"].dims == ("time", "latitude", "longitude")
    assert ds.sizes == {"time": 4, "level": 1, "latitude": 32, "longitude": 64}
    assert np.all(np.diff(ds.latitude) > 0) and ds.longitude.min() >= 0 and ds.longitude.max() < 360
    assert all(ds[v].dtype == np.float32 for v in ds.data_vars)
    assert ds["temperature"].attrs["units"] == "K" and ds.attrs["title"] == "synthetic WB2 store"
    assert ds.latitude.attrs["units"] == "degrees_north"
    assert ds["temperature"].chunks is not None  # still lazy


def test_conservative(store):
    ds = open_wb2(store, ["temperature", "2m_temperature", "u_component_of_wind", "geopotential"], grid=TARGET).load()
    src = xr.open_zarr(store).load()
    np.testing.assert_allclose(ds["temperature"], 250.0, rtol=1e-6)
    for t in range(len(TIMES)):
        before, after = area_mean(src["2m_temperature"][t]), area_mean(ds["2m_temperature"][t])
        assert abs(after / before - 1) < 1e-5
    expected_u = cos_lon_cell_mean(TARGET.longitude, 360 / 64)
    np.testing.assert_allclose(ds["u_component_of_wind"][0, 0].values, np.broadcast_to(expected_u, (32, 64)), atol=1e-6)
    expected_z = sin_lat_area_mean(TARGET.latitude, 180 / 32)
    np.testing.assert_allclose(ds["geopotential"][0, 0].values, np.broadcast_to(expected_z[:, None], (32, 64)), atol=1e-6)


def test_regrid_identity_and_longitude_convention():
    ds = wb2_dataset().isel(time=[0])
    same = regrid(ds, (ds.latitude.values, ds.longitude.values))
    np.testing.assert_allclose(same["2m_temperature"].values, ds["2m_temperature"].values[:, ::-1], rtol=1e-6)
    shifted = ds.assign_coords(longitude=((ds.longitude + 180) % 360) - 180)  # [-180, 180)
    xr.testing.assert_allclose(regrid(shifted, TARGET), regrid(ds, TARGET))


def test_selection(store):
    times = [np.datetime64("2020-01-01T06"), np.datetime64("2020-01-01T18")]
    ds = open_wb2(store, "temperature", levels=500, times=times)
    assert ds.sizes == {"time": 2, "level": 1, "latitude": N_LAT, "longitude": N_LON}
    assert open_wb2(store, "temperature", times=slice("2020-01-01T06", None)).sizes["time"] == 3


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"variables": ["temperature", "specific_humidity"]}, ["specific_humidity", "available", "2m_temperature"]),
        ({"variables": "temperature", "levels": [300, 500]}, ["300", "available levels", "[500, 850]"]),
        ({"variables": "temperature", "times": ["2021-01-01"]}, ["2021-01-01", "2020-01-01 00:00:00", "2020-01-01 18:00:00"]),
        ({"variables": "temperature", "times": slice("2019", "2019")}, ["2019", "4 times from 2020-01-01"]),
        ({"variables": "2m_temperature", "levels": 500}, ["2m_temperature", "no 'level' dimension"]),
    ],
)
def test_selection_errors(store, kwargs, words):
    with pytest.raises(SelectionError) as info:
        open_wb2(store, **kwargs)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)


def test_wrong_coordinate_names(tmp_path):
    path = tmp_path / "yx.zarr"
    wb2_dataset().rename(latitude="y", longitude="x").to_zarr(path, zarr_format=2)
    with pytest.raises(StoreError, match=r"lacks coordinate\(s\) \['latitude', 'longitude'\]") as info:
        open_wb2(path, "temperature")
    assert "'y'" in str(info.value) and "'x'" in str(info.value)


def test_nans(tmp_path):
    ds = wb2_dataset()
    ds["2m_temperature"][1, 10, :3] = np.nan
    ds.to_zarr(tmp_path / "nan.zarr", zarr_format=2)
    with pytest.raises(StoreError, match=r"2m_temperature: 3 of"):
        open_wb2(tmp_path / "nan.zarr", ["temperature", "2m_temperature"])
    assert open_wb2(tmp_path / "nan.zarr", "2m_temperature", times=TIMES[[0]]).sizes["time"] == 1


def test_unopenable_store(tmp_path):
    with pytest.raises(StoreError, match="Cannot open zarr store .*missing.zarr"):
        open_wb2(tmp_path / "missing.zarr", "temperature")
    corrupt = tmp_path / "corrupt.zarr"
    corrupt.mkdir()
    (corrupt / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "nonsense"}))
    with pytest.raises(StoreError, match="corrupt.zarr"):
        open_wb2(corrupt, "temperature")


def test_grid():
    grid = Grid.equiangular(64, 32)
    assert grid.shape == (32, 64)
    assert grid.latitude[0] == pytest.approx(-87.1875) and grid.longitude[1] == pytest.approx(5.625)
    assert Grid([10, -10], [-90, 90]).longitude.tolist() == [90, 270]
    with pytest.raises(ValueError, match=r"\[-90, 90\]"):
        Grid([0, 100], [0, 10])


def test_era5_sample():
    ds = open_era5_sample()
    assert ds.attrs["attribution"] == ERA5_ATTRIBUTION
    assert ds.sizes == {"time": 24, "latitude": 181, "longitude": 360}
    assert np.all(np.diff(ds.latitude) > 0) and np.issubdtype(ds.time.dtype, np.datetime64)
    assert ds["total_precipitation"].attrs["units"] == "m"
    t2m = ds["2m_temperature"].load()
    assert 180 < float(t2m.min()) and float(t2m.max()) < 330

    coarse = regrid(ds, TARGET)
    assert coarse["2m_temperature"].dims == ("time", "latitude", "longitude")
    assert coarse.sizes == {"time": 24, "latitude": 32, "longitude": 64}
    assert coarse.attrs["attribution"] == ERA5_ATTRIBUTION
    bounds = np.sin(np.deg2rad(np.clip(np.append(ds.latitude - 0.5, 90.5), -90, 90)))
    fine_area = xr.DataArray(np.diff(bounds), coords={"latitude": ds.latitude})
    fine = float(t2m[0].weighted(fine_area).mean())
    assert abs(area_mean(coarse["2m_temperature"][0]) / fine - 1) < 1e-5


# ------------------------------------------------------------------ reader robustness


def chunk_files(path, variable):
    """The chunk files of ``variable`` in a zarr store (format 2 or 3), sorted."""
    return sorted(f for f in (path / variable).rglob("*") if f.is_file() and not f.name.startswith(".") and f.name != "zarr.json")


@pytest.fixture
def small_store(tmp_path):
    path = tmp_path / "small.zarr"
    wb2_dataset().isel(latitude=slice(0, 48, 4), longitude=slice(0, 192, 4)).chunk({"time": 1}).to_zarr(path, zarr_format=2)
    return path


def test_corrupted_chunk_names_store_and_variable(small_store):
    """A garbled chunk surfaces as one StoreError naming the store and the variable, not a codec traceback."""
    chunk_files(small_store, "temperature")[1].write_bytes(b"not a blosc frame" * 8)
    with pytest.raises(StoreError) as info:
        open_wb2(small_store, ["2m_temperature", "temperature"])
    message = str(info.value)
    assert str(small_store) in message and "'temperature'" in message and "corrupted" in message
    assert "2m_temperature" not in message  # the readable variable is not blamed
    assert open_wb2(small_store, "2m_temperature").sizes["time"] == len(TIMES)


@pytest.mark.parametrize(
    "coordinate, words",
    [("latitude", "'latitude' coordinate values missing"), ("longitude", "'longitude' coordinate values missing"),
     ("level", "'level' coordinate values [0, 0] are not distinct positive")],
)  # fmt: skip
def test_missing_coordinate_chunk_raises(small_store, coordinate, words):
    """A missing coordinate chunk reads as fill values (NaN, or 0 for the integer levels): refused, instead of
    all-NaN fields after regridding."""
    for f in chunk_files(small_store, coordinate):
        f.unlink()
    with pytest.raises(StoreError, match=re.escape(words)) as info:
        open_wb2(small_store, ["temperature"], grid=TARGET)
    assert str(small_store) in str(info.value)


def cds_style(ds):
    """``ds`` renamed as a Copernicus Climate Data Store download names things."""
    ds = ds.rename(time="valid_time", level="pressure_level", latitude="lat", longitude="lon")
    ds = ds.rename(temperature="t", u_component_of_wind="u", **{"2m_temperature": "t2m"})
    return ds.assign(z=ds["geopotential"].isel(valid_time=0, pressure_level=0, drop=True)).drop_vars("geopotential")


def test_cds_names_are_mapped(tmp_path):
    ds = wb2_dataset()
    ds.to_zarr(tmp_path / "wb2.zarr", zarr_format=2)
    cds_style(ds).to_zarr(tmp_path / "cds.zarr", zarr_format=2)
    names = ["temperature", "u_component_of_wind", "2m_temperature"]
    mapped = open_wb2(tmp_path / "cds.zarr", names, levels=[500], grid=TARGET)
    expected = open_wb2(tmp_path / "wb2.zarr", names, levels=[500], grid=TARGET)
    xr.testing.assert_identical(mapped.drop_attrs(deep=False), expected.drop_attrs(deep=False))
    assert mapped["temperature"].dims == ("time", "level", "latitude", "longitude")
    assert "pressure_level->level" in mapped.attrs["renamed_from_cds"]
    orography = open_wb2(tmp_path / "cds.zarr", "geopotential_at_surface", check_nans=False)
    assert orography["geopotential_at_surface"].dims == ("latitude", "longitude")


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda ds: ds.assign(temperature=ds["t"]), ["'t'", "'temperature'", "both"]),
        (lambda ds: ds.assign_coords(pressure_level=ds["pressure_level"] * 100), ["look like Pa", "hPa"]),
    ],
)
def test_ambiguous_cds_names_are_refused(tmp_path, change, words):
    change(cds_style(wb2_dataset())).to_zarr(tmp_path / "cds.zarr", zarr_format=2)
    with pytest.raises(StoreError) as info:
        open_wb2(tmp_path / "cds.zarr", "temperature")
    for word in words:
        assert word in str(info.value)

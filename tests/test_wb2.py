"""The test-store builder (tests/wb2.py) itself: the WeatherBench2 schema and the statistics of its processes."""

import numpy as np
import pytest

from wb2 import Random, wb2_dataset


def test_schema_and_grids():
    ds = wb2_dataset(["temperature", "2m_temperature"], n_lat=4, n_lon=8, levels=[500, 850], n_times=3, chunks={"time": 2})
    assert ds["temperature"].dims == ("time", "level", "latitude", "longitude")
    assert ds["2m_temperature"].dims == ("time", "latitude", "longitude")
    assert ds["temperature"].attrs["units"] == "K" and ds["temperature"].dtype == np.float32
    assert ds["temperature"].chunks[0] == (2, 1) and ds.level.dtype == np.int64
    assert ds.time.dtype == "datetime64[ns]" and (np.diff(ds.time) == np.timedelta64(6, "h")).all()
    np.testing.assert_allclose(ds.longitude, [0, 45, 90, 135, 180, 225, 270, 315])
    # Gaussian latitudes: the Gauss-Legendre quadrature of sin(latitude)^2 over [-1, 1] is exact
    mu = np.sin(np.deg2rad(ds.latitude.values))
    assert np.all(np.diff(mu) > 0) and np.sum(np.polynomial.legendre.leggauss(4)[1] * mu**2) == pytest.approx(2 / 3)
    era5 = wb2_dataset(["temperature"], grid="equiangular", n_lat=4, n_lon=8, descending=True, levels=None, n_times=1)
    np.testing.assert_allclose(era5.latitude, [67.5, 22.5, -22.5, -67.5])
    assert era5["temperature"].dims == ("time", "latitude", "longitude")
    with pytest.raises(ValueError, match="grid 'octahedral'"):
        wb2_dataset(["temperature"], grid="octahedral")


def test_processes_have_their_statistics():
    """AR(1): mean, scale and lag-1 autocorrelation phi; random walk: increments of the scale; white: independent."""
    fields = {"temperature": Random("ar1", mean=250.0, scale=15.0, phi=0.8),
              "surface_pressure": Random("random_walk", mean=1e5, scale=100.0),
              "2m_temperature": "white"}  # fmt: skip
    ds = wb2_dataset(fields, n_lat=16, n_lon=32, levels=[500], n_times=400, seed=3).astype(np.float64)
    t = ds["temperature"].values
    assert t.mean() == pytest.approx(250.0, abs=0.5) and t.std() == pytest.approx(15.0, rel=0.03)
    a = (t - 250.0) / 15.0
    assert np.mean(a[1:] * a[:-1]) / np.mean(a * a) == pytest.approx(0.8, abs=0.02)
    steps = np.diff(ds["surface_pressure"].values, axis=0)
    assert steps.std() == pytest.approx(100.0, rel=0.02) and abs(steps.mean()) < 1.0
    w = ds["2m_temperature"].values - 280.0
    assert w.std() == pytest.approx(10.0, rel=0.02) and abs(np.mean(w[1:] * w[:-1])) < 0.02 * 100.0
    other = wb2_dataset(fields, n_lat=16, n_lon=32, levels=[500], n_times=400, seed=4)
    assert not np.array_equal(other["temperature"].values, ds["temperature"].values.astype(np.float32))

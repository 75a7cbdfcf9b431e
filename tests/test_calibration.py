"""Verification against hand-computed values."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from druids import calibration


def _truth(n_times=12, seed=0):
    rng = np.random.default_rng(seed)
    lat = np.linspace(-80, 80, 8)
    lon = np.arange(0, 360, 45.0)
    time = pd.date_range("2000-01-01", periods=n_times, freq="6h").values
    data = rng.normal(size=(n_times, 8, 8)).astype(np.float32)
    return xr.Dataset({"temperature": (("time", "latitude", "longitude"), data)}, coords={"time": time, "latitude": lat, "longitude": lon})


def test_rmse_matches_area_weighted_numpy():
    truth = _truth()
    rng = np.random.default_rng(1)
    fc = truth.temperature.isel(time=slice(0, 3)).rename(time="init_time") + rng.normal(size=(3, 8, 8))
    w = np.cos(np.deg2rad(truth.latitude.values))[:, None] * np.ones(8)
    err = (fc.values - truth.temperature.isel(time=slice(0, 3)).values) ** 2
    expected = np.sqrt((err * w).sum() / (w.sum() * 3))
    obs = truth.temperature.isel(time=slice(0, 3)).rename(time="init_time")
    assert float(calibration.rmse(fc, obs)) == pytest.approx(expected, rel=1e-6)


def test_skill_table_persistence_is_zero_at_lead_zero_and_truth_scores_zero():
    truth = _truth()
    inits = truth.time.values[[0, 2]]
    leads = np.array([0, 6, 12], dtype="timedelta64[h]").astype("timedelta64[ns]")
    perfect = calibration.verifying_truth(xr.Dataset(coords={"init_time": inits, "lead_time": leads}), truth)
    perfect = perfect.expand_dims(member=2)
    table = calibration.skill_table(perfect, truth, truth.mean("time"), [("temperature", None)], [0, 6, 12])
    assert np.allclose(table["model"], 0)
    assert table.loc[("temperature", 0), "persistence"] == pytest.approx(0)
    assert table.loc[("temperature", 12), "persistence"] > 0.5  # white noise: persistence is poor
    assert table.loc[("temperature", 6), "climatology"] > 0.5


def test_missing_valid_time_is_a_clear_error():
    truth = _truth(n_times=4)
    fc = xr.Dataset(coords={"init_time": truth.time.values[[3]], "lead_time": np.array([6], dtype="timedelta64[h]").astype("timedelta64[ns]")})
    with pytest.raises(ValueError, match="lacks 1 valid times"):
        calibration.verifying_truth(fc, truth)

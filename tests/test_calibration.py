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


def test_spread_skill_hand_computed():
    """Two members truth +/- d: the mean is the truth (RMSE 0) and the ddof=1 spread is d * sqrt(2)."""
    truth = _truth()
    inits = truth.time.values[[0, 2]]
    leads = np.array([0, 6], dtype="timedelta64[h]").astype("timedelta64[ns]")
    observed = calibration.verifying_truth(xr.Dataset(coords={"init_time": inits, "lead_time": leads}), truth)
    d = xr.DataArray([0.5, 2.0], dims="lead_time", coords={"lead_time": leads})
    ens = xr.concat([observed + d, observed - d], dim="member").transpose("init_time", "member", "lead_time", ...)
    curves = calibration.spread_skill(ens, truth, [("temperature", None)])
    assert curves.spread.dims == ("field", "lead_time") and list(curves.field.values) == ["temperature"]
    np.testing.assert_allclose(curves.spread.sel(field="temperature"), np.sqrt(2) * d, rtol=1e-5)
    np.testing.assert_allclose(curves.rmse.sel(field="temperature"), 0, atol=1e-6)
    assert curves.attrs["n_members"] == 2


def test_oracle_forecast_layout(monkeypatch):
    """Oracle ensembles of several initial times are stacked in the model forecast layout."""
    from druids.data import heldsuarez

    def fake(world, init_time, n_members, n_steps, seed):
        leads = np.arange(n_steps + 1) * np.timedelta64(6, "h")
        shape = (n_members, n_steps + 1, 4, 8)
        data = {v: (("member", "lead_time", "latitude", "longitude"), np.full(shape, float(seed))) for v in ("temperature", "geopotential")}
        return xr.Dataset(data, coords={"member": np.arange(n_members), "lead_time": leads, "init_time": init_time})

    monkeypatch.setattr(heldsuarez, "oracle_ensemble", fake)
    inits = pd.date_range("2000-01-01", periods=2, freq="6h").values
    ens = calibration.oracle_forecast(None, inits, 3, 2, seed=7, variables=["temperature"])
    assert ens.temperature.dims == ("init_time", "member", "lead_time", "latitude", "longitude")
    assert list(ens.data_vars) == ["temperature"] and ens.sizes["member"] == 3 and ens.sizes["lead_time"] == 3
    np.testing.assert_array_equal(ens.init_time.values, inits)

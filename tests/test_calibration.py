"""Verification against hand-computed values."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from druids import calibration
from wb2 import Random, wb2_dataset


def _truth(n_times=12, seed=0):
    """Standard white noise ``temperature`` (one level) on an 8 x 8 equiangular grid, 6-hourly."""
    field = Random("white", mean=0.0, scale=1.0)
    return wb2_dataset({"temperature": field}, grid="equiangular", n_lat=8, n_lon=8, levels=None, n_times=n_times, seed=seed)


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
    """Oracle ensembles of several initial times are stacked in the model forecast layout: each initial time's
    members are those of its own oracle ensemble, made with the world, sizes and seed given, and ``variables``
    keeps their values."""
    from druids.data import heldsuarez

    calls = []

    def fake(world, init_time, n_members, n_steps, seed):
        """Random fields drawn from (seed, init hour), so every initial time and seed has its own."""
        calls.append((world, init_time, n_members, n_steps, seed))
        hour = int(init_time.astype("datetime64[h]").astype(np.int64))
        rng = np.random.default_rng([seed, hour])
        leads = np.arange(n_steps + 1) * np.timedelta64(6, "h")
        dims = ("member", "lead_time", "level", "latitude", "longitude")
        data = {v: (dims, rng.normal(size=(n_members, n_steps + 1, 2, 4, 8))) for v in ("temperature", "geopotential")}
        return xr.Dataset(data, coords={"member": np.arange(n_members), "lead_time": leads, "init_time": init_time})

    monkeypatch.setattr(heldsuarez, "oracle_ensemble", fake)
    world = object()
    inits = pd.date_range("2000-01-01", periods=2, freq="6h").values
    ens = calibration.oracle_forecast(world, inits, 3, 2, seed=7, variables=["temperature"])
    assert ens.temperature.dims == ("init_time", "member", "lead_time", "level", "latitude", "longitude")
    assert list(ens.data_vars) == ["temperature"] and ens.sizes["member"] == 3 and ens.sizes["lead_time"] == 3
    np.testing.assert_array_equal(ens.init_time.values, inits)
    assert calls == [(world, t, 3, 2, 7) for t in inits]
    for t in inits:
        own = fake(world, t, 3, 2, 7)
        np.testing.assert_array_equal(ens.temperature.sel(init_time=t).values, own.temperature.values)
        np.testing.assert_array_equal(ens.lead_time.values, own.lead_time.values)
    assert not np.array_equal(ens.temperature.isel(init_time=0), ens.temperature.isel(init_time=1))

    every = calibration.oracle_forecast(world, inits, 3, 2, seed=8)  # another seed, all variables
    assert list(every.data_vars) == ["temperature", "geopotential"]
    np.testing.assert_array_equal(every.geopotential.isel(init_time=1).values, fake(world, inits[1], 3, 2, 8).geopotential.values)
    assert not np.array_equal(every.temperature.values, ens.temperature.values)

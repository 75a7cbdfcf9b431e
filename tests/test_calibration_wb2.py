"""Scoring WeatherBench2-layout ensemble stores (druids.calibration.wb2) on small synthetic stores with that schema."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from druids.calibration import reliability, scores, wb2
from druids.data.diagnostics import field_stack
from wb2 import wb2_dataset

FIELDS = [("temperature", 500.0), ("2m_temperature", None)]
LEADS = np.array([0, 6, 12, 24], dtype="timedelta64[h]").astype("timedelta64[ns]")


def truth_store() -> xr.Dataset:
    """A WB2 truth store: 6-hourly, equiangular, latitude descending as ERA5's."""
    return wb2_dataset(["temperature", "2m_temperature"], grid="equiangular", n_lat=8, n_lon=16, descending=True,
                       levels=np.array([500.0, 850.0]), n_times=24, seed=1)  # fmt: skip


def ensemble_store(truth: xr.Dataset, n_members=5, member_dim="number", seed=2) -> xr.Dataset:
    """Forecasts from 4 initial times: the truth at each valid time plus independent member noise (std 1 K),
    dims ``time, number, prediction_timedelta, [level,] latitude, longitude`` as a WB2 ensemble store."""
    rng = np.random.default_rng(seed)
    inits = truth.time.values[[0, 4, 8, 12]]
    valid = inits[:, None] + LEADS[None, :]
    at_valid = truth.sel(time=valid.ravel()).drop_vars("time")
    parts = {}
    for name, da in at_valid.data_vars.items():
        shaped = da.values.reshape(len(inits), len(LEADS), *da.shape[1:])
        noisy = shaped[:, None] + rng.normal(size=(len(inits), n_members, *shaped.shape[1:]))
        parts[name] = (("time", member_dim, "prediction_timedelta", *da.dims[1:]), noisy.astype(np.float32), da.attrs)
    coords = {"time": inits, member_dim: np.arange(n_members), "prediction_timedelta": LEADS,
              **{k: truth[k] for k in ("level", "latitude", "longitude")}}  # fmt: skip
    return xr.Dataset(parts, coords=coords)


def test_scores_of_a_wb2_store_equal_the_direct_computation(tmp_path):
    truth = truth_store()
    forecast = ensemble_store(truth)
    truth.to_zarr(tmp_path / "truth.zarr", zarr_format=2)
    forecast.to_zarr(tmp_path / "forecast.zarr", zarr_format=2)
    result = wb2.score_wb2_ensemble(tmp_path / "forecast.zarr", tmp_path / "truth.zarr", FIELDS, n_boot=20)
    card = result["scorecard"]
    assert set(card.dims) == {"bound", "lead_time", "field"} and card.sizes["lead_time"] == 3  # lead 0 left out
    # the same numbers straight from the arrays, latitude ascending
    ens = forecast.rename(time="init_time", number="member", prediction_timedelta="lead_time").isel(lead_time=slice(1, None))
    ens = ens.sortby("latitude")
    by_lead = [
        truth.sortby("latitude").sel(time=ens.init_time.values + lead).assign_coords(time=ens.init_time.values).rename(time="init_time")
        for lead in ens.lead_time.values
    ]
    observed = xr.concat(by_lead, dim=ens.lead_time)
    direct = scores.headline(scores.components(field_stack(ens, FIELDS), field_stack(observed, FIELDS)))
    for name in ("crps_fair", "rmse", "ssr"):
        np.testing.assert_allclose(card[name].sel(bound="estimate").transpose(*direct[name].dims), direct[name], rtol=1e-5)
    # member noise around the truth: spread 1 K, ensemble-mean error 1/sqrt(5) K, so SSR = sqrt(6/5) / (1/sqrt(5)) = sqrt(6)
    np.testing.assert_allclose(card.spread.sel(bound="estimate"), 1.0, rtol=0.1)
    np.testing.assert_allclose(card.ssr.sel(bound="estimate"), np.sqrt(6), rtol=0.1)
    assert result["ranks"].dims == ("field", "rank") and result["ranks"].sizes["rank"] == 6
    assert (result["flatness"].convexity < 0).all()  # over-dispersed: a dome


@pytest.mark.parametrize("member_dim", ["number", "sample", "realization"])
def test_wb2_ensemble_dims_are_renamed(member_dim):
    forecast = wb2.open_wb2_ensemble(ensemble_store(truth_store(), n_members=3, member_dim=member_dim))
    assert forecast.temperature.dims == ("init_time", "member", "lead_time", "level", "latitude", "longitude")
    assert forecast["2m_temperature"].dims == ("init_time", "member", "lead_time", "latitude", "longitude")
    assert (np.diff(forecast.latitude) > 0).all()


def test_a_store_without_an_ensemble_dim_is_a_clear_error():
    deterministic = ensemble_store(truth_store(), n_members=1).isel(number=0, drop=True)
    with pytest.raises(ValueError, match="an ensemble dim"):
        wb2.open_wb2_ensemble(deterministic)
    with pytest.raises(ValueError, match="prediction_timedelta"):
        wb2.open_wb2_ensemble(ensemble_store(truth_store()).rename(prediction_timedelta="step"))


def test_reliability_tools_run_on_wb2_ensembles():
    forecast = wb2.open_wb2_ensemble(ensemble_store(truth_store()))
    probability = reliability.event_probability(forecast["2m_temperature"], float(forecast["2m_temperature"].mean()))
    assert float(probability.min()) >= 0 and float(probability.max()) <= 1

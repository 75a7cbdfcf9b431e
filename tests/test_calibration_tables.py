"""Tests of the chapter's tables (druids.calibration.tables) and initial-time choice (druids.calibration.experiments)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from druids.calibration import experiments, scores, tables
from druids.config import DatasetConfig, get_config
from test_scores import exchangeable
from wb2 import wb2_dataset


def with_fields(ens):
    """Give a synthetic ensemble a ``field`` dim and hour lead times, as the chapter's are."""
    ens = ens.expand_dims(field=["temperature@500"])
    return ens.assign_coords(lead_time=np.array([6, 12], dtype="timedelta64[h]").astype("timedelta64[ns]"))


def test_scorecard_frame_is_long_and_complete():
    ens, truth = (with_fields(x) for x in exchangeable(n_init=6, m=4))
    frame = tables.scorecard_frame({"a": scores.scorecard(ens, truth, n_boot=10), "b": scores.scorecard(ens + 1, truth, n_boot=10)})
    assert set(frame.columns) >= {"ensemble", "field", "lead_hours", "metric", "estimate", "lower", "upper", "std_error"}
    assert len(frame) == 2 * 5 * 2  # ensembles x metrics x leads
    assert sorted(frame.lead_hours.unique()) == [6.0, 12.0]
    biased = frame.query("metric == 'rmse'").set_index(["ensemble", "lead_hours"]).estimate
    assert (biased["b"] > biased["a"]).all()


def test_summary_pools_leads_and_measures_the_distance_to_a_reference():
    ens, truth = (with_fields(x) for x in exchangeable(n_init=10, m=6, seed=1))
    wide, _ = (with_fields(x) for x in exchangeable(n_init=10, m=6, dispersion=2.0, seed=1, member_seed=2))
    table = tables.summary(wide, truth, ens, n_boot=20)
    assert list(table.field) == ["temperature@500"]
    row = table.iloc[0]
    assert row.ssr_lower <= row.ssr <= row.ssr_upper and row.ssr > 1.5
    assert row.convexity < 0 and row.energy_distance > 0
    assert "energy_distance" not in tables.summary(ens, truth, None, n_boot=20).columns


def test_point_members_names_points_by_hemisphere():
    ens, _ = (with_fields(x) for x in exchangeable(n_init=2, m=3))
    frame = tables.point_members({"model": ens}, [(-45.0, 90.0)], ens.lead_time.values[:1])
    assert set(frame.point) == {"34S 90E"} and len(frame) == 3  # the nearest of the 8 latitudes is 34.3 S
    assert isinstance(frame, pd.DataFrame) and set(frame.lead_hours) == {6.0}


def test_split_init_times_leave_room_for_the_leads():
    store = wb2_dataset(["temperature"], n_lat=4, n_lon=8, levels=np.array([500.0]), n_times=60)
    cfg = get_config("smoke")
    cfg = cfg.__class__(**{**cfg.__dict__, "dataset": DatasetConfig(variables=("temperature",), gap_days=0.5, spectral_truncation=None)})
    test_times = store.time.values[-int(0.15 * 56) - 1 :]
    times = experiments.split_init_times(store, cfg, "test", 3, 2)
    assert len(times) == 3 and times[0] >= test_times[0]
    assert times[-1] + 2 * np.timedelta64(6, "h") <= store.time.values[-1]
    with pytest.raises(ValueError, match="too short"):
        experiments.split_init_times(store, cfg, "test", 3, 40)

"""Tidy tables of the calibration results, for seaborn figures and the paper's numbers.

Rows are long-format (one number per row), with ``lead_hours`` for lead
times, so that a figure is one ``seaborn`` call and a value one ``query``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from druids.calibration.oracle import energy_distance
from druids.calibration.reliability import effective_cases, flatness_test, rank_histogram
from druids.calibration.scores import bootstrap, components, headline, spatial_mean


def lead_hours(da: xr.DataArray | xr.Dataset) -> xr.DataArray | xr.Dataset:
    """``da`` with its ``lead_time`` coordinate in hours (float)."""
    return da.assign_coords(lead_time=da.lead_time / np.timedelta64(1, "h")).rename(lead_time="lead_hours")


def scorecard_frame(cards: dict[str, xr.Dataset]) -> pd.DataFrame:
    """Scorecards (:func:`~druids.calibration.scores.scorecard`) by label as rows
    ``ensemble, field, lead_hours, metric, estimate, lower, upper, std_error``."""
    frames = []
    for label, card in cards.items():
        long = lead_hours(card).to_array("metric").to_dataframe("value").reset_index()
        wide = long.pivot_table(index=["metric", "field", "lead_hours"], columns="bound", values="value").reset_index()
        frames.append(wide.assign(ensemble=label))
    return pd.concat(frames, ignore_index=True)


def rank_frame(ranks: dict[str, xr.DataArray]) -> pd.DataFrame:
    """Rank histograms (dims ``field, rank``) by label as rows ``ensemble, field, rank, frequency``."""
    return pd.concat([r.to_dataframe("frequency").reset_index().assign(ensemble=label) for label, r in ranks.items()], ignore_index=True)


def point_members(ensembles: dict[str, xr.DataArray], points, leads) -> pd.DataFrame:
    """Members of field-stacked ensembles at ``points`` ((latitude, longitude), nearest grid point) and ``leads``,
    first initial time, as rows ``ensemble, field, point, lead_hours, value``."""
    rows = []
    for label, ens in ensembles.items():
        for lat, lon in points:
            at = ens.isel(init_time=0).sel(latitude=lat, longitude=lon, method="nearest").sel(lead_time=leads)
            lat_, lon_ = float(at.latitude), float(at.longitude)
            name = f"{abs(lat_):.0f}{'N' if lat_ >= 0 else 'S'} {lon_:.0f}E"
            frame = lead_hours(at).drop_vars(["latitude", "longitude", "init_time"], errors="ignore").to_dataframe("value")
            rows.append(frame.reset_index().assign(ensemble=label, point=name))
    return pd.concat(rows, ignore_index=True)


def summary(ensemble: xr.DataArray, truth: xr.DataArray, oracle: xr.DataArray | None, n_boot: int) -> pd.DataFrame:
    """Before/after numbers of one ensemble, per field, pooled over leads: fair CRPS, SSR (with bootstrap
    interval), rank slope and convexity, and the energy distance to the oracle.

    Columns ``field, crps_fair, ssr, ssr_lower, ssr_upper, slope, convexity,
    energy_distance``. Pooling: variances, squared errors and CRPS are averaged
    over initial times and leads before the SSR's ratio and root. The members
    count as independent draws (for a rescaled ensemble only approximately,
    its members sharing their mean). Without ``oracle`` no ``energy_distance``.
    """
    parts = components(ensemble, truth)
    pooled = parts.mean("lead_time").assign_attrs(parts.attrs)
    stats = bootstrap(pooled, headline, n_boot=n_boot)
    ranks = rank_histogram(ensemble, truth, keep=("field",))
    flat = flatness_test(ranks, effective_cases(truth))
    table = xr.Dataset(
        {
            "crps_fair": stats.crps_fair.sel(bound="estimate", drop=True),
            "ssr": stats.ssr.sel(bound="estimate", drop=True),
            "ssr_lower": stats.ssr.sel(bound="lower", drop=True),
            "ssr_upper": stats.ssr.sel(bound="upper", drop=True),
            "slope": flat.slope,
            "convexity": flat.convexity,
        }
    )
    if oracle is not None:
        distance = energy_distance(ensemble, oracle)
        table["energy_distance"] = spatial_mean(distance).mean(["init_time", "lead_time"])
    return table.to_dataframe().reset_index()

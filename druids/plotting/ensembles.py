"""Ensemble forecasts on maps and as curves: members, mean and spread beside the truth or another ensemble.

Inputs are xarray objects in the forecast layout of ``druids.sampling``
(dims ``member``, ``lead_time``, ``latitude``, ``longitude``, ...); nothing
here computes more than the mean, spread (std, ddof = 1) or range over members.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from druids.plotting.maps import map_axes, plot_map


# CF units of the WeatherBench2 variables the chapters plot (the stores' own attributes say the same)
UNITS = {
    "temperature": "K",
    "u_component_of_wind": "m s-1",
    "v_component_of_wind": "m s-1",
    "geopotential": "m2 s-2",
    "surface_pressure": "Pa",
    "2m_temperature": "K",
    "mean_sea_level_pressure": "Pa",
}


def field_units(field: str) -> str:
    """The units of a channel ``variable@level`` (or a variable), ``field units`` where unknown."""
    return UNITS.get(field.partition("@")[0], "field units")


def field_title(field: str) -> str:
    """``temperature@562.5`` (a channel name: variable@level) -> ``temperature at 562.5 hPa [K]``."""
    name, _, level = field.partition("@")
    where = f" at {level} hPa" if level else ""
    return f"{name}{where} [{field_units(field)}]"


def lead_label(lead) -> str:
    """``+<hours> h`` for a lead time (numpy timedelta64 or a DataArray holding one)."""
    return f"+{float(np.asarray(lead) / np.timedelta64(1, 'h')):g} h"


def spread(ensemble: xr.DataArray) -> xr.DataArray:
    """Ensemble standard deviation over ``member`` (ddof = 1)."""
    return ensemble.std("member", ddof=1)


def _limits(truth: xr.DataArray, centred: bool) -> dict:
    """Colour limits from the truth: its range, or +-its largest magnitude when ``centred``."""
    if centred:
        return {"vmin": -float(abs(truth).max()), "vmax": float(abs(truth).max())}
    return {"vmin": float(truth.min()), "vmax": float(truth.max())}


def ensemble_maps(ensemble: xr.DataArray, truth: xr.DataArray, cmap: str, centred: bool = False, title: str = ""):
    """One row per lead time: the truth, members 0 and 1, the ensemble mean, and the spread.

    ``ensemble``: dims (member, lead_time, latitude, longitude); ``truth``: dims
    (lead_time, latitude, longitude), its attributes (units, long name) label
    the colour bars. The four state panels share the truth's range (or a range
    centred on zero when ``centred``, e.g. for winds); the spread has its own.
    """
    leads = ensemble.lead_time.values
    fig = plt.figure(figsize=(16, 2.7 * len(leads)))
    for row, lead in enumerate(leads):
        ens, true = ensemble.sel(lead_time=lead), truth.sel(lead_time=lead)
        panels = {"truth": true, "member 0": ens.isel(member=0), "member 1": ens.isel(member=1), "ensemble mean": ens.mean("member")}
        for col, (name, field) in enumerate(panels.items()):
            ax = map_axes(fig, len(leads), 5, 5 * row + col + 1)
            plot_map(field.assign_attrs(true.attrs), ax=ax, cmap=cmap, **_limits(true, centred))
            ax.set_title(f"{name}, {lead_label(lead)}", fontsize=9)
        ax = map_axes(fig, len(leads), 5, 5 * row + 5)
        plot_map(spread(ens).assign_attrs(long_name="ensemble spread (std)", units=true.attrs["units"]), ax=ax, cmap="magma_r", vmin=0)
        ax.set_title(f"ensemble spread, {lead_label(lead)}", fontsize=9)
    fig.suptitle(title)
    return fig


def ensemble_comparison_maps(ensembles: dict[str, xr.DataArray], truth: xr.DataArray, cmap: str, spread_reference: str | None = None):
    """One row per ensemble: member 0, the ensemble mean and the spread, at one lead time.

    ``ensembles``: label -> dims (member, latitude, longitude); ``truth``: dims
    (latitude, longitude) with a scalar ``lead_time``, whose range colours the
    state panels. The spread panels share 0 .. 1.2 x the largest spread of
    ``spread_reference`` (default: the last ensemble, e.g. the oracle).
    """
    reference = ensembles[spread_reference or list(ensembles)[-1]]
    state_limits = {"cmap": cmap, **_limits(truth, centred=False)}
    spread_limits = {"cmap": "magma_r", "vmin": 0, "vmax": 1.2 * float(spread(reference).max())}
    fig = plt.figure(figsize=(13, 2.6 * len(ensembles)))
    for row, (label, field) in enumerate(ensembles.items()):
        panels = {"member 0": field.isel(member=0), "ensemble mean": field.mean("member"), "spread": spread(field)}
        for col, (title, da) in enumerate(panels.items()):
            ax = map_axes(fig, len(ensembles), 3, 3 * row + col + 1)
            limits = spread_limits if title == "spread" else state_limits
            plot_map(da.assign_attrs(truth.attrs, long_name=f"{truth.name} {title}"), ax=ax, **limits)
            ax.set_title(f"{label} {title}, {lead_label(truth.lead_time)}", fontsize=9)
    return fig


def spread_skill_curves(curves: dict[str, xr.Dataset]):
    """Spread (solid) and ensemble-mean RMSE (dashed) against lead time in days, one panel per field.

    ``curves``: label -> Dataset with ``spread`` and ``rmse`` of dims (field,
    lead_time), as :func:`druids.calibration.spread_skill` returns; one colour per label.
    """
    first = next(iter(curves.values()))
    fig, axes = plt.subplots(1, first.sizes["field"], figsize=(5.5 * first.sizes["field"], 4), squeeze=False)
    lead_days = first.lead_time / np.timedelta64(1, "D")
    for ax, field in zip(axes[0], first.field.values):
        for index, (label, c) in enumerate(curves.items()):
            ax.plot(lead_days, c.spread.sel(field=field), color=f"C{index}", label=f"{label} spread")
            ax.plot(lead_days, c.rmse.sel(field=field), color=f"C{index}", ls="--", label=f"{label} ensemble-mean RMSE")
        ax.set_xlabel("lead time [days]")
        ax.set_title(field_title(field))
        ax.set_ylabel(f"area-weighted RMS [{field_units(field)}]")
    axes[0, 0].legend(fontsize=8)
    return fig


def oracle_skill_curves(skill: xr.Dataset, one_step: xr.Dataset):
    """The model against the best possible forecast: two panels.

    Left, against lead time in hours: the ensemble-mean RMSE ratio model / oracle
    (solid) and the spread ratio (dashed) per field, from ``skill`` (``ratio`` and
    ``spread_ratio`` of dims (field, lead_time), as
    :func:`druids.calibration.oracle_skill.oracle_skill` returns). Right, against
    latitude: the one-step conditional-mean error over the oracle's one-step
    spread per field, from ``one_step`` (``ratio`` of dims (field, latitude)).
    The line at 1 is the oracle.
    """
    fig, (by_lead, by_latitude) = plt.subplots(1, 2, figsize=(11, 4))
    hours = skill.lead_time / np.timedelta64(1, "h")
    for index, field in enumerate(skill.field.values):
        name = field_title(field).rsplit(" [", 1)[0]  # a ratio has no units
        by_lead.plot(hours, skill.ratio.sel(field=field), "o-", color=f"C{index}", label=f"{name}: RMSE ratio")
        by_lead.plot(hours, skill.spread_ratio.sel(field=field), "s--", color=f"C{index}", label=f"{name}: spread ratio")
        by_latitude.plot(one_step.latitude, one_step.ratio.sel(field=field), color=f"C{index}", label=name)
    for ax in (by_lead, by_latitude):
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    by_lead.set(xlabel="lead time [h]", ylabel="model / oracle", title="ensemble mean and spread against the oracle's")
    lead = one_step.attrs.get("lead_hours", 6)
    by_latitude.set(xlabel="latitude [deg N]", ylabel="model error / oracle spread", title=f"one-step ({lead:g} h) conditional mean")
    return fig

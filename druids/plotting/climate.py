"""A model's free-running climate beside the world's: zonal-mean sections and profiles, and RMS series for stability.

Zonal means are Datasets of dims (level, latitude) named as in the data store
(``level``: sigma x 1000 in the Held–Suarez world); units come from the
world's attributes, so pass its zonal mean with ``keep_attrs=True``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

WIND = "u_component_of_wind"


def zonal_wind_section(ax, model: xr.DataArray, world: xr.DataArray):
    """Zonal-mean u of dims (level, latitude): the model filled, the world as labelled contours; pressure downwards."""
    units = world.attrs.get("units", "-")
    filled = ax.contourf(model.latitude, model.level, model, levels=np.arange(-36, 37, 4), cmap="PuOr_r", extend="both")
    lines = ax.contour(world.latitude, world.level, world, levels=np.arange(-8, 40, 8), colors="k", linewidths=0.7)
    ax.clabel(lines, fmt="%d")
    ax.invert_yaxis()
    ax.figure.colorbar(filled, ax=ax, label=f"zonal-mean u [{units}]")
    ax.set_title("zonal-mean u: model (filled), world (contours)")
    ax.set_xlabel("latitude [deg]")
    ax.set_ylabel("sigma x 1000 [hPa]")
    return ax


def zonal_profile(ax, model: xr.DataArray, world: xr.DataArray, model_label: str = "model"):
    """A zonal-mean field against latitude (dim ``latitude``): the model's line and the world's dashed."""
    ax.plot(model.latitude, model, label=model_label)
    ax.plot(world.latitude, world, "k--", label="world (data store)")
    ax.set_ylabel(f"zonal mean [{world.attrs.get('units', '-')}]")
    ax.set_xlabel("latitude [deg]")
    return ax


def rms_series(ax, runs: dict[str, xr.DataArray], world: xr.DataArray, units: str = "-"):
    """Area-weighted RMS against days from the start: each member of each run (one colour per run), and the world's.

    ``runs``: label -> dims (member, lead_time); ``world``: dims (time). A run
    that went unstable ends where its series turns NaN.
    """
    for index, (label, run) in enumerate(runs.items()):
        days = run.lead_time / np.timedelta64(1, "D")
        for member in range(run.sizes["member"]):
            ax.plot(days, run.isel(member=member), color=f"C{index}", lw=0.8, label=label if member == 0 else None)
    ax.plot((world.time - world.time[0]) / np.timedelta64(1, "D"), world, "k", lw=0.8, alpha=0.6, label="world (data store)")
    ax.set_xlabel("days from start")
    ax.set_ylabel(f"area-weighted RMS [{units}]")
    ax.legend(fontsize=8)
    return ax


def climate_figure(
    model: xr.Dataset,
    world: xr.Dataset,
    profiles: list[tuple[str, float]],
    rms_runs: dict[str, xr.DataArray],
    world_rms: xr.DataArray,
    rms_field: tuple[str, float],
    model_label: str = "model",
):
    """2 x 2 panels: the zonal-mean u section, two zonal-mean ``profiles`` (variable, level), and RMS series.

    ``model``, ``world``: zonal means, dims (level, latitude); ``rms_runs`` and
    ``world_rms`` as in :func:`rms_series`, of the (variable, level) ``rms_field``.
    """
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    zonal_wind_section(axes[0, 0], model[WIND], world[WIND])
    for ax, (name, level) in zip((axes[0, 1], axes[1, 0]), profiles, strict=True):
        zonal_profile(ax, model[name].sel(level=level), world[name].sel(level=level), model_label)
        ax.set_title(f"zonal-mean {name} at {level:g} hPa")
    axes[0, 1].legend(fontsize=8)
    name, level = rms_field
    rms_series(axes[1, 1], rms_runs, world_rms, world[name].attrs.get("units", "-"))
    axes[1, 1].set_title(f"stability: RMS {name} at {level:g} hPa")
    return fig

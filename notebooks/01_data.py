# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
profile = "smoke"  # smoke | default | gpu
seed = 0
data_source = None  # None: the profile's data; "heldsuarez", or a WeatherBench2-layout zarr path/URL (druids run --data)

# %% [markdown]
# # Chapter 1 — The data: a Held–Suarez world with oracle ensembles, and real ERA5
#
# The default world is a dry primitive-equation atmosphere (dinosaur, T21, 8 sigma
# levels, 64 x 32 Gaussian grid) with Held & Suarez (1994) forcing and a white-in-time,
# band-limited stochastic vorticity forcing. Its saved states are complete, so the
# simulator re-run from any saved time gives samples of the *exact* forecast
# distribution: the oracle ensemble against which every later calibration claim is
# checked. On a WeatherBench2 store (ERA5) the chapter shows the same diagnostics of
# its data and skips, with a printed note, what only the world has.

# %%
import dataclasses

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

from druids import plotting
from druids.config import get_config, with_data
from druids.data import diagnostics, era5, heldsuarez, predictability, source
from druids.values import write_values

plotting.set_style()
cfg = with_data(get_config(profile, seed=seed), data_source)
HELD_SUAREZ = source.is_held_suarez(cfg)  # oracles and the world's own climate runs exist only for it
levels = cfg.levels  # upper: jet-level winds, middle: mid-level temperature and geopotential, lower: low-level temperature
T_MID, U_JET = (f"{name}@{level:g}" for name, level in levels.headline_fields)  # the headline fields' names
print(cfg)

# %% [markdown]
# ## The world's data
# Generated on first use (resumable, with a progress bar), then loaded from `data/`;
# a store is read lazily. Normalisation statistics of the training split come with it.

# %%
ds, stats = source.open_dataset(cfg)
ds

# %% [markdown]
# ## Snapshots
# The Held–Suarez aquaplanet has no coastlines; eddies of zonal wavenumber 5-8 ride on the jets.

# %%
snapshot = ds.isel(time=-1).load()
fields = [
    ("temperature", levels.lower, "RdBu_r"),
    ("u_component_of_wind", levels.upper, "PuOr_r"),
    ("v_component_of_wind", levels.upper, "PuOr_r"),
    ("geopotential", levels.middle, "viridis"),
]
fig = plt.figure(figsize=(11, 6.5))
for i, (name, level, cmap) in enumerate(fields):
    ax = plotting.map_axes(fig, 2, 2, i + 1)
    field = snapshot[name].sel(level=level, method="nearest")
    limits = {"vmin": -float(abs(field).max()), "vmax": float(abs(field).max())} if "wind" in name else {}
    plotting.plot_map(field, ax=ax, cmap=cmap, **limits)
    ax.set_title(f"{name} at {float(field.level):g} hPa, {str(snapshot.time.values)[:16]}")
plotting.savefig(fig, "data_snapshots")

# %% [markdown]
# ## Zonal-mean climate against the Held–Suarez reference
# Time mean over the whole saved period (a store: over its training split); contours on
# the temperature panel are the Held–Suarez radiative-equilibrium temperature the
# forcing relaxes towards (the world only).

# %%
zonal = source.zonal_climate(cfg, ds, stats, ["u_component_of_wind", "temperature"])
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
cu = axes[0].contourf(zonal.latitude, zonal.level, zonal.u_component_of_wind, levels=np.arange(-36, 37, 4), cmap="PuOr_r", extend="both")
fig.colorbar(cu, ax=axes[0], label="zonal-mean u [m/s]")
ct = axes[1].contourf(zonal.latitude, zonal.level, zonal.temperature, levels=np.arange(200, 310, 10), cmap="RdBu_r", extend="both")
if HELD_SUAREZ:
    t_eq = diagnostics.held_suarez_equilibrium_temperature(zonal.latitude, zonal.sigma.values)
    cs = axes[1].contour(t_eq.latitude, t_eq.level, t_eq, levels=np.arange(200, 320, 20), colors="k", linewidths=0.7)
    axes[1].clabel(cs, fmt="%d")
fig.colorbar(ct, ax=axes[1], label="zonal-mean T [K]" + (" (contours: T_eq)" if HELD_SUAREZ else ""))
for ax in axes:
    ax.set_xlabel("latitude [deg]")
axes[0].set_ylabel("sigma x 1000 [hPa]" if HELD_SUAREZ else "pressure [hPa]")
axes[0].invert_yaxis()
plotting.savefig(fig, "data_zonal_climate")
jets = diagnostics.jet_peaks(zonal.u_component_of_wind.sel(level=levels.upper, method="nearest"))
jets

# %% [markdown]
# ## Kinetic-energy spectrum by zonal wavenumber

# %%
sample = ds.isel(time=slice(0, None, max(1, ds.sizes["time"] // 100))).load()
spectrum = diagnostics.kinetic_energy_spectrum(sample.u_component_of_wind, sample.v_component_of_wind).mean("time")
max_k = cfg.dataset.spectral_truncation or ds.sizes["longitude"] // 2  # the world: zero beyond its truncation
spectrum = spectrum.sel(zonal_wavenumber=slice(0, max_k))
fig, ax = plt.subplots(figsize=(5.5, 4))
for level in (levels.upper, levels.middle, levels.lower):
    plotting.plot_spectrum(spectrum.sel(level=level, method="nearest").rename(f"{level:g} hPa"), ax=ax, label=f"{level:g} hPa")
k = np.arange(8, max_k + 1)
ax.loglog(k, float(spectrum.sel(level=levels.upper, zonal_wavenumber=8)) * (k / 8.0) ** -3.0, "k--", lw=0.8, label="k^-3")
ax.set_ylabel("kinetic energy [m2 s-2]")
ax.legend()
plotting.savefig(fig, "data_ke_spectrum")

# %% [markdown]
# ## Predictability: oracle spread and perturbed-initial-condition error growth
# (Only the Held–Suarez world has oracles: skipped on a store.)
# The oracle ensemble re-runs the world from the exact saved state with new noise;
# the perturbed-IC ensemble adds small temperature noise to the initial state and runs
# the deterministic dynamics. The dotted line is the RMS 6-hour change of the data:
# the ratio of the 6-hour oracle spread to it tells how non-degenerate the 6-hour
# forecast distribution is.

# %%
if source.skip_unless_held_suarez(cfg, "oracle and perturbed-initial-condition ensembles"):
    curves = predictability.predictability(cfg.world, cfg.oracle, cfg.seed)
    curves = curves.isel(lead_time=slice(1, None))  # lead 0: zero spread, off a log axis
    lead_days = curves.lead_time / np.timedelta64(1, "D")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, field in zip(axes, curves.field.values):
        c = curves.sel(field=field)
        ax.plot(lead_days, c.oracle_spread.mean("init_time"), label="oracle spread (stochastic world)")
        ax.plot(lead_days, c.oracle_error.mean("init_time"), label="oracle member vs truth (RMSE)")
        ax.plot(lead_days, c.perturbed_spread.mean("init_time"), label=f"perturbed-IC spread ({cfg.oracle.ic_perturbation_kelvin} K)")
        ax.axhline(float(c.change_6h), color="k", ls=":", label="RMS 6-h change")
        ax.set_yscale("log")
        ax.set_xlabel("lead time [days]")
        ax.set_title(plotting.field_title(field))
        ax.set_ylabel(f"area-weighted RMS [{plotting.field_units(field)}]")
    axes[0].legend(fontsize=8)
    plotting.savefig(fig, "data_predictability")
    ratio_6h = (curves.oracle_spread.sel(lead_time=np.timedelta64(6, "h")).mean("init_time") / curves.change_6h).to_series()
    display(ratio_6h)

# %% [markdown]
# ## Effect of the stochastic forcing on the climate
# Same world with the noise switched off: the forcing should leave the climate
# Held–Suarez-like. (The world only: skipped on a store.)

# %%
if source.skip_unless_held_suarez(cfg, "runs of the world with and without its stochastic forcing"):
    stochastic, deterministic = heldsuarez.zonal_climates([cfg.world, dataclasses.replace(cfg.world, noise_amplitude=0.0)], cfg.climate)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, clim in (("stochastic", stochastic), ("deterministic", deterministic)):
        axes[0].plot(clim.latitude, clim.u_component_of_wind.sel(level=levels.upper), label=f"{label}, u at {levels.upper:g} hPa")
        axes[1].plot(clim.latitude, clim.temperature.sel(level=levels.lower), label=f"{label}, T at {levels.lower:g} hPa")
    axes[0].set_ylabel("zonal-mean u [m/s]")
    axes[1].set_ylabel("zonal-mean T [K]")
    for ax in axes:
        ax.set_xlabel("latitude [deg]")
        ax.legend()
    fig.suptitle(f"days {cfg.climate.average_after_days:g}-{cfg.climate.n_days:g} of runs from rest, noise amplitude {cfg.world.noise_amplitude:g} vs 0")
    plotting.savefig(fig, "data_noise_effect")
    climate_jets = {
        name: diagnostics.jet_peak(clim.u_component_of_wind.sel(level=levels.upper), "north")
        for name, clim in (("stochastic", stochastic), ("deterministic", deterministic))
    }
    display(climate_jets)

# %% [markdown]
# ## Real ERA5 sample, with coastlines drawn offline
# Contains modified Copernicus Climate Change Service information (ERA5, ECMWF), CC-BY 4.0.
# Left: the shipped 1-degree field; right: the same, coarsened conservatively to the
# 64 x 32 model grid by the WeatherBench2 reader.

# %%
sample_era5 = era5.open_era5_sample()
coarse = era5.regrid(sample_era5, era5.Grid.equiangular(64, 32))
fig = plt.figure(figsize=(11, 3.8))
for i, (data, title) in enumerate(((sample_era5, "ERA5 1 degree"), (coarse, "coarsened to 64 x 32"))):
    ax = plotting.map_axes(fig, 1, 2, i + 1)
    plotting.plot_map(data["2m_temperature"].isel(time=0), ax=ax, cmap="RdBu_r", coastlines=True)
    ax.set_title(f"{title}, {str(data.time.values[0])[:16]}")
plotting.savefig(fig, "data_era5_sample")

# %% [markdown]
# ## Numbers for the paper

# %%
values = {
    "dataJetNorthSpeed": f"{jets['north'][0]:.1f}",
    "dataJetNorthLat": f"{jets['north'][1]:.1f}",
    "dataJetSouthSpeed": f"{jets['south'][0]:.1f}",
    "dataJetSouthLat": f"{-jets['south'][1]:.1f}",
}
if HELD_SUAREZ:  # the oracle's spread and the runs with and without the stochastic forcing
    values |= {
        "dataSpreadRatioT": f"{100 * ratio_6h[T_MID]:.0f}",
        "dataSpreadRatioU": f"{100 * ratio_6h[U_JET]:.0f}",
        "dataNoiseAmplitude": f"{cfg.world.noise_amplitude:g}",
        "dataJetStochastic": f"{climate_jets['stochastic'][0]:.1f}",
        "dataJetDeterministic": f"{climate_jets['deterministic'][0]:.1f}",
    }
write_values("01_data", values, profile=profile)

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
device = "auto"  # auto | cpu | cuda

# %% [markdown]
# # Chapter 3 — Sampling: ensembles, oracles, spectra, climate and cost
#
# The trained denoisers of chapter 2 become forecasters: each 6-hour step samples
# the next normalised residual with a reverse-diffusion (or flow) sampler,
# conditioned on the previous *sampled* state. Ensembles come from independent
# sampler noise per member. The Held–Suarez world lets us put every model
# ensemble beside an oracle ensemble from the same initial state — samples of the
# exact forecast distribution — and a free-running rollout beside the
# simulator's own climate.

# %%
import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from druids import calibration, plotting, runtime, sampling, training
from druids.config import get_config, objective_config
from druids.data import dataset, diagnostics, predictability, source, splits
from druids.values import write_values

plotting.set_style()
cfg = get_config(profile, seed=seed)
study = cfg.sampling_study
configs = {obj: objective_config(cfg, obj) for obj in ("edm", "flow")}
print(cfg.sampling, study, sep="\n")

# %%
runs = {obj: training.load_trained(c, device=device) for obj, c in configs.items()}
denoisers = {obj: run.denoiser.to(runtime.resolve_device(device)).eval() for obj, run in runs.items()}
stats = runs["edm"].stats
data = source.open_dataset(cfg)[0]
variables = list(cfg.dataset.variables)
test = splits.split(data[variables], cfg.dataset, "test").load()
init_times = test.time.values[predictability.init_indices(test.sizes["time"], cfg.sampling.lead_steps, study.n_init)]

# %% [markdown]
# ## Model and oracle ensembles from the same initial states
# The EDM model with the profile's sampler (GenCast's DPM-Solver++(2S) with
# stochastic churn), and the oracle: the simulator re-run from the exact saved
# state with new stochastic forcing. Both have the same number of members.

# %%
start = time.perf_counter()
model_ens = sampling.forecast(
    denoisers["edm"], stats, sampling.initial_states(data[variables], init_times, cfg.dataset.history), study.n_members, cfg.sampling.lead_steps, cfg.sampling, cfg.dataset, seed=cfg.seed
)
ensemble_minutes = (time.perf_counter() - start) / 60
oracle_ens = calibration.oracle_forecast(cfg.world, init_times, study.n_members, cfg.sampling.lead_steps, cfg.seed, variables)
observed = calibration.verifying_truth(model_ens, test)
map_leads = [np.timedelta64(h, "h").astype("timedelta64[ns]") for h in study.map_leads_hours]
MAP_FIELDS = [("temperature", 562.5, "RdBu_r"), ("u_component_of_wind", 312.5, "PuOr_r")]
print(
    f"{study.n_members} members x {len(init_times)} initial time(s) x {cfg.sampling.lead_steps} steps, "
    f"{model_ens.attrs['nfe_per_step']} NFE per step: {ensemble_minutes:.1f} min on {next(denoisers['edm'].parameters()).device.type}"
)

# %% [markdown]
# ## Members, ensemble mean and spread next to the truth
# First initial time. Members are sharp, weather-like states; the ensemble mean
# blurs as the members diverge, and the spread grows where the truth is
# uncertain (along the jets and storm tracks).

# %%
first, truth_first = model_ens.isel(init_time=0), observed.isel(init_time=0)
for name, level, cmap in MAP_FIELDS:
    fig = plt.figure(figsize=(16, 2.7 * len(map_leads)))
    for row, lead in enumerate(map_leads):
        ens, truth = first[name].sel(level=level, lead_time=lead), truth_first[name].sel(level=level, lead_time=lead)
        panels = {"truth": truth, "member 0": ens.isel(member=0), "member 1": ens.isel(member=1), "ensemble mean": ens.mean("member")}
        lo, hi = (-float(abs(truth).max()), float(abs(truth).max())) if "wind" in name else (float(truth.min()), float(truth.max()))
        for col, (title, field) in enumerate(panels.items()):
            ax = plotting.map_axes(fig, len(map_leads), 5, 5 * row + col + 1)
            plotting.plot_map(field.assign_attrs(truth.attrs), ax=ax, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(f"{title}, +{lead / np.timedelta64(1, 'h'):g} h", fontsize=9)
        ax = plotting.map_axes(fig, len(map_leads), 5, 5 * row + 5)
        spread = ens.std("member", ddof=1).assign_attrs(long_name="ensemble spread (std)", units=truth.attrs["units"])
        plotting.plot_map(spread, ax=ax, cmap="magma_r", vmin=0)
        ax.set_title(f"ensemble spread, +{lead / np.timedelta64(1, 'h'):g} h", fontsize=9)
    fig.suptitle(f"{name} at {level:g} hPa, {study.n_members}-member EDM ensemble from {str(init_times[0])[:16]}")
    plotting.savefig(fig, f"sampling_members_{'t' if name == 'temperature' else 'u'}")

# %% [markdown]
# ## The oracle beside the model
# Same initial state, same lead: a member, the mean and the spread of each
# ensemble (temperature at 562.5 hPa).

# %%
lead = map_leads[min(1, len(map_leads) - 1)]
name, level, cmap = MAP_FIELDS[0]
truth = truth_first[name].sel(level=level, lead_time=lead)
fields = {label: ens[name].isel(init_time=0).sel(level=level, lead_time=lead) for label, ens in (("model", model_ens), ("oracle", oracle_ens))}
state_limits = {"cmap": cmap, "vmin": float(truth.min()), "vmax": float(truth.max())}
spread_limits = {"cmap": "magma_r", "vmin": 0, "vmax": 1.2 * float(fields["oracle"].std("member", ddof=1).max())}
fig = plt.figure(figsize=(13, 5.2))
for row, (label, field) in enumerate(fields.items()):
    panels = {"member 0": field.isel(member=0), "ensemble mean": field.mean("member"), "spread": field.std("member", ddof=1)}
    for col, (title, da) in enumerate(panels.items()):
        ax = plotting.map_axes(fig, 2, 3, 3 * row + col + 1)
        plotting.plot_map(da.assign_attrs(truth.attrs, long_name=f"{name} {title}"), ax=ax, **(spread_limits if title == "spread" else state_limits))
        ax.set_title(f"{label} {title}, +{lead / np.timedelta64(1, 'h'):g} h", fontsize=9)
plotting.savefig(fig, "sampling_oracle_maps")

# %% [markdown]
# ## Spread and error against lead time
# Spread (root of the area-mean unbiased ensemble variance) and RMSE of the
# ensemble mean against the truth, for the model and the oracle. The oracle's
# spread is the *correct* spread for these initial states; for a reliable
# ensemble the RMSE of the mean matches the spread (up to sqrt((M+1)/M) and
# sampling noise of a few initial times).

# %%
FIELDS = [(name, level) for name, level, _ in MAP_FIELDS]
curves = {label: calibration.spread_skill(ens, test, FIELDS) for label, ens in (("model", model_ens), ("oracle", oracle_ens))}
lead_days = model_ens.lead_time / np.timedelta64(1, "D")
fig, axes = plt.subplots(1, len(FIELDS), figsize=(11, 4))
for ax, field in zip(axes, curves["model"].field.values):
    for (label, c), colour in zip(curves.items(), ("C0", "C1")):
        ax.plot(lead_days, c.spread.sel(field=field), color=colour, label=f"{label} spread")
        ax.plot(lead_days, c.rmse.sel(field=field), color=colour, ls="--", label=f"{label} ensemble-mean RMSE")
    ax.set_xlabel("lead time [days]")
    ax.set_title(field)
axes[0].set_ylabel("area-weighted RMS [field units]")
axes[0].legend(fontsize=8)
plotting.savefig(fig, "sampling_spread_skill")

# %% [markdown]
# ## Does sampling blur or add noise? Kinetic-energy spectra
# Kinetic energy by zonal wavenumber at 312.5 hPa: the mean of the members'
# spectra (shading: their range) for the model and the oracle, and the truth's.
# A sampler that blurs loses energy at high wavenumbers; one that adds noise
# gains it there.

# %%
def jet_level_spectrum(ds):
    """Kinetic energy per zonal wavenumber at 312.5 hPa, up to the truncation."""
    ke = diagnostics.kinetic_energy_spectrum(ds.u_component_of_wind.sel(level=312.5), ds.v_component_of_wind.sel(level=312.5))
    return ke.sel(zonal_wavenumber=slice(0, cfg.world.truncation))


spectra = {label: jet_level_spectrum(ens.sel(lead_time=map_leads)) for label, ens in (("model", model_ens), ("oracle", oracle_ens))}
truth_spectrum = jet_level_spectrum(observed.sel(lead_time=map_leads)).mean("init_time").rename("kinetic energy")
fig, axes = plt.subplots(1, len(map_leads), figsize=(3.6 * len(map_leads), 3.6), sharey=True)
for ax, lead in zip(np.atleast_1d(axes), map_leads):
    for (label, spectrum), colour in zip(spectra.items(), ("C0", "C1")):
        members = spectrum.sel(lead_time=lead, zonal_wavenumber=slice(1, None)).stack(sample=("init_time", "member"))
        plotting.plot_spectrum(members.mean("sample").rename("kinetic energy"), ax=ax, color=colour, label=f"{label} members")
        ax.fill_between(members.zonal_wavenumber, members.min("sample"), members.max("sample"), color=colour, alpha=0.2)
    plotting.plot_spectrum(truth_spectrum.sel(lead_time=lead), ax=ax, color="k", label="truth")
    ax.set_ylabel("kinetic energy [m2 s-2]")
    ax.set_xlabel("zonal wavenumber")
    ax.set_title(f"312.5 hPa, +{lead / np.timedelta64(1, 'h'):g} h")
np.atleast_1d(axes)[0].legend(fontsize=8)
plotting.savefig(fig, "sampling_spectra")
# energy at zonal wavenumbers >= 8 (synoptic and smaller scales) at the last map lead, m2 s-2
high_k = {label: float(s.sel(lead_time=map_leads[-1], zonal_wavenumber=slice(8, None)).sum("zonal_wavenumber").mean()) for label, s in spectra.items()}
high_k

# %% [markdown]
# ## Long free-running rollouts: is the model's climate the world's?
# `climate_members` members of the EDM model run freely from the first test time with
# the sampler of `SamplingStudyConfig` (`climate_sampler`, `climate_n_levels`), reduced
# to their zonal-mean climate as they run. Members share nothing but the initial
# state, so after a few weeks they are independent runs, and how many of them last
# says more than one run can. The reference is the time mean of the simulator's
# data store. A member that runs away (a channel's RMS anomaly beyond 3 data
# standard deviations, see `sampling.rollout_climate`) stops there, the others go
# on, and the climate is the mean over every member's stable days. As in every forecast here, each step
# holds the global-mean surface pressure at its initial value
# (`SamplingConfig.conserve_mass`): the world's mass is fixed, the model's mass
# budget is not (without the fixer the 1500-step default model's global-mean
# surface pressure rose by about 14 hPa in 100 free-running days).
#
# A small systematic one-step error adds up over a year. The free run therefore
# subtracts the model's zonal-mean tendency bias, its conditional-mean residual
# minus the truth averaged over the training split (`training.tendency_bias`;
# Danforth, Kalnay & Miyoshi 2007). The ensembles above are uncorrected. The
# table gives the size of the bias in physical units per day.

# %%
train_set = dataset.ForecastDataset(data, stats, "train", cfg.dataset)
bias = training.tendency_bias(denoisers["edm"], train_set)
bias_table = training.tendency_bias_per_day(bias, stats, cfg.world.output_hours)
bias_table.round(3)

# %% [markdown]
# GenCast's sampler re-noises the state within each denoising step (churn,
# `SamplingConfig.s_churn`); the same members run with `climate_churn`, whose climate
# the figure shows, and again with `climate_compare_churn` (GenCast's 2.5). Without
# churn each step solves the probability-flow ODE from fresh noise: still a sample
# of the next state, with less noise injected per step.

# %%
climate_steps = int(round(study.climate_days * 24 / cfg.world.output_hours))
climate_initial = sampling.initial_states(data[variables], init_times[:1], cfg.dataset.history)
rollouts = {}
for churn in [c for c in (study.climate_churn, study.climate_compare_churn) if c is not None]:
    churn_sampling = dataclasses.replace(
        cfg.sampling, sampler=study.climate_sampler, n_levels=study.climate_n_levels, s_churn=churn, member_batch=study.climate_members
    )
    rollouts[churn] = sampling.rollout_climate(
        denoisers["edm"], stats, climate_initial, climate_steps, churn_sampling, cfg.dataset, cfg.seed, study.climate_members, residual_bias=bias
    )
stable_days_by_churn = pd.DataFrame(
    {f"churn {churn:g}": run.stable_steps.isel(init_time=0).to_series() * cfg.world.output_hours / 24 for churn, run in rollouts.items()}
)
stable_days_by_churn.loc["minutes"] = [run.attrs["seconds"] / 60 for run in rollouts.values()]
rollout = rollouts[study.climate_churn]
data_zonal = data[["u_component_of_wind", "temperature"]].mean(["time", "longitude"]).load()
data_rms_u = np.sqrt(diagnostics.global_mean(data.u_component_of_wind.sel(level=312.5) ** 2)).load()
stable_days = rollout.stable_steps.isel(init_time=0) * cfg.world.output_hours / 24
stable_members = int((rollout.stable_steps == climate_steps).sum())
print(f"stable days per member of {study.climate_days:g}, {rollout.attrs['nfe_per_step']} NFE per step:")
stable_days_by_churn.round(2)

# %%
fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
cu = axes[0, 0].contourf(rollout.latitude, rollout.level, rollout.u_component_of_wind, levels=np.arange(-12, 40, 4), cmap="PuOr_r", extend="both")
cs = axes[0, 0].contour(data_zonal.latitude, data_zonal.level, data_zonal.u_component_of_wind, levels=np.arange(-8, 40, 8), colors="k", linewidths=0.7)
axes[0, 0].clabel(cs, fmt="%d")
axes[0, 0].invert_yaxis()
fig.colorbar(cu, ax=axes[0, 0], label="zonal-mean u [m/s]")
axes[0, 0].set_title("zonal-mean u: model (filled), world (contours)")
axes[0, 0].set_ylabel("sigma x 1000 [hPa]")
for ax, (name, level) in zip((axes[0, 1], axes[1, 0]), (("u_component_of_wind", 312.5), ("temperature", 812.5))):
    ax.plot(rollout.latitude, rollout[name].sel(level=level), label=f"model, churn {study.climate_churn:g}, {study.climate_members} member(s), {float(stable_days.sum()):g} days")
    ax.plot(data_zonal.latitude, data_zonal[name].sel(level=level), "k--", label="world (data store)")
    ax.set_ylabel(f"zonal mean [{data[name].attrs['units']}]")
    ax.set_title(f"zonal-mean {name} at {level:g} hPa")
for ax in (axes[0, 0], axes[0, 1], axes[1, 0]):
    ax.set_xlabel("latitude [deg]")
axes[0, 1].legend(fontsize=8)
rollout_days = rollout.lead_time / np.timedelta64(1, "D")
for index, (churn, run) in enumerate(rollouts.items()):
    for member, rms in run.global_rms.sel(channel="u_component_of_wind@312.5").isel(init_time=0).groupby("member"):
        axes[1, 1].plot(rollout_days, rms.squeeze(), color=f"C{index}", lw=0.8, label=f"model, churn {churn:g}" if member == 0 else None)
axes[1, 1].plot((data.time - data.time[0]) / np.timedelta64(1, "D"), data_rms_u, "k", lw=0.8, alpha=0.6, label="world (data store)")
axes[1, 1].set_xlabel("days from start")
axes[1, 1].set_ylabel("area-weighted RMS [m/s]")
axes[1, 1].set_title("stability: RMS u at 312.5 hPa")
axes[1, 1].legend(fontsize=8)
plotting.savefig(fig, "sampling_climate")
jets = {
    (origin, hemisphere): diagnostics.jet_peak(zonal.u_component_of_wind.sel(level=312.5), hemisphere)
    for origin, zonal in (("model", rollout), ("data", data_zonal))
    for hemisphere in ("north", "south")
}
jet_difference = np.mean([abs(jets["model", h][0] - jets["data", h][0]) / jets["data", h][0] for h in ("north", "south")])
pd.DataFrame(jets, index=["speed [m/s]", "latitude [deg]"]).round(2)

# %% [markdown]
# ## Cost of the samplers
# NFE (model calls) per 6-hour step and measured wall time per member-step
# (members batched; everything a forecast does included) for the EDM model's
# samplers and the flow model's, at the profile's number of noise levels / steps.

# %%
SAMPLERS = [("edm", "edm"), ("edm", "dpmpp_2s"), ("flow", "flow_euler"), ("flow", "flow_heun"), ("flow", "flow_sde")]
timing_sampling = {name: dataclasses.replace(cfg.sampling, sampler=name, member_batch=study.timing_members) for _, name in SAMPLERS}
timing_initial = sampling.initial_states(data[variables], init_times[:1], cfg.dataset.history)
cost = pd.DataFrame(
    [
        {"model": obj, **sampling.sampler_cost(denoisers[obj], stats, timing_initial, timing_sampling[name], cfg.dataset, study.timing_members, study.timing_steps)}
        for obj, name in SAMPLERS
    ]
).set_index("sampler")
cost["ms_per_member_step"] = 1000 * cost["seconds_per_member_step"]
cost[["model", "n_levels", "nfe_per_step", "ms_per_member_step", "evaluations_per_s"]].round(2)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
colours = [f"C{0 if obj == 'edm' else 1}" for obj in cost["model"]]
labels = [f"{name}\n({obj} model)" for name, obj in zip(cost.index, cost["model"])]
axes[0].bar(labels, cost["nfe_per_step"], color=colours)
axes[0].set_ylabel("model evaluations (NFE) per 6-h step")
axes[1].bar(labels, cost["ms_per_member_step"], color=colours)
axes[1].set_ylabel(f"wall time per member-step [ms] ({next(denoisers['edm'].parameters()).device.type})")
for ax in axes:
    ax.tick_params(axis="x", labelsize=8)
fig.suptitle(f"{cfg.sampling.n_levels} noise levels / steps, {study.timing_members} members batched")
plotting.savefig(fig, "sampling_cost")

# %% [markdown]
# ## Numbers for the paper

# %%
final = model_ens.lead_time.values[-1]
at_final = {label: c.sel(lead_time=final) for label, c in curves.items()}
LABELS = {"edm": "Edm", "dpmpp_2s": "Dpm", "flow_euler": "FlowEuler", "flow_heun": "FlowHeun", "flow_sde": "FlowSde"}
values = {
    "samplingMembers": str(study.n_members),
    "samplingInitTimes": str(len(init_times)),
    "samplingLevels": str(cfg.sampling.n_levels),
    "samplingNfePerStep": str(model_ens.attrs["nfe_per_step"]),
    "samplingEnsembleMinutes": f"{ensemble_minutes:.1f}",
    "samplingFinalLeadDays": f"{final / np.timedelta64(1, 'D'):g}",
    "samplingSpreadModelT": f"{float(at_final['model'].spread.sel(field='temperature@562.5')):.2f}",
    "samplingSpreadOracleT": f"{float(at_final['oracle'].spread.sel(field='temperature@562.5')):.2f}",
    "samplingRmseModelT": f"{float(at_final['model'].rmse.sel(field='temperature@562.5')):.2f}",
    "samplingRmseOracleT": f"{float(at_final['oracle'].rmse.sel(field='temperature@562.5')):.2f}",
    "samplingSpreadModelU": f"{float(at_final['model'].spread.sel(field='u_component_of_wind@312.5')):.2f}",
    "samplingSpreadOracleU": f"{float(at_final['oracle'].spread.sel(field='u_component_of_wind@312.5')):.2f}",
    "samplingRmseModelU": f"{float(at_final['model'].rmse.sel(field='u_component_of_wind@312.5')):.2f}",
    "samplingRmseOracleU": f"{float(at_final['oracle'].rmse.sel(field='u_component_of_wind@312.5')):.2f}",
    "samplingHighWavenumberEnergyRatio": f"{100 * high_k['model'] / high_k['oracle']:.0f}",
    "samplingClimateDays": f"{study.climate_days:g}",
    "samplingClimateMembers": str(study.climate_members),
    "samplingClimateStableMembers": str(stable_members),
    "samplingClimateShortestDays": f"{float(stable_days.min()):g}",
    "samplingClimateLongestDays": f"{float(stable_days.max()):g}",
    "samplingClimateChurn": f"{study.climate_churn:g}",
    "samplingTendencyBiasT": f"{bias_table.loc[[c for c in stats.channel_names if c.startswith('temperature')], 'global mean [units/day]'].abs().max():.3f}",
    "samplingClimateSampler": study.climate_sampler.replace("_", r"\_"),
    "samplingClimateLevels": str(study.climate_n_levels),
    "samplingClimateNfe": str(rollout.attrs["nfe_per_step"]),
    "samplingClimateMinutes": f"{rollout.attrs['seconds'] / 60:.1f}",
    "samplingJetRelativeDifference": f"{100 * jet_difference:.0f}",
    "samplingCostDevice": next(denoisers["edm"].parameters()).device.type,
}
for (origin, hemisphere), (speed, lat) in jets.items():
    key = f"{hemisphere.title()}{'Model' if origin == 'model' else 'World'}"
    values[f"samplingJet{key}Speed"] = f"{speed:.1f}"
    values[f"samplingJet{key}Lat"] = f"{abs(lat):.1f}"
if study.climate_compare_churn is not None:
    compare_days = rollouts[study.climate_compare_churn].stable_steps * cfg.world.output_hours / 24
    values["samplingClimateCompareChurn"] = f"{study.climate_compare_churn:g}"
    values["samplingClimateCompareShortestDays"] = f"{float(compare_days.min()):g}"
    values["samplingClimateCompareLongestDays"] = f"{float(compare_days.max()):g}"
for name, row in cost.iterrows():
    values[f"samplingNfe{LABELS[name]}"] = str(row["nfe_per_step"])
    values[f"samplingMs{LABELS[name]}"] = f"{row['ms_per_member_step']:.0f}"
write_values("03_sampling", values, profile=profile)
values

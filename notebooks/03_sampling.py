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
data_source = None  # None: the profile's data; or a WeatherBench2-layout zarr path/URL (druids run --data)

# %% [markdown]
# # Chapter 3 — Sampling: ensembles, oracles, spectra, climate and cost
#
# The trained denoisers of chapter 2 become forecasters: each 6-hour step samples
# the next normalised residual with a reverse-diffusion (or flow) sampler,
# conditioned on the previous *sampled* state. Ensembles come from independent
# sampler noise per member. The Held–Suarez world lets us put every model
# ensemble beside an oracle ensemble from the same initial state — samples of the
# exact forecast distribution — and a free-running rollout beside the
# simulator's own climate. On a WeatherBench2 store (ERA5) the model ensembles, their
# scores against the verifying analysis, spectra and costs run as here; the oracle and
# the free-running climate against the world's are skipped, with a printed note.

# %%
import dataclasses
import time

import numpy as np
import pandas as pd
from IPython.display import display

from druids import calibration, plotting, runtime, sampling, training
from druids.calibration.oracle_skill import conditional_mean_step, one_step_error_by_latitude, oracle_skill
from druids.config import get_config, objective_config, with_data
from druids.data import dataset, diagnostics, predictability, source, splits
from druids.sphere import area_weights
from druids.values import write_values

plotting.set_style()
cfg = with_data(get_config(profile, seed=seed), data_source)
HELD_SUAREZ = source.is_held_suarez(cfg)  # the oracle and the world's climate exist only for it
study, levels = cfg.sampling_study, cfg.levels
configs = {obj: objective_config(cfg, obj) for obj in ("edm", "flow")}
T_MID, U_JET = (f"{name}@{level:g}" for name, level in levels.headline_fields)  # the headline fields' names
print(cfg.sampling, study, levels, sep="\n")

# %%
runs = {obj: training.load_trained(c, device=device) for obj, c in configs.items()}
denoisers = {obj: run.denoiser.to(runtime.resolve_device(device)).eval() for obj, run in runs.items()}
device_type = next(denoisers["edm"].parameters()).device.type
stats = runs["edm"].stats
data = source.open_dataset(cfg)[0]
variables = list(cfg.dataset.variables)
test_times = splits.split(data[variables], cfg.dataset, "test").time.values
init_times = test_times[predictability.init_indices(test_times.size, cfg.sampling.lead_steps, study.n_init)]
test = splits.forecast_window(data[variables], init_times, cfg.sampling.lead_steps)  # the verifying states, loaded

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
ensembles = {"model": model_ens}
if source.skip_unless_held_suarez(cfg, "oracle ensembles"):
    ensembles["oracle"] = calibration.oracle_forecast(cfg.world, init_times, study.n_members, cfg.sampling.lead_steps, cfg.seed, variables)
observed = calibration.verifying_truth(model_ens, test)
map_leads = [np.timedelta64(h, "h").astype("timedelta64[ns]") for h in study.map_leads_hours]
CMAPS = {"temperature": "RdBu_r", "u_component_of_wind": "PuOr_r"}
print(
    f"{study.n_members} members x {len(init_times)} initial time(s) x {cfg.sampling.lead_steps} steps, "
    f"{model_ens.attrs['nfe_per_step']} NFE per step: {ensemble_minutes:.1f} min on {device_type}"
)

# %% [markdown]
# ## Members, ensemble mean and spread next to the truth
# First initial time, the headline fields (`cfg.levels`: mid-level temperature,
# jet-level zonal wind). Members are sharp, weather-like states; the ensemble mean
# blurs as the members diverge, and the spread grows where the truth is
# uncertain (along the jets and storm tracks).

# %%
first, truth_first = model_ens.isel(init_time=0), observed.isel(init_time=0)
for name, level in levels.headline_fields:
    fig = plotting.ensemble_maps(
        first[name].sel(level=level, lead_time=map_leads),
        truth_first[name].sel(level=level, lead_time=map_leads),
        CMAPS[name],
        centred="wind" in name,
        title=f"{name} at {level:g} hPa, {study.n_members}-member EDM ensemble from {str(init_times[0])[:16]}",
    )
    plotting.savefig(fig, f"sampling_members_{'t' if name == 'temperature' else 'u'}")

# %% [markdown]
# ## The oracle beside the model
# Same initial state, same lead: a member, the mean and the spread of each
# ensemble (mid-level temperature).

# %%
lead = map_leads[min(1, len(map_leads) - 1)]
name, level = levels.headline_fields[0]
if source.skip_unless_held_suarez(cfg, "the oracle maps"):
    fields = {label: ens[name].isel(init_time=0).sel(level=level, lead_time=lead) for label, ens in ensembles.items()}
    fig = plotting.ensemble_comparison_maps(fields, truth_first[name].sel(level=level, lead_time=lead), CMAPS[name], spread_reference="oracle")
    plotting.savefig(fig, "sampling_oracle_maps")

# %% [markdown]
# ## Spread and error against lead time
# Spread (root of the area-mean unbiased ensemble variance) and RMSE of the
# ensemble mean against the truth, for the model and the oracle. The oracle's
# spread is the *correct* spread for these initial states; for a reliable
# ensemble the RMSE of the mean matches the spread (up to sqrt((M+1)/M) and
# sampling noise of a few initial times).

# %%
curves = {label: calibration.spread_skill(ens, test, levels.headline_fields) for label, ens in ensembles.items()}
plotting.savefig(plotting.spread_skill_curves(curves), "sampling_spread_skill")

# %% [markdown]
# ## Against the best possible forecast
# The oracle's ensemble mean is the best forecast any model can make from these
# initial states, so the model's skill is measured against it
# (`druids.calibration.oracle_skill`): its ensemble-mean RMSE over the oracle's (same
# initial times, same member count; 1 is as good as possible) and its spread over the
# oracle's (1: as wide as the exact forecast distribution), by lead; and the one-step
# error of its conditional mean (the denoiser at its largest noise level, one 6-h
# step) over the oracle's one-step spread, by latitude.

# %%
if source.skip_unless_held_suarez(cfg, "the skill against the oracle"):
    skill = oracle_skill(model_ens, ensembles["oracle"], test, levels.headline_fields)
    conditional_mean = conditional_mean_step(denoisers["edm"], stats, sampling.initial_states(data[variables], init_times, cfg.dataset.history), cfg)
    one_step = one_step_error_by_latitude(conditional_mean, ensembles["oracle"], test, levels.headline_fields)
    plotting.savefig(plotting.oracle_skill_curves(skill, one_step), "sampling_oracle_skill")
    display(skill[["ratio", "spread_ratio"]].to_dataframe().unstack("field").round(2))

# %% [markdown]
# ## Does sampling blur or add noise? Kinetic-energy spectra
# Kinetic energy by zonal wavenumber at the jet level (`cfg.levels.upper`): the mean
# of the members' spectra (shading: their range) for the model and the oracle, and
# the truth's. A sampler that blurs loses energy at high wavenumbers; one that adds
# noise gains it there.

# %%
SYNOPTIC_WAVENUMBER = 8  # zonal wavenumbers >= 8: synoptic and smaller scales
spectra = {
    label: diagnostics.level_kinetic_energy_spectrum(ens.sel(lead_time=map_leads), levels.upper, cfg.dataset.spectral_truncation)
    for label, ens in ensembles.items()
}
truth_spectrum = diagnostics.level_kinetic_energy_spectrum(observed.sel(lead_time=map_leads), levels.upper, cfg.dataset.spectral_truncation)
plotting.savefig(plotting.ensemble_spectra(spectra, truth_spectrum, title=f"{levels.upper:g} hPa"), "sampling_spectra")
# energy at the synoptic and smaller scales at the last map lead, mean over initial times and members, m2 s-2
high_k = {
    label: float(diagnostics.energy_from_wavenumber(spectrum.sel(lead_time=map_leads[-1]), SYNOPTIC_WAVENUMBER).mean())
    for label, spectrum in spectra.items()
}
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
# (The world only: on a store this section and the next two cells are skipped.)

# %%
if source.skip_unless_held_suarez(cfg, "free-running rollouts against the world's climate (this cell and the next two)"):
    train_set = dataset.ForecastDataset(data, stats, "train", cfg.dataset)
    bias = training.tendency_bias(denoisers["edm"], train_set)
    bias_table = training.tendency_bias_per_day(bias, stats, cfg.world.output_hours)
    display(bias_table.round(3))

# %% [markdown]
# GenCast's sampler re-noises the state within each denoising step (churn,
# `SamplingConfig.s_churn`); the same members run with `climate_churn`, whose climate
# the figure shows, and again with `climate_compare_churn` (GenCast's 2.5). Without
# churn each step solves the probability-flow ODE from fresh noise: still a sample
# of the next state, with less noise injected per step.

# %%
if HELD_SUAREZ:
    climate_initial = sampling.initial_states(data[variables], init_times[:1], cfg.dataset.history)
    rollouts = sampling.climate_runs(denoisers["edm"], stats, climate_initial, cfg.sampling, study, cfg.dataset, cfg.seed, residual_bias=bias)
    rollout = rollouts[study.climate_churn]
    stable_days = sampling.stable_days(rollout).isel(init_time=0)
    stable_members = int((rollout.stable_steps == rollout.attrs["n_steps"]).sum())
    print(f"stable days per member of {study.climate_days:g}, {rollout.attrs['nfe_per_step']} NFE per step (last row: wall time):")
    display(sampling.stable_days_table(rollouts).round(2))

# %% [markdown]
# The model's zonal-mean climate (the `climate_churn` run) against the world's: the
# zonal-mean wind section, jet-level wind and low-level temperature against
# latitude, and the jet-level wind's RMS of every member of every run, which shows
# when a member left the world.

# %%
if HELD_SUAREZ:
    data_zonal = data[["u_component_of_wind", "temperature"]].mean(["time", "longitude"], keep_attrs=True).load()
    data_rms_u = np.sqrt(diagnostics.global_mean(data.u_component_of_wind.sel(level=levels.upper) ** 2)).load()
    rms_u = {f"model, churn {churn:g}": run.global_rms.sel(channel=U_JET).isel(init_time=0) for churn, run in rollouts.items()}
    fig = plotting.climate_figure(
        rollout,
        data_zonal,
        profiles=[("u_component_of_wind", levels.upper), ("temperature", levels.lower)],
        rms_runs=rms_u,
        world_rms=data_rms_u,
        rms_field=("u_component_of_wind", levels.upper),
        model_label=f"model, churn {study.climate_churn:g}, {study.climate_members} member(s), {float(stable_days.sum()):g} days",
    )
    plotting.savefig(fig, "sampling_climate")
    jets = diagnostics.compare_jets(rollout.u_component_of_wind.sel(level=levels.upper), data_zonal.u_component_of_wind.sel(level=levels.upper))
    display(jets.round(2))

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
fig = plotting.sampler_cost_bars(cost, device_type, title=f"{cfg.sampling.n_levels} noise levels / steps, {study.timing_members} members batched")
plotting.savefig(fig, "sampling_cost")

# %% [markdown]
# ## Numbers for the paper
# The ensembles: spread and ensemble-mean RMSE of the headline fields at the last lead.

# %%
final = model_ens.lead_time.values[-1]
values = {
    "samplingMembers": str(study.n_members),
    "samplingInitTimes": str(len(init_times)),
    "samplingLevels": str(cfg.sampling.n_levels),
    "samplingNfePerStep": str(model_ens.attrs["nfe_per_step"]),
    "samplingEnsembleMinutes": f"{ensemble_minutes:.1f}",
    "samplingFinalLeadDays": f"{final / np.timedelta64(1, 'D'):g}",
}
if HELD_SUAREZ:
    values["samplingHighWavenumberEnergyRatio"] = f"{100 * high_k['model'] / high_k['oracle']:.0f}"
    oracle_leads = {"Six": np.timedelta64(6, "h"), "TwentyFour": np.timedelta64(24, "h"), "Final": final}
    for field, suffix in ((T_MID, "T"), (U_JET, "U")):
        for word, at in oracle_leads.items():
            values[f"samplingOracleRatio{word}{suffix}"] = f"{float(skill.ratio.sel(field=field, lead_time=at)):.2f}"
            values[f"samplingOracleSpreadRatio{word}{suffix}"] = f"{float(skill.spread_ratio.sel(field=field, lead_time=at)):.2f}"
        values[f"samplingOneStepRatio{suffix}"] = f"{float(one_step.ratio.sel(field=field).weighted(area_weights(one_step.latitude)).mean()):.2f}"
for label, c in curves.items():
    for score in ("spread", "rmse"):
        for field, suffix in ((T_MID, "T"), (U_JET, "U")):
            values[f"sampling{score.title()}{label.title()}{suffix}"] = f"{float(c[score].sel(field=field, lead_time=final)):.2f}"

# %% [markdown]
# The free runs and the jets (the world only).

# %%
if HELD_SUAREZ:
    temperature_channels = [c for c in stats.channel_names if c.startswith("temperature")]
    values |= {
        "samplingClimateDays": f"{study.climate_days:g}",
        "samplingClimateMembers": str(study.climate_members),
        "samplingClimateStableMembers": str(stable_members),
        "samplingClimateShortestDays": f"{float(stable_days.min()):g}",
        "samplingClimateLongestDays": f"{float(stable_days.max()):g}",
        "samplingClimateChurn": f"{study.climate_churn:g}",
        "samplingTendencyBiasT": f"{bias_table.loc[temperature_channels, 'global mean [units/day]'].abs().max():.3f}",
        "samplingClimateSampler": study.climate_sampler.replace("_", r"\_"),
        "samplingClimateLevels": str(study.climate_n_levels),
        "samplingClimateNfe": str(rollout.attrs["nfe_per_step"]),
        "samplingClimateMinutes": f"{rollout.attrs['seconds'] / 60:.1f}",
        "samplingJetRelativeDifference": f"{100 * jets['relative_speed_difference'].mean():.0f}",
    }
    for hemisphere, jet in jets.iterrows():
        for origin in ("model", "world"):
            values[f"samplingJet{hemisphere.title()}{origin.title()}Speed"] = f"{jet[f'{origin}_speed']:.1f}"
            values[f"samplingJet{hemisphere.title()}{origin.title()}Lat"] = f"{abs(jet[f'{origin}_latitude']):.1f}"
    if study.climate_compare_churn is not None:
        compare_days = sampling.stable_days(rollouts[study.climate_compare_churn])
        values["samplingClimateCompareChurn"] = f"{study.climate_compare_churn:g}"
        values["samplingClimateCompareShortestDays"] = f"{float(compare_days.min()):g}"
        values["samplingClimateCompareLongestDays"] = f"{float(compare_days.max()):g}"

# %% [markdown]
# The samplers' cost; then all numbers go to `paper/values/03_sampling.tex`.

# %%
LABELS = {"edm": "Edm", "dpmpp_2s": "Dpm", "flow_euler": "FlowEuler", "flow_heun": "FlowHeun", "flow_sde": "FlowSde"}
values["samplingCostDevice"] = device_type
for name, row in cost.iterrows():
    values[f"samplingNfe{LABELS[name]}"] = str(row["nfe_per_step"])
    values[f"samplingMs{LABELS[name]}"] = f"{row['ms_per_member_step']:.0f}"
write_values("03_sampling", values, profile=profile)
values

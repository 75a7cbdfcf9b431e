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
profile = "default"
seed = 0

# %% [markdown]
# # Study: do chapter 03's free runs depend on the process layout?
#
# Chapter 03 runs its two free runs (churn 0 and 2.5, two members each) side by side
# in one-thread processes (`runtime.process_map`); before, they ran one after the
# other in the notebook's process with two threads. Same model, initial state, noise
# streams and sampler: the two layouts differ only in the order of floating-point
# sums inside the network (one thread or two). This study runs both layouts and
# compares how long the members stay stable and the jets of the churn-0 run's climate
# (`diagnostics.compare_jets`, as the chapter does): a difference here is the free
# runs' sensitivity to rounding, the noise of those numbers, not a change of the model.
# Run on demand:
#
#     make study STUDY=free_run_layout
#
# About 8 minutes on 2 cores; the profile's models are trained first if missing.

# %%
import pandas as pd

from druids import sampling, training
from druids.config import get_config, objective_config
from druids.data import dataset, diagnostics, predictability, source, splits

cfg = get_config(profile, seed=seed)
run = training.load_trained(objective_config(cfg, "edm"))
data = source.open_dataset(cfg)[0]
variables = list(cfg.dataset.variables)
test_times = splits.split(data[variables], cfg.dataset, "test").time.values
init_times = test_times[predictability.init_indices(test_times.size, cfg.sampling.lead_steps, cfg.sampling_study.n_init)]
initial = sampling.initial_states(data[variables], init_times[:1], cfg.dataset.history)
bias = training.tendency_bias(run.denoiser, dataset.ForecastDataset(data, run.stats, "train", cfg.dataset))
upper = cfg.levels.upper
data_jet = data.u_component_of_wind.sel(level=upper).mean(["time", "longitude"]).load()

# %%
rows = []
for layout, processes in (("one process, two threads (before)", 1), ("side by side, one thread each (chapter 03 now)", None)):
    rollouts = sampling.climate_runs(run.denoiser, run.stats, initial, cfg.sampling, cfg.sampling_study, cfg.dataset, cfg.seed, residual_bias=bias, processes=processes)
    days = sampling.stable_days_table(rollouts).drop(index="minutes")
    jets = diagnostics.compare_jets(rollouts[cfg.sampling_study.climate_churn].u_component_of_wind.sel(level=upper), data_jet)
    rows.append({"layout": layout, **{f"days {c} member {m}": v for (_, m), r in days.iterrows() for c, v in r.items()},
                 "jet relative speed difference %": 100 * jets["relative_speed_difference"].mean()})  # fmt: skip
pd.DataFrame(rows).set_index("layout").T.round(2)

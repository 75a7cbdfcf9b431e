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
learning_rates = "1e-4,3e-4,1e-3"  # one fine-tuning per learning rate
steps = 100  # AdamW steps of each fine-tuning
n_init = 8  # validation initial times of the ensembles
lead_steps = 4  # 6-h steps: 6 h to 24 h

# %% [markdown]
# # Study: fine-tuning the denoiser on the almost-fair CRPS of its own sampled members
#
# Issue "Calibration chapter", in-model improvement. The `default` EDM model is
# fine-tuned (`druids.calibration.finetune`, Lang et al. 2024's afCRPS with alpha = 0.95,
# two members per training state, gradients through every step of the sampler) for
# `steps` steps at each learning rate, and its ensembles are scored on the
# **validation** split against the truth and against the oracle from the same states
# (`calibration.tables.summary`: fair CRPS and spread-skill ratio pooled over leads,
# rank-histogram convexity, energy distance to the oracle), with the model before
# fine-tuning and the oracle beside. Chapter 05 shows the smallest learning rate (for
# half the steps, to keep its budget) on the test split. Run on demand:
#
#     make study STUDY=afcrps_finetune
#
# Fine-tuned models are cached by configuration (`.cache/finetuned/`), so a rerun only
# computes what changed.

# %%
import time

import pandas as pd

from druids import training
from druids.calibration import experiments, finetune, tables
from druids.config import get_config, updated
from druids.data import source

cfg = get_config(profile, seed=seed)
FIELDS = cfg.levels.headline_fields
run = training.load_trained(cfg)
data = source.open_dataset(cfg)[0]
val_times = experiments.split_init_times(data, cfg, "val", n_init, lead_steps)
base = experiments.model_and_oracle(run.denoiser, run.stats, data, cfg, val_times, lead_steps)
before, oracle_ens, truth = base.fields(FIELDS)
print(f"{len(val_times)} validation initial times, {cfg.calibration.n_members} members, {lead_steps} steps")

# %%
ensembles, histories, minutes = {"before": before, "oracle": oracle_ens}, {}, {}
for lr in (float(x) for x in str(learning_rates).split(",")):  # papermill passes one rate as a float
    tuned_cfg = updated(cfg, calibration={"finetune_lr": lr, "finetune_steps": steps})
    start = time.perf_counter()
    tuned = finetune.finetune(run, data, tuned_cfg)
    minutes[f"lr {lr:g}"] = (time.perf_counter() - start) / 60
    histories[f"lr {lr:g}"] = tuned.history.set_index("step").afcrps
    ensembles[f"lr {lr:g}"] = experiments.model_and_oracle(tuned.denoiser, run.stats, data, cfg, val_times, lead_steps, with_oracle=False).fields(FIELDS)[0]
print({k: f"{v:.1f} min" for k, v in minutes.items()}, "(0: cached)")

# %%
table = pd.concat({label: tables.summary(ens, truth, None if label == "oracle" else oracle_ens, n_boot=200) for label, ens in ensembles.items()}, names=["variant"])
table = table.reset_index(level=0).set_index(["field", "variant"]).sort_index()
table[["crps_fair", "ssr", "ssr_lower", "ssr_upper", "convexity", "energy_distance"]].round(3)

# %% [markdown]
# The training loss along the fine-tuning (a running mean over 10 steps; normalised
# residual units, latitude-weighted), one line per learning rate.

# %%
ax = pd.DataFrame(histories).rolling(10, min_periods=1).mean().plot(figsize=(7, 3.5))
ax.set(xlabel="fine-tuning step", ylabel="afCRPS (running mean of 10)", title="afCRPS fine-tuning on the training split")
ax.figure

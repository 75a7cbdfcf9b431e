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
members = "1,2,16"  # members per initial time; the forecasts below run from 2 initial times
n_steps = 4  # timed 6-h steps (after one untimed warm-up step that also compiles)

# %% [markdown]
# # Study: does the fast sampling path pay at every batch size?
#
# The `default` profile samples with `SamplingConfig` compile + bf16 + channels-last
# (`docs/decisions.md`, "speed-defaults-3"). Chapter 03's ensembles put 32 samples
# through the network at once (16 members x 2 initial times); its free runs and the
# lever studies' free runs put 1 or 2. This study times a forecast step
# (`druids.sampling.sampler_cost`: everything a forecast does, after a warm-up step)
# eagerly in fp32 and on the fast path for several batch sizes, with the profile's
# sampler, and the warm-up step too (on the fast path it compiles the new batch shape).
# Run on demand:
#
#     make study STUDY=sampling_batch
#
# A few minutes on 2 cores; the profile's fp32 EDM model is trained first if missing.

# %%
import dataclasses

import pandas as pd

from druids import sampling
from druids.config import get_config, updated
from druids.data import predictability, source, splits
from druids.training import load_trained

FAST = {"compile": True, "bf16": True, "channels_last": True}
cfg = updated(get_config(profile, seed=seed), training={k: False for k in FAST})
run = load_trained(cfg)
data = source.open_dataset(cfg)[0]
variables = list(cfg.dataset.variables)
val_times = splits.split(data[variables], cfg.dataset, "val").time.values
init_times = val_times[predictability.init_indices(val_times.size, n_steps + 1, 2)]
initial = sampling.initial_states(data[variables], init_times, cfg.dataset.history)

rows = []
for name, options in (("eager fp32", {k: False for k in FAST}), ("compile + bf16 + CL", FAST)):
    for m in (int(x) for x in members.split(",")):
        sampling_cfg = dataclasses.replace(cfg.sampling, member_batch=m, **options)
        cost = sampling.sampler_cost(run.denoiser, run.stats, initial, sampling_cfg, cfg.dataset, m, n_steps, seed)
        batch = m * len(init_times)
        rows.append({"path": name, "batch": batch, "seconds per step": cost["seconds_per_member_step"] * batch,
                     "member-steps/s": cost["member_steps_per_s"], "warm-up step, s": cost["warmup_seconds"]})  # fmt: skip
table = pd.DataFrame(rows).set_index(["batch", "path"]).sort_index()
table.round(3)

# %% [markdown]
# The fast path's speed-up by batch size (steady state, per member-step):

# %%
speed = table["member-steps/s"].unstack("path")
(speed["compile + bf16 + CL"] / speed["eager fp32"]).round(2).rename("fast / eager")

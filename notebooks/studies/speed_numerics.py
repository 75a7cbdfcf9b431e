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
n_init = 8  # validation initial times of the sampling comparison
n_members = 8
lead_steps = 4  # 6-h steps: 6 h to 24 h

# %% [markdown]
# # Study: the numerics guard of the speed options
#
# Issue "Fast on a laptop": bf16 (with `torch.compile` and channels-last, the CPU's
# fast path, `bench/training.py`) may become a default only where the default model's
# final validation loss stays within 2 % of fp32 and the chapters' skill numbers do
# not get worse. Two comparisons, each against the eager fp32 configuration:
#
# 1. **Training**: the `default` profile's EDM model trained in fp32 (training seeds
#    `seed` and `seed + 1` on the same data: how far two fp32 runs differ by their
#    noise alone), with compile + bf16 + channels-last and with compile alone in fp32
#    (seeds `seed` and `seed + 1`: does the gap come from bf16 or from the compiled graph?); the last
#    validation's MSE per noise level and the 6-h RMSE of the skill validator, from the
#    runs' metrics logs. For scale, a fourth run on another realisation of the world
#    (`druids train --seed 1`: world and training seed; its validation split holds other
#    states, so its numbers also carry the split's own difficulty).
# 2. **Sampling**: one trained model (fp32 seed `seed`), sampled eagerly in fp32 and
#    with `SamplingConfig` compile + bf16 + channels-last; ensemble-mean RMSE over the
#    oracle's and spread-skill ratios on the validation split
#    (`druids.calibration.levers.trained_skill`).
#
# Runs that are missing are trained (about 20 min fp32, 12-16 min compiled on 2 cores); run on
# demand with `make study STUDY=speed_numerics`. The decision is in `docs/decisions.md`.

# %%
import dataclasses

import pandas as pd

from druids.calibration.levers import last_validation, trained_skill
from druids.config import get_config, updated

FAST = {"compile": True, "bf16": True, "channels_last": True}
fp32 = get_config(profile, seed=seed)
fp32 = updated(fp32, training={k: False for k in FAST}, sampling={k: False for k in FAST})
compiled = updated(fp32, training={"compile": True})
other_world = updated(get_config(profile, seed=seed + 1), training={k: False for k in FAST})  # world and training seed
trainings = {
    "fp32": fp32,
    f"fp32, training seed {seed + 1}": dataclasses.replace(fp32, seed=seed + 1),
    "compile + bf16 + CL": updated(fp32, training=FAST),
    "compile (fp32)": compiled,
    f"compile (fp32), training seed {seed + 1}": dataclasses.replace(compiled, seed=seed + 1),
    f"fp32, world and training seed {seed + 1}": other_world,
}
losses = pd.DataFrame({name: last_validation(cfg) for name, cfg in trainings.items()})
mse_rows = [r for r in losses.index if r.startswith("val MSE")]
losses.loc["val MSE, mean over sigma"] = losses.loc[mse_rows].mean()
# against the mean of the two fp32 runs on the same data: the fp32 seeds lie on either side of it
reference = losses[list(trainings)[:2]].mean(axis=1)
print("% against the mean of the two same-data fp32 runs (the guard asks for at most 2 % against fp32):")
losses.sub(reference, axis=0).div(reference, axis=0).mul(100).round(2)


# %% [markdown]
# Sampling the same fp32-trained model eagerly in fp32 and on the fast path (ratios
# against the oracle: lower is better; spread-skill: 1 is calibrated).

# %%
samplers = {"eager fp32": fp32, "compile + bf16 + CL": updated(fp32, sampling=FAST)}
skill = pd.DataFrame({name: trained_skill(cfg, "val", n_init, n_members, lead_steps) for name, cfg in samplers.items()})
skill.loc[[r for r in skill.index if r.startswith(("ratio_", "model_ssr_", "one_step"))]].round(3)

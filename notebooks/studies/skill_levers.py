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
steps = 1000  # training steps of every variant (the screening budget)
n_init = 8  # validation initial times
n_members = 8  # members of the model and of the oracle ensembles
lead_steps = 4  # 6-h steps: 6 h to 24 h
variants = "all"  # or a comma-separated list of the names below

# %% [markdown]
# # Study: which levers bring the model towards the world's predictability limit?
#
# Issue "A model worth explaining". Every variant is the `default` profile with one
# change, trained for the same number of steps (`steps`, a screening budget shorter
# than the profile's own) and scored on the **validation** split against the
# Held–Suarez oracle (`druids.calibration.oracle_skill`): the ensemble-mean RMSE of
# the model over the oracle's from the same initial times, at 6 h and 24 h, for
# mid-level temperature and jet-level wind (1 = as good as possible), the one-step
# conditional-mean error over the oracle's one-step spread (area-weighted mean over
# latitude), and the validation MSE at the largest noise level. Run on demand:
#
#     .venv/bin/papermill notebooks/studies/skill_levers.py build/studies/skill_levers.ipynb
#
# (jupytext converts the py:percent file; `druids run` does not run studies). Results
# and the trained runs are cached by configuration, so a rerun only trains what changed.
# The decisions taken from it are in `docs/decisions.md`.

# %%
import dataclasses

import matplotlib.pyplot as plt
import pandas as pd

from druids import plotting
from druids.calibration.levers import trained_skill
from druids.config import get_config, updated

plotting.set_style()

# %%
base = updated(get_config(profile, seed=seed), training={"n_steps": steps, "flow_n_steps": None})
VARIANTS = {
    "baseline": {},
    "2 years of data": {"world": {"n_days": 2 * 365.0}},
    "4 years of data": {"world": {"n_days": 4 * 365.0}},
    "2x steps": {"training": {"n_steps": 2 * steps}},
    "width 48": {"model": {"base_channels": 48}},
    "3 blocks per level": {"model": {"blocks_per_level": 3}},
    "4 levels": {"model": {"channel_mults": (1, 2, 2, 4)}},
    "zonal mixing (8 wavenumbers)": {"model": {"zonal_mixing": 8}},
    "history 2": {"dataset": {"history": 2}},
    "sigma range to 400": {"model": {"sigma_max": 400.0}},
    "training sigmas rho 3": {"model": {"rho": 3.0}},  # more training at large noise (median sigma 13 instead of 4.4)
    "lr 1e-3": {"training": {"lr": 1e-3}},
    "no lr decay": {"training": {"final_lr_fraction": 1.0}},
    "EMA 0.999": {"training": {"ema_decay": 0.999}},
}
SEEDS = {"seed 1": seed + 1}  # the baseline again with another training seed (same data): the noise of a comparison
chosen = [*VARIANTS, *SEEDS] if variants == "all" else [name.strip() for name in variants.split(",")]
configs = {name: updated(base, **VARIANTS[name]) if name in VARIANTS else dataclasses.replace(base, seed=SEEDS[name]) for name in chosen}
print(f"{len(configs)} variants, {steps} steps each")

# %%
rows = {name: trained_skill(cfg, "val", n_init, n_members, lead_steps) for name, cfg in configs.items()}
table = pd.DataFrame(rows).T
table.round(3)

# %% [markdown]
# The 6-h and 24-h ratios for the headline fields (left; lower is better, 1 is the oracle) and
# the ensemble spread over the oracle's (right; 1: as wide as the exact forecast distribution).

# %%
def columns(prefix: str) -> list[str]:
    return [c for c in table.columns if c.startswith(prefix) and (c.endswith("_6h") or c.endswith("_24h"))]


fig, axes = plt.subplots(1, 2, figsize=(15, 4.5))
for ax, prefix, label in ((axes[0], "ratio_", "model / oracle ensemble-mean RMSE"), (axes[1], "spread_ratio_", "model / oracle spread")):
    table[columns(prefix)].plot.bar(ax=ax, legend=bool(ax is axes[0]))
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_ylabel(label)
    ax.tick_params(axis="x", labelrotation=60)
fig.suptitle(f"validation split, {n_init} initial times x {n_members} members, {steps} training steps")
fig

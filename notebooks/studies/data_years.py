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
years = "1,2,4"  # simulated years of the world's data store, one trained model each
n_init = 8  # validation initial times of the ensembles
n_members = 8  # members of the model and of the oracle ensembles
lead_steps = 16  # 6-h steps: 6 h to 4 days
free_run_days = 90.0  # length of the free runs (chapter 03 runs a year; 90 days keep the study under an hour)
free_run_members = 2

# %% [markdown]
# # Study: what do more years of training data do to loss, spread-skill and free runs?
#
# Issue "Calibration chapter", error sources: the default world holds one simulated
# year (about 1,000 training states, each seen about 23 times in 3,000 steps of
# batch 8), while another year costs minutes to simulate. Each variant is the
# profile's model, trained for the profile's full budget on a world of `years`
# simulated years (the splits keep their fractions, so the validation and test
# splits grow too), and is measured on the **validation** split:
# the validation MSE at the largest noise level (on each world's own validation split,
# so it also carries the split's difficulty), the ensemble-mean RMSE over the
# oracle's (`druids.calibration.oracle_skill`), each ensemble's spread-skill ratio
# (GenCast's convention, 1 = calibrated; the oracle's own beside it says how far
# the finite sample is from 1), and how many days free-running members stay in the
# world's range (chapter 03's free run: tendency bias of the training split
# subtracted, mass held). Run on demand:
#
#     make study STUDY=data_years
#
# Trained runs and results are cached by configuration, so a rerun only computes what
# changed. The decision taken from it is in `docs/decisions.md` ("Training data length").

# %%
import matplotlib.pyplot as plt
import pandas as pd

from druids import plotting
from druids.calibration.levers import trained_free_run, trained_skill
from druids.config import get_config, updated

plotting.set_style()
base = get_config(profile, seed=seed)
configs = {float(y): updated(base, world={"n_days": float(y) * base.world.n_days}) for y in years.split(",")}
print(f"{len(configs)} variants: {', '.join(f'{y:g} x {base.world.n_days:g} days' for y in configs)}, {base.training.n_steps} steps each")

# %%
rows = {}
for y, cfg in configs.items():
    row = trained_skill(cfg, "val", n_init, n_members, lead_steps)
    free = trained_free_run(cfg, "val", free_run_days, free_run_members)
    rows[y] = {**row, "free_run_min_days": min(free["stable_days"]), "free_run_members_stable": free["all_stable"], "free_run_minutes": free["minutes"]}
table = pd.DataFrame(rows).T.rename_axis("years")
FIELDS = ("temperature@562.5", "u_component_of_wind@312.5")
leads = sorted({c.rsplit("_", 1)[1] for c in table.columns if c.startswith("ratio_")}, key=lambda h: float(h.rstrip("h")))
shown = ["val_mse_sigma_max", *[f"{k}_{f}_{h}" for k in ("ratio", "model_ssr") for f in FIELDS for h in dict.fromkeys([leads[0], "24h", leads[-1]]) if h in leads]]
table[[*shown, "free_run_min_days", "free_run_members_stable"]].round(3)

# %% [markdown]
# Left: the ensemble-mean RMSE over the oracle's by lead; middle: the model's
# spread-skill ratio (solid) and the oracle's (dashed) by lead; right: the validation
# loss and the shortest free run against the years of data.

# %%
def by_lead(prefix: str, field: str) -> pd.DataFrame:
    """Columns ``<prefix>_<field>_<h>h`` as a (years, lead in hours) frame."""
    cols = [c for c in table.columns if c.startswith(f"{prefix}_{field}_")]
    return table[cols].rename(columns=lambda c: float(c.rsplit("_", 1)[1].rstrip("h")))


fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
for field, style in zip(FIELDS, ("-", "--"), strict=True):
    for y, series in by_lead("ratio", field).iterrows():
        axes[0].plot(series.index, series.values, style, marker="o", label=f"{field}, {y:g} y")
    for y, series in by_lead("model_ssr", field).iterrows():
        axes[1].plot(series.index, series.values, style, marker="o", label=f"model, {field}, {y:g} y")
    axes[1].plot(*zip(*by_lead("oracle_ssr", field).iloc[0].items()), style, color="k", lw=0.8, label=f"oracle, {field}")
axes[0].set(xlabel="lead [h]", ylabel="model / oracle ensemble-mean RMSE", title="skill against the oracle")
axes[1].axhline(1.0, color="grey", lw=0.8)
axes[1].set(xlabel="lead [h]", ylabel="spread-skill ratio", title="dispersion")
axes[0].legend(fontsize=7)
axes[1].legend(fontsize=7)
twin = axes[2].twinx()
axes[2].plot(table.index, table.val_mse_sigma_max, "o-", color="C0")
twin.plot(table.index, table.free_run_min_days, "s--", color="C3")
axes[2].set(xlabel="simulated years of data", ylabel="validation MSE at sigma_max (normalised)", title="loss and free runs")
twin.set_ylabel(f"shortest of {free_run_members} free runs [days, at most {free_run_days:g}]", color="C3")
fig.suptitle(f"{profile} profile, validation split, {n_init} initial times x {n_members} members")

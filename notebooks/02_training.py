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
# # Chapter 2 — Training a bias-free conditional denoiser: EDM and flow matching
#
# One U-Net, two objectives: EDM preconditioning with GenCast's noise levels
# (Karras et al. 2022; Price et al. 2025) and rectified flow (Liu et al. 2023), both
# predicting the normalised 6-hour residual of the Held–Suarez world from the current
# state. The network is bias-free (Mohan et al. 2020), so the denoiser is homogeneous
# of degree one in (noisy target, condition) — the property chapter 4 relies on.
# The world is a T21 spectral model, so its states hold no spherical harmonic beyond
# total wavenumber 21 (`DatasetConfig.spectral_truncation`). The diffusion noise is
# therefore isotropic on the sphere and band-limited to T21 (GenCast also diffuses with
# isotropic noise on the sphere) rather than white on the grid: noisy targets stay in
# the space of the world's states.
# During training the condition's state also gets noise of
# `TrainingConfig.condition_noise` residual standard deviations, projected onto the same
# spherical harmonics, and the target is the residual from that noisy state
# (Sanchez-Gonzalez et al. 2020): the model learns to undo small errors in its input,
# which chapter 3's long rollouts need.
# On a WeatherBench2 store (ERA5) the same models learn its 6-hour residuals; ERA5 is
# not band-limited on a Gaussian grid, so its noise stays white on the grid.
# Trained runs are cached by configuration; re-running the chapter loads them.

# %%
import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import torch

from druids import calibration, models, plotting, training
from druids.config import get_config, objective_config, with_data
from druids.data import dataset, source
from druids.values import write_values

plotting.set_style()
cfg = with_data(get_config(profile, seed=seed), data_source)
configs = {obj: objective_config(cfg, obj) for obj in ("edm", "flow")}
T_MID, U_JET = (f"{name}@{level:g}" for name, level in cfg.levels.headline_fields)  # the headline fields' names
print(cfg.model, cfg.training, sep="\n")

# %%
# trains if not cached, on a multi-core CPU in several processes (training.auto_processes);
# every validation step also logs the 6-h skill of a quick ensemble
runs = {
    obj: training.load_trained(c, device=device, validators=[calibration.SkillValidator(c)], processes=training.auto_processes(c, device))
    for obj, c in configs.items()
}
denoisers = {obj: run.denoiser.cpu().eval() for obj, run in runs.items()}
stats = runs["edm"].stats
metrics = {obj: run.metrics for obj, run in runs.items()}

# %% [markdown]
# ## Loss curves
# The two objectives' training losses are on different scales (EDM's weighted
# denoising loss, flow matching's velocity MSE); both are area-weighted.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ax, (obj, frame) in zip(axes, metrics.items()):
    train_rows = frame[frame["kind"] == "train"]
    ax.plot(train_rows["step"], train_rows["loss"], lw=0.5, alpha=0.4, label="per step")
    ax.plot(train_rows["step"], train_rows["loss"].rolling(50, min_periods=1).mean(), label="50-step mean")
    ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_title(f"{obj} training loss")
    ax.set_ylabel("area-weighted loss [normalised units]")
    ax.legend()
plotting.savefig(fig, "training_loss_curves")

# %% [markdown]
# ## Denoising error by noise level
# Validation MSE of the EMA denoiser at fixed noise levels (same convention for both
# objectives: estimate of the clean residual, normalised units). At large sigma the
# best estimate is the conditional mean, so the error is the residual variance the
# condition cannot explain.

# %%
fig, ax = plt.subplots(figsize=(5.5, 4))
for obj, frame in metrics.items():
    val = frame[frame["kind"] == "val"]
    last = val[val["step"] == val["step"].max()]
    ax.loglog(last["sigma"], last["val_mse"], "o-", label=f"{obj} (step {int(last['step'].max())})")
ax.set_xlabel("noise level sigma")
ax.set_ylabel("validation MSE [normalised units]")
ax.legend()
plotting.savefig(fig, "training_loss_by_sigma")

# %% [markdown]
# ## Denoised examples
# One validation sample, mid-level temperature residual channel: noisy input,
# EDM denoiser estimate, and the truth, at three noise levels.

# %%
data = source.open_dataset(cfg)[0]
val_set = dataset.ForecastDataset(data, stats, "val", cfg.dataset)
condition, target = val_set[len(val_set) // 2]
channel = val_set.channel_names.index(T_MID)
sigmas = [0.3, 1.0, 4.0]
noisy, denoised = models.denoise_at_levels(denoisers["edm"], target, condition, sigmas, torch.Generator().manual_seed(seed))
fig, axes = plt.subplots(len(sigmas), 3, figsize=(11, 2.4 * len(sigmas)), sharex=True, sharey=True)
for row, sigma in enumerate(sigmas):
    panels = (noisy[row, channel], denoised[row, channel], target[channel])
    for col, (field, title) in enumerate(zip(panels, ("noisy input", "EDM estimate", "truth"))):
        image = axes[row, col].imshow(field.numpy(), origin="lower", cmap="RdBu_r", vmin=-3, vmax=3, extent=(0, 360, -90, 90))
        axes[row, col].set_title(f"{title}, sigma = {sigma}")
fig.colorbar(image, ax=axes, shrink=0.6, label=f"normalised T residual at {cfg.levels.middle:g} hPa")
plotting.savefig(fig, "training_denoised_examples")

# %% [markdown]
# ## Homogeneity of the bias-free denoiser
# D(a y, a c; sigma) = a D(y, c; sigma) for the trained bias-free networks, to float
# rounding; an ordinary network of the same architecture (with biases) is not homogeneous.

# %%
scales = np.geomspace(0.1, 10, 12)  # a = 1 excluded: trivially exact
y = (target + 1.0 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1)))[None]
sigma = torch.tensor([1.0])
biased = training.build_model(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, bias_free=False, activation="silu")), stats).eval()
homogeneity = {
    "EDM, bias-free (trained)": models.homogeneity_error(denoisers["edm"], y, condition[None], sigma, scales),
    "flow, bias-free (trained)": models.homogeneity_error(denoisers["flow"], y, condition[None], sigma, scales),
    "EDM, with biases (untrained)": models.homogeneity_error(biased, y, condition[None], sigma, scales),
}
fig, ax = plt.subplots(figsize=(5.5, 4))
for label, error in homogeneity.items():
    ax.loglog(scales, np.maximum(error, 1e-9), "o-", label=label)
ax.set_xlabel("input scale a")
ax.set_ylabel("||D(ay, ac) - aD(y, c)|| / ||aD(y, c)||")
ax.legend()
plotting.savefig(fig, "training_homogeneity")

# %% [markdown]
# ## Forecast skill against persistence and climatology
# Ensemble-mean RMSE (latitude-weighted) of quick ensembles from the test split,
# 6 and 24 hours ahead, against persistence and the training-split climatology.

# %%
skill = {obj: calibration.forecast_skill(d, stats, data, cfg)[1] for obj, d in denoisers.items()}
for obj, table in skill.items():
    print(obj)
    print(table.round(3).to_string())

# %%
edm_24 = skill["edm"].xs(24, level="lead_hours")
values = {
    "trainEdmTwentyFourRmseT": f"{edm_24.loc[T_MID, 'model']:.2f}",
    "trainPersistenceTwentyFourRmseT": f"{edm_24.loc[T_MID, 'persistence']:.2f}",
    "trainClimatologyTwentyFourRmseT": f"{edm_24.loc[T_MID, 'climatology']:.2f}",
    "trainEdmTwentyFourRmseU": f"{edm_24.loc[U_JET, 'model']:.2f}",
    "trainPersistenceTwentyFourRmseU": f"{edm_24.loc[U_JET, 'persistence']:.2f}",
    "trainClimatologyTwentyFourRmseU": f"{edm_24.loc[U_JET, 'climatology']:.2f}",
    "trainFlowTwentyFourRmseT": f"{skill['flow'].xs(24, level='lead_hours').loc[T_MID, 'model']:.2f}",
    "trainSteps": str(cfg.training.n_steps),
    "trainHomogeneityMaxError": f"{max(homogeneity['EDM, bias-free (trained)'].max(), homogeneity['flow, bias-free (trained)'].max()):.1e}",
}
write_values("02_training", values, profile=profile)
values

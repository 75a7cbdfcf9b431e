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
batch = 4  # training states in the batch (a process's micro-batch in the default profile)
n_draws = 16  # batches and noise draws: those of the first training steps

# %% [markdown]
# # Study: how exact is the compiled training gradient?
#
# The speed_numerics study found that the `default` EDM model trained with
# `torch.compile` ends about 3 % worse in validation loss than eager fp32, with or
# without bf16, although the compiled forward pass gives the eager loss to the last
# digit. Here the training losses of the first `n_draws` steps (the profile's trained
# fp32 model's raw weights, each step's batch of the training split and its noise draw;
# the condition noise of training left out)
# are differentiated in float32 eagerly, through torch.compile's graph capture alone
# (`aot_eager`, no generated code) and through inductor's generated code (the default
# backend), each against float64 (`druids.training.diagnostics.gradient_errors`). Run on
# demand:
#
#     make study STUDY=compiled_gradients
#
# About two minutes on 2 cores (inductor compiles the network once); trains the
# fp32 model first if it is missing (about 20 min).

# %%
import pandas as pd

from druids.config import get_config, updated
from druids.data.dataset import ForecastDataset, collate
from druids.data.source import open_dataset
from druids.models import build_loss
from druids.training import batches, gradient_errors, largest_relative_error, train

FAST = {"compile": False, "bf16": False, "channels_last": False}
cfg = updated(get_config(profile, seed=seed), training=FAST)
model = train(cfg, progress=False).model  # the finished run's raw weights (trained first if missing)
ds, stats = open_dataset(cfg, progress=False)
train_set = ForecastDataset(ds, stats, "train", cfg.dataset)
draws = []
for step in range(n_draws):
    condition, target = collate(train_set, batches.batch_indices(cfg.seed, step, batch, len(train_set)), "cpu")
    draws.append((target, condition, batches.stream_seed(cfg.seed, batches.NOISE, step, 0)))
loss = build_loss(cfg.model, stats.latitude, len(stats.channel_names))
errors = {name: gradient_errors(model, loss, draws, backend=backend)
          for name, backend in (("eager", None), ("aot_eager", "aot_eager"), ("inductor", "inductor"))}  # fmt: skip

# %% [markdown]
# Per backend and draw, the largest relative error over the parameters whose gradient is
# not zero up to rounding; then its distribution over the draws.

# %%
per_draw = pd.DataFrame({name: largest_relative_error(frame) for name, frame in errors.items()})
print(per_draw.describe().loc[["min", "50%", "max"]].to_string(float_format="{:.1e}".format))
per_draw.map("{:.1e}".format)

# %% [markdown]
# The parameters with the largest errors under inductor, in its worst draw:

# %%
worst = per_draw["inductor"].idxmax()
errors["inductor"].loc[worst].sort_values("relative", ascending=False).head(8)

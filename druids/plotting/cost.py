"""The cost of samplers as bars: model evaluations per step and wall time per member-step."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd


def sampler_cost_bars(cost: pd.DataFrame, device: str = "cpu", title: str = ""):
    """Two bar charts, NFE per 6-hour step and wall time per member-step (ms), one bar per sampler.

    ``cost``: indexed by sampler with columns ``model`` (the objective of the
    model it samples, one colour each), ``nfe_per_step`` and ``ms_per_member_step``.
    """
    colours = {model: f"C{index}" for index, model in enumerate(dict.fromkeys(cost["model"]))}
    labels = [f"{name}\n({model} model)" for name, model in zip(cost.index, cost["model"])]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].bar(labels, cost["nfe_per_step"], color=[colours[m] for m in cost["model"]])
    axes[0].set_ylabel("model evaluations (NFE) per 6-h step")
    axes[1].bar(labels, cost["ms_per_member_step"], color=[colours[m] for m in cost["model"]])
    axes[1].set_ylabel(f"wall time per member-step [ms] ({device})")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(title)
    return fig

"""The calibration chapter's experiments: model and oracle ensembles from the same states of a split, error sources.

:func:`split_init_times` picks evenly spaced initial times of a split;
:func:`model_and_oracle` makes a model ensemble
(:func:`~druids.calibration.ensembles.controlled_forecast`) and, for the
Held–Suarez world, the oracle ensemble from the same states
(:func:`~druids.calibration.oracle.oracle_forecast`), with their truth;
:func:`error_sources` starts model and oracle from the same perturbed initial
states, with and without their own noise, to say where the spread comes from;
:func:`event_thresholds` sets the reliability diagrams' events.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import xarray as xr

from druids.calibration.ensembles import Controls, controlled_forecast
from druids.calibration.oracle import oracle_forecast
from druids.calibration.skill import verifying_truth
from druids.config import Config
from druids.data import heldsuarez
from druids.data.diagnostics import field_stack
from druids.data.splits import split
from druids.sampling import initial_states


def split_init_times(data: xr.Dataset, cfg: Config, split_name: str, n_init: int, n_steps: int) -> np.ndarray:
    """``n_init`` evenly spaced times of split ``split_name`` with their history before and ``n_steps`` leads after, in the split."""
    times = split(data, cfg.dataset, split_name).time.values
    first, last = cfg.dataset.history - 1, times.size - 1 - n_steps
    if last < first:
        raise ValueError(f"the {split_name} split ({times.size} times) is too short for {n_steps}-step forecasts")
    return times[np.unique(np.linspace(first, last, n_init).round().astype(int))]


#: Evenly spaced training times over which :func:`event_thresholds` takes the standard deviation: all of a
#: short split (smoke world: 25, default world: 1008), a sub-sample of a long one (gpu world: ~5000, one
#: every 30 h; ERA5 1979-2017: 57 000, one every week, instead of tens of GB). N independent Gaussian draws
#: give a standard deviation to a relative standard error of 1/sqrt(2 (N - 1)): 2 % for 1024.
EVENT_STD_TIMES = 1024


def event_thresholds(data: xr.Dataset, stats, cfg: Config, fields, n_times: int = EVENT_STD_TIMES) -> xr.DataArray:
    """Thresholds of the reliability events: the training mean plus ``cfg.calibration.event_std`` standard deviations.

    Per field (``(variable, level)`` pairs) and grid point, dims ``(field, latitude,
    longitude)``, field units. The mean is the whole training split's, from the
    statistics (``stats.climatology``, computed in their one pass); the standard
    deviation (population, ddof 0) is over ``n_times`` evenly spaced training times
    (all of them if the split is shorter), read once.
    """
    variables = list(dict.fromkeys(name for name, _ in fields))
    train = split(data[variables], cfg.dataset, "train")
    n = train.sizes["time"]
    positions = np.unique(np.linspace(0, n - 1, min(n_times, n)).round().astype(int))
    std = field_stack(train.isel(time=positions), fields).std("time").load()
    mean, std = xr.align(field_stack(stats.climatology_state(), fields), std, join="exact")
    return mean + cfg.calibration.event_std * std


@dataclass
class Ensembles:
    """A model ensemble, the oracle's from the same states (None without an oracle) and the truth at their valid times.

    All three in physical units: ``model`` and ``oracle`` dims ``(init_time,
    member, lead_time, ...)``, ``truth`` dims ``(init_time, lead_time, ...)``.
    """

    model: xr.Dataset
    oracle: xr.Dataset | None
    truth: xr.Dataset

    def fields(self, fields, leads=None) -> tuple[xr.DataArray, xr.DataArray | None, xr.DataArray]:
        """``(model, oracle, truth)`` as :func:`~druids.data.diagnostics.field_stack` of ``fields``, at ``leads`` (default: all but 0)."""
        leads = self.model.lead_time.values[1:] if leads is None else leads
        stack = [None if ds is None else field_stack(ds.sel(lead_time=leads), fields) for ds in (self.model, self.oracle, self.truth)]
        return stack[0], stack[1], stack[2]


def model_and_oracle(
    denoiser, stats, data: xr.Dataset, cfg: Config, init_times, n_steps: int, controls: Controls = Controls(),
    with_oracle: bool = True, sampling_cfg=None,
) -> Ensembles:
    """``cfg.calibration.n_members``-member model (``sampling_cfg``, default ``cfg.sampling``, with ``controls``) and,
    with ``with_oracle``, oracle ensembles from ``init_times``, ``n_steps`` steps, and the truth from ``data``."""
    variables = list(cfg.dataset.variables)
    states = initial_states(data[variables], init_times, cfg.dataset.history)
    sampling_cfg = sampling_cfg or cfg.sampling
    m = cfg.calibration.n_members
    model = controlled_forecast(denoiser, stats, states, m, n_steps, sampling_cfg, cfg.dataset, cfg.seed, controls)
    oracle = oracle_forecast(cfg.world, init_times, m, n_steps, cfg.seed, variables) if with_oracle else None
    truth = verifying_truth(model, data[variables]).load()
    return Ensembles(model, oracle, truth)


def _perturbed_oracles(cfg: Config, init_times, n_steps: int, variables) -> dict[str, xr.Dataset]:
    """Oracle ensembles from perturbed initial states (``OracleConfig.ic_perturbation_kelvin``), deterministic and stochastic."""
    out = {}
    for name, stochastic in (("initial states", False), ("both", True)):
        parts = [
            heldsuarez.perturbed_ic_ensemble(
                cfg.world, t, cfg.calibration.n_members, n_steps, cfg.seed, cfg.oracle.ic_perturbation_kelvin, stochastic=stochastic
            )[variables].drop_vars("init_time").expand_dims(init_time=[t])
            for t in np.asarray(init_times, dtype="datetime64[ns]")
        ]
        out[name] = xr.concat(parts, dim="init_time").transpose("init_time", "member", "lead_time", ...)
    return out


def error_sources(
    denoiser, stats, data: xr.Dataset, cfg: Config, init_times, n_steps: int, base: Ensembles | None = None
) -> dict[tuple[str, str], xr.Dataset]:
    """Model and oracle ensembles by source of spread: ``(kind, source)`` -> ensemble, kind ``"model"`` or ``"oracle"``.

    Sources: ``"noise"`` (exact initial states, own noise: the model's
    sampler noise, the world's stochastic forcing), ``"initial states"`` (the
    oracle's perturbed initial states, ``cfg.oracle.ic_perturbation_kelvin``
    white temperature noise at T21; the world without forcing, the model with
    every member on member 0's sampler noise) and ``"both"`` (perturbed states,
    own noise). The model starts from exactly the oracle's perturbed states.
    ``base``: existing model and oracle ensembles (the ``"noise"`` source) that
    cover ``init_times`` and ``n_steps``; made here if None.
    """
    variables = list(cfg.dataset.variables)
    if base is None:
        base = model_and_oracle(denoiser, stats, data, cfg, init_times, n_steps)
    else:
        pick = {"init_time": np.asarray(init_times, dtype="datetime64[ns]"), "lead_time": base.model.lead_time.values[: n_steps + 1]}
        base = Ensembles(base.model.sel(pick), base.oracle.sel(pick), base.truth.sel(pick))
    oracles = _perturbed_oracles(cfg, init_times, n_steps, variables)
    exact = base.oracle.isel(lead_time=0, member=0, drop=True)
    perturbations = (oracles["both"].isel(lead_time=0, drop=True) - exact).transpose("member", "init_time", ...)
    states = initial_states(data[variables], init_times, cfg.dataset.history)
    run = functools.partial(controlled_forecast, denoiser, stats, states, cfg.calibration.n_members, n_steps, cfg.sampling, cfg.dataset, cfg.seed)
    shared, both = run(Controls(shared_model_noise=True), perturbations), run(Controls(), perturbations)
    return {
        ("model", "noise"): base.model, ("oracle", "noise"): base.oracle,
        ("model", "initial states"): shared, ("oracle", "initial states"): oracles["initial states"],
        ("model", "both"): both, ("oracle", "both"): oracles["both"],
    }  # fmt: skip

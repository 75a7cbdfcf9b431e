"""Predictability of the Held–Suarez world: oracle spread and perturbed-IC error growth.

Cached by configuration (``druids.cache``): the ensembles themselves are large,
so only their spread curves are kept.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from druids import runtime
from druids.cache import compute_or_load
from druids.config import OracleConfig, WorldConfig
from druids.data import diagnostics, heldsuarez

#: Fields whose spread is tracked: (variable, level in nominal hPa).
TRACKED = (("temperature", 562.5), ("u_component_of_wind", 312.5))


@dataclasses.dataclass(frozen=True)
class PredictabilityRun:
    """Cache key: world, ensemble settings and seed."""

    world: WorldConfig
    oracle: OracleConfig
    seed: int


def init_indices(n_times: int, n_steps: int, n_init: int) -> np.ndarray:
    """Evenly spaced saved-time indices that leave room for ``n_steps`` leads."""
    last = n_times - n_steps - 1
    if last < 0:
        raise ValueError(f"the dataset has {n_times} times, too few for {n_steps} lead steps; shorten lead_days")
    return np.unique(np.linspace(0, last, n_init).round().astype(int))


@dataclasses.dataclass(frozen=True)
class _InitTask:
    """One initial time of :func:`predictability`: the saved-time ``index`` and ``n_steps`` leads."""

    run: PredictabilityRun
    index: int
    n_steps: int


def _curves_at(task: _InitTask) -> xr.Dataset:
    """Oracle and perturbed-IC spread curves and the oracle's error from one initial time (dims init_time, lead_time, field)."""
    world, oracle, seed = task.run.world, task.run.oracle, task.run.seed
    i, n_steps = task.index, task.n_steps
    ens = heldsuarez.oracle_ensemble(world, i, oracle.n_members, n_steps, seed, oracle.member_batch)
    pert = heldsuarez.perturbed_ic_ensemble(
        world, i, oracle.n_perturbed_members, n_steps, seed, oracle.ic_perturbation_kelvin, member_batch=oracle.member_batch
    )
    ds = heldsuarez.open_world(world, generate_if_missing=False)
    truth = diagnostics.field_stack(ds.isel(time=slice(i, i + n_steps + 1)).load(), TRACKED).rename(time="lead_time")
    truth["lead_time"] = ens.lead_time
    members = diagnostics.field_stack(ens, TRACKED)
    return xr.Dataset(
        {
            "oracle_spread": diagnostics.ensemble_spread(members),
            "perturbed_spread": diagnostics.ensemble_spread(diagnostics.field_stack(pert, TRACKED)),
            "oracle_error": diagnostics.rms_difference(members.isel(member=0), truth),
        }
    ).expand_dims(init_time=[ens.init_time.values])


def predictability(world: WorldConfig, oracle: OracleConfig, seed: int, progress: bool = True) -> xr.Dataset:
    """Spread (area-weighted RMS of ensemble std) versus lead time.

    Returns ``oracle_spread`` and ``perturbed_spread`` with dims (init_time,
    lead_time, field), the oracle's ``error`` of its member 0 against the saved
    truth, and ``change_6h``: the RMS 6-hour change of each field in the
    dataset (the scale a 6-hour forecast must resolve). Units of the field.
    The initial times run side by side in local processes (``runtime.process_map``).
    """
    run = PredictabilityRun(world, oracle, seed)

    def compute():
        ds = heldsuarez.open_world(world, progress=progress)
        n_steps = int(round(oracle.lead_days * 24 / world.output_hours))
        tasks = [_InitTask(run, int(i), n_steps) for i in init_indices(ds.sizes["time"], n_steps, oracle.n_init)]
        curves = runtime.process_map(_curves_at, tasks, desc="oracle + perturbed-IC ensembles", progress=progress)
        out = xr.concat(curves, dim="init_time")
        out["change_6h"] = diagnostics.rms_change(diagnostics.field_stack(ds.isel(time=slice(0, 400)).load(), TRACKED))
        return out

    return compute_or_load(
        "predictability", run, compute,
        save=lambda ds, path: ds.to_netcdf(path), load=lambda path: xr.load_dataset(path), suffix="nc",
    )

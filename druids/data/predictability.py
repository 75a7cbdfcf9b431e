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


def predictability(world: WorldConfig, oracle: OracleConfig, seed: int, progress: bool = True) -> xr.Dataset:
    """Spread (area-weighted RMS of ensemble std) versus lead time.

    Returns ``oracle_spread`` and ``perturbed_spread`` with dims (init_time,
    lead_time, field), the oracle's ``error`` of its member 0 against the saved
    truth, and ``change_6h``: the RMS 6-hour change of each field in the
    dataset (the scale a 6-hour forecast must resolve). Units of the field.
    """

    def compute():
        ds = heldsuarez.open_world(world, progress=progress)
        n_steps = int(round(oracle.lead_days * 24 / world.output_hours))
        indices = init_indices(ds.sizes["time"], n_steps, oracle.n_init)
        curves = []
        for i in runtime.progress(indices, desc="oracle + perturbed-IC ensembles", unit="init", disable=not progress):
            ens = heldsuarez.oracle_ensemble(world, int(i), oracle.n_members, n_steps, seed, oracle.member_batch)
            pert = heldsuarez.perturbed_ic_ensemble(
                world, int(i), oracle.n_perturbed_members, n_steps, seed, oracle.ic_perturbation_kelvin,
                member_batch=oracle.member_batch,
            )
            truth = diagnostics.field_stack(ds.isel(time=slice(int(i), int(i) + n_steps + 1)).load(), TRACKED).rename(time="lead_time")
            truth["lead_time"] = ens.lead_time
            curves.append(
                xr.Dataset(
                    {
                        "oracle_spread": diagnostics.ensemble_spread(diagnostics.field_stack(ens, TRACKED)),
                        "perturbed_spread": diagnostics.ensemble_spread(diagnostics.field_stack(pert, TRACKED)),
                        "oracle_error": diagnostics.rms_difference(diagnostics.field_stack(ens, TRACKED).isel(member=0), truth),
                    }
                ).expand_dims(init_time=[ens.init_time.values])
            )
        out = xr.concat(curves, dim="init_time")
        out["change_6h"] = diagnostics.rms_change(diagnostics.field_stack(ds.isel(time=slice(0, 400)).load(), TRACKED))
        return out

    return compute_or_load(
        "predictability", PredictabilityRun(world, oracle, seed), compute,
        save=lambda ds, path: ds.to_netcdf(path), load=lambda path: xr.load_dataset(path), suffix="nc",
    )

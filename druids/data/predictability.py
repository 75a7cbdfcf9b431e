"""Predictability of the Held–Suarez world: oracle spread and perturbed-IC error growth.

Cached by configuration (``druids.cache``): the ensembles themselves are large,
so only their spread curves are kept.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

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


def _tracked(ds: xr.Dataset) -> xr.DataArray:
    """Stack the tracked fields along a ``field`` dim named ``variable@level``."""
    fields = [ds[v].sel(level=lev, drop=True) for v, lev in TRACKED]
    names = [f"{v}@{lev:g}" for v, lev in TRACKED]
    return xr.concat(fields, dim="field", coords="minimal", compat="override").assign_coords(field=names)


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
        for i in tqdm(indices, desc="oracle + perturbed-IC ensembles", unit="init", disable=not progress):
            ens = heldsuarez.oracle_ensemble(world, int(i), oracle.n_members, n_steps, seed, oracle.member_batch)
            pert = heldsuarez.perturbed_ic_ensemble(
                world, int(i), oracle.n_perturbed_members, n_steps, seed, oracle.ic_perturbation_kelvin,
                member_batch=oracle.member_batch,
            )
            truth = _tracked(ds.isel(time=slice(int(i), int(i) + n_steps + 1)).load()).rename(time="lead_time")
            truth["lead_time"] = ens.lead_time
            curves.append(
                xr.Dataset(
                    {
                        "oracle_spread": diagnostics.ensemble_spread(_tracked(ens)),
                        "perturbed_spread": diagnostics.ensemble_spread(_tracked(pert)),
                        "oracle_error": diagnostics.rms_difference(_tracked(ens).isel(member=0), truth),
                    }
                ).expand_dims(init_time=[ens.init_time.values])
            )
        out = xr.concat(curves, dim="init_time")
        out["change_6h"] = diagnostics.rms_change(_tracked(ds.isel(time=slice(0, 400)).load()))
        return out.drop_vars([c for c in ("init_time_", "level", "sigma") if c in out.coords])

    return compute_or_load(
        "predictability", PredictabilityRun(world, oracle, seed), compute,
        save=lambda ds, path: ds.to_netcdf(path), load=lambda path: xr.load_dataset(path), suffix="nc",
    )

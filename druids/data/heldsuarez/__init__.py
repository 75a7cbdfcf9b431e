"""The Held–Suarez world: a stochastic dry primitive-equation atmosphere with exact oracles.

Dry dynamical core from ``dinosaur`` (JAX), Held & Suarez (1994, BAMS 75, 1825)
forcing, spectral truncation T21, 64 x 32 Gaussian grid
(:mod:`~druids.data.heldsuarez.simulator`); its data store, generated on the
spot and resumable (:mod:`~druids.data.heldsuarez.store`); and oracle
ensembles, samples of the exact forecast distribution from any saved state
(:mod:`~druids.data.heldsuarez.oracle`). This face re-exports what callers use.
"""

from druids.data.heldsuarez.oracle import default_member_batch, oracle_ensemble, perturbed_ic_ensemble
from druids.data.heldsuarez.simulator import MODAL_FIELDS, START_TIME, VARIABLE_ATTRS, HeldSuarezWorld, get_world
from druids.data.heldsuarez.store import generate, open_modal, open_world, simulate, store_path, zonal_climate, zonal_climates

__all__ = [
    "MODAL_FIELDS",
    "START_TIME",
    "VARIABLE_ATTRS",
    "HeldSuarezWorld",
    "default_member_batch",
    "generate",
    "get_world",
    "oracle_ensemble",
    "open_modal",
    "open_world",
    "perturbed_ic_ensemble",
    "simulate",
    "store_path",
    "zonal_climate",
    "zonal_climates",
]

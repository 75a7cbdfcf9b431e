"""Oracle ensembles of the Held–Suarez world: samples of the exact forecast distribution, and perturbed-IC ensembles.

The saved modal states are complete, so re-running the simulator from any
saved time with new stochastic-forcing noise samples p(x_{t+k} | x_t) exactly.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from druids.config import WorldConfig, config_hash
from druids.data.heldsuarez.simulator import START_TIME, UNITS, HeldSuarezWorld, get_world
from druids.data.heldsuarez.store import open_modal


def _step_index(world: HeldSuarezWorld, time: np.datetime64) -> int:
    """Dynamical step index (since the end of spin-up) of a saved time."""
    hours = (np.datetime64(time, "ns") - START_TIME) / np.timedelta64(1, "h")
    return int(round(hours * 60 / world.cfg.dt_minutes))


def _saved_state(world: HeldSuarezWorld, init_time):
    """``(time, exact simulator state)`` of a saved time of the world's store (datetime or integer index)."""
    modal = open_modal(world.cfg)
    time = modal.time.values[init_time] if isinstance(init_time, (int, np.integer)) else np.datetime64(init_time, "ns")
    return time, world.state_from_modal(modal.sel(time=time).load())


def _run_members(world, initial_states, keys, first_step, n_steps, noise_scale, member_batch):
    """Trajectories of several members, stacked (member, output, ...).

    ``member_batch`` = 1 runs members one after another through the same
    compiled program (fastest per member on a CPU); > 1 runs fixed-size
    ``jax.vmap`` batches (padded, so member k's arithmetic does not depend on
    the number of members), which pays on a GPU.
    """
    n = len(keys)
    if member_batch <= 1:
        runs = [world.run(initial_states[k], keys[k], first_step, n_steps, noise_scale)[1] for k in range(n)]
        return jax.tree.map(lambda *x: jnp.stack(x), *runs)
    batched = jax.jit(jax.vmap(world.run, in_axes=(0, 0, None, None, None)), static_argnums=3)
    pieces = []
    for start in range(0, n, member_batch):
        idx = [min(k, n - 1) for k in range(start, start + member_batch)]
        states = jax.tree.map(lambda *x: jnp.stack(x), *[initial_states[k] for k in idx])
        _, traj = batched(states, jnp.stack([keys[k] for k in idx]), first_step, n_steps, noise_scale)
        pieces.append(jax.tree.map(lambda x: x[: min(member_batch, n - start)], traj))
    return jax.tree.map(lambda *x: jnp.concatenate(x), *pieces)


def default_member_batch() -> int:
    """1 (serial) on CPU, 64 on an accelerator; see ``bench/data_generation.py``."""
    return 1 if jax.default_backend() == "cpu" else 64


def _ensemble_dataset(world, initial_states, trajectories, init_time, n_steps) -> xr.Dataset:
    """Grid fields of member trajectories (member, lead, ...) with lead 0 = each member's initial state.

    All members and leads are converted in one batched call.
    """
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *initial_states)
    both = jax.tree.map(lambda x0, x: jnp.concatenate([x0[:, None], x], axis=1), stacked, trajectories)
    n_members, n_leads = both.vorticity.shape[:2]
    flat = jax.tree.map(lambda x: x.reshape(n_members * n_leads, *x.shape[2:]), both)
    grid = world.to_dataset(flat, np.full(n_members * n_leads, init_time))
    lead_time = (np.arange(n_steps + 1) * world.cfg.output_hours).astype("timedelta64[h]").astype("timedelta64[ns]")
    data_vars = {
        name: (("member", "lead_time", *var.dims[1:]), var.values.reshape(n_members, n_leads, *var.shape[1:]), var.attrs)
        for name, var in grid.data_vars.items()
    }
    coords = {k: v for k, v in grid.coords.items() if k != "time"}
    return xr.Dataset(data_vars, coords={**coords, "member": np.arange(n_members), "lead_time": lead_time, "init_time": init_time})


def oracle_ensemble(
    cfg: WorldConfig,
    init_time,
    n_members: int,
    n_steps: int,
    seed: int,
    member_batch: int | None = None,
) -> xr.Dataset:
    """Samples of the exact forecast distribution p(x_{t+k} | x_t) of the world ``cfg``.

    Re-runs the simulator from the exact saved state at ``init_time`` (datetime
    or integer index) with independent noise per member. Returns dims
    (member, lead_time, level, latitude, longitude); lead 0 is the initial state,
    leads are every ``cfg.output_hours`` up to ``n_steps`` outputs.
    """
    world = get_world(cfg)
    init_time, state = _saved_state(world, init_time)
    keys = [world.noise_key(seed, "oracle", k) for k in range(n_members)]
    batch = default_member_batch() if member_batch is None else member_batch
    traj = _run_members(world, [state] * n_members, keys, _step_index(world, init_time), n_steps, 1.0, batch)
    ds = _ensemble_dataset(world, [state] * n_members, traj, init_time, n_steps)
    ds.attrs.update(kind="oracle ensemble", seed=seed, world_config_hash=config_hash(cfg))
    return ds


def perturbed_ic_ensemble(
    cfg: WorldConfig,
    init_time,
    n_members: int,
    n_steps: int,
    seed: int,
    perturbation_kelvin: float = 0.1,
    stochastic: bool = False,
    member_batch: int | None = None,
) -> xr.Dataset:
    """Ensemble from perturbed initial conditions (white grid-point temperature noise).

    Each member adds Gaussian noise of std ``perturbation_kelvin`` (K) to the
    grid-point temperature of the exact state at ``init_time`` (truncated to the
    model's spectral resolution) and runs the deterministic dynamics
    (``stochastic=False``) or the stochastic world. Same dims as
    :func:`oracle_ensemble`; lead 0 holds the perturbed initial states.
    """
    world = get_world(cfg)
    init_time, state = _saved_state(world, init_time)
    amplitude = world.specs.nondimensionalize(perturbation_kelvin * UNITS.degK)
    shape = (cfg.n_levels, *world.grid.nodal_shape)
    initial_states = []
    for k in range(n_members):
        noise = amplitude * jax.random.normal(world.noise_key(seed, "perturbation", k), shape, jnp.float32)
        tv = state.temperature_variation + world.grid.to_modal(noise)
        initial_states.append(dataclasses.replace(state, temperature_variation=tv))
    keys = [world.noise_key(seed, "oracle", k) for k in range(n_members)]
    batch = default_member_batch() if member_batch is None else member_batch
    traj = _run_members(world, initial_states, keys, _step_index(world, init_time), n_steps, float(stochastic), batch)
    ds = _ensemble_dataset(world, initial_states, traj, init_time, n_steps)
    ds.attrs.update(kind="perturbed-IC ensemble", seed=seed, perturbation_kelvin=perturbation_kelvin, stochastic=int(stochastic))
    return ds

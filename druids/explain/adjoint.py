"""The world's true sensitivity: the adjoint of the Held–Suarez simulator (``jax.vjp`` through dinosaur).

For a target ``J_L`` that is a weighted sum of one grid field of the world at
lead ``L`` (the box-mean mid-level temperature of
:mod:`druids.explain.sensitivity`), :func:`adjoint_gradients` differentiates
``J_L(x_0 + delta)`` with respect to a perturbation ``delta`` of the initial
grid fields, at ``delta = 0``, by reverse mode through the same 6-hourly
integration that made the data, with the stochastic forcing held fixed (one
noise key = one realisation of the forcing). Averaging over realisations
(:meth:`WorldAdjoint.gradients`) estimates the gradient of the expected target
``E[J_L | x_0]``, the quantity a conditional-mean forecast should reproduce.

Perturbations live on the model's channels (``variable@level`` in physical
units) and enter the simulator's modal state linearly (:meth:`WorldAdjoint.modal_perturbation`):
temperature through the spherical-harmonic transform (exact for band-limited
fields), surface pressure as ``delta ln p_s = delta p_s / p_s``, winds through
dinosaur's inversion of ``(u, v)`` into vorticity and divergence (which divides
by cos(latitude) before its transform and so is not exact at the highest
wavenumbers: wind sensitivities are approximate there). The base state is the
store's exact modal state.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from dinosaur import spherical_harmonic

from druids.config import WorldConfig
from druids.data.heldsuarez import START_TIME, get_world, open_modal
from druids.data.heldsuarez.simulator import UNITS

VARIABLES = ("u_component_of_wind", "v_component_of_wind", "temperature", "surface_pressure")


def adjoint_gradients(target: Callable[[jax.Array], jax.Array], shape: Sequence[int]) -> tuple[jax.Array, jax.Array]:
    """``d target / d delta`` at ``delta = 0`` for a vector ``target`` of a perturbation ``delta`` (``shape``):
    the Jacobian ``(n_targets, *shape)`` by reverse mode (``jax.jacrev``: one VJP per target) and the targets (n_targets,)."""
    zero = jnp.zeros(tuple(shape), jnp.float32)
    return jax.jacrev(target)(zero), target(zero)


class WorldAdjoint:
    """Adjoint sensitivities of the box mean of one temperature level of the world ``cfg``.

    ``channels``: the model's channel layout, ``(variable, level)`` pairs
    (level None for surface pressure; levels as in the store, sigma x 1000);
    ``weights`` (H, W): the target's weights on the store's grid (latitude
    ascending); ``level``: the target's temperature level.
    """

    def __init__(self, cfg: WorldConfig, channels: Sequence[tuple[str, float | None]], weights: np.ndarray, level: float):
        self.cfg, self.world = cfg, get_world(cfg)
        levels = list(np.round(self.world.sigma * 1000, 4))
        unknown = [name for name, _ in channels if name not in VARIABLES]
        if unknown:
            raise ValueError(f"The world's adjoint knows the variables {VARIABLES}, not {sorted(set(unknown))}")
        self.channels = [(name, None if lev is None or np.isnan(lev) else levels.index(round(float(lev), 4))) for name, lev in channels]
        self.level = levels.index(round(float(level), 4))
        self.weights = jnp.asarray(np.asarray(weights, dtype=np.float32).T)  # (lon, lat), the simulator's nodal order
        self.wind_scale = float(self.world.specs.nondimensionalize(1.0 * UNITS.meter / UNITS.second))
        self.temperature_scale = float(self.world.specs.nondimensionalize(1.0 * UNITS.degK))

    def saved_state(self, init_time) -> tuple[object, int]:
        """The store's exact modal state at ``init_time`` and its dynamical step index (for the noise)."""
        modal = open_modal(self.cfg).sel(time=np.datetime64(init_time, "ns")).load()
        hours = (np.datetime64(init_time, "ns") - START_TIME) / np.timedelta64(1, "h")
        return self.world.state_from_modal(modal), int(round(hours * 60 / self.cfg.dt_minutes))

    def _fields(self, delta: jax.Array, name: str) -> jax.Array:
        """The channels of variable ``name`` of ``delta`` (C, H, W) as nodal fields (levels, lon, lat), each at its
        level (zero where the model has no channel; one level for surface pressure)."""
        n_levels = 1 if name == "surface_pressure" else self.cfg.n_levels
        out = jnp.zeros((n_levels, *self.world.grid.nodal_shape), delta.dtype)
        for k, (variable, level) in enumerate(self.channels):
            if variable == name:
                out = out.at[0 if level is None else level].set(delta[k].T)
        return out

    def modal_increment(self, state, delta: jax.Array) -> dict[str, jax.Array]:
        """The change of each modal field of ``state`` for the grid perturbation ``delta`` (C, H, W; physical
        units of the channels), to first order: linear in ``delta``."""
        grid = self.world.grid
        u, v = (self._fields(delta, name) * self.wind_scale for name in VARIABLES[:2])
        vorticity, divergence = spherical_harmonic.uv_nodal_to_vor_div_modal(grid, u, v)
        surface = jnp.exp(grid.to_nodal(state.log_surface_pressure))
        surface_pa = self.world.specs.dimensionalize(surface, UNITS.pascal).magnitude
        return {
            "vorticity": vorticity, "divergence": divergence,
            "temperature_variation": grid.to_modal(self._fields(delta, "temperature") * self.temperature_scale),
            "log_surface_pressure": grid.to_modal(self._fields(delta, "surface_pressure") / surface_pa),
        }  # fmt: skip

    def modal_perturbation(self, state, delta: jax.Array):
        """``state`` plus :meth:`modal_increment` of ``delta``."""
        increment = self.modal_increment(state, delta)
        return dataclasses.replace(state, **{name: getattr(state, name) + change for name, change in increment.items()})

    def targets(self, state, key, first_step: int, lead_steps: Sequence[int]) -> jax.Array:
        """The box-mean temperature (K) at each of ``lead_steps`` 6-h outputs of a run from ``state``: (leads,)."""
        _, trajectory = self.world.run(state, key, first_step, max(lead_steps))
        chosen = trajectory.temperature_variation[np.asarray(lead_steps) - 1, self.level]
        nodal = jax.vmap(self.world.grid.to_nodal)(chosen) / self.temperature_scale
        return (nodal * self.weights).sum(axis=(1, 2)) + float(self.world.reference_temperature[self.level])

    def keys(self, seed: int, n: int) -> list[jax.Array]:
        """Noise keys of ``n`` realisations: the store's own forcing first, then oracle members (``seed``)."""
        return [self.world.noise_key(self.cfg.seed, "dataset")] + [self.world.noise_key(seed, "oracle", k) for k in range(n - 1)]

    @functools.partial(jax.jit, static_argnums=(0, 4, 5))
    def _jacobian(self, state, key, first_step, lead_steps: tuple[int, ...], shape: tuple[int, ...]):
        return adjoint_gradients(lambda delta: self.targets(self.modal_perturbation(state, delta), key, first_step, lead_steps), shape)

    def gradients(self, init_time, lead_steps: Sequence[int], keys: Sequence[jax.Array], shape) -> tuple[np.ndarray, np.ndarray]:
        """``dJ_L / d delta`` (leads, C, H, W) averaged over the realisations ``keys``, and the mean targets (leads,)."""
        state, first_step = self.saved_state(init_time)
        results = [self._jacobian(state, key, jnp.asarray(first_step, jnp.int32), tuple(lead_steps), tuple(shape)) for key in keys]
        gradients = np.mean([np.asarray(g, dtype=np.float64) for g, _ in results], axis=0)
        return gradients, np.mean([np.asarray(v, dtype=np.float64) for _, v in results], axis=0)

    def value(self, init_time, lead_steps: Sequence[int], key) -> Callable[[np.ndarray], np.ndarray]:
        """``delta (C, H, W) -> J_L`` for one realisation (for finite differences)."""
        state, first_step = self.saved_state(init_time)
        return lambda delta: np.asarray(self.targets(self.modal_perturbation(state, jnp.asarray(delta, jnp.float32)), key, first_step, lead_steps))

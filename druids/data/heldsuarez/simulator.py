"""The Held–Suarez world's simulator: a stochastic dry primitive-equation atmosphere.

Dry dynamical core from ``dinosaur`` (JAX), Held & Suarez (1994, BAMS 75, 1825)
forcing, spectral truncation T21 with ``n_levels`` equally spaced sigma levels,
64 x 32 Gaussian grid, imex-RK-SIL3 time stepping.

Stochastic forcing: after every dynamical step of length dt, modal vorticity
receives ``sqrt(dt) * A * xi`` with ``xi`` standard normal on the total
wavenumbers of ``WorldConfig.noise_wavenumbers`` (same field at every level).
Noise for step ``n`` of member ``k`` is drawn from ``fold_in(fold_in(key(seed), k), n)``,
so the process is Markov in the saved state and a restart from any saved time
reproduces the continued run bit for bit.

Numerical filter (a deliberate choice for T21): scale-selective del^16
hyperdiffusion (``filter_order = 8``) with an e-folding time of
``filter_tau_hours = 12`` at the truncation wavenumber (total wavenumber 16 is
damped with a 35-day e-folding time). dinosaur's Held–Suarez example filter is
tuned for T42 and, at T21, damps the top wavenumbers almost entirely, which
moves the jets about 5 degrees poleward. Measured here (400-day runs, days
200-400, sigma 0.31): del^16/12 h gives 28.5-28.8 m/s at 37.5-38 degrees,
del^8/6 h gives 30-31 m/s at 38-40 degrees.

Mass fixer: after every step the global-mean surface pressure is reset to
``mean_surface_pressure_pa`` (see :meth:`HeldSuarezWorld._fix_mass`).

States convert to WeatherBench2-layout grid fields (:meth:`HeldSuarezWorld.to_dataset`)
and to the modal fields that restart the simulator exactly (:meth:`HeldSuarezWorld.modal_dataset`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from dinosaur import (
    coordinate_systems,
    held_suarez,
    primitive_equations,
    primitive_equations_states,
    scales,
    sigma_coordinates,
    spherical_harmonic,
    time_integration,
    xarray_utils,
)

from druids.config import WorldConfig

UNITS = scales.units
MODAL_FIELDS = ("vorticity", "divergence", "temperature_variation", "log_surface_pressure")
START_TIME = np.datetime64("2000-01-01T00:00", "ns")

VARIABLE_ATTRS = {
    "u_component_of_wind": {"units": "m s-1", "long_name": "eastward wind", "standard_name": "eastward_wind"},
    "v_component_of_wind": {"units": "m s-1", "long_name": "northward wind", "standard_name": "northward_wind"},
    "temperature": {"units": "K", "long_name": "air temperature", "standard_name": "air_temperature"},
    "geopotential": {"units": "m2 s-2", "long_name": "geopotential", "standard_name": "geopotential"},
    "surface_pressure": {"units": "Pa", "long_name": "surface air pressure", "standard_name": "surface_air_pressure"},
}


class HeldSuarezWorld:
    """The simulator of one :class:`~druids.config.WorldConfig`.

    States are dinosaur ``primitive_equations.State`` objects in nondimensional
    modal form, shapes (level, m, l) = (n_levels, 43, 23) at T21 (surface
    pressure has one level).
    """

    def __init__(self, cfg: WorldConfig):
        self.cfg = cfg
        grid_factory = getattr(spherical_harmonic.Grid, f"T{cfg.truncation}", None)
        if grid_factory is None:
            raise ValueError(f"Unsupported truncation T{cfg.truncation}; use one of dinosaur's Grid.T* sizes, e.g. 21")
        self.grid = grid_factory()
        self.coords = coordinate_systems.CoordinateSystem(
            horizontal=self.grid, vertical=sigma_coordinates.SigmaCoordinates.equidistant(cfg.n_levels)
        )
        self.specs = primitive_equations.PrimitiveEquationsSpecs.from_si()
        self._initial_state_fn, aux = primitive_equations_states.isothermal_rest_atmosphere(
            self.coords, self.specs, p0=1e5 * UNITS.pascal, p1=5e3 * UNITS.pascal
        )
        self.reference_temperature = aux[xarray_utils.REF_TEMP_KEY]
        self.nodal_orography = aux[xarray_utils.OROGRAPHY]
        orography = primitive_equations.truncated_modal_orography(self.nodal_orography, self.coords)
        equations = time_integration.compose_equations(
            [
                primitive_equations.PrimitiveEquations(self.reference_temperature, orography, self.coords, self.specs),
                held_suarez.HeldSuarezForcing(self.coords, self.specs, self.reference_temperature),
            ]
        )
        self.dt = self.specs.nondimensionalize(cfg.dt_minutes * UNITS.minute)
        tau = self.specs.nondimensionalize(cfg.filter_tau_hours * UNITS.hour)
        hyperdiffusion = time_integration.horizontal_diffusion_step_filter(self.grid, self.dt, tau, cfg.filter_order)
        self._step = time_integration.step_with_filters(time_integration.imex_rk_sil3(equations, self.dt), [hyperdiffusion])
        _, total_wavenumber = self.grid.modal_axes
        low, high = cfg.noise_wavenumbers
        band = (total_wavenumber >= low) & (total_wavenumber <= high)
        self.noise_mask = jnp.asarray(self.grid.mask & band[np.newaxis, :], dtype=jnp.float32)
        self._mode00 = float(self.grid.to_modal(np.ones(self.grid.nodal_shape, np.float32))[0, 0])
        self._target_ps = self.specs.nondimensionalize(cfg.mean_surface_pressure_pa * UNITS.pascal)

    # ----------------------------------------------------------------- dynamics
    def initial_state(self, seed: int) -> primitive_equations.State:
        """Isothermal resting atmosphere with a small random surface-pressure perturbation."""
        return self._initial_state_fn(rng_key=jax.random.PRNGKey(seed))

    def _fix_mass(self, state):
        """Reset the global-mean surface pressure to ``cfg.mean_surface_pressure_pa``.

        dinosaur conserves neither mean surface pressure nor its logarithm exactly
        (the explicit ln p_s tendency has a global-mean part; measured: ~1e-4
        relative drift over 200 days with noise). Adding a constant to ln p_s
        (its (0, 0) mode) restores the mass, as GCM mass fixers do.
        """
        nodal_ps = jnp.exp(self.grid.to_nodal(state.log_surface_pressure))
        mean_ps = self.grid.to_modal(nodal_ps)[..., 0, 0] / self._mode00
        shift = self._mode00 * jnp.log(self._target_ps / mean_ps)
        return dataclasses.replace(state, log_surface_pressure=state.log_surface_pressure.at[..., 0, 0].add(shift))

    def _noisy_step(self, state, member_key, step_index, noise_scale):
        state = self._fix_mass(self._step(state))
        xi = jax.random.normal(jax.random.fold_in(member_key, step_index), self.noise_mask.shape, jnp.float32)
        kick = (jnp.sqrt(self.dt) * self.cfg.noise_amplitude * noise_scale) * xi * self.noise_mask
        return dataclasses.replace(state, vorticity=state.vorticity + kick[jnp.newaxis])

    @functools.partial(jax.jit, static_argnums=(0, 4))
    def run(self, state, member_key, first_step, n_outputs: int, noise_scale=1.0):
        """Integrate ``n_outputs`` output intervals from dynamical step ``first_step``.

        Returns (final state, stacked states after each interval), the latter
        with a leading output axis. ``member_key`` is a ``jax.random`` key (see
        :meth:`noise_key`); ``noise_scale`` multiplies the configured amplitude
        (0 = deterministic dynamics, same compiled program).
        """
        steps = self.cfg.steps_per_output

        def interval(carry, _):
            state, step_index = carry

            def one(i, s):
                return self._noisy_step(s, member_key, step_index + i, noise_scale)

            state = jax.lax.fori_loop(0, steps, one, state)
            return (state, step_index + steps), state

        (final, _), trajectory = jax.lax.scan(interval, (state, jnp.asarray(first_step, jnp.int32)), None, length=n_outputs)
        return final, trajectory

    @staticmethod
    def noise_key(seed: int, stream: str, member: int = 0) -> jax.Array:
        """Noise key of one member of one stream: ``spinup``, ``dataset`` or ``oracle``.

        Member k's key depends only on (seed, stream, k), so its trajectory does
        not depend on how many members are run.
        """
        streams = {"spinup": 0, "dataset": 1, "oracle": 2, "perturbation": 3}
        return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), streams[stream]), member)

    # ------------------------------------------------------------ conversions
    @property
    def sigma(self) -> np.ndarray:
        """Sigma at layer centres, top to bottom, shape (level,)."""
        return np.asarray(self.coords.vertical.centers)

    @property
    def latitude(self) -> np.ndarray:
        """Gaussian latitudes, ascending (degrees north), shape (32,)."""
        return np.rad2deg(np.arcsin(self.grid.nodal_axes[1]))

    @property
    def longitude(self) -> np.ndarray:
        """Longitudes in [0, 360) (degrees east), shape (64,)."""
        return np.rad2deg(self.grid.nodal_axes[0])

    @functools.partial(jax.jit, static_argnums=0)
    def _nodal_fields(self, state):
        """Physical grid fields of one modal state, arrays shaped (level, lon, lat)."""
        u, v = spherical_harmonic.vor_div_to_uv_nodal(self.grid, state.vorticity, state.divergence)
        temperature = self.reference_temperature[:, None, None] + self.grid.to_nodal(state.temperature_variation)
        log_ps = self.grid.to_nodal(state.log_surface_pressure)
        geopotential = primitive_equations.get_geopotential_on_sigma(
            temperature,
            nodal_orography=self.nodal_orography,
            sigma=self.coords.vertical,
            gravity_acceleration=self.specs.g,
            ideal_gas_constant=self.specs.R,
        )
        return u, v, temperature, jnp.exp(log_ps[0]), geopotential

    def to_dataset(self, states, times: np.ndarray) -> xr.Dataset:
        """WeatherBench2-layout grid fields of stacked modal states (leading axis = time)."""
        u, v, t, ps, phi = jax.vmap(self._nodal_fields)(states)
        scale = {
            "u_component_of_wind": (u, UNITS.meter / UNITS.second),
            "v_component_of_wind": (v, UNITS.meter / UNITS.second),
            "temperature": (t, UNITS.degK),
            "geopotential": (phi, UNITS.meter**2 / UNITS.second**2),
            "surface_pressure": (ps, UNITS.pascal),
        }
        data_vars = {}
        for name, (value, unit) in scale.items():
            physical = np.asarray(self.specs.dimensionalize(np.asarray(value), unit).magnitude, dtype=np.float32)
            physical = np.swapaxes(physical, -1, -2)  # (..., lon, lat) -> (..., lat, lon)
            dims = ("time", "latitude", "longitude") if name == "surface_pressure" else ("time", "level", "latitude", "longitude")
            data_vars[name] = (dims, physical, VARIABLE_ATTRS[name])
        return xr.Dataset(data_vars, coords=self.grid_coords(times))

    def grid_coords(self, times: np.ndarray) -> dict:
        """Coordinates of the grid dataset; ``level`` is nominal pressure sigma x 1000 hPa."""
        return {
            "time": ("time", times, {"long_name": "time"}),
            "level": ("level", (self.sigma * 1000).astype(np.float32), {"units": "hPa", "long_name": "sigma x 1000 hPa (nominal pressure)"}),
            "sigma": ("level", self.sigma.astype(np.float32), {"long_name": "sigma = p / p_s at layer centre"}),
            "latitude": ("latitude", self.latitude, {"units": "degrees_north", "long_name": "latitude"}),
            "longitude": ("longitude", self.longitude, {"units": "degrees_east", "long_name": "longitude"}),
        }

    def modal_dataset(self, states, times: np.ndarray) -> xr.Dataset:
        """The simulator's nondimensional modal state (dims time, level, m, l) for exact restarts."""
        data_vars = {}
        for name in MODAL_FIELDS:
            dims = ("time", "surface", "m", "l") if name == "log_surface_pressure" else ("time", "level", "m", "l")
            data_vars[name] = (dims, np.asarray(getattr(states, name), dtype=np.float32))
        return xr.Dataset(data_vars, coords={"time": times})

    def state_from_modal(self, modal: xr.Dataset) -> primitive_equations.State:
        """The exact simulator state of one time of a ``modal`` dataset."""
        return primitive_equations.State(**{name: jnp.asarray(modal[name].values) for name in MODAL_FIELDS})

    def times(self, first_output: int, n: int) -> np.ndarray:
        """Datetimes of outputs ``first_output .. first_output + n - 1`` (0 = first after spin-up)."""
        hours = (np.arange(n) + first_output + 1) * self.cfg.output_hours
        return START_TIME + hours.astype("timedelta64[h]")


@functools.lru_cache(maxsize=8)
def get_world(cfg: WorldConfig) -> HeldSuarezWorld:
    """The (cached) simulator of ``cfg``: its jitted programs compile once per process."""
    return HeldSuarezWorld(cfg)

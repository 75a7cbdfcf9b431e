"""The Held–Suarez world: a stochastic dry primitive-equation atmosphere with exact oracles.

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

The saved grid fields are a WeatherBench2-layout zarr; the simulator's own
modal state is stored beside them (group ``modal``) because a restart from
float32 grid fields is not exact (u,v -> vorticity/divergence inversion and the
surface-pressure round trip differ by ~1e-6, an error that doubles every ~2.6 days).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
import zarr
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
from tqdm.auto import tqdm

import druids
from druids import paths
from druids.cache import compute_or_load
from druids.config import ClimateConfig, WorldConfig, config_hash, to_dict

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


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(paths.ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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


# ---------------------------------------------------------------- generation
def store_path(cfg: WorldConfig) -> Path:
    """Where the published dataset of ``cfg`` lives."""
    return paths.data_dir() / f"heldsuarez-{config_hash(cfg)}.zarr"


def _provenance(cfg: WorldConfig) -> dict:
    import dinosaur

    return {
        "title": "Held–Suarez world (DRUIDS)",
        "source": "dinosaur dry dynamical core, Held & Suarez (1994) forcing, stochastic vorticity forcing",
        "config": json.dumps(to_dict(cfg), sort_keys=True),
        "config_hash": config_hash(cfg),
        "druids_version": druids.__version__,
        "dinosaur_version": dinosaur.__version__ if hasattr(dinosaur, "__version__") else "unknown",
        "jax_version": jax.__version__,
        "git_revision": _git_revision(),
        "Conventions": "CF-1.8",
    }


def _write_template(world: HeldSuarezWorld, path: Path) -> None:
    """Create the empty full-length store (both groups) to be filled chunk by chunk."""
    cfg = world.cfg
    state = world.initial_state(cfg.seed)
    states = jax.tree.map(lambda x: jnp.broadcast_to(x, (cfg.chunk_times, *x.shape)), state)
    times = world.times(0, cfg.n_times)
    grid = world.to_dataset(states, times[: cfg.chunk_times])
    modal = world.modal_dataset(states, times[: cfg.chunk_times])
    for group, ds in (("grid", grid), ("modal", modal)):
        template = xr.Dataset(
            {
                name: (var.dims, _lazy_zeros((cfg.n_times, *var.shape[1:]), cfg.chunk_times), var.attrs)
                for name, var in ds.data_vars.items()
            },
            coords={**{k: v for k, v in ds.coords.items() if k != "time"}, "time": times},
        )
        encoding = {name: {"chunks": (cfg.chunk_times, *ds[name].shape[1:])} for name in ds.data_vars}
        if group == "grid":
            template.attrs.update(_provenance(cfg))
            template.to_zarr(path, mode="w", compute=False, encoding=encoding, consolidated=False, zarr_format=2)
        else:
            template.to_zarr(path, group="modal", mode="w", compute=False, encoding=encoding, consolidated=False, zarr_format=2)
    zarr.open_group(path, mode="r+").attrs["complete_chunks"] = 0


def _lazy_zeros(shape, chunk_times):
    import dask.array as da

    return da.zeros(shape, dtype=np.float32, chunks=(chunk_times, *shape[1:]))


def _spin_up(world: HeldSuarezWorld, progress: bool):
    """State at the end of spin-up (rounded up to whole chunks), discarded from the store."""
    cfg = world.cfg
    n_chunks = -(-int(round(cfg.spinup_days * 24 / cfg.output_hours)) // cfg.chunk_times)
    key = world.noise_key(cfg.seed, "spinup")
    state = world.initial_state(cfg.seed)
    for chunk in tqdm(range(n_chunks), desc="spin-up", unit="chunk", disable=not progress):
        state, _ = world.run(state, key, chunk * cfg.chunk_times * cfg.steps_per_output, cfg.chunk_times)
    return state


def generate(cfg: WorldConfig, path: Path | None = None, progress: bool = True) -> Path:
    """Generate (or finish generating) the dataset of ``cfg``; return the published store path.

    Streams to ``<path>.partial`` chunk by chunk (``cfg.chunk_times`` outputs);
    re-running after a kill continues from the last complete chunk, restarting
    from the stored modal state. The finished store is renamed into place, so
    a half-written store is never mistaken for a finished one.
    """
    path = store_path(cfg) if path is None else Path(path)
    if path.exists():
        return path
    partial = path.with_name(path.name + ".partial")
    world = get_world(cfg)
    n_chunks = cfg.n_times // cfg.chunk_times
    done = _complete_chunks(partial, cfg)
    if done == 0:
        partial.parent.mkdir(parents=True, exist_ok=True)
        _write_template(world, partial)
        state = _spin_up(world, progress)
    else:
        last = xr.open_zarr(partial, group="modal", consolidated=False).isel(time=done * cfg.chunk_times - 1)
        state = world.state_from_modal(last.load())
    key = world.noise_key(cfg.seed, "dataset")
    root = zarr.open_group(partial, mode="r+")
    bar = tqdm(total=n_chunks, initial=done, desc="Held–Suarez world", unit="chunk", disable=not progress)
    for chunk in range(done, n_chunks):
        first_output = chunk * cfg.chunk_times
        state, trajectory = world.run(state, key, first_output * cfg.steps_per_output, cfg.chunk_times)
        times = world.times(first_output, cfg.chunk_times)
        region = {"time": slice(first_output, first_output + cfg.chunk_times)}
        world.to_dataset(trajectory, times).drop_vars(["level", "sigma", "latitude", "longitude"]).to_zarr(
            partial, region=region, consolidated=False
        )
        world.modal_dataset(trajectory, times).to_zarr(partial, group="modal", region=region, consolidated=False)
        root.attrs["complete_chunks"] = chunk + 1
        bar.update(1)
    bar.close()
    zarr.consolidate_metadata(partial)
    partial.rename(path)
    return path


def _complete_chunks(partial: Path, cfg: WorldConfig) -> int:
    """Chunks already written to a partial store of the same config (0 if none or foreign)."""
    if not partial.exists():
        return 0
    try:
        attrs = zarr.open_group(partial, mode="r").attrs
        if attrs.get("config_hash") != config_hash(cfg):
            raise ValueError
        return int(attrs.get("complete_chunks", 0))
    except Exception:  # corrupt or foreign partial store: start over
        shutil.rmtree(partial)
        return 0


def simulate(cfg: WorldConfig, n_days: float, keep_every: int = 4, progress: bool = True) -> xr.Dataset:
    """In-memory run from the resting initial state (spin-up included), for climate checks.

    Keeps every ``keep_every``-th output (default: daily); nothing is written to
    disk. Times count from the start of the run.
    """
    world = get_world(cfg)
    n_chunks = -(-int(round(n_days * 24 / cfg.output_hours)) // cfg.chunk_times)
    key = world.noise_key(cfg.seed, "dataset")
    state = world.initial_state(cfg.seed)
    pieces = []
    for chunk in tqdm(range(n_chunks), desc="simulate", unit="chunk", disable=not progress):
        first_output = chunk * cfg.chunk_times
        state, trajectory = world.run(state, key, first_output * cfg.steps_per_output, cfg.chunk_times)
        kept = jax.tree.map(lambda x: x[keep_every - 1 :: keep_every], trajectory)
        times = world.times(first_output, cfg.chunk_times)[keep_every - 1 :: keep_every]
        pieces.append(world.to_dataset(kept, times))
    return xr.concat(pieces, dim="time")


@dataclasses.dataclass(frozen=True)
class ClimateRun:
    """Cache key of :func:`zonal_climate`: the world and the run length."""

    world: WorldConfig
    climate: ClimateConfig


def zonal_climate(cfg: WorldConfig, climate: ClimateConfig, progress: bool = True) -> xr.Dataset:
    """Time- and zonal-mean climate of an in-memory run, cached by configuration.

    Returns ``u_component_of_wind`` and ``temperature`` (level, latitude) averaged
    over days ``average_after_days .. n_days``, and daily global means
    ``surface_pressure`` (Pa) and ``log_surface_pressure`` (time) over the whole run.
    """
    def compute():
        run = simulate(cfg, climate.n_days, keep_every=24 // cfg.output_hours, progress=progress)
        days = (run.time - run.time[0]) / np.timedelta64(1, "D")
        late = run.where(days >= climate.average_after_days - 1, drop=True)
        weights = np.cos(np.deg2rad(run.latitude))
        out = late[["u_component_of_wind", "temperature"]].mean(["time", "longitude"])
        out["surface_pressure"] = run.surface_pressure.weighted(weights).mean(["latitude", "longitude"])
        out["log_surface_pressure"] = np.log(run.surface_pressure.astype(np.float64)).weighted(weights).mean(["latitude", "longitude"])
        out["any_nan"] = xr.DataArray(int(any(bool(run[v].isnull().any()) for v in run.data_vars)))
        out.attrs.update(average_after_days=climate.average_after_days, n_days=climate.n_days)
        return out

    return compute_or_load(
        "climate", ClimateRun(cfg, climate), compute,
        save=lambda ds, path: ds.to_netcdf(path), load=lambda path: xr.load_dataset(path), suffix="nc",
    )


def open_world(cfg: WorldConfig, generate_if_missing: bool = True, progress: bool = True) -> xr.Dataset:
    """The grid dataset of ``cfg`` (lazy, dask), generating it first if needed."""
    path = store_path(cfg)
    if not path.exists():
        if not generate_if_missing:
            raise FileNotFoundError(f"No Held–Suarez store at {path}; run `druids generate --profile ...` first")
        generate(cfg, progress=progress)
    return xr.open_zarr(path)


def open_modal(cfg: WorldConfig) -> xr.Dataset:
    """The modal (exact restart) states of the dataset of ``cfg``."""
    return xr.open_zarr(store_path(cfg), group="modal")


# ------------------------------------------------------------------ oracles
def _step_index(world: HeldSuarezWorld, time: np.datetime64) -> int:
    """Dynamical step index (since the end of spin-up) of a saved time."""
    hours = (np.datetime64(time, "ns") - START_TIME) / np.timedelta64(1, "h")
    return int(round(hours * 60 / world.cfg.dt_minutes))


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
    modal = open_modal(cfg)
    init_time = modal.time.values[init_time] if isinstance(init_time, (int, np.integer)) else np.datetime64(init_time, "ns")
    state = world.state_from_modal(modal.sel(time=init_time).load())
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
    modal = open_modal(cfg)
    init_time = modal.time.values[init_time] if isinstance(init_time, (int, np.integer)) else np.datetime64(init_time, "ns")
    state = world.state_from_modal(modal.sel(time=init_time).load())
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

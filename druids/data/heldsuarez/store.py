"""The Held–Suarez world's data store: generation (resumable, published atomically), reading, climate runs.

The saved grid fields are a WeatherBench2-layout zarr; the simulator's own
modal state is stored beside them (group ``modal``) because a restart from
float32 grid fields is not exact (u,v -> vorticity/divergence inversion and the
surface-pressure round trip differ by ~1e-6, an error that doubles every ~2.6 days).
Provenance (config, package versions, git revision) goes into the store's attributes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
import zarr

import druids
from druids import paths, runtime
from druids.cache import compute_or_load
from druids.config import ClimateConfig, WorldConfig, config_hash, to_dict
from druids.data.heldsuarez.simulator import HeldSuarezWorld, get_world


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(paths.ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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
    for chunk in runtime.progress(range(n_chunks), desc="spin-up", unit="chunk", disable=not progress):
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
    bar = runtime.progress(total=n_chunks, initial=done, desc="Held–Suarez world", unit="chunk", disable=not progress)
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
    for chunk in runtime.progress(range(n_chunks), desc="simulate", unit="chunk", disable=not progress):
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


def _quiet_zonal_climate(run: ClimateRun) -> xr.Dataset:
    return zonal_climate(run.world, run.climate, progress=False)


def zonal_climates(worlds: list[WorldConfig], climate: ClimateConfig, progress: bool = True) -> list[xr.Dataset]:
    """:func:`zonal_climate` of each of ``worlds``, the runs side by side in local processes
    (``runtime.process_map``: one world's dynamics leaves the second core mostly idle)."""
    runs = [ClimateRun(world, climate) for world in worlds]
    return runtime.process_map(_quiet_zonal_climate, runs, desc="climate runs", progress=progress)


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

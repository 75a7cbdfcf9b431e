"""The Held–Suarez world: schema, determinism, exact restarts, resumable generation, oracles."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import xarray as xr
import zarr

from druids.config import ClimateConfig, WorldConfig
from druids.data import heldsuarez, predictability

VARIABLES_3D = ("u_component_of_wind", "v_component_of_wind", "temperature", "geopotential")


def _assert_stores_identical(a, b):
    for group in (None, "modal"):
        da, db = xr.open_zarr(a, group=group), xr.open_zarr(b, group=group)
        assert sorted(da.data_vars) == sorted(db.data_vars)
        for name in da.data_vars:
            np.testing.assert_array_equal(da[name].values, db[name].values, err_msg=f"{group}/{name}")


def test_store_schema(smoke_store, smoke_config):
    ds = xr.open_zarr(smoke_store)
    cfg = smoke_config.world
    assert dict(ds.sizes) == {"time": cfg.n_times, "level": 8, "latitude": 32, "longitude": 64}
    for name in VARIABLES_3D:
        assert ds[name].dims == ("time", "level", "latitude", "longitude")
        assert ds[name].dtype == np.float32
        assert ds[name].attrs["units"] and ds[name].attrs["long_name"]
    assert ds.surface_pressure.dims == ("time", "latitude", "longitude")
    assert np.all(np.diff(ds.latitude) > 0) and ds.longitude.min() == 0 and ds.longitude.max() < 360
    assert np.all(np.diff(ds.time.values) == np.timedelta64(6, "h"))
    assert ds.u_component_of_wind.encoding["chunks"][0] == cfg.chunk_times
    assert ds.attrs["config_hash"] and '"noise_amplitude"' in ds.attrs["config"] and ds.attrs["druids_version"]
    values = ds.load()
    assert all(bool(np.isfinite(values[v]).all()) for v in values.data_vars)
    assert 180 < float(values.temperature.min()) and float(values.temperature.max()) < 340
    assert abs(float(values.surface_pressure.mean()) / 1e5 - 1) < 0.01


def test_restart_from_modal_state_is_exact(smoke_store, smoke_config):
    """Restarting from a saved modal state reproduces the continued run bit for bit."""
    cfg = smoke_config.world
    world = heldsuarez.HeldSuarezWorld(cfg)
    modal = xr.open_zarr(smoke_store, group="modal")
    start = 5
    state = world.state_from_modal(modal.isel(time=start).load())
    key = world.noise_key(cfg.seed, "dataset")
    _, trajectory = world.run(state, key, (start + 1) * cfg.steps_per_output, 6)
    for name in heldsuarez.MODAL_FIELDS:
        saved = modal[name].isel(time=slice(start + 1, start + 7)).values
        np.testing.assert_array_equal(np.asarray(getattr(trajectory, name)), saved, err_msg=name)


def test_generation_resumes_after_kill(smoke_store, smoke_config, tmp_path):
    """`druids generate` killed midway, then re-run, gives the uninterrupted store (same seed: bit-identical)."""
    env = {**os.environ, "DRUIDS_DATA": str(tmp_path)}
    final = tmp_path / smoke_store.name
    partial = tmp_path / (smoke_store.name + ".partial")
    proc = subprocess.Popen(
        [sys.executable, "-m", "druids", "generate", "--profile", "smoke"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            if zarr.open_group(partial, mode="r").attrs.get("complete_chunks", 0) >= 1:
                break
        except Exception:  # store not created yet
            pass
        time.sleep(0.02)
    assert proc.poll() is None, "generation finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial.exists() and not final.exists(), "a killed run must not publish its store"
    done = zarr.open_group(partial, mode="r").attrs["complete_chunks"]
    assert 1 <= done < smoke_config.world.n_times // smoke_config.world.chunk_times
    out = subprocess.run([sys.executable, "-m", "druids", "generate", "--profile", "smoke"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert final.exists() and not partial.exists()
    _assert_stores_identical(final, smoke_store)


def test_oracle_members_independent_of_ensemble_size(smoke_store, smoke_config):
    cfg = smoke_config.world
    small = heldsuarez.oracle_ensemble(cfg, 3, n_members=2, n_steps=4, seed=7)
    large = heldsuarez.oracle_ensemble(cfg, 3, n_members=3, n_steps=4, seed=7)
    assert small.temperature.dims == ("member", "lead_time", "level", "latitude", "longitude")
    xr.testing.assert_identical(small.temperature, large.temperature.isel(member=slice(0, 2)))
    # lead 0 is the saved state (grid conversion batched differently: float32 round-off)
    truth = xr.open_zarr(smoke_store).isel(time=3)
    np.testing.assert_allclose(small.temperature.isel(member=0, lead_time=0).values, truth.temperature.values, rtol=1e-6)


def test_oracle_spread_grows_with_lead_time(smoke_store, smoke_config):
    ens = heldsuarez.oracle_ensemble(smoke_config.world, 0, n_members=4, n_steps=8, seed=1)
    spread = np.sqrt(ens.u_component_of_wind.var("member").mean(["level", "latitude", "longitude"])).values
    assert spread[0] == 0
    assert np.all(np.diff(spread) > 0), spread


def test_batched_oracle_matches_serial(smoke_store, smoke_config):
    """The vmap-batched path (used on GPUs) gives the serial members to float32 round-off."""
    cfg = smoke_config.world
    serial = heldsuarez.oracle_ensemble(cfg, 2, n_members=3, n_steps=2, seed=3, member_batch=1)
    batched = heldsuarez.oracle_ensemble(cfg, 2, n_members=3, n_steps=2, seed=3, member_batch=2)
    np.testing.assert_allclose(batched.temperature.values, serial.temperature.values, rtol=0, atol=1e-3)


def test_zero_amplitude_gives_identical_members(tmp_path, monkeypatch):
    monkeypatch.setenv("DRUIDS_DATA", str(tmp_path))
    cfg = WorldConfig(spinup_days=2.0, n_days=2.0, chunk_times=8, noise_amplitude=0.0)
    heldsuarez.generate(cfg, progress=False)
    ens = heldsuarez.oracle_ensemble(cfg, 1, n_members=2, n_steps=3, seed=0)
    np.testing.assert_array_equal(ens.temperature.isel(member=0).values, ens.temperature.isel(member=1).values)


def test_perturbed_ic_ensemble(smoke_store, smoke_config):
    ens = heldsuarez.perturbed_ic_ensemble(smoke_config.world, 1, n_members=3, n_steps=4, seed=0, perturbation_kelvin=0.5)
    t0 = ens.temperature.isel(lead_time=0)
    truth = xr.open_zarr(smoke_store).temperature.isel(time=1)
    # white noise truncated to T21 keeps part of its variance; it must be visible but not exceed the std asked for
    rms = float(np.sqrt(((t0 - truth) ** 2).mean()))
    assert 0.1 < rms < 0.5
    assert bool((ens.temperature.isel(lead_time=4).std("member") > 0).any())


def test_same_seed_same_run_different_seed_differs(smoke_config):
    cfg = dataclasses.replace(smoke_config.world, chunk_times=4)
    a = heldsuarez.simulate(cfg, 2, progress=False)
    b = heldsuarez.simulate(cfg, 2, progress=False)
    c = heldsuarez.simulate(dataclasses.replace(cfg, seed=1), 2, progress=False)
    xr.testing.assert_identical(a, b)
    assert not np.array_equal(a.temperature.values, c.temperature.values)


def test_unknown_truncation_is_a_clear_error():
    with pytest.raises(ValueError, match="Unsupported truncation T20"):
        heldsuarez.HeldSuarezWorld(WorldConfig(truncation=20))


def test_jax_runs_on_cpu_in_tests():
    assert jax.default_backend() == "cpu"


def test_oracle_ensemble_is_calibrated(smoke_store, smoke_config):
    """The saved truth is one more draw of the oracle distribution: a member's squared error
    against it is, on average, twice the ensemble variance (statistical exchangeability)."""
    cfg = smoke_config.world
    start, n_steps = 2, 8
    ens = heldsuarez.oracle_ensemble(cfg, start, n_members=4, n_steps=n_steps, seed=11).isel(lead_time=slice(4, None))
    truth = xr.open_zarr(smoke_store).isel(time=slice(start + 4, start + n_steps + 1)).load()
    for name in ("temperature", "u_component_of_wind"):
        members = ens[name].values
        squared_error = ((members - truth[name].values[None]) ** 2).mean()
        variance = members.var(axis=0, ddof=1).mean()
        ratio = squared_error / (2 * variance)
        assert 0.7 < ratio < 1.4, name


def test_predictability_in_processes_matches_one_initial_time_here(smoke_store, smoke_config):
    """The initial times computed in spawned processes give what one of them computed in this process gives."""
    oracle = dataclasses.replace(smoke_config.oracle, n_members=3, n_perturbed_members=2, lead_days=1.0, n_init=2)
    curves = predictability.predictability(smoke_config.world, oracle, seed=5, progress=False)
    assert curves.sizes["init_time"] == 2
    n_steps = int(round(oracle.lead_days * 24 / smoke_config.world.output_hours))
    index = int(predictability.init_indices(xr.open_zarr(smoke_store).sizes["time"], n_steps, 2)[1])
    here = predictability._curves_at(predictability._InitTask(predictability.PredictabilityRun(smoke_config.world, oracle, 5), index, n_steps))
    xr.testing.assert_allclose(curves[["oracle_spread", "perturbed_spread", "oracle_error"]].isel(init_time=[1]), here, rtol=1e-5)


def test_zonal_climates_side_by_side_match_one_run_here(tmp_path, monkeypatch):
    """Two worlds' climates run in spawned processes (their own cache) equal the runs made here."""
    cfg = WorldConfig(spinup_days=1.0, n_days=1.0, chunk_times=8)
    climate = ClimateConfig(n_days=2.0, average_after_days=1.0)
    worlds = [cfg, dataclasses.replace(cfg, noise_amplitude=0.0)]
    monkeypatch.setenv("DRUIDS_CACHE", str(tmp_path / "here"))
    here = [heldsuarez.zonal_climate(world, climate, progress=False) for world in worlds]
    monkeypatch.setenv("DRUIDS_CACHE", str(tmp_path / "spawned"))
    spawned = heldsuarez.zonal_climates(worlds, climate, progress=False)
    assert (tmp_path / "spawned").exists()
    for a, b in zip(here, spawned):
        xr.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.allclose(spawned[0].u_component_of_wind, spawned[1].u_component_of_wind)

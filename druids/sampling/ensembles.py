"""Ensemble forecasts in the WeatherBench2 layout, in memory or streamed to zarr lead by lead, sharded over ranks.

:func:`forecast` rolls the model out (:mod:`druids.sampling.rollout`) from
every initial time, writes each lead as it is computed (memory holds one
lead) and publishes the store atomically; under ``torchrun`` members are
sharded over ranks and gathered each lead. :func:`sampler_cost` measures NFE
and wall time per member-step of a sampler setting.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import xarray as xr
import zarr

from druids import runtime
from druids.cache import atomic_write
from druids.config import DatasetConfig, SamplingConfig, to_dict
from druids.data.channels import from_channels
from druids.data.normalisation import NormStats
from druids.sampling.rollout import init_times_of, rollout
from druids.sampling.samplers import check_sampler


def _gather_members(local: np.ndarray, sizes: Sequence[int], device: torch.device) -> np.ndarray:
    """The ranks' member blocks ``(sizes[rank], ...)``, concatenated in rank order on every rank."""
    if len(sizes) == 1:
        return local
    block = torch.zeros((max(sizes), *local.shape[1:]), dtype=torch.float32)
    block[: local.shape[0]] = torch.from_numpy(local)
    block = block.to(device if dist.get_backend() == "nccl" else "cpu")
    parts = [torch.empty_like(block) for _ in sizes]
    dist.all_gather(parts, block)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]).cpu().numpy()


def _lead_dataset(
    channels: np.ndarray, template: xr.DataArray, init_times: np.ndarray, lead: np.timedelta64
) -> xr.Dataset:
    """One lead of the ensemble, ``channels`` ``(member, init, channel, lat, lon)``, in the output layout."""
    coords = {name: template[name] for name in ("channel", "variable", "level", "units", "latitude", "longitude")}
    da = xr.DataArray(
        channels,
        dims=("member", "init_time", "channel", "latitude", "longitude"),
        coords={**coords, "member": np.arange(channels.shape[0]), "init_time": init_times},
    )
    ds = from_channels(da).expand_dims(lead_time=[np.timedelta64(lead, "ns")])
    return ds.transpose("init_time", "member", "lead_time", ...)


def _write_lead(path: Path, ds: xr.Dataset, k: int, leads: np.ndarray) -> None:
    """Write lead ``k`` into the zarr store at ``path``; lead 0 first creates the full-length store."""
    if k == 0:
        template = ds.chunk().isel(lead_time=np.zeros(len(leads), dtype=int)).assign_coords(lead_time=leads)
        encoding = {name: {"chunks": ds[name].shape} for name in ds.data_vars}
        template.to_zarr(path, mode="w", compute=False, encoding=encoding, consolidated=False, zarr_format=2)
    region = ds.drop_vars([name for name in ds.coords if "lead_time" not in ds[name].dims])
    region.to_zarr(path, region={"lead_time": slice(k, k + 1)}, consolidated=False)


def forecast(
    denoiser,
    stats: NormStats,
    initial_conditions: xr.Dataset,
    n_members: int,
    n_steps: int,
    sampling_cfg: SamplingConfig,
    dataset_cfg: DatasetConfig,
    seed: int,
    store: Path | str | None = None,
    ic_perturbation: float | None = None,
    progress: bool = True,
    residual_bias: torch.Tensor | None = None,
    shard: bool = True,
) -> xr.Dataset:
    """Autoregressive ensemble forecast of ``n_steps`` steps from each initial time.

    ``initial_conditions``: states in the input schema of ``druids.data.channels``
    (dim ``time``); every time whose ``dataset_cfg.history - 1`` previous states
    are also present is an initial time. Each step samples the next normalised
    residual given the condition built from the previous *sampled* states (as
    :class:`~druids.data.dataset.ForecastDataset` builds it) and adds it to the
    state. Model noise: member k of initial time t draws from its own generator
    (:func:`member_generator`, stream ``"model"``, key ``init_key(t)``), so it
    is the same whatever ``n_members``, ``member_batch`` and other initial times.

    ``ic_perturbation``: std (normalised units) of Gaussian noise added to the
    initial states, from separate per-member generators (stream ``"ic"``), so
    that initial-condition and model spread can be studied apart. It is white
    on the grid; with ``dataset_cfg.spectral_truncation`` the first step's
    projection keeps only its part in the world's state space.
    ``residual_bias``: optional tendency bias correction (:func:`druids.training.tendency_bias`),
    subtracted from every sampled residual.

    Returns physical units, dims ``(init_time, member, lead_time, [level,]
    latitude, longitude)``, ``lead_time`` timedelta64 from 0 (the initial,
    possibly perturbed, state). With ``store``, each lead is written to zarr as it
    is computed (memory holds one lead), published atomically when complete,
    and returned lazily. Under ``torchrun`` members are sharded over ranks,
    gathered each lead, and rank 0 writes; every rank returns the result.
    ``shard=False``: this process makes every member alone, whatever the other
    ranks do (a check that one rank runs while the others wait, such as a
    training validator).
    """
    check_sampler(sampling_cfg)
    if n_members < 1 or n_steps < 0 or sampling_cfg.member_batch < 1:
        raise ValueError(
            f"Need n_members >= 1, n_steps >= 0 and SamplingConfig.member_batch >= 1; "
            f"got {n_members}, {n_steps}, {sampling_cfg.member_batch}"
        )
    rank, world = runtime.rank_and_world() if shard else (0, 1)
    members, sizes = _member_shard(n_members, rank, world)
    init_times = init_times_of(initial_conditions["time"].values, stats.step, dataset_cfg.history)
    leads = (np.arange(n_steps + 1) * stats.step).astype("timedelta64[ns]")
    states = rollout(
        denoiser, stats, initial_conditions, init_times, members, n_steps, sampling_cfg, dataset_cfg, seed,
        ic_perturbation, residual_bias,
    )
    device = next(denoiser.parameters()).device
    bar = runtime.progress(total=n_steps + 1, desc="forecast", unit="lead", disable=not progress or rank > 0)
    attrs = {"kind": "model ensemble", "sampling_config": json.dumps(to_dict(sampling_cfg), sort_keys=True),
             "seed": seed, "ic_perturbation": float(ic_perturbation or 0.0)}  # fmt: skip

    def lead_datasets() -> Iterator[xr.Dataset]:
        for k, (local, nfe) in enumerate(states):
            channels = _gather_members(local.transpose("member", "time", ...).values, sizes, device)
            attrs["nfe_per_step"] = nfe
            bar.update()
            yield _lead_dataset(channels, local, init_times, leads[k])

    if store is None:
        ds = xr.concat(list(lead_datasets()), dim="lead_time")
        bar.close()
        return ds.assign_attrs(attrs)

    def write(tmp: Path) -> None:
        for k, lead in enumerate(lead_datasets()):
            _write_lead(tmp, lead, k, leads)
        zarr.open_group(tmp, mode="r+").attrs.update(attrs)
        zarr.consolidate_metadata(tmp)

    if rank == 0:
        atomic_write(Path(store), write)
    else:
        for _ in lead_datasets():  # take part in the gathers
            pass
    bar.close()
    if world > 1:
        dist.barrier()
    return xr.open_zarr(store)


def _member_shard(n_members: int, rank: int, world: int) -> tuple[list[int], list[int]]:
    """This rank's members and every rank's member count: contiguous blocks of ``range(n_members)``."""
    if n_members < world:
        raise ValueError(f"{n_members} members cannot be shared by {world} processes; run fewer processes")
    shards = np.array_split(np.arange(n_members), world)
    return shards[rank].tolist(), [len(shard) for shard in shards]


def sampler_cost(
    denoiser,
    stats: NormStats,
    initial_conditions: xr.Dataset,
    sampling_cfg: SamplingConfig,
    dataset_cfg: DatasetConfig,
    n_members: int,
    n_steps: int = 1,
    seed: int = 0,
    repeats: int = 1,
) -> dict:
    """Measured cost of :func:`forecast` with ``sampling_cfg`` on this machine.

    Times ``n_steps`` steps of ``n_members`` members (in batches of
    ``sampling_cfg.member_batch``) from the initial times of
    ``initial_conditions``, after one untimed warm-up step; best of ``repeats``.
    The wall time includes everything a forecast does besides the network
    (noise draws, conditions, un-normalising, xarray). Returns ``nfe_per_step``
    (batched model calls per step), ``seconds_per_member_step`` (per member
    and initial time), ``member_steps_per_s``, ``evaluations_per_s`` (one
    evaluation = one sample through the network: NFE x member-steps / s) and
    ``warmup_seconds`` (the warm-up call: with ``SamplingConfig.compile``, the
    compilation for this batch shape).
    """
    args = (denoiser, stats, initial_conditions, n_members)
    start = time.perf_counter()
    forecast(*args, 1, sampling_cfg, dataset_cfg, seed, progress=False)  # warm-up
    warmup = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fc = forecast(*args, n_steps, sampling_cfg, dataset_cfg, seed, progress=False)
        best = min(best, time.perf_counter() - start)
    member_steps = n_members * fc.sizes["init_time"] * n_steps
    nfe = int(fc.attrs["nfe_per_step"])
    return {
        "sampler": sampling_cfg.sampler,
        "n_levels": sampling_cfg.n_levels,
        "member_batch": sampling_cfg.member_batch,
        "nfe_per_step": nfe,
        "seconds_per_member_step": best / member_steps,
        "member_steps_per_s": member_steps / best,
        "evaluations_per_s": nfe * member_steps / best,
        "warmup_seconds": warmup,
    }

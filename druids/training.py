"""Training of the denoiser: AdamW, warm-up + cosine schedule, EMA, checkpoints, resume, AMP, DDP.

A run is fixed by its :class:`RunConfig` (seed, world, dataset, model,
training) and lives in ``<cache>/runs/<objective>-<hash>/``:

* ``checkpoint.pt``: the latest state (weights, EMA weights, optimiser,
  scheduler, step, run configuration), replaced atomically every
  ``checkpoint_every`` steps and at the end. Only tensors, numbers and
  strings, so it loads with ``torch.load(weights_only=True)``.
* ``metrics.jsonl``: one JSON record per line; ``{"kind": "train", "step",
  "loss", "lr", "grad_norm", "samples_per_s"}`` after every optimiser step and
  ``{"kind": "val", "step", "sigma": [...], "val_mse": [...]}`` after every
  validation (see :func:`read_metrics`).
* ``config.json``: the run configuration, for people.

Randomness is a pure function of ``(seed, step)``, so a checkpoint needs no
random-generator state and a resumed run repeats an uninterrupted one bit for
bit (on the same hardware and thread count). From the root seed
``cfg.seed``, ``numpy.random.SeedSequence`` derives independent streams: the
initial weights; the order of training samples in epoch ``e`` (a permutation
seeded by ``e``; the batch of step ``s`` is positions ``s*B .. s*B+B-1`` of the
concatenated epochs); the noise of micro-batch ``j`` at step ``s`` (one
``torch.Generator`` seeded by ``(s, j)``); and the validation noise (the same
at every validation, so curves are comparable across steps).

Validation (every ``val_every`` steps, with the EMA weights) measures the
denoising error on the validation split at fixed noise levels
(:func:`validation_loss_by_sigma`). On CUDA, ``TrainingConfig.bf16`` runs the
loss under bfloat16 autocast and ``compile`` compiles the network with
``torch.compile``; both are ignored on the CPU.

Under ``torchrun`` (``WORLD_SIZE > 1``) each process takes a contiguous block of
micro-batches of every global batch, gradients are averaged by
``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA) and rank 0 alone logs,
validates and writes checkpoints. With ``micro_batch`` set, the weights do not
depend on the number of processes (up to the rounding of the all-reduce).
``python -m druids.training --profile P`` (also under ``torchrun``) trains a
profile's run from the command line.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import pickle
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as torch_dist
import xarray as xr
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from druids import paths
from druids.cache import atomic_write, write_json
from druids.config import (
    Config,
    DatasetConfig,
    ModelConfig,
    TrainingConfig,
    WorldConfig,
    config_hash,
    from_dict,
    get_config,
    to_dict,
)
from druids.data import heldsuarez, spectral
from druids.data.dataset import (
    STATIC_CHANNELS,
    ForecastDataset,
    NormStats,
    area_weights,
    cached_norm_stats,
    data_fingerprint,
)
from druids.models import Denoiser, build_denoiser

#: An extra validation check: ``validate(ema_denoiser, stats, data) -> dict`` of JSON-able metrics.
Validator = Callable[[Denoiser, NormStats, xr.Dataset], dict]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
N_VAL_SIGMAS = 6
# Independent random streams derived from the root seed.
INIT, ORDER, NOISE, VALIDATION = range(4)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run; its hash names the run directory."""

    seed: int
    world: WorldConfig
    dataset: DatasetConfig
    model: ModelConfig
    training: TrainingConfig

    @classmethod
    def of(cls, cfg: Config) -> RunConfig:
        return cls(cfg.seed, cfg.world, cfg.dataset, cfg.model, cfg.training)


@dataclass
class TrainResult:
    """A run after :func:`train`: ``ema`` (for sampling) and ``model`` (raw weights) on the training device."""

    ema: Denoiser
    model: Denoiser
    stats: NormStats
    run_dir: Path
    step: int  # optimiser steps done in total
    steps_run: int  # optimiser steps taken by this call (0: loaded from the finished run)


def default_run_dir(cfg: Config) -> Path:
    """``<cache>/runs/<objective>-<hash of RunConfig>``."""
    return paths.cache_dir() / "runs" / f"{cfg.model.objective}-{config_hash(RunConfig.of(cfg))}"


# ------------------------------------------------------------------- randomness


def stream_seed(seed: int, *key: int) -> int:
    """A 64-bit seed for the random stream ``key`` (e.g. ``(NOISE, step, j)``) of root ``seed``."""
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint64)[0])


@functools.lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the ``n`` training samples in ``epoch``: a permutation, (n,) int (read-only, cached)."""
    order = np.random.default_rng(stream_seed(seed, ORDER, epoch)).permutation(n)
    order.flags.writeable = False
    return order


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> np.ndarray:
    """Training-sample indices of the global batch of ``step`` (0-based): (batch_size,) int.

    Epochs follow each other without gaps, so a batch may span two epochs.
    """
    positions = step * batch_size + np.arange(batch_size)
    return np.array([epoch_order(seed, p // n, n)[p % n] for p in positions])


def micro_batches(cfg: TrainingConfig, world_size: int, rank: int) -> list[tuple[int, int, int]]:
    """This process's micro-batches of the global batch as ``(index, start, stop)`` positions in it.

    The global batch of ``cfg.batch_size`` is cut into micro-batches of
    ``cfg.micro_batch`` samples (default ``batch_size / world_size``), dealt to
    the processes in contiguous blocks.
    """
    size = cfg.micro_batch or cfg.batch_size // world_size
    if size < 1 or cfg.batch_size % size or (cfg.batch_size // size) % world_size:
        raise ValueError(
            f"TrainingConfig.batch_size={cfg.batch_size} cannot be cut into micro-batches of "
            f"{cfg.micro_batch or 'batch_size / world_size'} shared by {world_size} processes; "
            "make batch_size a multiple of micro_batch * world_size."
        )
    per_rank = cfg.batch_size // size // world_size
    return [(j, j * size, (j + 1) * size) for j in range(rank * per_rank, (rank + 1) * per_rank)]


# ------------------------------------------------------------- schedule and EMA


def lr_factor(step: int, cfg: TrainingConfig) -> float:
    """Learning-rate multiplier of optimiser step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` up to 1, then a cosine decay
    that reaches ``final_lr_fraction`` at the last step ``n_steps - 1``.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.n_steps - 1 - cfg.warmup_steps))
    floor = cfg.final_lr_fraction
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def ema_decay(step: int, decay: float) -> float:
    """EMA decay used after optimiser step ``step`` (1-based): ``min(decay, (1 + step) / (10 + step))``.

    The warm-up keeps short runs from averaging in their random initial weights.
    """
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for every parameter, in place."""
    for averaged, current in zip(ema.parameters(), model.parameters(), strict=True):
        averaged.lerp_(current, 1 - decay)


# ------------------------------------------------------------------------ data


def open_data(cfg: Config, rank: int = 0, progress: bool = True) -> tuple[xr.Dataset, NormStats]:
    """The world store of ``cfg`` and its normalisation statistics (generated/computed if missing).

    Under ``torchrun`` rank 0 prepares them while the other processes wait.
    """
    truncation = cfg.dataset.spectral_truncation
    if truncation is not None and truncation != cfg.world.truncation:
        raise ValueError(
            f"DatasetConfig.spectral_truncation={truncation} differs from the world's truncation "
            f"T{cfg.world.truncation}; set it to {cfg.world.truncation} (or None to leave noise and samples unprojected)."
        )
    if rank > 0:
        torch_dist.barrier()
    ds = heldsuarez.open_world(cfg.world, progress=progress and rank == 0)
    stats = cached_norm_stats(ds, cfg.dataset, data_fingerprint(ds))
    if rank == 0 and torch_dist.is_initialized():
        torch_dist.barrier()
    return ds, stats


def build_model(cfg: Config, stats: NormStats) -> Denoiser:
    """The denoiser of ``cfg.model`` for the channels and grid of ``stats``, initialised from ``cfg.seed``."""
    n_target = len(stats.channel_names)
    n_condition = cfg.dataset.history * n_target + len(STATIC_CHANNELS)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(stream_seed(cfg.seed, INIT))
        return build_denoiser(
            cfg.model, n_target, n_condition, np.array(stats.latitude), noise_truncation=cfg.dataset.spectral_truncation
        )


def collate(dataset: ForecastDataset, indices, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples ``indices`` stacked: condition (B, Cc, H, W), target (B, C, H, W) on ``device``."""
    conditions, targets = zip(*(dataset[int(i)] for i in indices))
    return torch.stack(conditions).to(device), torch.stack(targets).to(device)


def perturb_condition(
    condition: torch.Tensor,
    target: torch.Tensor,
    residual_to_state: torch.Tensor,
    noise: float,
    generator: torch.Generator,
    latitude=None,
    truncation: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-time noise on the condition's states, and the target residual from the noisy state.

    ``condition`` ``(B, history * C + S, H, W)`` (normalised states, most recent
    first, then ``S`` static channels), ``target`` ``(B, C, H, W)`` (normalised
    residual), ``residual_to_state`` ``(C,)`` (:attr:`ForecastDataset.residual_to_state`).
    Every state of the history gets independent noise ``noise * eps`` in
    residual units (``noise * residual_to_state * eps`` in normalised state
    units); the target becomes ``x_{t+6h} - (x_t + error)``, i.e. ``target -
    noise * eps_t``, so the model learns to remove the error from the state it
    is given (Sanchez-Gonzalez et al. 2020, ICML). ``eps`` is white on the grid,
    or, with ``truncation`` and the grid's ``latitude`` (degrees), white noise
    projected onto the spherical harmonics up to ``truncation``
    (:func:`druids.data.spectral.truncate`). Returns new tensors.
    """
    n_channels = target.shape[1]
    n_states = (condition.shape[1] - len(STATIC_CHANNELS)) // n_channels
    shape = (condition.shape[0], n_states, n_channels, *condition.shape[2:])
    eps = torch.randn(shape, generator=generator, device=condition.device, dtype=condition.dtype)
    if truncation is not None:
        eps = spectral.truncate(eps, latitude, truncation)
    state_noise = (noise * residual_to_state.to(condition.dtype)[:, None, None] * eps).flatten(1, 2)
    states = condition[:, : n_states * n_channels] + state_noise
    return torch.cat([states, condition[:, n_states * n_channels :]], dim=1), target - noise * eps[:, 0]


# ------------------------------------------------------------------ validation


def validation_sigmas(model_cfg: ModelConfig, n: int = N_VAL_SIGMAS) -> np.ndarray:
    """``n`` log-spaced noise levels over ``[sigma_min, sigma_max]``: (n,)."""
    return np.geomspace(model_cfg.sigma_min, model_cfg.sigma_max, n)


@torch.no_grad()
def validation_loss_by_sigma(
    denoiser: Denoiser, dataset: ForecastDataset, sigmas, n_samples: int, batch_size: int, seed: int = 0
) -> xr.DataArray:
    """Denoising error of ``denoiser`` on ``dataset`` at fixed noise levels ``sigmas``.

    For each ``sigma``, the mean over ``n_samples`` evenly spaced samples
    ``(c, x0)`` of the area-weighted MSE ``weighted_mse(denoise(x0 + sigma eps,
    c, sigma), x0)`` (EDM convention for both objectives; units of the
    normalised residual squared, so about 1 at large sigma). ``eps`` comes from
    ``seed`` and is shared by all noise levels. Returns dims ``(sigma,)``.
    """
    device = next(denoiser.parameters()).device
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(n_samples, len(dataset))).round().astype(int))
    generator = torch.Generator(device).manual_seed(seed)
    total = np.zeros(len(sigmas))
    for start in range(0, len(indices), batch_size):
        condition, x0 = collate(dataset, indices[start : start + batch_size], device)
        eps = denoiser.noise_like(x0, generator)
        for k, sigma in enumerate(sigmas):
            estimate = denoiser.denoise(x0 + float(sigma) * eps, condition, float(sigma))
            total[k] += denoiser.weighted_mse(estimate, x0).sum().item()
    return xr.DataArray(total / len(indices), dims="sigma", coords={"sigma": np.asarray(sigmas)}, name="val_mse")


def tendency_bias(
    denoiser: Denoiser, dataset: ForecastDataset, sigma: float = 88.0, batch_size: int = 16, seed: int = 0
) -> torch.Tensor:
    """The model's zonal-mean tendency bias on ``dataset``: (C, H, 1), normalised residual units.

    The mean over all samples and longitudes of ``denoise(sigma * eps, c; sigma)
    - target``: at a noise level as large as ``sigma`` (the top of GenCast's
    range) the denoiser's estimate is its conditional-mean residual, so this is
    the systematic part of its one-step error. Subtracting it from every
    sampled residual (``residual_bias`` of :func:`druids.sampling.forecast` and
    :func:`druids.sampling.rollout_climate`) is a tendency bias correction as in
    Danforth, Kalnay & Miyoshi (2007, Monthly Weather Review, "Estimating and
    correcting global weather model error"); estimate it on the training split.
    """
    device = next(denoiser.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            condition, target = collate(dataset, range(start, min(start + batch_size, len(dataset))), device)
            noisy = sigma * denoiser.noise_like(target, generator)
            level = torch.full((len(target),), sigma, dtype=target.dtype, device=device)
            error = (denoiser.denoise(noisy, condition, level) - target).double().cpu()
            total = total + error.mean(dim=-1, keepdim=True).sum(dim=0)
    return (total / len(dataset)).float()


def tendency_bias_per_day(bias: torch.Tensor, stats: NormStats, step_hours: float) -> pd.DataFrame:
    """:func:`tendency_bias` in physical units per day, one row per channel.

    Columns: its area-weighted global mean and its largest absolute zonal mean
    (over latitudes); ``step_hours`` is the model's time step.
    """
    per_day = bias.squeeze(-1).numpy() * stats.residual_std.values[:, None] * 24 / step_hours  # (channel, latitude)
    weights = area_weights(stats.latitude).values  # mean 1
    return pd.DataFrame(
        {
            "global mean [units/day]": (per_day * weights).mean(axis=1),
            "largest zonal mean [units/day]": np.abs(per_day).max(axis=1),
        },
        index=stats.channel_names,
    )


# ----------------------------------------------------------------- checkpoints


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted paths where two :func:`~druids.config.to_dict` trees differ: ``["model.base_channels: 8 != 16"]``."""
    differences = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, "(absent)"), new.get(key, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            differences += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append(f"{prefix}{key}: {json.dumps(a)} != {json.dumps(b)}")
    return differences


def save_checkpoint(path: Path, step: int, model, ema, optimizer, scheduler, run: RunConfig) -> None:
    """Write the training state atomically (temporary file, then rename)."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "config": json.dumps(to_dict(run), sort_keys=True),
        "config_hash": config_hash(run),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, run: RunConfig, device) -> dict:
    """The state saved by :func:`save_checkpoint`; error naming the fields if it belongs to another config."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(
            f"Cannot read checkpoint {path}: corrupt or not written by druids.training ({type(err).__name__}). "
            "Delete it to train this run again."
        ) from err
    differences = config_differences(json.loads(state["config"]), to_dict(run))
    if differences:
        raise ValueError(
            f"Checkpoint {path} was written for another configuration (checkpoint != requested): "
            f"{'; '.join(differences)}. Train into another run_dir, or delete {path.parent} to start over."
        )
    return state


# --------------------------------------------------------------------- metrics


def append_metrics(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records after ``step`` (logged by a run killed after its last checkpoint)."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        atomic_write(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in lines)))


def _records(run_dir: Path, kinds: tuple[str, ...]) -> list[dict]:
    """The records of the run's metrics log whose ``kind`` is one of ``kinds``."""
    lines = (Path(run_dir) / METRICS).read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] in kinds]


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """``metrics.jsonl`` of a run as a tidy table.

    One row per optimiser step (``kind == "train"``: ``step, loss, lr,
    grad_norm, samples_per_s``) and one per validation step and noise level
    (``kind == "val"``: ``step, sigma, val_mse``); other columns are NaN.
    """
    frame = pd.DataFrame.from_records(_records(run_dir, ("train", "val")))
    if "sigma" in frame:
        frame = frame.explode(["sigma", "val_mse"], ignore_index=True)
        frame = frame.astype({"sigma": float, "val_mse": float})
    return frame


def read_extra_validation(run_dir: Path) -> pd.DataFrame:
    """The ``val_extra`` records of a run (from ``validators``), one row per step and list entry."""
    frame = pd.DataFrame.from_records(_records(run_dir, ("val_extra",)))
    if frame.empty:
        return frame
    listed = [c for c in frame.columns if isinstance(frame[c].iloc[0], list)]
    return frame.explode(listed, ignore_index=True)


# -------------------------------------------------------------------- training


@dataclass(frozen=True)
class Process:
    """This process's place in a ``torchrun`` job (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``); 1, 0, 0 alone."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Process:
        env = os.environ
        return cls(int(env.get("WORLD_SIZE", 1)), int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)))


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``"auto"``: this process's GPU if CUDA is available, else the CPU."""
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


class LossModule(nn.Module):
    """``forward(x0, c, generator) = denoiser.loss(x0, c, generator)``: the one call DDP wraps."""

    def __init__(self, denoiser: Denoiser):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x0: torch.Tensor, c: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.denoiser.loss(x0, c, generator)


def train(
    cfg: Config,
    run_dir: Path | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    device: str = "auto",
    validators: Sequence[Validator] = (),
    processes: int = 1,
) -> TrainResult:
    """Train the denoiser of ``cfg`` in ``run_dir`` (default :func:`default_run_dir`), resuming from its checkpoint.

    A finished run is loaded without training. ``stop_after``: return after that
    many optimiser steps in total, without a final checkpoint, as if the process
    had been killed (tests). Under ``torchrun`` the process group is started
    here (and closed again) unless the caller started it. ``validators``: extra
    checks run with the EMA model at every validation step (rank 0), each
    logged as a ``val_extra`` record, e.g. ``calibration.SkillValidator``
    (passed in, so that training does not import later stages).

    ``processes`` > 1 (CPU only): train in that many local processes started
    here, as ``torchrun`` would (gloo DDP, ``cpu_count // processes`` threads
    each), while this process shows their progress and then loads the result.
    Validators must then pickle. See :func:`auto_processes`.
    """
    if processes > 1 and Process.from_env().world_size == 1:
        if stop_after is not None:
            raise ValueError("stop_after needs processes=1 (it imitates a killed single process)")
        if resolve_device(device).type != "cpu":
            raise ValueError(f"processes={processes} starts CPU processes; on {device} use torchrun instead")
        run_dir = default_run_dir(cfg) if run_dir is None else Path(run_dir)
        open_data(cfg, progress=progress)  # generate the world here, where its progress is shown
        before = _checkpoint_step(run_dir)
        if before < cfg.training.n_steps:
            _train_in_processes(cfg, run_dir, processes, validators, progress)
        result = train(cfg, run_dir, progress=False, device="cpu")  # finished: loads without training
        result.steps_run = result.step - before
        return result
    process = Process.from_env()
    device = resolve_device(device, process.local_rank)
    own_group = process.world_size > 1 and not torch_dist.is_initialized()
    if own_group:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return _train(cfg, run_dir, progress, stop_after, device, process, validators)
    finally:
        if own_group:
            torch_dist.destroy_process_group()


def auto_processes(cfg: Config, device: str = "auto") -> int:
    """How many local processes :func:`train` should use for ``cfg`` on ``device``.

    On the CPU, one per micro-batch of the global batch, at most one per core:
    with ``TrainingConfig.micro_batch`` set the weights do not depend on the
    number of processes, and on 2 cores two single-threaded processes train
    about 1.7x faster than one with two threads (``bench/training.py``). 1 on
    CUDA (use ``torchrun`` for several GPUs) and when ``micro_batch`` is None.
    """
    tc = cfg.training
    if resolve_device(device).type != "cpu" or tc.micro_batch is None:
        return 1
    return max(1, min(os.cpu_count() or 1, tc.batch_size // tc.micro_batch))


def _checkpoint_step(run_dir: Path) -> int:
    """The optimiser step of the run's checkpoint, 0 if it has none."""
    path = Path(run_dir) / CHECKPOINT
    return int(torch.load(path, map_location="cpu", weights_only=True)["step"]) if path.exists() else 0


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that is free now: the rendezvous of locally spawned gloo processes."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_in_processes(cfg: Config, run_dir: Path, processes: int, validators, progress: bool) -> None:
    """Run :func:`train` in ``processes`` spawned CPU processes; a progress bar follows rank 0's metrics log."""
    import torch.multiprocessing as mp

    port = free_local_port()
    threads = max(1, (os.cpu_count() or 1) // processes)
    workers = mp.spawn(
        _process_worker, args=(processes, port, threads, cfg, run_dir, list(validators)), nprocs=processes, join=False
    )
    desc = f"train {cfg.model.objective} ({processes} processes)"
    with tqdm(total=cfg.training.n_steps, disable=not progress, desc=desc, unit="step") as bar:
        while not workers.join(timeout=2):
            bar.update(max(0, _logged_step(run_dir) - bar.n))
        bar.update(max(0, _logged_step(run_dir) - bar.n))


def _logged_step(run_dir: Path) -> int:
    """The step of the last complete record in the run's metrics log (0 if there is none yet)."""
    path = Path(run_dir) / METRICS
    lines = path.read_text().splitlines() if path.exists() else []
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):  # a line being written
            continue
    return 0


def _process_worker(rank: int, processes: int, port: int, threads: int, cfg: Config, run_dir: Path, validators) -> None:
    """One of :func:`_train_in_processes`'s processes: the ``torchrun`` environment, then :func:`train`."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(processes), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(threads)
    train(cfg, run_dir, progress=False, device="cpu", validators=validators)


def _train(cfg: Config, run_dir, progress, stop_after, device, process: Process, validators=()) -> TrainResult:
    run, tc = RunConfig.of(cfg), cfg.training
    run_dir = default_run_dir(cfg) if run_dir is None else Path(run_dir)
    checkpoint, metrics = run_dir / CHECKPOINT, run_dir / METRICS
    ds, stats = open_data(cfg, process.rank, progress)
    model = build_model(cfg, stats).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, cfg=tc))
    step = 0
    if checkpoint.exists():
        state = load_checkpoint(checkpoint, run, device)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
    start = step
    last = tc.n_steps if stop_after is None else min(tc.n_steps, stop_after)
    if step < last:
        lead = process.rank == 0
        if lead:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / "config.json", to_dict(run))
            truncate_metrics(metrics, step)
        train_set = ForecastDataset(ds, stats, "train", cfg.dataset)
        val_set = ForecastDataset(ds, stats, "val", cfg.dataset) if lead else None
        if tc.compile and device.type == "cuda":
            model.net.compile()
        loss_module = LossModule(model)
        if process.world_size > 1:
            device_ids = [device.index] if device.type == "cuda" else None
            loss_module = DistributedDataParallel(loss_module, device_ids=device_ids)
        model.train()
        show = progress and lead
        bar = tqdm(total=tc.n_steps, initial=step, disable=not show, desc=f"train {cfg.model.objective}", unit="step")
        while step < last:
            tick = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = _accumulate_gradients(loss_module, train_set, cfg, step, device, process)
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            step += 1
            update_ema(ema, model, ema_decay(step, tc.ema_decay))
            if not lead:
                continue
            speed = tc.batch_size / (time.perf_counter() - tick)
            record = {"loss": loss, "lr": lr, "grad_norm": grad_norm.item(), "samples_per_s": speed}
            append_metrics(metrics, {"kind": "train", "step": step, **record})
            bar.update()
            bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{speed:.1f}")
            if step % tc.val_every == 0 or step == tc.n_steps:
                append_metrics(metrics, {"kind": "val", "step": step, **_validate(ema, val_set, cfg)})
                for validate in validators:
                    with torch.no_grad():
                        append_metrics(metrics, {"kind": "val_extra", "step": step, **validate(ema, stats, ds)})
            if step % tc.checkpoint_every == 0 or step == tc.n_steps:
                save_checkpoint(checkpoint, step, model, ema, optimizer, scheduler, run)
        bar.close()
        if process.world_size > 1:
            torch_dist.barrier()  # rank 0 has written its last checkpoint
    return TrainResult(ema.eval(), model.eval(), stats, run_dir, step, step - start)


def _accumulate_gradients(loss_module, train_set: ForecastDataset, cfg: Config, step: int, device, process) -> float:
    """Gradients of the global batch of ``step`` into ``.grad`` (averaged over processes); returns its mean loss."""
    tc = cfg.training
    indices = batch_indices(cfg.seed, step, tc.batch_size, len(train_set))
    mine = micro_batches(tc, process.world_size, process.rank)
    total = torch.zeros((), device=device)
    residual_to_state = torch.as_tensor(train_set.residual_to_state, device=device)
    for k, (j, lo, hi) in enumerate(mine):
        condition, target = collate(train_set, indices[lo:hi], device)
        generator = torch.Generator(device).manual_seed(stream_seed(cfg.seed, NOISE, step, j))
        if tc.condition_noise > 0:
            condition, target = perturb_condition(
                condition, target, residual_to_state, tc.condition_noise, generator,
                train_set.latitude, cfg.dataset.spectral_truncation,
            )
        share = (hi - lo) / tc.batch_size
        sync = k == len(mine) - 1 or process.world_size == 1  # DDP all-reduces at the last micro-batch
        with nullcontext() if sync else loss_module.no_sync():
            with torch.autocast(device.type, torch.bfloat16, enabled=tc.bf16 and device.type == "cuda"):
                loss = loss_module(target, condition, generator)
            (loss * share * process.world_size).backward()  # DDP divides the sum over processes by world_size
        total += loss.detach() * share
    if process.world_size > 1:
        torch_dist.all_reduce(total)
    value = total.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"Training loss is {value} at step {step + 1}; lower TrainingConfig.lr or check data")
    return value


def _validate(ema: Denoiser, val_set: ForecastDataset, cfg: Config) -> dict:
    """Validation record: the EMA model's :func:`validation_loss_by_sigma` on ``val_batches`` batches."""
    tc, sigmas = cfg.training, validation_sigmas(cfg.model)
    seed = stream_seed(cfg.seed, VALIDATION)
    mse = validation_loss_by_sigma(ema, val_set, sigmas, tc.val_batches * tc.batch_size, tc.batch_size, seed)
    return {"sigma": sigmas.tolist(), "val_mse": mse.values.tolist()}


def load_trained(
    cfg: Config,
    run_dir: Path | None = None,
    progress: bool = True,
    device: str = "auto",
    validators: Sequence[Validator] = (),
    processes: int = 1,
):
    """``(ema_denoiser, stats, metrics)`` of the run of ``cfg``, training it first if it is not finished.

    ``metrics`` is :func:`read_metrics`'s table; ``validators`` and ``processes`` as in :func:`train`.
    """
    result = train(cfg, run_dir, progress=progress, device=device, validators=validators, processes=processes)
    return result.ema, result.stats, read_metrics(result.run_dir)


def main(argv: list[str] | None = None) -> None:
    """``python -m druids.training`` (or ``torchrun ... -m druids.training``): train a profile's run."""
    parser = argparse.ArgumentParser(prog="python -m druids.training", description=main.__doc__)
    parser.add_argument("--profile", default="default", help="configuration profile (smoke, default, gpu)")
    parser.add_argument("--seed", type=int, help="root seed (default: the profile's)")
    parser.add_argument("--config", type=Path, help="JSON of a whole Config (config.to_dict); replaces --profile")
    parser.add_argument("--run-dir", type=Path, help="run directory (default: <cache>/runs/<objective>-<hash>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.config is not None:
        cfg = from_dict(Config, json.loads(args.config.read_text()))
    else:
        cfg = get_config(args.profile, args.seed)
    result = train(cfg, args.run_dir, progress=not args.no_progress)
    if result.steps_run and Process.from_env().rank == 0:
        print(f"trained {result.steps_run} steps; run directory {result.run_dir}")


if __name__ == "__main__":
    main()

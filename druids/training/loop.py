"""Training of the denoiser: AdamW, warm-up + cosine schedule, EMA, checkpoints, resume, AMP, DDP, local processes.

A run (:mod:`druids.training.checkpoint`) trains from scratch or resumes from
its checkpoint; what each step sees is fixed by :mod:`druids.training.batches`.
Validation (every ``val_every`` steps, with the EMA weights) measures the
denoising error on the validation split at fixed noise levels
(:func:`~druids.training.diagnostics.validation_loss_by_sigma`).
``TrainingConfig.bf16`` runs the loss under bfloat16 autocast where the device
supports it, ``compile`` compiles the network with ``torch.compile`` and
``channels_last`` runs it in the NHWC layout.

Under ``torchrun`` (``WORLD_SIZE > 1``, e.g. ``torchrun --nproc-per-node 2 -m
druids train --profile P``) each process takes a contiguous block of
micro-batches of every global batch, gradients are averaged by
``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA) and rank 0 alone logs,
validates and writes checkpoints. With ``micro_batch`` set, the weights do not
depend on the number of processes (up to the rounding of the all-reduce).
:func:`train` can also start such processes itself on a multi-core CPU.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as torch_dist
import xarray as xr
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from druids import runtime
from druids.cache import write_json
from druids.config import Config, to_dict
from druids.data.dataset import ForecastDataset, collate
from druids.data.normalisation import NormStats
from druids.data.source import open_dataset
from druids.models import Denoiser, build_denoiser, build_loss, noise_band
from druids.training import batches
from druids.training.checkpoint import (
    CHECKPOINT,
    METRICS,
    RunConfig,
    append_metrics,
    checkpoint_step,
    default_run_dir,
    load_checkpoint,
    logged_step,
    read_metrics,
    save_checkpoint,
    truncate_metrics,
)
from druids.training.diagnostics import validation_loss_by_sigma, validation_sigmas

#: An extra validation check: ``validate(ema_denoiser, stats, data) -> dict`` of JSON-able metrics.
Validator = Callable[[Denoiser, NormStats, xr.Dataset], dict]


@dataclass
class TrainResult:
    """A run after :func:`train`: ``ema`` (for sampling) and ``model`` (raw weights) on the training device."""

    ema: Denoiser
    model: Denoiser
    stats: NormStats
    run_dir: Path
    step: int  # optimiser steps done in total
    steps_run: int  # optimiser steps taken by this call (0: loaded from the finished run)


@dataclass(frozen=True)
class TrainedModel:
    """A finished run, ready to sample: the EMA ``denoiser``, its data's ``stats``, the ``metrics`` table
    (:func:`~druids.training.checkpoint.read_metrics`) and the ``run_dir``."""

    denoiser: Denoiser
    stats: NormStats
    metrics: pd.DataFrame
    run_dir: Path


def build_model(cfg: Config, stats: NormStats) -> Denoiser:
    """The denoiser of ``cfg.model`` for the channels and grid of ``stats``, initialised from ``cfg.seed``."""
    n_target = len(stats.channel_names)
    n_condition = cfg.dataset.history * n_target + len(stats.static_channel_names)
    band = noise_band(stats.latitude, cfg.dataset.spectral_truncation)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(batches.stream_seed(cfg.seed, batches.INIT))
        return build_denoiser(cfg.model, n_target, n_condition, band)


class LossModule(nn.Module):
    """``forward(x0, c, generator) = loss(denoiser, x0, c, generator)``: the one call DDP wraps."""

    def __init__(self, denoiser: Denoiser, loss: nn.Module):
        super().__init__()
        self.denoiser, self.loss = denoiser, loss

    def forward(self, x0: torch.Tensor, c: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.loss(self.denoiser, x0, c, generator)


@dataclass
class _State:
    """Everything a step changes: weights, EMA weights, optimiser, scheduler and the step count."""

    model: Denoiser
    ema: Denoiser
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: int = 0

    @classmethod
    def start(cls, cfg: Config, stats: NormStats, device, checkpoint: Path) -> _State:
        """A new run's state, or the state of ``checkpoint`` if it exists (checked against ``cfg``)."""
        model = build_model(cfg, stats).to(device)
        ema = copy.deepcopy(model).requires_grad_(False)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.training.lr, weight_decay=cfg.training.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(batches.lr_factor, cfg=cfg.training))
        state = cls(model, ema, optimizer, scheduler)
        if checkpoint.exists():
            saved = load_checkpoint(checkpoint, RunConfig.of(cfg), device)
            for name in ("model", "ema", "optimizer", "scheduler"):
                getattr(state, name).load_state_dict(saved[name])
            state.step = saved["step"]
        return state

    def save(self, path: Path, cfg: Config) -> None:
        save_checkpoint(path, self.step, self.model, self.ema, self.optimizer, self.scheduler, RunConfig.of(cfg))


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
    if processes > 1 and runtime.Process.from_env().world_size == 1:
        return _train_spawning(cfg, run_dir, progress, stop_after, device, validators, processes)
    device = runtime.resolve_device(device, runtime.Process.from_env().local_rank)
    with runtime.process_group(device) as process:
        return _train(cfg, run_dir, progress, stop_after, device, process, validators)


def _train(cfg: Config, run_dir, progress, stop_after, device, process: runtime.Process, validators) -> TrainResult:
    run_dir = default_run_dir(cfg) if run_dir is None else Path(run_dir)
    ds, stats = open_dataset(cfg, process.rank, progress)
    state = _State.start(cfg, stats, device, run_dir / CHECKPOINT)
    start = state.step
    last = cfg.training.n_steps if stop_after is None else min(cfg.training.n_steps, stop_after)
    if state.step < last:
        if process.rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / "config.json", to_dict(RunConfig.of(cfg)))
            truncate_metrics(run_dir / METRICS, state.step)
        _optimise(cfg, state, ds, stats, run_dir, last, progress, device, process, validators)
    return TrainResult(state.ema.eval(), state.model.eval(), stats, run_dir, state.step, state.step - start)


def _optimise(cfg: Config, state: _State, ds, stats, run_dir: Path, last: int, progress, device, process, validators):
    """Optimiser steps from ``state.step`` to ``last``; rank 0 logs, validates and checkpoints."""
    tc, lead = cfg.training, process.rank == 0
    train_set = ForecastDataset(ds, stats, "train", cfg.dataset)
    val_set = ForecastDataset(ds, stats, "val", cfg.dataset) if lead else None
    loss = build_loss(cfg.model, stats.latitude, len(stats.channel_names)).to(device)
    _speed_up(state, tc)
    bf16 = tc.bf16 and runtime.bf16_supported(device)
    loss_module = LossModule(state.model, loss)
    if process.world_size > 1:
        loss_module = DistributedDataParallel(loss_module, device_ids=[device.index] if device.type == "cuda" else None)
    state.model.train()
    desc, show = f"train {cfg.model.objective}", progress and lead
    bar = runtime.progress(total=tc.n_steps, initial=state.step, disable=not show, desc=desc, unit="step")
    while state.step < last:
        tick = time.perf_counter()
        state.optimizer.zero_grad(set_to_none=True)
        value = _accumulate_gradients(loss_module, train_set, cfg, state.step, device, process, bf16)
        grad_norm = nn.utils.clip_grad_norm_(state.model.parameters(), tc.grad_clip)
        lr = state.scheduler.get_last_lr()[0]
        state.optimizer.step()
        state.scheduler.step()
        state.step += 1
        batches.update_ema(state.ema, state.model, batches.ema_decay(state.step, tc.ema_decay))
        if not lead:
            continue
        speed = tc.batch_size / (time.perf_counter() - tick)
        record = {"loss": value, "lr": lr, "grad_norm": grad_norm.item(), "samples_per_s": speed}
        append_metrics(run_dir / METRICS, {"kind": "train", "step": state.step, **record})
        bar.update()
        bar.set_postfix(loss=f"{value:.4f}", samples_s=f"{speed:.1f}")
        if state.step % tc.val_every == 0 or state.step == tc.n_steps:
            _validate(cfg, state, loss, val_set, stats, ds, run_dir, validators)
        if state.step % tc.checkpoint_every == 0 or state.step == tc.n_steps:
            state.save(run_dir / CHECKPOINT, cfg)
    bar.close()
    if process.world_size > 1:
        torch_dist.barrier()  # rank 0 has written its last checkpoint


def _speed_up(state: _State, tc) -> None:
    """The layout and compilation of ``TrainingConfig`` (channels-last, ``torch.compile``) for model and EMA."""
    for model in (state.model, state.ema):
        model.net.use_channels_last(tc.channels_last)
    if tc.compile:
        state.model.net.compile(dynamic=False)  # static shapes: inductor failed on a dynamic batch size


def _accumulate_gradients(loss_module, train_set, cfg: Config, step: int, device, process, bf16: bool) -> float:
    """Gradients of the global batch of ``step`` into ``.grad`` (averaged over processes); returns its mean loss.

    ``bf16``: the loss under bfloat16 autocast."""
    tc = cfg.training
    indices = batches.batch_indices(cfg.seed, step, tc.batch_size, len(train_set))
    mine = batches.micro_batches(tc, process.world_size, process.rank)
    total = torch.zeros((), device=device)
    residual_to_state = torch.as_tensor(train_set.residual_to_state, device=device)
    for k, (j, lo, hi) in enumerate(mine):
        condition, target = collate(train_set, indices[lo:hi], device)
        generator = torch.Generator(device).manual_seed(batches.stream_seed(cfg.seed, batches.NOISE, step, j))
        if tc.condition_noise > 0:
            condition, target = batches.perturb_condition(
                condition, target, residual_to_state, tc.condition_noise, generator,
                train_set.latitude, cfg.dataset.spectral_truncation, train_set.n_static,
            )
        share = (hi - lo) / tc.batch_size
        sync = k == len(mine) - 1 or process.world_size == 1  # DDP all-reduces at the last micro-batch
        with nullcontext() if sync else loss_module.no_sync():
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                loss = loss_module(target, condition, generator)
            (loss * share * process.world_size).backward()  # DDP divides the sum over processes by world_size
        total += loss.detach() * share
    if process.world_size > 1:
        torch_dist.all_reduce(total)
    value = total.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"Training loss is {value} at step {step + 1}; lower TrainingConfig.lr or check data")
    return value


def _validate(cfg: Config, state: _State, loss, val_set: ForecastDataset, stats, ds, run_dir: Path, validators) -> None:
    """Log the EMA model's :func:`validation_loss_by_sigma` on ``val_batches`` batches, then each validator's record."""
    tc, sigmas = cfg.training, validation_sigmas(cfg.model)
    seed = batches.stream_seed(cfg.seed, batches.VALIDATION)
    mse = validation_loss_by_sigma(state.ema, loss, val_set, sigmas, tc.val_batches * tc.batch_size, tc.batch_size, seed)
    metrics = run_dir / METRICS
    append_metrics(metrics, {"kind": "val", "step": state.step, "sigma": sigmas.tolist(), "val_mse": mse.values.tolist()})
    for validate in validators:
        with torch.no_grad():
            append_metrics(metrics, {"kind": "val_extra", "step": state.step, **validate(state.ema, stats, ds)})


def load_trained(
    cfg: Config,
    run_dir: Path | None = None,
    progress: bool = True,
    device: str = "auto",
    validators: Sequence[Validator] = (),
    processes: int = 1,
) -> TrainedModel:
    """The :class:`TrainedModel` of the run of ``cfg``, training it first if it is not finished.

    ``validators`` and ``processes`` as in :func:`train`.
    """
    result = train(cfg, run_dir, progress=progress, device=device, validators=validators, processes=processes)
    return TrainedModel(result.ema, result.stats, read_metrics(result.run_dir), result.run_dir)


# ------------------------------------------------------------------- processes


def auto_processes(cfg: Config, device: str = "auto") -> int:
    """How many local processes :func:`train` should use for ``cfg`` on ``device``.

    On the CPU, one per micro-batch of the global batch, at most one per core:
    with ``TrainingConfig.micro_batch`` set the weights do not depend on the
    number of processes, and on 2 cores two single-threaded processes train
    about 1.7x faster than one with two threads (``bench/training.py``). 1 on
    CUDA (use ``torchrun`` for several GPUs) and when ``micro_batch`` is None.
    """
    tc = cfg.training
    if runtime.resolve_device(device).type != "cpu" or tc.micro_batch is None:
        return 1
    return max(1, min(os.cpu_count() or 1, tc.batch_size // tc.micro_batch))


def _train_spawning(cfg: Config, run_dir, progress, stop_after, device, validators, processes: int) -> TrainResult:
    """:func:`train` in ``processes`` local CPU processes started here; this process shows progress, then loads."""
    if stop_after is not None:
        raise ValueError("stop_after needs processes=1 (it imitates a killed single process)")
    if runtime.resolve_device(device).type != "cpu":
        raise ValueError(f"processes={processes} starts CPU processes; on {device} use torchrun instead")
    run_dir = default_run_dir(cfg) if run_dir is None else Path(run_dir)
    open_dataset(cfg, progress=progress)  # generate the world here, where its progress is shown
    before = checkpoint_step(run_dir)
    if before < cfg.training.n_steps:
        _run_processes(cfg, run_dir, processes, validators, progress)
    result = train(cfg, run_dir, progress=False, device="cpu")  # finished: loads without training
    result.steps_run = result.step - before
    return result


def _run_processes(cfg: Config, run_dir: Path, processes: int, validators, progress: bool) -> None:
    """Run :func:`train` in ``processes`` spawned CPU processes; a progress bar follows rank 0's metrics log."""
    desc = f"train {cfg.model.objective} ({processes} processes)"
    done = functools.partial(logged_step, run_dir)
    args = (cfg, run_dir, list(validators))
    runtime.run_local_processes(_process_worker, args, processes, done, cfg.training.n_steps, desc, progress)


def _process_worker(cfg: Config, run_dir: Path, validators) -> None:
    """One of :func:`_run_processes`'s processes (``torchrun``'s environment is set): :func:`train` on the CPU."""
    train(cfg, run_dir, progress=False, device="cpu", validators=validators)

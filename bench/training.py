"""Benchmark of one training step of the denoiser (not a test).

For the model sizes of the ``default`` and ``gpu`` profiles, on synthetic
batches of the Held–Suarez world's shape (25 target channels, 29 condition
channels, 32 x 64 grid), measures in one run:
- samples/s of a full EDM training step (forward, backward, AdamW update),
  eager fp32 and, on CUDA, bf16 autocast + ``torch.compile``;
- model FLOPs per sample, counted with ``torch.utils.flop_counter.FlopCounterMode``
  (forward + backward), and the achieved FLOP/s; on CUDA the model FLOP
  utilisation (MFU) against the device's dense bf16 peak (``--peak-tflops``,
  default 989 for an H100 SXM);
- on the CPU, samples/s of the ``default`` model's training step with the same
  global batch in 1 process using every core against ``P`` gloo DDP processes
  with ``cores / P`` threads each (what ``training.auto_processes`` chooses).
Results go to ``bench/training.json``.

Usage: ``python bench/training.py [--steps 10] [--batch 8]``
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from druids.config import get_config
from druids.models import build_denoiser, build_loss

N_TARGET, N_CONDITION, GRID = 25, 29, (32, 64)


def step_fn(denoiser, loss_fn, optimizer, bf16: bool):
    """One training step on a batch (x0, c)."""

    def step(x0, c, generator):
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = loss_fn(denoiser, x0, c, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def flops_per_sample(denoiser, loss_fn, x0, c) -> float:
    """Forward + backward FLOPs of the loss for one sample."""
    with FlopCounterMode(display=False) as counter:
        loss_fn(denoiser, x0[:1], c[:1], torch.Generator(x0.device).manual_seed(0)).backward()
    denoiser.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def measure(model_cfg, device, batch: int, steps: int, bf16: bool, compile_net: bool) -> dict:
    torch.manual_seed(0)
    latitudes = np.linspace(-87.2, 87.2, GRID[0])
    denoiser = build_denoiser(model_cfg, N_TARGET, N_CONDITION).to(device)
    loss_fn = build_loss(model_cfg, latitudes, N_TARGET).to(device)
    x0 = torch.randn(batch, N_TARGET, *GRID, device=device)
    c = torch.randn(batch, N_CONDITION, *GRID, device=device)
    flops = flops_per_sample(denoiser, loss_fn, x0, c)
    if compile_net:
        denoiser.net.compile()
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=1e-4)
    step = step_fn(denoiser, loss_fn, optimizer, bf16)
    generator = torch.Generator(device).manual_seed(0)
    for _ in range(3):  # warm-up (and compilation)
        step(x0, c, generator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(x0, c, generator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return {
        "parameters": sum(p.numel() for p in denoiser.parameters()),
        "batch": batch,
        "bf16": bf16,
        "compile": compile_net,
        "seconds_per_step": seconds,
        "samples_per_s": batch / seconds,
        "flops_per_sample": flops,
        "achieved_tflops": flops * batch / seconds / 1e12,
    }


def _ddp_worker(rank: int, world: int, port: int, threads: int, batch: int, steps: int, results) -> None:
    """One DDP process: ``batch / world`` samples per step; rank 0 reports seconds per step."""
    from torch.nn.parallel import DistributedDataParallel

    from druids.training.loop import LossModule

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model_cfg = get_config("default").model
    denoiser = build_denoiser(model_cfg, N_TARGET, N_CONDITION)
    loss_module = LossModule(denoiser, build_loss(model_cfg, np.linspace(-87.2, 87.2, GRID[0]), N_TARGET))
    module = DistributedDataParallel(loss_module) if world > 1 else loss_module
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=1e-4)
    x0, c = torch.randn(batch // world, N_TARGET, *GRID), torch.randn(batch // world, N_CONDITION, *GRID)
    generator = torch.Generator().manual_seed(rank)

    def step():
        module(x0, c, generator).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.distributed.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.distributed.barrier()
    if rank == 0:
        results.put((time.perf_counter() - start) / steps)
    torch.distributed.destroy_process_group()


def measure_processes(processes: int, batch: int, steps: int) -> dict:
    """Samples/s of the default model's training step in ``processes`` gloo processes sharing the cores."""
    import torch.multiprocessing as mp

    from druids.runtime import free_local_port

    port = free_local_port()
    threads = max(1, (os.cpu_count() or 1) // processes)
    results = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_ddp_worker, args=(processes, port, threads, batch, steps, results), nprocs=processes)
    seconds = results.get()
    return {"processes": processes, "threads_per_process": threads, "batch": batch, "seconds_per_step": seconds,
            "samples_per_s": batch / seconds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--gpu-batch", type=int, default=64)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="device dense bf16 peak, TFLOP/s")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    variants = [(False, False)] + ([(True, True)] if device.type == "cuda" else [])
    batch = args.gpu_batch if device.type == "cuda" else args.batch
    results = []
    for profile in ("default", "gpu"):
        model_cfg = get_config(profile).model
        for bf16, compile_net in variants:
            row = {"profile_model": profile, **measure(model_cfg, device, batch, args.steps, bf16, compile_net)}
            if device.type == "cuda":
                row["mfu"] = row["achieved_tflops"] / args.peak_tflops
            results.append(row)
            print(json.dumps(row))
    if device.type == "cpu":
        for processes in sorted({1, min(2, os.cpu_count() or 1)}):
            row = {"profile_model": "default", **measure_processes(processes, args.batch, args.steps)}
            results.append(row)
            print(json.dumps(row))
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    out = {
        "date": datetime.date.today().isoformat(),
        "device": name,
        "torch": torch.__version__,
        "command": f"python bench/training.py --steps {args.steps} --batch {args.batch} --gpu-batch {args.gpu_batch}",
        "results": results,
    }
    Path(__file__).with_name("training.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

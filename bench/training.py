"""Benchmark of one training step of the denoiser (not a test).

On synthetic batches of the Held–Suarez world's shape (25 target channels, 29
condition channels, 32 x 64 grid), the ``default`` model's EDM training step
(forward, backward, AdamW update; ``training.loop.LossModule`` under DDP, as
the training loop runs it), measured in one run:
- the CPU's peak in the same run (``bench/peak.py``: matmul and convolution,
  fp32 and bf16, all cores) and each result as a fraction of it;
- on the CPU, samples/s of the global batch (``--batch``, default 8) in
  ``P`` gloo processes (``cores / P`` threads each; ``P`` = 1 and the number of
  cores) for the variants of ``TrainingConfig``: eager fp32 with the network as
  it was before the speed work (the baseline: the old ``Norm``, one process per
  core, the best configuration before), eager fp32, ``channels_last``,
  ``compile`` (inductor), both, and bf16 autocast with channels-last; timed
  after the warm-up steps that include compilation, whose duration is reported too;
- model FLOPs per sample, counted with ``torch.utils.flop_counter.FlopCounterMode``
  (forward + backward), and the achieved FLOP/s;
- on CUDA (when present), eager fp32 against bf16 + compile for the ``default``
  and ``gpu`` models, with the model FLOP utilisation (MFU) against the device's
  dense bf16 peak (``--peak-tflops``, default 989 for an H100 SXM).
Results go to ``bench/training.json``.

Usage: ``python bench/training.py [--steps 10] [--batch 8] [--variants "compile,bf16 + channels-last"]``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from peak import cpu_peak
from torch.utils.flop_counter import FlopCounterMode

from druids import runtime
from druids.config import get_config
from druids.models import build_denoiser, build_loss, network
from druids.training.loop import LossModule

N_TARGET, N_CONDITION, GRID = 25, 29, (32, 64)
#: CPU variants: (name, channels_last, compile, bf16); the first is the network before the speed work
CPU_VARIANTS = [
    ("eager fp32, old Norm", False, False, False),
    ("eager fp32", False, False, False),
    ("channels-last", True, False, False),
    ("compile", False, True, False),
    ("compile + channels-last", True, True, False),
    ("bf16 + channels-last", True, False, True),
    ("compile + bf16 + channels-last", True, True, True),
]


def old_norm_forward(self, h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``Norm.forward`` before the speed work (a reshape of ``h`` per group), for the baseline."""
    b, ch = h.shape[:2]
    mean_square = h.reshape(b, self.groups, -1).pow(2).mean(dim=2)
    factor = scale[:, None] / torch.sqrt(mean_square + network.NORM_EPS * scale[:, None] ** 2)
    return h * (factor.repeat_interleave(ch // self.groups, dim=1) * self.weight)[:, :, None, None]


def build(model_cfg, device, channels_last: bool, compile_net: bool):
    """The default model's loss module and optimiser, as the training loop sets them up."""
    torch.manual_seed(0)
    denoiser = build_denoiser(model_cfg, N_TARGET, N_CONDITION).to(device)
    denoiser.net.use_channels_last(channels_last)
    if compile_net:
        denoiser.net.compile()
    loss = build_loss(model_cfg, np.linspace(-87.2, 87.2, GRID[0]), N_TARGET).to(device)
    return LossModule(denoiser, loss), torch.optim.AdamW(denoiser.parameters(), lr=1e-4)


def flops_per_sample(model_cfg) -> float:
    """Forward + backward FLOPs of the loss for one sample (eager, CPU)."""
    module, _ = build(model_cfg, torch.device("cpu"), False, False)
    x0, c = torch.randn(1, N_TARGET, *GRID), torch.randn(1, N_CONDITION, *GRID)
    with FlopCounterMode(display=False) as counter:
        module(x0, c, torch.Generator().manual_seed(0)).backward()
    return float(counter.get_total_flops())


def timed_steps(module, optimizer, x0, c, generator, bf16: bool, device, warmup: int, steps: int) -> tuple[float, float]:
    """Seconds of the ``warmup`` steps (compilation included) and seconds per step after them."""

    def step():
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss = module(x0, c, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
        if torch.distributed.is_initialized():
            torch.distributed.barrier()

    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return warm, (time.perf_counter() - start) / steps


def _cpu_worker(rank: int, world: int, port: int, threads: int, variant, batch: int, steps: int, results) -> None:
    """One gloo process of a CPU variant: ``batch / world`` samples per step; rank 0 reports."""
    from torch.nn.parallel import DistributedDataParallel

    name, channels_last, compile_net, bf16 = variant
    if name.endswith("old Norm"):
        network.Norm.forward = old_norm_forward
    runtime.spawn_environment(rank, world, port)
    torch.set_num_threads(threads)
    torch.distributed.init_process_group("gloo")
    module, optimizer = build(get_config("default").model, torch.device("cpu"), channels_last, compile_net)
    module = DistributedDataParallel(module) if world > 1 else module
    x0, c = torch.randn(batch // world, N_TARGET, *GRID), torch.randn(batch // world, N_CONDITION, *GRID)
    generator = torch.Generator().manual_seed(rank)
    warm, seconds = timed_steps(module, optimizer, x0, c, generator, bf16, torch.device("cpu"), 3, steps)
    if rank == 0:
        results.put((warm, seconds))
    torch.distributed.destroy_process_group()


def measure_cpu(variant, processes: int, batch: int, steps: int) -> dict:
    """Samples/s of the default model's training step for ``variant`` in ``processes`` gloo processes."""
    import torch.multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // processes)
    results = mp.get_context("spawn").SimpleQueue()
    args = (processes, runtime.free_local_port(), threads, variant, batch, steps, results)
    mp.spawn(_cpu_worker, args=args, nprocs=processes)
    warm, seconds = results.get()
    name, channels_last, compile_net, bf16 = variant
    return {"variant": name, "channels_last": channels_last, "compile": compile_net, "bf16": bf16,
            "processes": processes, "threads_per_process": threads, "batch": batch,
            "warmup_seconds": warm, "seconds_per_step": seconds, "samples_per_s": batch / seconds}  # fmt: skip


def measure_cuda(profile: str, batch: int, steps: int, fast: bool, peak_tflops: float) -> dict:
    """Eager fp32 (``fast=False``) or bf16 + compile training step of a profile's model on the GPU."""
    device = torch.device("cuda")
    model_cfg = get_config(profile).model
    module, optimizer = build(model_cfg, device, False, fast)
    x0, c = torch.randn(batch, N_TARGET, *GRID, device=device), torch.randn(batch, N_CONDITION, *GRID, device=device)
    warm, seconds = timed_steps(module, optimizer, x0, c, torch.Generator(device).manual_seed(0), fast, device, 3, steps)
    tflops = flops_per_sample(model_cfg) * batch / seconds / 1e12
    return {"profile_model": profile, "bf16": fast, "compile": fast, "batch": batch, "warmup_seconds": warm,
            "seconds_per_step": seconds, "samples_per_s": batch / seconds, "achieved_tflops": tflops,
            "mfu": tflops / peak_tflops}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--gpu-batch", type=int, default=64)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="device dense bf16 peak, TFLOP/s")
    parser.add_argument("--variants", default="", help="comma-separated CPU variant names (default: all); the baseline always runs")
    args = parser.parse_args()
    chosen = [v for v in CPU_VARIANTS[1:] if not args.variants or v[0] in args.variants.split(",")]
    cores = os.cpu_count() or 1
    peak = cpu_peak(cores)
    print(json.dumps(peak), flush=True)
    flops = flops_per_sample(get_config("default").model)
    results = []
    for processes in sorted({cores, 1}, reverse=True):
        for variant in [CPU_VARIANTS[0], *chosen] if processes == cores else CPU_VARIANTS[:1]:
            row = measure_cpu(variant, processes, args.batch, args.steps)
            row["achieved_gflops"] = flops * row["samples_per_s"] / 1e9
            row["fraction_of_conv_train_peak"] = row["achieved_gflops"] / peak[f"conv_train_{'bf16' if row['bf16'] else 'fp32'}_gflops"]
            results.append(row)
            print(json.dumps(row), flush=True)
    baseline = results[0]["samples_per_s"]  # the old network, eager fp32, one process per core
    for row in results:
        row["speed_up_vs_eager_processes"] = row["samples_per_s"] / baseline
    if torch.cuda.is_available():
        for profile in ("default", "gpu"):
            for fast in (False, True):
                results.append(measure_cuda(profile, args.gpu_batch, args.steps, fast, args.peak_tflops))
                print(json.dumps(results[-1]), flush=True)
    cpu = f"{platform.machine()} CPU, {cores} cores"
    out = {
        "date": datetime.date.today().isoformat(),
        "device": cpu + (f"; {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "; no GPU"),
        "torch": torch.__version__,
        "command": f"python bench/training.py --steps {args.steps} --batch {args.batch} --gpu-batch {args.gpu_batch}"
        + (f" --variants '{args.variants}'" if args.variants else ""),
        "flops_per_sample": flops,
        "cpu_peak": peak,
        "results": results,
    }
    Path(__file__).with_name("training.json").write_text(json.dumps(out, indent=2) + "\n")
    for row in results:
        if "variant" in row:
            print(f"{row['variant']:>24}, {row['processes']} process(es): {row['samples_per_s']:6.1f} samples/s "
                  f"({row['speed_up_vs_eager_processes']:.2f}x), {row['achieved_gflops']:5.1f} GFLOP/s "
                  f"= {100 * row['fraction_of_conv_train_peak']:.0f} % of the conv training peak")  # fmt: skip


if __name__ == "__main__":
    main()
